"""Fake Aliyun Dysmsapi: SendSms over the RPC protocol, checked the way Aliyun checks it.

Actions: SendSms, and QuerySendDetails for delivery receipts (every delivery of the fake
succeeds at once). Authentication (common parameters, key id, timestamp skew, HMAC-SHA1 signature, nonce
replay) happens first and fails with Aliyun's gateway errors (HTTP 4xx); business checks
(signature name, template, phone numbers, template variables) answer HTTP 200 with an
`isv.*` code, as the real service does, including the limits of a notification template:
each variable value at most 35 characters (`isv.PARAM_LENGTH_LIMIT`), no URL in a variable
(`isv.PARAM_NOT_SUPPORT_URL`), the whole message with its signature at most 500
characters. The account's "approved" templates are the project's own bodies for the
configured ack base URL (`sms_template_bodies`); one that the real review would refuse
(a link whose domain is a variable, more than 500 characters) is not registered, so
sending with it gets `isv.SMS_TEMPLATE_ILLEGAL`. Like the real service, SendSms is not
idempotent: a request with an OutId already accepted is sent again (a second SMS on the
phone); the fake records it as delivered with `duplicate_of` naming the first delivery of
that OutId, and counts it (stats `delivered_again`), so tests see every duplicate a real
phone would get. QuerySendDetails lists each send with its OutId, as the real one does.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from carewatch.clock import Clock
from carewatch.settings import Settings
from notifier.channels.aliyun_rpc import parse_timestamp, string_to_sign, verify
from notifier.channels.aliyun_sms import PROVIDER_TZ
from notifier.channels.templates import (
    MESSAGE_MAX_CHARS,
    VARIABLE_MAX_CHARS,
    MissingTemplateParams,
    fill,
    longest_sms_chars,
    sms_template_bodies,
)
from simulators.fake_providers.faults import hang_until_disconnect
from simulators.fake_providers.records import FailurePlan, Record, RecordBook

API_VERSION = "2017-05-25"
HOST_ID = "dysmsapi.aliyuncs.com"
MAX_SKEW_MS = 15 * 60 * 1000  # Aliyun accepts timestamps within 15 minutes
MAX_NUMBERS = 1000
COMMON_PARAMS = (
    "AccessKeyId",
    "Action",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
)
# Required parameters of each supported action.
ACTION_PARAMS: dict[str, tuple[str, ...]] = {
    "SendSms": ("PhoneNumbers", "SignName", "TemplateCode"),
    "QuerySendDetails": ("PhoneNumber", "SendDate", "PageSize", "CurrentPage"),
}
MAX_PAGE_SIZE = 50
# Mainland mobile numbers, optionally with the country code (+86, 0086 or 86).
_MOBILE_RE = re.compile(r"^(?:\+86|0086|86)?1[3-9]\d{9}$")
# What the provider treats as a link inside a variable value: a scheme, "www.", or a host
# name with a common ending (Aliyun's check is not published; it catches bare domains too).
_URL_IN_VALUE_RE = re.compile(
    r"(?i)https?://|www\.|[a-z0-9-]+\.(?:com|cn|net|org|top|xyz|cc|io|me|info|vip|shop)\b"
)
# A link in a template body whose host is (partly) a variable: refused at review.
_VARIABLE_HOST_RE = re.compile(r"(?i)https?://[^/\s]*\$\{")

log = logging.getLogger(__name__)


class AliyunError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _reply(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), **body}, status_code=status)


def _error_reply(error: AliyunError) -> JSONResponse:
    body: dict[str, Any] = {"Code": error.code, "Message": error.message}
    if error.status != 200:  # gateway errors carry the host and a troubleshooting link
        body["HostId"] = HOST_ID
        body["Recommend"] = f"https://api.aliyun.com/troubleshoot?q={error.code}&product=Dysmsapi"
    return _reply(error.status, body)


class RpcAuth:
    """The gateway's authentication of RPC requests (any Aliyun product): common
    parameters, key id, timestamp skew, HMAC-SHA1 signature, nonce replay."""

    def __init__(self, settings: Settings) -> None:
        self._secrets = {
            settings.aliyun_access_key_id: settings.aliyun_access_key_secret.get_secret_value()
        }
        self._nonces: dict[str, int] = {}

    def reset(self) -> None:
        self._nonces.clear()

    def check(self, method: str, params: dict[str, str], now_ms: int) -> None:
        """Aliyun's gateway checks of an RPC request; raises AliyunError."""
        for name in COMMON_PARAMS:
            if not params.get(name):
                raise AliyunError(400, f"Missing{name}", f"{name} is mandatory for this action.")
        secret = self._secrets.get(params["AccessKeyId"])
        if secret is None:
            raise AliyunError(
                404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise AliyunError(
                400, "InvalidSignatureMethod", "Specified signature method is not supported."
            )
        try:
            sent_ms = parse_timestamp(params["Timestamp"])
        except ValueError:
            raise AliyunError(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            ) from None
        if abs(now_ms - sent_ms) > MAX_SKEW_MS:
            raise AliyunError(
                400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
            )
        if not verify(method, params, secret):
            raise AliyunError(
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation. server string to sign is:"
                + string_to_sign(method, params),
            )
        self._nonces = {n: t for n, t in self._nonces.items() if now_ms - t <= MAX_SKEW_MS}
        if params["SignatureNonce"] in self._nonces:
            raise AliyunError(
                400, "SignatureNonceUsed", "Specified signature nonce was used already."
            )
        self._nonces[params["SignatureNonce"]] = now_ms


class AliyunSmsFake:
    def __init__(
        self,
        settings: Settings,
        book: RecordBook,
        failures: FailurePlan,
        clock: Clock,
        hang_s: float,
    ) -> None:
        self._auth = RpcAuth(settings)
        self._sign_name = settings.aliyun_sms_sign_name
        # The "approved templates" of this account, by template code.
        bodies = sms_template_bodies(settings.ack_base_url)
        self._templates = {
            code: body
            for code, body in (
                (settings.aliyun_sms_template_alert, bodies["alert"]),
                (settings.aliyun_sms_template_handled, bodies["update"]),
                (settings.aliyun_sms_template_reply, bodies["reply"]),
            )
            if approvable(body, self._sign_name)
        }
        self._book = book
        self._failures = failures
        self._clock = clock
        self._hang_s = hang_s
        self._by_out_id: dict[str, Record] = {}  # first delivery of each OutId
        # called with each delivered message: the delivery report push (pushes.Pusher)
        self.on_delivered: Callable[[Record], None] | None = None

    def reset(self) -> None:
        self._auth.reset()
        self._by_out_id.clear()

    async def handle(self, request: Request) -> Response:
        now_ms = self._clock.now_ms()
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        fields = _record_fields(params)
        try:
            self._authenticate(request.method, params, now_ms)
            action = self._check_action(params)
        except AliyunError as error:
            self._book.add("sms", now_ms, "rejected", error=error.code, **fields)
            return _error_reply(error)
        if action == "QuerySendDetails":  # a lookup, not a message: not recorded
            return self._query_send_details(params)

        failure = self._failures.take("sms")
        if failure == "5xx":
            self._book.add("sms", now_ms, "failed", error="injected 5xx", **fields)
            return _error_reply(
                AliyunError(
                    503,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                )
            )
        if failure == "throttle":
            self._book.add("sms", now_ms, "failed", error="isv.BUSINESS_LIMIT_CONTROL", **fields)
            return _reply(
                200, {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控Permits:1"}
            )
        if failure == "timeout":
            self._book.add("sms", now_ms, "failed", error="injected timeout", **fields)
            await hang_until_disconnect(request, self._hang_s)
            return _error_reply(AliyunError(504, "ServiceTimeout", "The request timed out."))

        response = self._send_sms(params, fields, now_ms)
        if failure == "timeout_after_send":  # delivered, but the sender never hears so
            await hang_until_disconnect(request, self._hang_s)
        return response

    def _authenticate(self, method: str, params: dict[str, str], now_ms: int) -> None:
        self._auth.check(method, params, now_ms)

    def _check_action(self, params: dict[str, str]) -> str:
        action = params["Action"]
        if action not in ACTION_PARAMS:
            raise AliyunError(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            )
        if params["Version"] != API_VERSION:
            raise AliyunError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        for name in ACTION_PARAMS[action]:
            if not params.get(name):
                raise AliyunError(400, f"Missing{name}", f"{name} is mandatory for this action.")
        return action

    def _query_send_details(self, params: dict[str, str]) -> Response:
        """Delivery receipts (the fake's deliveries succeed at once: SendStatus 3)."""
        try:
            page_size = int(params["PageSize"])
            page = int(params["CurrentPage"])
            datetime.strptime(params["SendDate"], "%Y%m%d")  # validates the format only
        except ValueError:
            return _error_reply(AliyunError(200, "isv.INVALID_PARAMETERS", "参数异常"))
        if not (1 <= page_size <= MAX_PAGE_SIZE and page >= 1):
            return _error_reply(AliyunError(200, "isv.INVALID_PARAMETERS", "参数异常"))
        phone = _national(params["PhoneNumber"])
        biz_id = params.get("BizId")
        matches = [
            r
            for r in self._book.select(provider="sms")
            if r.outcome == "delivered"
            and phone in {_national(n) for n in (r.address or "").split(",")}
            and (not biz_id or r.message_id == biz_id)
            and _provider_time(r.received_ms, "%Y%m%d") == params["SendDate"]
        ]
        shown = matches[(page - 1) * page_size : page * page_size]
        details = [
            {
                "PhoneNum": params["PhoneNumber"],
                "SendStatus": 3,
                "ErrCode": "DELIVERED",
                "TemplateCode": r.template_code,
                "Content": r.text,
                "SendDate": _provider_time(r.received_ms, "%Y-%m-%d %H:%M:%S"),
                "ReceiveDate": _provider_time(r.received_ms, "%Y-%m-%d %H:%M:%S"),
                "OutId": r.out_id,
            }
            for r in shown
        ]
        return _reply(
            200,
            {
                "Code": "OK",
                "Message": "OK",
                "TotalCount": len(matches),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": details},
            },
        )

    def _send_sms(self, params: dict[str, str], fields: dict[str, Any], now_ms: int) -> Response:
        try:
            text = self._render(params)
        except AliyunError as error:
            self._book.add("sms", now_ms, "rejected", error=error.code, **fields)
            return _error_reply(error)
        out_id = params.get("OutId") or None
        # Not idempotent: an OutId seen before is sent again, with a new BizId.
        first = self._by_out_id.get(out_id) if out_id else None
        biz_id = f"{secrets.randbelow(10**18):018d}^0"
        record = self._book.add(
            "sms",
            now_ms,
            "delivered",
            text=text,
            dedup_key=out_id,
            duplicate_of=first.index if first is not None else None,
            message_id=biz_id,
            **fields,
        )
        if out_id and first is None:
            self._by_out_id[out_id] = record
        if self.on_delivered is not None:
            self.on_delivered(record)
        return _reply(200, {"Code": "OK", "Message": "OK", "BizId": biz_id})

    def _render(self, params: dict[str, str]) -> str:
        """Check the business parameters and render the text the phone would show."""
        if params["SignName"] != self._sign_name:
            raise AliyunError(200, "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        body = self._templates.get(params["TemplateCode"])
        if body is None:
            raise AliyunError(200, "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        numbers = params["PhoneNumbers"].split(",")
        if len(numbers) > MAX_NUMBERS:
            raise AliyunError(200, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if not all(_MOBILE_RE.match(n) for n in numbers):
            raise AliyunError(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        variables = _template_param(params.get("TemplateParam", "{}"))
        try:
            text = f"【{self._sign_name}】{fill(body, variables)}"
        except MissingTemplateParams as exc:
            raise AliyunError(200, "isv.TEMPLATE_MISSING_PARAMETERS", str(exc)) from None
        _check_variables(variables)
        # Unreachable with a registered body and variables within their limit (the review
        # bounds the longest message); kept for what a looser template review would let by.
        if len(text) > MESSAGE_MAX_CHARS:
            raise AliyunError(200, "isv.PARAM_LENGTH_LIMIT", "短信内容超出长度限制")
        return text


def approvable(body: str, sign_name: str) -> bool:
    """Whether the provider's template review would pass this body: any link's domain is
    fixed text, and the longest message it can produce fits MESSAGE_MAX_CHARS."""
    if _VARIABLE_HOST_RE.search(body):
        log.warning("fake Aliyun: template refused, a link's host is a variable: %s", body)
        return False
    if longest_sms_chars(body, sign_name) > MESSAGE_MAX_CHARS:
        log.warning("fake Aliyun: template refused, messages could exceed 500 characters")
        return False
    return True


def _check_variables(variables: dict[str, str]) -> None:
    """Aliyun's per-variable rules of notification templates (characters, not bytes)."""
    for value in variables.values():
        if _URL_IN_VALUE_RE.search(value):
            raise AliyunError(200, "isv.PARAM_NOT_SUPPORT_URL", "不支持url为变量")
        if len(value) > VARIABLE_MAX_CHARS:
            raise AliyunError(200, "isv.PARAM_LENGTH_LIMIT", "参数超出长度限制")


def _national(number: str) -> str:
    """The 11-digit mainland number without a country code."""
    return number[-11:]


def _provider_time(epoch_ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=PROVIDER_TZ).strftime(fmt)


def _template_param(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # nesting deeper than the parser's recursion limit
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise AliyunError(200, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
    return value


def _record_fields(params: dict[str, str]) -> dict[str, Any]:
    try:
        variables: dict[str, Any] = json.loads(params.get("TemplateParam", "{}"))
    except (ValueError, RecursionError):
        variables = {"raw": params.get("TemplateParam")}
    return {
        "address": params.get("PhoneNumbers"),
        "template_code": params.get("TemplateCode"),
        "params": variables if isinstance(variables, dict) else {"raw": variables},
        "out_id": params.get("OutId") or None,
    }


def add_routes(app: FastAPI, fake: AliyunSmsFake, path: str) -> None:
    app.add_api_route(path, fake.handle, methods=["GET", "POST"], include_in_schema=False)
