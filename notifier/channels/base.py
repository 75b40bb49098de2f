"""What every channel adapter offers the outbox sender."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from carewatch.logs import mask_phone
from carewatch.metrics import NOTIFICATIONS

# reply: the answer to an SMS reply (notifier.replies), sent outside the outbox
Purpose = Literal["alert", "handled", "closed", "reply"]

# Aliyun does not publish a hard OutId limit that we rely on; longer idempotency keys are
# replaced by their SHA-256 (64 hex chars), which is stable across retries.
OUT_ID_MAX_LEN = 64


def out_id_for(idempotency_key: str) -> str:
    """The OutId sent with a message (SMS, voice) and echoed in the provider's reports;
    stored with the notification (notifications.out_id) to match those reports."""
    if len(idempotency_key) <= OUT_ID_MAX_LEN:
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Message:
    """One notification to one recipient, rendered by the adapter in Simplified Chinese."""

    idempotency_key: str  # stable across retries; adapters pass it to the provider
    address: str  # phone number (sms) or WeCom userid (wecom)
    purpose: Purpose
    params: dict[str, str] = field(default_factory=dict)
    # params used by templates: elder_name, kind_label (e.g. "紧急呼叫"), address,
    # time (HH:MM), link (signed ack URL, WeCom), code (its short code, SMS), handler (who
    # is handling it)
    # Set when an earlier attempt may have been accepted by the provider (a timeout after
    # the request went out, a sender killed mid-send): epoch ms of that attempt's start.
    # An adapter whose provider does not de-duplicate (Aliyun SMS) checks before resending.
    unsure_since_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    provider_message_id: str | None = None
    retryable: bool = True  # False: a permanent error (bad number); do not retry
    error: str | None = None
    # The request may have reached the provider and been accepted (a read timeout, a
    # connection lost after sending): a resend must first check whether it was.
    ambiguous: bool = False
    # ok because an earlier attempt was found accepted (not sent again)
    already_sent: bool = False
    # a WeCom template card: its task_id and the response_code that can update it once
    card_task_id: str | None = None
    card_response_code: str | None = None


async def post_to_provider(
    client: httpx.AsyncClient,
    url: str,
    timeout_s: float,
    interpret: Callable[[int, bytes], SendResult],
    **request: Any,
) -> SendResult:
    """POST one send request to a provider; the provider's answer is `interpret`ed. The
    one rule for a request without an answer: one that never left this process (no
    connection) was certainly not accepted; after a timeout or a connection lost later it
    may have been, so the result is `ambiguous` and a resend looks it up first."""
    try:
        response = await client.post(url, timeout=timeout_s, **request)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return SendResult(ok=False, retryable=True, error=f"network: {type(exc).__name__}")
    except httpx.TimeoutException:
        return SendResult(ok=False, retryable=True, error="timeout", ambiguous=True)
    except httpx.HTTPError as exc:
        return SendResult(
            ok=False, retryable=True, error=f"network: {type(exc).__name__}", ambiguous=True
        )
    return interpret(response.status_code, response.content)


class Channel(Protocol):
    name: str  # "sms" | "wecom" | "voice" | "downlink"

    async def send(self, message: Message) -> SendResult: ...

    async def aclose(self) -> None: ...


def record_send(
    log: logging.Logger,
    channel: str,
    what: str,
    message: Message,
    result: SendResult,
    *,
    id_field: str,
) -> SendResult:
    """The one ending of every provider adapter's send: count the outcome
    (carewatch_notifications_total) and log it, the address masked; `id_field` names the
    provider's message id in the log (biz_id, call_id, serial_no, msgid)."""
    outcome = "ok" if result.ok else ("retryable" if result.retryable else "permanent")
    if result.already_sent:
        outcome = "already_sent"
    NOTIFICATIONS.labels(channel=channel, outcome=outcome).inc()
    log.log(
        logging.INFO if result.ok else logging.WARNING,
        "%s %s",
        what,
        outcome,
        extra={
            "channel": channel,
            "to": mask_phone(message.address),
            "purpose": message.purpose,
            "idempotency_key": message.idempotency_key,
            id_field: result.provider_message_id,
            "error": result.error,
        },
    )
    return result
