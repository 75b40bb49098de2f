"""Tencent Cloud SMS (SendSms, API 3.0, version 2021-01-11) channel adapter: the second SMS
provider (notifier.channels.failover sends by it what the primary refuses).

Requests are JSON POSTs signed with TC3-HMAC-SHA256 (`tc3_authorization`, shared with the
fake provider, which verifies it). Tencent templates number their variables ({1}, {2},
...); ours are filled in the order of the Aliyun template's variables, so the same wording
is registered at both providers (docs/channels.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from carewatch.clock import Clock, SystemClock
from carewatch.logs import mask_phone
from carewatch.settings import Settings
from notifier.channels.base import Message, SendResult, out_id_for, post_to_provider, record_send
from notifier.channels.templates import (
    MissingTemplateParams,
    TemplateKey,
    sms_template_bodies,
    template_for,
    variables_of,
)

log = logging.getLogger(__name__)

SERVICE = "sms"
API_VERSION = "2021-01-11"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = "content-type;host"
ERROR_MAX_LEN = 200
# Error codes of a request that will never be accepted as it is.
PERMANENT_PREFIXES = (
    "InvalidParameterValue.IncorrectPhoneNumber",
    "InvalidParameterValue.TemplateParameterFormatError",
    "InvalidParameterValue.TemplateParameterLengthLimit",
    "FailedOperation.TemplateIncorrectOrUnapproved",
    "FailedOperation.SignatureIncorrectOrUnapproved",
    "FailedOperation.PhoneNumberInBlacklist",
    "FailedOperation.ContainSensitiveWord",
    "UnsupportedOperation",
)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_request(host: str, body: bytes) -> str:
    """The canonical request of a JSON POST to '/', signing content-type and host."""
    return "\n".join(
        (
            "POST",
            "/",
            "",
            f"content-type:{CONTENT_TYPE}\nhost:{host}\n",
            SIGNED_HEADERS,
            hashlib.sha256(body).hexdigest(),
        )
    )


def tc3_signature(secret_key: str, host: str, body: bytes, timestamp: int, service: str) -> str:
    """Hex TC3-HMAC-SHA256 signature of one request (pure)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    hashed = hashlib.sha256(canonical_request(host, body).encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{hashed}"
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def tc3_authorization(
    secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int, service: str
) -> str:
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signature = tc3_signature(secret_key, host, body, timestamp, service)
    return (
        f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request,"
        f" SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
    )


def e164(phone: str) -> str:
    """Tencent wants +86 numbers."""
    if phone.startswith("+"):
        return phone
    if phone.startswith("0086"):
        return "+" + phone[2:]
    if phone.startswith("86") and len(phone) == 13:
        return "+" + phone
    return "+86" + phone


def interpret_response(status_code: int, body: bytes) -> SendResult:
    """Map one SendSms answer to a SendResult (pure)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    response = data.get("Response") if isinstance(data, dict) else None
    if status_code >= 500 or not isinstance(response, dict):
        return SendResult(ok=False, retryable=True, error=f"http {status_code}")
    error = response.get("Error")
    if isinstance(error, dict):
        code = str(error.get("Code", ""))[:ERROR_MAX_LEN]
        message = mask_phone(str(error.get("Message", ""))[:ERROR_MAX_LEN])
        permanent = code.startswith(PERMANENT_PREFIXES)
        return SendResult(ok=False, retryable=not permanent, error=f"{code}: {message}")
    statuses = response.get("SendStatusSet")
    if not isinstance(statuses, list) or len(statuses) != 1 or not isinstance(statuses[0], dict):
        return SendResult(ok=False, retryable=True, error="answer without one SendStatus")
    status = statuses[0]
    code = str(status.get("Code", ""))[:ERROR_MAX_LEN]
    if code == "Ok":
        return SendResult(ok=True, provider_message_id=f"tencent:{status.get('SerialNo', '')}")
    permanent = code.startswith(PERMANENT_PREFIXES)
    message = mask_phone(str(status.get("Message", ""))[:ERROR_MAX_LEN])
    return SendResult(ok=False, retryable=not permanent, error=f"{code}: {message}")


class TencentSmsChannel:
    name = "sms_tencent"

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
    ) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock or SystemClock()
        self._templates: dict[TemplateKey, str] = {
            "alert": settings.tencent_sms_template_alert,
            "update": settings.tencent_sms_template_update,
            "reply": settings.tencent_sms_template_reply,
        }
        # the order of each template's variables: {1}, {2}, ... at Tencent
        self._order = {key: variables_of(body) for key, body in sms_template_bodies("").items()}

    def request(self, message: Message) -> tuple[bytes, dict[str, str]]:
        """The JSON body and the headers (signature included) of one SendSms request."""
        s = self._settings
        key, variables = template_for(message.purpose, message.params)
        body = json.dumps(
            {
                "PhoneNumberSet": [e164(message.address)],
                "SmsSdkAppId": s.tencent_sms_app_id,
                "SignName": s.tencent_sms_sign_name,
                "TemplateId": self._templates[key],
                "TemplateParamSet": [variables[name] for name in self._order[key]],
                "SessionContext": out_id_for(message.idempotency_key),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        host = urlsplit(s.tencent_sms_endpoint).netloc
        timestamp = self._clock.now_ms() // 1000
        secret = s.tencent_secret_key.get_secret_value() if s.tencent_secret_key else ""
        headers = {
            "Authorization": tc3_authorization(
                s.tencent_secret_id, secret, host, body, timestamp, SERVICE
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": API_VERSION,
            "X-TC-Region": s.tencent_sms_region,
        }
        return body, headers

    async def send(self, message: Message) -> SendResult:
        try:
            body, headers = self.request(message)
        except MissingTemplateParams as exc:
            return self._finish(message, SendResult(ok=False, retryable=False, error=str(exc)))
        result = await post_to_provider(
            self._client,
            self._settings.tencent_sms_endpoint,
            self._settings.provider_timeout_s,
            interpret_response,
            content=body,
            headers=headers,
        )
        return self._finish(message, result)

    def _finish(self, message: Message, result: SendResult) -> SendResult:
        return record_send(log, self.name, "tencent sms", message, result, id_field="serial_no")

    async def aclose(self) -> None:
        """Nothing to release: the shared HTTP client belongs to the caller."""
