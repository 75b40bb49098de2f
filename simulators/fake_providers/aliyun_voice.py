"""Fake Aliyun voice service (Dyvmsapi 2017-05-25): IvrCall and SingleCallByTts.

The gateway checks are Aliyun's RPC checks (shared with the SMS fake: `aliyun.RpcAuth`);
the business checks are the call's own: a known TTS template, one valid called number
(mobile or landline), template parameters as a JSON object of strings, and for IvrCall a
MenuKeyMap naming the keys. An accepted call answers `{"Code": "OK", "CallId": ...}` at
once; the phone then "rings" and the call report (answered, busy, no answer, the key
pressed) is pushed as scripted (pushes.Pusher). Injected failures (`/_control/fail` with
provider "voice") behave as the SMS fake's.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from carewatch.clock import Clock
from carewatch.settings import Settings
from simulators.fake_providers.aliyun import AliyunError, RpcAuth
from simulators.fake_providers.faults import hang_until_disconnect
from simulators.fake_providers.pushes import Pusher
from simulators.fake_providers.records import FailurePlan, RecordBook

API_VERSION = "2017-05-25"
HOST_ID = "dyvmsapi.aliyuncs.com"
ACTION_PARAMS: dict[str, tuple[str, ...]] = {
    "IvrCall": ("CalledNumber", "StartCode", "MenuKeyMap"),
    "SingleCallByTts": ("CalledNumber", "TtsCode"),
}
# Mainland mobile numbers, or a landline with its area code (0 + 9-11 digits).
_NUMBER_RE = re.compile(r"^(?:(?:\+86|0086|86)?1[3-9]\d{9}|0\d{9,11})$")


def _reply(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), **body}, status_code=status)


def _error(error: AliyunError) -> JSONResponse:
    body: dict[str, Any] = {"Code": error.code, "Message": error.message}
    if error.status != 200:
        body["HostId"] = HOST_ID
    return _reply(error.status, body)


class AliyunVoiceFake:
    def __init__(
        self,
        settings: Settings,
        book: RecordBook,
        failures: FailurePlan,
        clock: Clock,
        hang_s: float,
        pusher: Pusher | None,
    ) -> None:
        self._auth = RpcAuth(settings)
        self._templates = {
            settings.aliyun_voice_tts_alert,
            settings.aliyun_voice_tts_key1,
            settings.aliyun_voice_tts_key2,
            settings.aliyun_voice_tts_update,
        }
        self._book = book
        self._failures = failures
        self._clock = clock
        self._hang_s = hang_s
        self._pusher = pusher

    def reset(self) -> None:
        self._auth.reset()

    async def handle(self, request: Request) -> Response:
        now_ms = self._clock.now_ms()
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        fields = {
            "address": params.get("CalledNumber"),
            "template_code": params.get("StartCode") or params.get("TtsCode"),
            "params": _json_object(params.get("StartTtsParams") or params.get("TtsParam")),
            "out_id": params.get("OutId") or None,
        }
        try:
            self._auth.check(request.method, params, now_ms)
            self._check(params)
        except AliyunError as error:
            self._book.add("voice", now_ms, "rejected", error=error.code, **fields)
            return _error(error)
        failure = self._failures.take("voice")
        if failure in ("5xx", "throttle"):
            self._book.add("voice", now_ms, "failed", error=f"injected {failure}", **fields)
            return _error(AliyunError(503, "ServiceUnavailable", "The service is unavailable."))
        if failure == "timeout":
            self._book.add("voice", now_ms, "failed", error="injected timeout", **fields)
            await hang_until_disconnect(request, self._hang_s)
            return _error(AliyunError(504, "ServiceTimeout", "The request timed out."))
        call_id = f"{secrets.randbelow(10**12):012d}^{secrets.randbelow(10**12):012d}"
        record = self._book.add(
            "voice",
            now_ms,
            "delivered",
            text=params["Action"],
            message_id=call_id,
            dedup_key=fields["out_id"],
            **fields,
        )
        if self._pusher is not None:
            self._pusher.call_placed(record, call_id)
        return _reply(200, {"Code": "OK", "Message": "OK", "CallId": call_id})

    def _check(self, params: dict[str, str]) -> None:
        action = params["Action"]
        if action not in ACTION_PARAMS:
            raise AliyunError(
                404, "InvalidAction.NotFound", "Specified api is not found, please check your url."
            )
        if params["Version"] != API_VERSION:
            raise AliyunError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        for name in ACTION_PARAMS[action]:
            if not params.get(name):
                raise AliyunError(400, f"Missing{name}", f"{name} is mandatory for this action.")
        if not _NUMBER_RE.match(params["CalledNumber"]):
            raise AliyunError(200, "isv.MOBILE_NUMBER_ILLEGAL", "号码格式错误")
        code = params.get("StartCode") or params["TtsCode"]
        if code not in self._templates:
            raise AliyunError(200, "isv.TTS_TEMPLATE_ILLEGAL", "文本转语音模板不存在")
        variables = params.get("StartTtsParams") or params.get("TtsParam") or "{}"
        value = _json_object(variables)
        if "raw" in value or not all(isinstance(v, str) for v in value.values()):
            raise AliyunError(200, "isv.INVALID_PARAMETERS", "模板参数不合法")
        if action == "IvrCall":
            menu = _json_list(params["MenuKeyMap"])
            keys = [m.get("Key") for m in menu if isinstance(m, dict)]
            if not keys or any(k not in set("0123456789*#") for k in keys):
                raise AliyunError(200, "isv.INVALID_PARAMETERS", "MenuKeyMap不合法")
            if any(m.get("Code") not in self._templates for m in menu if isinstance(m, dict)):
                raise AliyunError(200, "isv.TTS_TEMPLATE_ILLEGAL", "文本转语音模板不存在")


def _json_object(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except (ValueError, RecursionError):
        return {"raw": raw}
    return value if isinstance(value, dict) else {"raw": raw}


def _json_list(raw: str) -> list[Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    return value if isinstance(value, list) else []
