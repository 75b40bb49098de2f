"""The notification outbox: written before anything is sent, leased, sent, recorded.

Rows go into `notifications` inside the transaction that decided them, deduplicated by
idempotency key, already leased to the process that decided them (next_attempt_at past
the send), which sends them as soon as that transaction commits. Any number of senders
poll for due rows (retries, and rows whose sender died) with FOR UPDATE SKIP LOCKED and
lease them the same way; a sender that dies mid-send leaves its rows to be claimed again
when the lease runs out (at-least-once, and the provider sees the same idempotency key).
Failures back off exponentially until outbox_max_attempts; permanent errors fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock, SystemClock
from carewatch.metrics import E2E_LATENCY
from carewatch.settings import Settings
from notifier import short_links, sql, timeline
from notifier.channels.base import Channel, Message, Purpose, SendResult
from notifier.content import AlertInfo
from notifier.metrics import OUTBOX_OUTCOMES
from notifier.targets import Recipient

log = logging.getLogger(__name__)

Outcome = Literal["sent", "retry", "failed"]
MAX_BACKOFF_S = 3600.0


@dataclass(frozen=True, slots=True)
class NewNotification:
    alert_id: str
    step: int
    purpose: Purpose
    channel: str
    recipient: Recipient
    address: str
    params: dict[str, str]
    round: int = 0  # escalation round: reminders and raised severities start a new one

    @property
    def idempotency_key(self) -> str:
        r = self.recipient
        step = f"r{self.round}:{self.step}" if self.round else str(self.step)
        return f"{self.alert_id}:{step}:{self.purpose}:{r.kind}:{r.id}:{self.channel}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A leased row, joined with what the latency metric needs from its alert."""

    id: int
    idempotency_key: str
    alert_id: str
    step: int
    purpose: Purpose
    channel: str
    recipient_kind: str
    recipient_id: str
    address: str
    params: dict[str, str]
    attempts: int  # including this one
    alert_kind: str
    device_time_ms: int


# --- pure ------------------------------------------------------------------------------


def retry_delay_s(attempts: int, base_s: float) -> float:
    """Exponential backoff after the `attempts`-th failed attempt: base, 2 base, 4 base..."""
    return min(MAX_BACKOFF_S, base_s * 2.0 ** max(0, attempts - 1))


def outcome_of(result: SendResult, attempts: int, max_attempts: int) -> Outcome:
    if result.ok:
        return "sent"
    if not result.retryable or attempts >= max_attempts:
        return "failed"
    return "retry"


# --- writing ---------------------------------------------------------------------------


# All of a step's rows in one statement (and their short codes in one more): a step
# inserted its notifications one by one, two round trips each, inside the transaction
# every SOS waits for; under load each round trip is another wait for a core.
_INSERT = """
INSERT INTO notifications (idempotency_key, alert_id, step, purpose, channel,
    recipient_kind, recipient_id, recipient_name, address, params, next_attempt_at, attempts)
SELECT n.idempotency_key, n.alert_id::uuid, n.step, n.purpose, n.channel,
       n.recipient_kind, n.recipient_id, n.recipient_name, n.address, n.params, %s, %s
FROM jsonb_to_recordset(%s::jsonb) AS n(
    ord int, idempotency_key text, alert_id text, step int, purpose text, channel text,
    recipient_kind text, recipient_id text, recipient_name text, address text, params jsonb)
ORDER BY n.ord
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, idempotency_key
"""


async def enqueue(
    conn: AsyncConnection[Any], items: Sequence[NewNotification], now_ms: int
) -> list[int]:
    """Insert notifications due now, for any sender's next poll (duplicates by
    idempotency key are skipped); new row ids, in the order of `items`."""
    return [row_id for row_id, _ in await _insert(conn, items, now_ms, attempts=0)]


async def enqueue_leased(
    conn: AsyncConnection[Any],
    alert: AlertInfo,
    items: Sequence[NewNotification],
    lease_until_ms: int,
) -> list[Claimed]:
    """Insert notifications already leased to the caller, which sends them as soon as
    its transaction commits (OutboxSender.send_leased).

    Claiming them after the commit was a statement and a commit of its own, 1-2 ms on
    every SOS (measured at no load). A caller that dies before sending leaves them as a
    sender that dies mid-send does: claimed again once the lease runs out."""
    new = await _insert(conn, items, lease_until_ms, attempts=1)
    return [
        Claimed(
            id=row_id,
            idempotency_key=n.idempotency_key,
            alert_id=n.alert_id,
            step=n.step,
            purpose=n.purpose,
            channel=n.channel,
            recipient_kind=n.recipient.kind,
            recipient_id=n.recipient.id,
            address=n.address,
            params=n.params,
            attempts=1,
            alert_kind=alert.kind,
            device_time_ms=alert.device_time_ms,
        )
        for row_id, n in new
    ]


async def _insert(
    conn: AsyncConnection[Any],
    items: Sequence[NewNotification],
    next_attempt_ms: int,
    *,
    attempts: int,
) -> list[tuple[int, NewNotification]]:
    """Insert the rows and the short ack codes in their parameters; (id, item) of the
    new rows, in the order of `items`."""
    if not items:
        return []
    rows = [
        {
            "ord": i,  # ids in the order of `items`
            "idempotency_key": n.idempotency_key,
            "alert_id": n.alert_id,
            "step": n.step,
            "purpose": n.purpose,
            "channel": n.channel,
            "recipient_kind": n.recipient.kind,
            "recipient_id": n.recipient.id,
            "recipient_name": n.recipient.name,
            "address": n.address,
            "params": n.params,
        }
        for i, n in enumerate(items)
    ]
    inserted = {
        str(r["idempotency_key"]): int(r["id"])
        for r in await sql.rows(
            conn, _INSERT, (timeline.from_ms(next_attempt_ms), attempts, Jsonb(rows))
        )
    }
    new = [n for n in items if n.idempotency_key in inserted]
    # only with a new row: a duplicate's code was never sent to anyone
    await short_links.remember_all(conn, [n.params for n in new])
    return [(inserted[n.idempotency_key], n) for n in new]


async def cancel_pending(conn: AsyncConnection[Any], alert_id: str) -> int:
    cur = await conn.execute(
        "UPDATE notifications SET status = 'cancelled' WHERE alert_id = %s AND status = 'pending'",
        (alert_id,),
    )
    return cur.rowcount


_CLAIM = """
WITH due AS (
    SELECT id FROM notifications
    WHERE status = 'pending' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n
SET attempts = n.attempts + 1, next_attempt_at = %(lease_until)s
FROM due, alerts a
WHERE n.id = due.id AND a.id = n.alert_id
RETURNING n.id, n.idempotency_key, n.alert_id::text AS alert_id, n.step, n.purpose, n.channel,
          n.recipient_kind, n.recipient_id, n.address, n.params, n.attempts,
          a.kind AS alert_kind, a.device_time
"""


class OutboxSender:
    """Claims due rows and sends them through the channel each row names."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        channels: Mapping[str, Channel],
        settings: Settings,
        clock: Clock | None = None,
        batch_size: int = 100,
    ) -> None:
        self.pool = pool
        self.channels = channels
        self.settings = settings
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self._inflight: set[asyncio.Task[None]] = set()

    def lease_until_ms(self) -> int:
        """Until when a row claimed (or enqueued leased) now is this sender's."""
        return self.clock.now_ms() + int(self.settings.outbox_lease_s * 1000)

    async def claim(self) -> list[Claimed]:
        """Lease up to batch_size due rows to this sender."""
        params = {
            "now": timeline.from_ms(self.clock.now_ms()),
            "lease_until": timeline.from_ms(self.lease_until_ms()),
            "limit": self.batch_size,
        }
        async with self.pool.connection() as conn:
            rows = await sql.rows(conn, _CLAIM, params)
        return [
            Claimed(
                **{k: v for k, v in r.items() if k != "device_time"},
                device_time_ms=timeline.to_ms(r["device_time"]),
            )
            for r in rows
        ]

    async def deliver(self, row: Claimed) -> Outcome:
        """Send one claimed row and record the result; never raises for a provider error."""
        result = await self._send(row)
        outcome = outcome_of(result, row.attempts, self.settings.outbox_max_attempts)
        OUTBOX_OUTCOMES.labels(row.channel, outcome).inc()
        now = self.clock.now_ms()
        async with self.pool.connection() as conn, conn.transaction():
            if outcome == "sent":
                # A row cancelled while in flight was still sent: keep 'cancelled' but record it.
                await conn.execute(
                    "UPDATE notifications SET status = CASE WHEN status = 'pending'"
                    " THEN 'sent' ELSE status END, sent_at = %s, provider_message_id = %s,"
                    " last_error = NULL WHERE id = %s",
                    (timeline.from_ms(now), result.provider_message_id, row.id),
                )
            elif outcome == "retry":
                delay = retry_delay_s(row.attempts, self.settings.outbox_backoff_base_s)
                await conn.execute(
                    "UPDATE notifications SET last_error = %s, next_attempt_at = %s"
                    " WHERE id = %s AND status = 'pending'",
                    (result.error, timeline.from_ms(now + int(delay * 1000)), row.id),
                )
            else:
                await conn.execute(
                    "UPDATE notifications SET status = 'failed', last_error = %s"
                    " WHERE id = %s AND status = 'pending'",
                    (result.error, row.id),
                )
            if outcome != "retry":
                await timeline.append(
                    conn,
                    row.alert_id,
                    "notified" if outcome == "sent" else "notification_failed",
                    {
                        "notification_id": row.id,
                        "purpose": row.purpose,
                        "channel": row.channel,
                        "recipient": f"{row.recipient_kind}:{row.recipient_id}",
                        "step": row.step,
                        "attempts": row.attempts,
                        "provider_message_id": result.provider_message_id,
                        "error": result.error,
                    },
                    at_ms=now,
                )
        log.log(
            logging.WARNING if outcome == "failed" else logging.INFO,
            "notification %s",
            outcome,
            extra={
                "notification_id": row.id,
                "alert_id": row.alert_id,
                "channel": row.channel,
                "purpose": row.purpose,
                "recipient": f"{row.recipient_kind}:{row.recipient_id}",
                "attempts": row.attempts,
                "error": result.error,
            },
        )
        return outcome

    async def _send(self, row: Claimed) -> SendResult:
        channel = self.channels.get(row.channel)
        if channel is None:
            return SendResult(ok=False, retryable=False, error=f"no channel {row.channel!r}")
        if row.step == 0 and row.purpose == "alert" and row.attempts == 1:
            latency_s = (self.clock.now_ms() - row.device_time_ms) / 1000
            E2E_LATENCY.labels(row.alert_kind, row.channel).observe(max(0.0, latency_s))
        message = Message(row.idempotency_key, row.address, row.purpose, dict(row.params))
        try:
            return await channel.send(message)
        except Exception as exc:  # an adapter bug must not stop the sender; retry later
            log.exception("channel raised", extra={"channel": row.channel})
            return SendResult(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")

    async def send_due(self) -> int:
        """Claim a batch of due rows and send them concurrently."""
        rows = await self.claim()
        await asyncio.gather(*(self.deliver(r) for r in rows))
        return len(rows)

    def send_leased(self, rows: Sequence[Claimed]) -> None:
        """Send rows enqueued leased to this sender (`enqueue_leased`), once their
        transaction has committed: now, not at the next poll."""
        if not rows:
            return
        task = asyncio.create_task(self._send_now(list(rows)))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send_now(self, rows: list[Claimed]) -> None:
        try:
            await asyncio.gather(*(self.deliver(r) for r in rows))
        except Exception:  # retried once the lease runs out
            log.exception("immediate send failed", extra={"notification_ids": [r.id for r in rows]})

    async def run(self, stop: asyncio.Event) -> None:
        """Poll for due rows every outbox_poll_ms until `stop`."""
        poll_s = self.settings.outbox_poll_ms / 1000
        while not stop.is_set():
            try:
                claimed = await self.send_due()
            except Exception:
                log.exception("outbox poll failed")
                claimed = 0
            if claimed < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)

    async def drain(self) -> None:
        """Wait for immediate sends still in flight (shutdown)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
