"""Aliyun SMS (Dysmsapi SendSms, RPC style, API version 2017-05-25) channel adapter.

Thin on purpose: render the template variables, sign the request, POST it, and map the
provider's answer to a SendResult the outbox can act on (retry or give up).
`query_delivery` pulls the delivery receipt of a sent message (QuerySendDetails).

SendSms is not idempotent: Aliyun sends a message once per accepted request, whatever its
OutId. A message whose earlier attempt may have been accepted (`Message.unsure_since_ms`:
a timeout after the request went out, a sender killed mid-send) is looked up first among
that phone's sends since then (QuerySendDetails lists each with its OutId) and only sent
again when it is not there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import httpx

from carewatch.clock import Clock, SystemClock
from carewatch.logs import mask_phone
from carewatch.settings import Settings
from notifier.channels.aliyun_rpc import new_nonce, signed_params
from notifier.channels.base import Message, SendResult, post_to_provider, record_send
from notifier.channels.base import out_id_for as out_id_for  # its historical home
from notifier.channels.templates import MissingTemplateParams, TemplateKey, template_for
from notifier.metrics import SMS_LOOKUPS as LOOKUPS

log = logging.getLogger(__name__)

API_VERSION = "2017-05-25"
REGION_ID = "cn-hangzhou"
ERROR_MAX_LEN = 200
# Aliyun's SendDate and receipt times are Beijing time.
PROVIDER_TZ = ZoneInfo("Asia/Shanghai")

DeliveryStatus = Literal["pending", "delivered", "failed"]
# QuerySendDetails SendStatus: 1 waiting for the carrier's receipt, 2 failed, 3 delivered.
_SEND_STATUS: dict[int, DeliveryStatus] = {1: "pending", 2: "failed", 3: "delivered"}

# Errors caused by this message itself (number, content, parameters): a retry would get
# the same answer, so the outbox should give up and try the next contact instead.
# Everything else (flow control, server errors, and account/configuration problems an
# operator can fix within the retry window) is retryable, so no alert is dropped for a
# reason that may go away.
PERMANENT_CODES = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.MOBILE_COUNT_OVER_LIMIT",
        "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
        "isv.INVALID_PARAMETERS",
        "isv.INVALID_JSON_PARAM",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.TEMPLATE_PARAMS_ILLEGAL",
        "isv.PARAM_LENGTH_LIMIT",
        "isv.PARAM_NOT_SUPPORT_URL",
        "isv.BLACK_KEY_CONTROL_LIMIT",
        "isv.DAY_LIMIT_CONTROL",
        "isv.EXTEND_CODE_ERROR",
    }
)


def _json_body(body: bytes) -> object:
    """The decoded body, or None when it is not JSON. A hostile or broken gateway can
    send anything: nesting deep enough to exhaust the parser's recursion counts as
    not JSON too."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def interpret_response(status_code: int, body: bytes) -> SendResult:
    """Map one SendSms HTTP answer to a SendResult (pure)."""
    data = _json_body(body)
    if not isinstance(data, dict):
        return SendResult(ok=False, retryable=True, error=f"http {status_code}: not JSON")
    code = str(data.get("Code", ""))
    if status_code == 200 and code == "OK":
        return SendResult(ok=True, provider_message_id=str(data.get("BizId") or "") or None)
    # Provider messages can echo the request (SignatureDoesNotMatch shows the string to
    # sign, phone number included); what is kept is short and masked.
    # The code is masked too: a hostile or broken gateway can put anything there.
    message = str(data.get("Message", ""))[:ERROR_MAX_LEN]
    error = mask_phone(f"{code[:ERROR_MAX_LEN] or f'http {status_code}'}: {message}").strip()
    if status_code >= 500:
        return SendResult(ok=False, retryable=True, error=error)
    return SendResult(ok=False, retryable=code not in PERMANENT_CODES, error=error)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    status: DeliveryStatus
    error_code: str | None  # the carrier's code, "DELIVERED" on success
    received_at: str | None  # as reported: "yyyy-MM-dd HH:mm:ss", Beijing time


class DeliveryQueryError(Exception):
    """QuerySendDetails failed (network, throttling, or an error code).

    `retryable`: asking again later may work (network, server error, flow control);
    False for an answer that will not change (e.g. the key may not call the action)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


# Lookup errors that go away by themselves: flow control and the gateway's throttling.
_TRANSIENT_QUERY_CODES = ("isv.BUSINESS_LIMIT_CONTROL", "Throttling", "ServiceUnavailable")
# How far back before an unsure attempt's start a lookup also searches (the provider's
# clock and ours differ a little; a send just before midnight is listed on that day).
LOOKUP_MARGIN_MS = 15 * 60 * 1000
LOOKUP_PAGE_SIZE = 50
LOOKUP_MAX_PAGES = 20  # 1,000 messages to one phone in a day: far beyond any real case


def interpret_details(status_code: int, body: bytes) -> DeliveryReport | None:
    """Map a QuerySendDetails answer to the newest receipt (pure).

    Raises DeliveryQueryError for an error code and for an answer of the wrong shape."""
    details = _details(status_code, body)
    if not details:
        return None
    newest = max(details, key=lambda d: str(d.get("SendDate", "")))
    return DeliveryReport(
        status=_SEND_STATUS.get(_send_status(newest.get("SendStatus", 1)) or 1, "pending"),
        error_code=_optional_text(newest.get("ErrCode")),
        received_at=_optional_text(newest.get("ReceiveDate")),
    )


def _details(status_code: int, body: bytes) -> list[dict[str, object]]:
    """The SmsSendDetailDTO list of a QuerySendDetails answer; DeliveryQueryError else."""
    data = _json_body(body)
    if not isinstance(data, dict) or status_code != 200 or data.get("Code") != "OK":
        code = str(data.get("Code") or "") if isinstance(data, dict) else ""
        transient = status_code >= 500 or not code or code.startswith(_TRANSIENT_QUERY_CODES)
        raise DeliveryQueryError(
            f"{code or f'http {status_code}'}"[:ERROR_MAX_LEN], retryable=transient
        )
    page = data.get("SmsSendDetailDTOs") or {}
    details = (page.get("SmsSendDetailDTO") or []) if isinstance(page, dict) else None
    if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
        raise DeliveryQueryError("OK answer without a list of SmsSendDetailDTO objects")
    return details


def sends_with_out_id(status_code: int, body: bytes, out_id: str) -> tuple[bool, int]:
    """(whether a send with this OutId is on this page, the day's total count) (pure)."""
    details = _details(status_code, body)
    data = _json_body(body)
    total = data.get("TotalCount") if isinstance(data, dict) else None
    count = total if isinstance(total, int) and not isinstance(total, bool) else len(details)
    return any(str(d.get("OutId") or "") == out_id for d in details), count


def national_number(phone: str) -> str:
    """The number as QuerySendDetails wants it: mainland numbers without +86 / 0086 / 86."""
    for prefix in ("+86", "0086", "86"):
        if phone.startswith(prefix) and len(phone) == len(prefix) + 11:
            return phone[len(prefix) :]
    return phone


def provider_days(since_ms: int, now_ms: int) -> list[str]:
    """The provider's SendDate values (yyyyMMdd, Beijing time) from since_ms to now_ms."""
    first = datetime.fromtimestamp(min(since_ms, now_ms) / 1000, tz=PROVIDER_TZ).date()
    last = datetime.fromtimestamp(max(since_ms, now_ms) / 1000, tz=PROVIDER_TZ).date()
    days = []
    while first <= last:
        days.append(first.strftime("%Y%m%d"))
        first += timedelta(days=1)
    return days[-31:]  # the API answers for the last 30 days only


def _send_status(value: object) -> int | None:
    """SendStatus as documented (1, 2, 3; sometimes a numeric string); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 4:
        return int(value)
    return None


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)[:ERROR_MAX_LEN]


class AliyunSmsChannel:
    name = "sms"

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
    ) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock or SystemClock()
        self._template_codes: dict[TemplateKey, str] = {
            "alert": settings.aliyun_sms_template_alert,
            "update": settings.aliyun_sms_template_handled,
            "reply": settings.aliyun_sms_template_reply,
        }

    def request_params(self, message: Message) -> dict[str, str]:
        """The signed form parameters of one SendSms request (fresh nonce and time)."""
        key, variables = template_for(message.purpose, message.params)
        action = {
            "Action": "SendSms",
            "RegionId": REGION_ID,
            "PhoneNumbers": message.address,
            "SignName": self._settings.aliyun_sms_sign_name,
            "TemplateCode": self._template_codes[key],
            "TemplateParam": json.dumps(variables, ensure_ascii=False, separators=(",", ":")),
            "OutId": out_id_for(message.idempotency_key),
        }
        return self._signed(action)

    def _signed(self, action: dict[str, str]) -> dict[str, str]:
        return signed_params(
            "POST",
            action,
            access_key_id=self._settings.aliyun_access_key_id,
            access_key_secret=self._settings.aliyun_access_key_secret.get_secret_value(),
            version=API_VERSION,
            epoch_ms=self._clock.now_ms(),
            nonce=new_nonce(),
        )

    async def send(self, message: Message) -> SendResult:
        try:
            params = self.request_params(message)
        except MissingTemplateParams as exc:
            return self._finish(message, SendResult(ok=False, retryable=False, error=str(exc)))
        if message.unsure_since_ms is not None:
            found = await self._sent_before(message, params["OutId"])
            if found is not None:
                return self._finish(message, found)
        result = await post_to_provider(
            self._client,
            self._settings.aliyun_sms_endpoint,
            self._settings.provider_timeout_s,
            interpret_response,
            data=params,
        )
        return self._finish(message, result)

    async def _sent_before(self, message: Message, out_id: str) -> SendResult | None:
        """Before a resend: the result to record instead of sending (found accepted, or the
        lookup failed for now); None to send."""
        assert message.unsure_since_ms is not None
        try:
            found = await self.find_out_id(message.address, out_id, message.unsure_since_ms)
        except DeliveryQueryError as exc:
            if exc.retryable:  # ask again at the next attempt rather than risk a duplicate
                LOOKUPS.labels("failed").inc()
                return SendResult(ok=False, retryable=True, error=f"lookup: {exc}")
            # The lookup will never work (e.g. the key may not call QuerySendDetails): an
            # emergency message sent twice is better than one never sent again.
            LOOKUPS.labels("unavailable").inc()
            log.warning(
                "sms lookup unavailable, resending",
                extra={"idempotency_key": message.idempotency_key, "error": str(exc)},
            )
            return None
        LOOKUPS.labels("found" if found else "not_found").inc()
        if found:
            return SendResult(ok=True, already_sent=True)
        return None

    async def find_out_id(self, phone: str, out_id: str, since_ms: int) -> bool:
        """Whether the provider accepted a message with this OutId for this phone since
        since_ms (QuerySendDetails of each day, page by page). Raises DeliveryQueryError."""
        now_ms = self._clock.now_ms()
        for day in provider_days(since_ms - LOOKUP_MARGIN_MS, now_ms):
            for page in range(1, LOOKUP_MAX_PAGES + 1):
                action = {
                    "Action": "QuerySendDetails",
                    "RegionId": REGION_ID,
                    "PhoneNumber": national_number(phone),
                    "SendDate": day,
                    "PageSize": str(LOOKUP_PAGE_SIZE),
                    "CurrentPage": str(page),
                }
                try:
                    response = await self._client.post(
                        self._settings.aliyun_sms_endpoint,
                        data=self._signed(action),
                        timeout=self._settings.provider_timeout_s,
                    )
                except httpx.HTTPError as exc:
                    raise DeliveryQueryError(f"network: {type(exc).__name__}") from exc
                found, total = sends_with_out_id(response.status_code, response.content, out_id)
                if found:
                    return True
                if page * LOOKUP_PAGE_SIZE >= total:
                    break
        return False

    def _finish(self, message: Message, result: SendResult) -> SendResult:
        return record_send(log, self.name, "sms", message, result, id_field="biz_id")

    async def query_delivery(self, phone: str, biz_id: str, sent_ms: int) -> DeliveryReport | None:
        """The delivery receipt of one sent SMS (QuerySendDetails), None if not known yet.

        Raises DeliveryQueryError if the provider cannot answer; the caller asks again later.
        """
        action = {
            "Action": "QuerySendDetails",
            "RegionId": REGION_ID,
            "PhoneNumber": phone,
            "BizId": biz_id,
            "SendDate": datetime.fromtimestamp(sent_ms / 1000, tz=PROVIDER_TZ).strftime("%Y%m%d"),
            "PageSize": "10",
            "CurrentPage": "1",
        }
        try:
            response = await self._client.post(
                self._settings.aliyun_sms_endpoint,
                data=self._signed(action),
                timeout=self._settings.provider_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise DeliveryQueryError(f"network: {type(exc).__name__}") from exc
        return interpret_details(response.status_code, response.content)

    async def aclose(self) -> None:
        """Nothing to release: the shared HTTP client belongs to the caller."""
