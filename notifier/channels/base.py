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


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    provider_message_id: str | None = None
    retryable: bool = True  # False: a permanent error (bad number); do not retry
    error: str | None = None


class Channel(Protocol):
    name: str  # "sms" | "wecom"

    async def send(self, message: Message) -> SendResult: ...

    async def aclose(self) -> None: ...
