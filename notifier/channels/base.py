"""What every channel adapter offers the outbox sender."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Purpose = Literal["alert", "handled", "closed"]


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


class Channel(Protocol):
    name: str  # "sms" | "wecom"

    async def send(self, message: Message) -> SendResult: ...

    async def aclose(self) -> None: ...
