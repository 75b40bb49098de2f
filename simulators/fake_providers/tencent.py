"""Fake Tencent Cloud SMS (API 3.0 SendSms, version 2021-01-11), checked as Tencent checks.

Authentication first (HTTP 200 with `Response.Error`, as API 3.0 answers): the
TC3-HMAC-SHA256 Authorization header, recomputed from the received body and Host header
with the account's SecretKey (`AuthFailure.SignatureFailure`), a known SecretId
(`AuthFailure.SecretIdNotFound`), a timestamp within 5 minutes whose date matches the
credential scope (`AuthFailure.SignatureExpire`), the action and version. Then the
business checks: the app id, signature name, an approved template (the project's own
bodies, numbered {1}, {2}, ... in the order of their variables) with the right number of
parameters, and one +86 mobile number per request here. Accepted messages answer a
SendStatusSet with Code "Ok" and a SerialNo. Injected failures (`/_control/fail` with
provider "sms_tencent") behave as the other fakes'.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from carewatch.clock import Clock
from carewatch.settings import Settings
from notifier.channels.templates import fill, sms_template_bodies, variables_of
from notifier.channels.tencent_sms import ALGORITHM, API_VERSION, SERVICE, tc3_signature
from simulators.fake_providers.faults import hang_until_disconnect
from simulators.fake_providers.records import FailurePlan, RecordBook

MAX_SKEW_S = 300
_AUTH_RE = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)"
    r"/tc3_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})$"
)
_MOBILE_RE = re.compile(r"^\+861[3-9]\d{9}$")


class TencentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _error(error: TencentError) -> JSONResponse:
    return JSONResponse(
        {
            "Response": {
                "Error": {"Code": error.code, "Message": error.message},
                "RequestId": str(uuid.uuid4()),
            }
        }
    )


class TencentSmsFake:
    def __init__(
        self,
        settings: Settings,
        book: RecordBook,
        failures: FailurePlan,
        clock: Clock,
        hang_s: float,
    ) -> None:
        key = settings.tencent_secret_key
        self._secrets = {settings.tencent_secret_id: key.get_secret_value()} if key else {}
        self._app_id = settings.tencent_sms_app_id
        self._sign_name = settings.tencent_sms_sign_name
        bodies = sms_template_bodies(settings.ack_base_url)
        self._templates = {
            settings.tencent_sms_template_alert: bodies["alert"],
            settings.tencent_sms_template_update: bodies["update"],
            settings.tencent_sms_template_reply: bodies["reply"],
        }
        self._book = book
        self._failures = failures
        self._clock = clock
        self._hang_s = hang_s

    async def handle(self, request: Request) -> Response:
        now_ms = self._clock.now_ms()
        body = await request.body()
        try:
            data: Any = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        fields = _record_fields(data)
        try:
            self._authenticate(request, body, now_ms)
            text = self._render(data)
        except TencentError as error:
            self._book.add("sms_tencent", now_ms, "rejected", error=error.code, **fields)
            return _error(error)
        failure = self._failures.take("sms_tencent")
        if failure in ("5xx", "throttle"):
            self._book.add("sms_tencent", now_ms, "failed", error=f"injected {failure}", **fields)
            return PlainTextResponse("502 Bad Gateway", status_code=502)
        if failure == "timeout":
            self._book.add("sms_tencent", now_ms, "failed", error="injected timeout", **fields)
            await hang_until_disconnect(request, self._hang_s)
            return PlainTextResponse("504 Gateway Timeout", status_code=504)
        serial = f"2433:{secrets.randbelow(10**28):028d}"
        self._book.add(
            "sms_tencent",
            now_ms,
            "delivered",
            text=text,
            message_id=serial,
            dedup_key=fields["out_id"],
            **fields,
        )
        phone = data["PhoneNumberSet"][0]
        status = {
            "SerialNo": serial,
            "PhoneNumber": phone,
            "Fee": 1,
            "SessionContext": data.get("SessionContext", ""),
            "Code": "Ok",
            "Message": "send success",
            "IsoCode": "CN",
        }
        return JSONResponse(
            {"Response": {"SendStatusSet": [status], "RequestId": str(uuid.uuid4())}}
        )

    def _authenticate(self, request: Request, body: bytes, now_ms: int) -> None:
        found = _AUTH_RE.match(request.headers.get("authorization", ""))
        if found is None:
            raise TencentError("AuthFailure.InvalidAuthorization", "Authorization is invalid.")
        secret = self._secrets.get(found["id"])
        if secret is None:
            raise TencentError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        try:
            timestamp = int(request.headers.get("x-tc-timestamp", ""))
        except ValueError:
            raise TencentError("MissingParameter", "X-TC-Timestamp is missing.") from None
        if abs(now_ms // 1000 - timestamp) > MAX_SKEW_S:
            raise TencentError("AuthFailure.SignatureExpire", "Signature expired.")
        if found["service"] != SERVICE or found["signed"] != "content-type;host":
            raise TencentError(
                "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
            )
        host = request.headers.get("host", "")
        expected = tc3_signature(secret, host, body, timestamp, SERVICE)
        if not hmac.compare_digest(expected, found["sig"]):
            raise TencentError(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature"
                f" is correct ({ALGORITHM}).",
            )
        if request.headers.get("x-tc-action") != "SendSms":
            raise TencentError("InvalidAction", "The action is not supported.")
        if request.headers.get("x-tc-version") != API_VERSION:
            raise TencentError("NoSuchVersion", "The API version does not exist.")

    def _render(self, data: Any) -> str:
        if not isinstance(data, dict):
            raise TencentError("InvalidParameter", "The body is not a JSON object.")
        if data.get("SmsSdkAppId") != self._app_id:
            raise TencentError("FailedOperation.InvalidSmsSdkAppId", "SmsSdkAppId is invalid.")
        if data.get("SignName") != self._sign_name:
            raise TencentError(
                "FailedOperation.SignatureIncorrectOrUnapproved", "The signature is unapproved."
            )
        body = self._templates.get(str(data.get("TemplateId")))
        if body is None:
            raise TencentError(
                "FailedOperation.TemplateIncorrectOrUnapproved", "The template is unapproved."
            )
        phones = data.get("PhoneNumberSet")
        if not isinstance(phones, list) or len(phones) != 1:
            raise TencentError("InvalidParameterValue.IncorrectPhoneNumber", "One number.")
        if not isinstance(phones[0], str) or not _MOBILE_RE.match(phones[0]):
            raise TencentError("InvalidParameterValue.IncorrectPhoneNumber", "Bad number.")
        values = data.get("TemplateParamSet")
        names = variables_of(body)
        if not isinstance(values, list) or len(values) != len(names):
            raise TencentError(
                "InvalidParameterValue.TemplateParameterFormatError", "Parameter count."
            )
        if not all(isinstance(v, str) for v in values):
            raise TencentError(
                "InvalidParameterValue.TemplateParameterFormatError", "Parameters are strings."
            )
        return f"【{self._sign_name}】{fill(body, dict(zip(names, values, strict=True)))}"


def _record_fields(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    phones = data.get("PhoneNumberSet")
    return {
        "address": ",".join(str(p) for p in phones) if isinstance(phones, list) else None,
        "template_code": str(data.get("TemplateId")),
        "params": {"TemplateParamSet": data.get("TemplateParamSet")},
        "out_id": str(data.get("SessionContext") or "") or None,
    }
