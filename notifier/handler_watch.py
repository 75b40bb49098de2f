"""After an acknowledgement: the person handling an alert is kept informed and watched.

Once somebody has pressed 我来处理 the escalation stops, but the elder may press again and
the person may never arrive (issue 14, item 5). For every acknowledged alert whose watch
the notifier armed (`escalation.watch_handler`, reached by every acknowledgement path):

- a new press (the rules engine folds it into the alert: `alerts.updates`, timeline
  'repeated') is passed on to the person handling it, at most once per
  handler_press_min_interval_s;
- without 已到达 (timeline 'arrived') after handler_remind_after_s they are reminded, and
  after handler_escalate_after_s the nearest staffed station and the duty officer are
  alerted (`notifier.policies.handler_check`, pure, with the injected clock).

Each batch of messages is a new escalation round (its own idempotency keys), written with
its timeline entry in one transaction and handed to the sender after the commit, like
every escalation step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from carewatch.alerts import Alert
from notifier import outbox, sql, targets, timeline
from notifier.content import message_params
from notifier.escalation import load_alert
from notifier.loop import NotifierLoop
from notifier.outbox import Claimed, NewNotification
from notifier.policies import (
    BOTH_CHANNELS,
    HANDLER_ESCALATION_TARGETS,
    handler_check,
    pass_on_press,
)
from notifier.sql import Conn
from notifier.targets import Recipient

log = logging.getLogger(__name__)

_DUE = """
SELECT e.alert_id::text AS alert_id, e.presses_seen, e.handler_stage, e.handler_check_at,
       e.handler_notified_at, a.updates, a.acknowledged_at, a.acknowledged_by,
       EXISTS (SELECT 1 FROM alert_events v
               WHERE v.alert_id = a.id AND v.action = 'arrived') AS arrived
FROM escalations e JOIN alerts a ON a.id = e.alert_id
WHERE e.presses_seen IS NOT NULL AND a.status = 'acknowledged'
  AND (e.handler_check_at <= %(now)s
       OR (a.updates > e.presses_seen
           AND (e.handler_notified_at IS NULL OR e.handler_notified_at <= %(press_ok)s)))
ORDER BY e.alert_id
LIMIT %(limit)s
FOR UPDATE OF e SKIP LOCKED
"""


class HandlerWatcher(NotifierLoop):
    async def run_due(self) -> int:
        """Act on every watched alert with a new press or a due arrival check; how many."""
        s = self.settings
        now = self.clock.now_ms()
        queued: list[Claimed] = []
        async with self.pool.connection() as conn, conn.transaction():
            due = await sql.rows(
                conn,
                _DUE,
                {
                    "now": timeline.from_ms(now),
                    "press_ok": timeline.from_ms(now - int(s.handler_press_min_interval_s * 1000)),
                    "limit": self.batch_size,
                },
            )
            for row in due:
                queued += await self._act(conn, row, now)
        self.sender.send_leased(queued)
        return len(due)

    async def _act(self, conn: Conn, row: dict[str, Any], now: int) -> list[Claimed]:
        s = self.settings
        alert = await load_alert(conn, row["alert_id"])
        if alert is None:
            return []
        queued: list[Claimed] = []
        notified_ms = (
            timeline.to_ms(row["handler_notified_at"]) if row["handler_notified_at"] else None
        )
        presses_seen = row["presses_seen"]
        if row["updates"] > presses_seen and pass_on_press(
            notified_ms, self.clock, s.handler_press_min_interval_s
        ):
            # the press happened about now: the message says so
            pressed = dataclasses.replace(alert, device_time_ms=now, opened_ms=now)
            queued += await self._to_handler(conn, pressed, row, "pressed_again", now)
            presses_seen = row["updates"]
        stage = row["handler_stage"]
        check_at = row["handler_check_at"]
        if check_at is not None and timeline.to_ms(check_at) <= now:
            acked_ms = timeline.to_ms(row["acknowledged_at"]) if row["acknowledged_at"] else now
            check = handler_check(
                acked_ms,
                row["arrived"],
                stage,
                self.clock,
                s.handler_remind_after_s,
                s.handler_escalate_after_s,
            )
            if check.action == "remind":
                queued += await self._to_handler(conn, alert, row, "not_arrived", now)
            elif check.action == "escalate":
                queued += await self._escalate(conn, alert, row, now)
            stage = check.stage
            check_at = (
                None if check.next_check_ms is None else timeline.from_ms(check.next_check_ms)
            )
        await conn.execute(
            "UPDATE escalations SET presses_seen = %s, handler_stage = %s,"
            " handler_check_at = %s WHERE alert_id = %s",
            (presses_seen, stage, check_at, alert.id),
        )
        return queued

    async def _to_handler(
        self, conn: Conn, alert: Alert, row: dict[str, Any], reason: str, now: int
    ) -> list[Claimed]:
        kind, _, rid = (row["acknowledged_by"] or "").partition(":")
        handler = await targets.load_recipient(conn, kind, rid)
        if handler is None:  # an operator in the control room: nobody to message
            await timeline.append(
                conn,
                alert.id,
                "handler_renotified",
                {"reason": reason, "handler": row["acknowledged_by"], "notifications": 0},
                at_ms=now,
            )
            return []
        queued = await self._enqueue(conn, alert, [handler], now)
        await conn.execute(
            "UPDATE escalations SET handler_notified_at = %s WHERE alert_id = %s",
            (timeline.from_ms(now), alert.id),
        )
        await timeline.append(
            conn,
            alert.id,
            "handler_renotified",
            {
                "reason": reason,
                "handler": row["acknowledged_by"],
                "presses": row["updates"],
                "notifications": len(queued),
            },
            at_ms=now,
        )
        log.info(
            "handler renotified",
            extra={"alert_id": alert.id, "reason": reason, "notifications": len(queued)},
        )
        return queued

    async def _escalate(
        self, conn: Conn, alert: Alert, row: dict[str, Any], now: int
    ) -> list[Claimed]:
        elder = await targets.load_elder(conn, alert.elder_id)
        if elder is None:
            return []
        # a local date and time, not a time alone: duty rosters and leave substitutes apply
        local = targets.local_time(now, self.settings.timezone)
        found = await targets.resolve(conn, elder, HANDLER_ESCALATION_TARGETS, local)
        queued = await self._enqueue(conn, alert, found, now)
        await timeline.append(
            conn,
            alert.id,
            "handler_escalated",
            {
                "reason": "not_arrived",
                "handler": row["acknowledged_by"],
                "targets": list(HANDLER_ESCALATION_TARGETS),
                "recipients": [f"{r.kind}:{r.id}" for r in found],
                "notifications": len(queued),
            },
            at_ms=now,
        )
        log.warning(
            "handler did not arrive, escalated",
            extra={"alert_id": alert.id, "notifications": len(queued)},
        )
        return queued

    async def _enqueue(
        self, conn: Conn, alert: Alert, recipients: list[Recipient], now: int
    ) -> list[Claimed]:
        """Alert messages to these recipients, as a new round of the escalation."""
        elder = await targets.load_elder(conn, alert.elder_id)
        if elder is None or not recipients:
            return []
        round_row = await sql.one(
            conn,
            "UPDATE escalations SET round = round + 1 WHERE alert_id = %s RETURNING round",
            (alert.id,),
        )
        round_ = int(round_row["round"]) if round_row else 1
        items = [
            NewNotification(
                alert.id, 0, "alert", channel, r, address,
                message_params(self.settings, alert, elder, r, "alert", now),
                round_,
            )
            for r in recipients
            for channel in BOTH_CHANNELS
            if (address := r.address(channel))
        ]  # fmt: skip
        return await outbox.enqueue_leased(
            conn, alert, items, self.sender.lease_until_ms(), now_ms=now
        )

    async def run(self, stop: asyncio.Event) -> None:
        poll_s = self.settings.outbox_poll_ms / 1000
        while not stop.is_set():
            await self.priority.pause()  # alert changes first
            try:
                acted = await self.run_due()
            except Exception:
                log.exception("handler watch poll failed")
                acted = 0
            if acted < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
