"""The notification outbox: written before anything is sent, leased, sent, recorded.

Rows go into `notifications` inside the transaction that decided them, deduplicated by
idempotency key, already leased to the process that decided them (next_attempt_at past
the send), which sends them as soon as that transaction commits. Any number of senders
poll for due rows (retries, and rows whose sender died) with FOR UPDATE SKIP LOCKED and
lease them the same way; a sender that dies mid-send leaves its rows to be claimed again
when the lease runs out (at-least-once, and the provider sees the same idempotency key).

An attempt whose outcome is unknown (a timeout after the request went out; a sender that
died mid-send, seen by the next claim as an attempt still marked in flight) makes the row
"unsure": every later attempt carries `Message.unsure_since_ms`, and an adapter whose
provider does not de-duplicate looks the message up before sending it again.

Failures back off exponentially (at most outbox_retry_max_interval_s apart) until
outbox_max_attempts; permanent errors fail at once. An alert message of an alert that is
still open (or acknowledged, for one queued after the acknowledgement: a press passed on to
the handler) is never given up for a transient error: it is retried at the capped interval
for as long as that lasts, and each such overdue retry is counted for the platform's
on-call (carewatch_outbox_overdue_retries_total). An alert message queued before its alert
was acknowledged or closed is not sent at all (`Claimed.stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from carewatch.alerts import Alert, device_clock_off
from carewatch.clock import Clock, SystemClock
from carewatch.metrics import E2E_LATENCY
from carewatch.settings import Settings
from notifier import short_links, sql, timeline
from notifier.channels.base import Channel, Message, Purpose, SendResult, out_id_for
from notifier.metrics import LATENCY_SKIPPED, OUTBOX_OUTCOMES, OUTBOX_OVERDUE
from notifier.targets import Recipient

log = logging.getLogger(__name__)

Outcome = Literal["sent", "retry", "failed", "cancelled"]
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
    alert_status: str = "open"
    opened_ms: int | None = None  # when the server opened the alert
    # start of the first attempt that may have been accepted; None: none may have been
    unsure_since_ms: int | None = None
    # an alert message queued before its alert was acknowledged or closed: never sent
    stale: bool = False

    @property
    def first_round(self) -> bool:
        """Of the alert's first escalation round: its key has no 'r{n}:' part. Later rounds
        (reminders, presses passed on) are not measured from the alert's device time."""
        return not self.idempotency_key.split(":", 2)[1].startswith("r")

    @property
    def keeps_trying(self) -> bool:
        """An alert message of an alert still waiting for help: retried past
        outbox_max_attempts (a stale one is not sent at all)."""
        return self.purpose == "alert" and self.alert_status in ("open", "acknowledged")


# --- pure ------------------------------------------------------------------------------


def retry_delay_s(attempts: int, base_s: float, max_s: float = MAX_BACKOFF_S) -> float:
    """Exponential backoff after the `attempts`-th failed attempt: base, 2 base, 4 base...,
    at most max_s (a cap on the rate of retries, not on how long they go on)."""
    return min(max_s, MAX_BACKOFF_S, base_s * 2.0 ** min(64, max(0, attempts - 1)))


def outcome_of(
    result: SendResult, attempts: int, max_attempts: int, *, keep_trying: bool = False
) -> Outcome:
    """sent, retry or failed; `keep_trying` (an alert message of an alert still waiting for
    help) retries a transient failure whatever the number of attempts."""
    if result.ok:
        return "sent"
    if not result.retryable or (attempts >= max_attempts and not keep_trying):
        return "failed"
    return "retry"


# --- writing ---------------------------------------------------------------------------


# All of a step's rows in one statement (and their short codes in one more): a step
# inserted its notifications one by one, two round trips each, inside the transaction
# every SOS waits for; under load each round trip is another wait for a core.
_INSERT = """
INSERT INTO notifications (idempotency_key, alert_id, step, purpose, channel,
    recipient_kind, recipient_id, recipient_name, address, params, next_attempt_at, attempts,
    attempt_started_at, out_id)
SELECT n.idempotency_key, n.alert_id::uuid, n.step, n.purpose, n.channel,
       n.recipient_kind, n.recipient_id, n.recipient_name, n.address, n.params, %s, %s,
       %s, n.out_id
FROM jsonb_to_recordset(%s::jsonb) AS n(
    ord int, idempotency_key text, alert_id text, step int, purpose text, channel text,
    recipient_kind text, recipient_id text, recipient_name text, address text, params jsonb,
    out_id text)
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
    alert: Alert,
    items: Sequence[NewNotification],
    lease_until_ms: int,
    *,
    now_ms: int | None = None,
) -> list[Claimed]:
    """Insert notifications already leased to the caller, which sends them as soon as
    its transaction commits (OutboxSender.send_leased).

    Claiming them after the commit was a statement and a commit of its own, 1-2 ms on
    every SOS (measured at no load). A caller that dies before sending leaves them as a
    sender that dies mid-send does: claimed again once the lease runs out."""
    started_ms = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
    new = await _insert(conn, items, lease_until_ms, attempts=1, started_ms=started_ms)
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
            alert_status=alert.status,
            opened_ms=alert.opened_ms,
        )
        for row_id, n in new
    ]


async def _insert(
    conn: AsyncConnection[Any],
    items: Sequence[NewNotification],
    next_attempt_ms: int,
    *,
    attempts: int,
    started_ms: int | None = None,
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
            "out_id": out_id_for(n.idempotency_key),  # echoed in the provider's reports
        }
        for i, n in enumerate(items)
    ]
    inserted = {
        str(r["idempotency_key"]): int(r["id"])
        for r in await sql.rows(
            conn,
            _INSERT,
            (
                timeline.from_ms(next_attempt_ms),
                attempts,
                # a leased row is in flight from now: if its sender dies, the next claim
                # knows the attempt may have been accepted
                None if started_ms is None else timeline.from_ms(started_ms),
                Jsonb(rows),
            ),
        )
    }
    new = [n for n in items if n.idempotency_key in inserted]
    # only with a new row: a duplicate's code was never sent to anyone
    await short_links.remember_all(conn, [n.params for n in new])
    return [(inserted[n.idempotency_key], n) for n in new]


async def cancel_pending(
    conn: AsyncConnection[Any], alert_id: str, purposes: Sequence[Purpose] | None = None
) -> int:
    """Cancel the alert's pending rows (of these purposes; all when None): a retry not yet
    made never goes out. A row in flight is still sent, and recorded as such."""
    cur = await conn.execute(
        "UPDATE notifications SET status = 'cancelled' WHERE alert_id = %s AND status = 'pending'"
        " AND (%s::text[] IS NULL OR purpose = ANY(%s::text[]))",
        (
            alert_id,
            None if purposes is None else list(purposes),
            None if purposes is None else list(purposes),
        ),
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
SET attempts = n.attempts + 1, next_attempt_at = %(lease_until)s,
    -- still set: the previous attempt died in flight, and may have been accepted
    unsure_since = COALESCE(n.unsure_since, n.attempt_started_at),
    attempt_started_at = %(now)s
FROM due, alerts a
WHERE n.id = due.id AND a.id = n.alert_id
RETURNING n.id, n.idempotency_key, n.alert_id::text AS alert_id, n.step, n.purpose, n.channel,
          n.recipient_kind, n.recipient_id, n.address, n.params, n.attempts,
          a.kind AS alert_kind, a.device_time, a.status AS alert_status, n.unsure_since,
          a.opened_at,
          -- an alert message queued before the alert was acknowledged or closed: a retry
          -- must not tell anyone to come after someone has (issue 14, item 8)
          n.purpose = 'alert' AND (a.status IN ('resolved', 'cancelled', 'false_alarm')
              OR (a.status = 'acknowledged'
                  AND n.created_at < COALESCE(a.acknowledged_at, 'infinity'))) AS stale
"""


# After an attempt whose request may have been accepted (parameter: SendResult.ambiguous),
# the row is unsure from that attempt's start on.
_RETRY = """
UPDATE notifications SET last_error = %s, next_attempt_at = %s,
    unsure_since = CASE WHEN %s THEN COALESCE(unsure_since, attempt_started_at)
                        ELSE unsure_since END,
    attempt_started_at = NULL
WHERE id = %s AND status = 'pending'
"""
_FAIL = """
UPDATE notifications SET status = 'failed', last_error = %s,
    unsure_since = CASE WHEN %s THEN COALESCE(unsure_since, attempt_started_at)
                        ELSE unsure_since END,
    attempt_started_at = NULL
WHERE id = %s AND status = 'pending'
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
        # awaited after a send, before its record: the notifier worker lets the alert
        # change in hand go first (carewatch.alarm_priority.AlarmPriority.pause)
        self.before_record: Callable[[], Awaitable[None]] | None = None

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
                **{
                    k: v
                    for k, v in r.items()
                    if k not in ("device_time", "unsure_since", "opened_at")
                },
                device_time_ms=timeline.to_ms(r["device_time"]),
                opened_ms=timeline.to_ms(r["opened_at"]),
                unsure_since_ms=(
                    None if r["unsure_since"] is None else timeline.to_ms(r["unsure_since"])
                ),
            )
            for r in rows
        ]

    async def deliver(self, row: Claimed) -> Outcome:
        """Send one claimed row and record the result; never raises for a provider error."""
        if row.stale:
            return await self._cancel_stale(row)
        result = await self._send(row)
        max_attempts = self.settings.outbox_max_attempts
        outcome = outcome_of(result, row.attempts, max_attempts, keep_trying=row.keeps_trying)
        OUTBOX_OUTCOMES.labels(row.channel, outcome).inc()
        if outcome == "retry" and row.attempts >= max_attempts:
            OUTBOX_OVERDUE.labels(row.channel).inc()
        if self.before_record is not None:
            await self.before_record()
        now = self.clock.now_ms()
        # The attempt is over: no longer in flight; if it may have been accepted, the row is
        # unsure from its start on.
        async with self.pool.connection() as conn, conn.transaction():
            if outcome == "sent":
                # A row cancelled while in flight was still sent: keep 'cancelled' but record it.
                # A call whose report came before this (notifier.receipts: nobody answered,
                # dial again) was re-armed, its attempt no longer in flight: keep it pending.
                await conn.execute(
                    "UPDATE notifications SET status = CASE WHEN status = 'pending'"
                    " AND attempt_started_at IS NOT NULL THEN 'sent' ELSE status END, sent_at = %s, provider_message_id = %s,"
                    " card_task_id = coalesce(%s, card_task_id),"
                    " card_response_code = coalesce(%s, card_response_code),"
                    " last_error = NULL, attempt_started_at = NULL WHERE id = %s",
                    (
                        timeline.from_ms(now),
                        result.provider_message_id,
                        result.card_task_id,
                        result.card_response_code,
                        row.id,
                    ),
                )
            elif outcome == "retry":
                delay = retry_delay_s(
                    row.attempts,
                    self.settings.outbox_backoff_base_s,
                    self.settings.outbox_retry_max_interval_s,
                )
                await conn.execute(
                    _RETRY,
                    (
                        result.error,
                        timeline.from_ms(now + int(delay * 1000)),
                        result.ambiguous,
                        row.id,
                    ),
                )
            else:
                await conn.execute(
                    _FAIL,
                    (result.error, result.ambiguous, row.id),
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
                        **({"already_sent": True} if result.already_sent else {}),
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

    def _observe_latency(self, row: Claimed) -> None:
        """Device time of the event to this first request: not for a device whose clock is
        off (a wristband hours ahead or behind would put its skew into the histogram and
        fire CarewatchE2ELatencyHigh); those are counted instead."""
        if device_clock_off(
            row.device_time_ms, row.opened_ms, self.settings.device_clock_max_skew_s
        ):
            LATENCY_SKIPPED.labels(row.alert_kind, "device_clock").inc()
            return
        latency_s = (self.clock.now_ms() - row.device_time_ms) / 1000
        E2E_LATENCY.labels(row.alert_kind, row.channel).observe(max(0.0, latency_s))

    async def _cancel_stale(self, row: Claimed) -> Outcome:
        """An alert message whose alert was acknowledged or closed after it was queued (by a
        path that has not stopped the escalation yet): cancelled, not sent."""
        OUTBOX_OUTCOMES.labels(row.channel, "cancelled").inc()
        now = self.clock.now_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE notifications SET status = 'cancelled', attempts = attempts - 1,"
                " attempt_started_at = NULL WHERE id = %s AND status = 'pending'",
                (row.id,),
            )
            await timeline.append(
                conn,
                row.alert_id,
                "notifications_cancelled",
                {"count": 1, "notification_id": row.id, "alert_status": row.alert_status},
                at_ms=now,
            )
        log.info(
            "stale alert message cancelled",
            extra={"notification_id": row.id, "alert_id": row.alert_id, "channel": row.channel},
        )
        return "cancelled"

    async def _send(self, row: Claimed) -> SendResult:
        channel = self.channels.get(row.channel)
        if channel is None:
            return SendResult(ok=False, retryable=False, error=f"no channel {row.channel!r}")
        if row.step == 0 and row.purpose == "alert" and row.attempts == 1 and row.first_round:
            self._observe_latency(row)
        message = Message(
            row.idempotency_key,
            row.address,
            row.purpose,
            dict(row.params),
            unsure_since_ms=row.unsure_since_ms,
        )
        try:
            return await channel.send(message)
        except Exception as exc:  # an adapter bug must not stop the sender; retry later
            log.exception("channel raised", extra={"channel": row.channel})
            return SendResult(
                ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}", ambiguous=True
            )

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
