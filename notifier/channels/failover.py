"""SMS by two providers: Aliyun first, Tencent Cloud when Aliyun refuses or times out.

The same message goes by the other provider, never by both:

- Aliyun refused it for a reason of its own (server error, flow control, a connection
  that never opened): Tencent sends it at once.
- Aliyun timed out after the request went out: it may have been accepted. Its OutId is
  looked up (QuerySendDetails): found, it was sent (nothing more); not found, Tencent
  sends it; the lookup fails too, the attempt stays unsure and the next attempt looks
  again. Only an SMS unsure for longer than sms_failover_unsure_s whose lookup still
  fails goes by Tencent unchecked: an emergency message sent twice is better than one
  never sent (counted, carewatch_sms_failovers_total{result="unsure_timeout"}).
- A permanent refusal (a bad number) is final: Tencent would refuse it as well.

What this cannot see: an attempt at Tencent that timed out after its request went out.
Tencent is not looked up, so the next attempt (Aliyun again) may send a second SMS.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from notifier.channels.aliyun_sms import AliyunSmsChannel, DeliveryQueryError, out_id_for
from notifier.channels.base import Message, SendResult
from notifier.channels.tencent_sms import TencentSmsChannel
from notifier.metrics import SMS_FAILOVERS

log = logging.getLogger(__name__)

Lookup = Literal["found", "not_found", "unknown"]


class FailoverSmsChannel:
    name = "sms"

    def __init__(
        self,
        settings: Settings,
        primary: AliyunSmsChannel,
        secondary: TencentSmsChannel,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._primary = primary
        self._secondary = secondary
        self._clock = clock or SystemClock()

    async def send(self, message: Message) -> SendResult:
        if message.unsure_since_ms is not None:
            known = await self._lookup(message, message.unsure_since_ms)
            if known == "found":
                SMS_FAILOVERS.labels("found").inc()
                return SendResult(ok=True, already_sent=True)
            if known == "unknown":
                unsure_ms = self._clock.now_ms() - message.unsure_since_ms
                if unsure_ms < self._settings.sms_failover_unsure_s * 1000:
                    SMS_FAILOVERS.labels("waiting").inc()
                    return SendResult(
                        ok=False, retryable=True, error="unsure, and the lookup failed: waiting"
                    )
                return await self._by_secondary(message, "unsure_timeout", "lookup failed")
            message = dataclasses.replace(message, unsure_since_ms=None)  # looked up: not sent
        started_ms = self._clock.now_ms()
        result = await self._primary.send(message)
        if result.ok or not result.retryable:
            return result
        if result.ambiguous:
            known = await self._lookup(message, started_ms)
            if known == "found":
                SMS_FAILOVERS.labels("found").inc()
                return SendResult(ok=True, already_sent=True)
            if known == "unknown":
                SMS_FAILOVERS.labels("waiting").inc()
                return result  # unsure: the next attempt looks again
        return await self._by_secondary(message, "sent", result.error)

    async def _lookup(self, message: Message, since_ms: int) -> Lookup:
        out_id = out_id_for(message.idempotency_key)
        try:
            found = await self._primary.find_out_id(message.address, out_id, since_ms)
        except DeliveryQueryError as exc:
            # an answer that will never change (no permission): as if not found, the way
            # the Aliyun adapter resends in that case
            return "unknown" if exc.retryable else "not_found"
        return "found" if found else "not_found"

    async def _by_secondary(self, message: Message, label: str, why: str | None) -> SendResult:
        result = await self._secondary.send(message)
        SMS_FAILOVERS.labels(label if result.ok else "failed").inc()
        log.warning(
            "sms failover",
            extra={
                "idempotency_key": message.idempotency_key,
                "primary_error": why,
                "secondary_ok": result.ok,
                "secondary_error": result.error,
            },
        )
        if result.ok:
            return result
        # the primary may recover: retry the pair later, whatever Tencent said
        return SendResult(
            ok=False,
            retryable=True,
            error=f"aliyun: {why}; tencent: {result.error}",
            ambiguous=result.ambiguous,
        )

    async def aclose(self) -> None:
        await self._primary.aclose()
        await self._secondary.aclose()
