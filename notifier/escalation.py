"""Escalation: from an alert change to outbox rows, step by step, until somebody acts.

Every decision is written in one transaction with what caused it: the processed change
id (notifier_inbox), the escalation state, the outbox rows and the alert timeline. Only
after the commit are the new rows handed to the sender, so a crash loses nothing: the
change is redelivered (and recognised), the rows are polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec

from carewatch import alerts
from carewatch.alerts import Alert
from carewatch.messages import CLOSED_STATUSES, AlertChange, decode_alert_change, encode
from carewatch.metrics import ESCALATION_LAST_STEP, ESCALATION_STEPS
from carewatch.settings import Settings
from notifier import duty_db, outbox, short_links, sql, targets, timeline
from notifier.channels.base import Purpose
from notifier.content import message_params
from notifier.loop import NotifierLoop
from notifier.metrics import ALERT_CHANGE_REJECTS
from notifier.outbox import Claimed, NewNotification
from notifier.policies import (
    Policy,
    plan_step,
    policy_for,
    policy_named,
    select_policy,
    step_channels,
)
from notifier.rosters import allowed_channels
from notifier.sql import Conn
from notifier.targets import Elder, Recipient

log = logging.getLogger(__name__)

ChangeAction = Callable[[Conn, Alert, AlertChange], Awaitable[list[Claimed]]]

# --- shared by the worker and the ack app ----------------------------------------------------


async def load_alert(conn: Conn, alert_id: str, *, for_update: bool = False) -> Alert | None:
    return await alerts.load(conn, alert_id, for_update=for_update)


async def stop_escalation(conn: Conn, alert_id: str, reason: str, now_ms: int) -> bool:
    """Stop further steps and cancel the alert messages not sent yet (a retry due later
    must not ask anyone to come once someone is on the way; 'handled' and 'closed'
    notices are kept); False when the escalation was already stopped (or never started).

    Every path that acknowledges or closes an alert reaches this: the ack app directly,
    the operator API and the rules engine through the alert change the notifier handles.
    Until then the sender itself does not send an alert message of an alert acknowledged
    or closed after it was queued (`Claimed.stale`)."""
    cur = await conn.execute(
        "UPDATE escalations SET next_step_at = NULL, stopped_at = %s, stopped_reason = %s"
        " WHERE alert_id = %s AND stopped_at IS NULL",
        (timeline.from_ms(now_ms), reason, alert_id),
    )
    stopped = cur.rowcount > 0
    if stopped:
        await timeline.append(
            conn, alert_id, "escalation_stopped", {"reason": reason}, at_ms=now_ms
        )
    cancelled = await outbox.cancel_pending(conn, alert_id, ("alert",))
    if cancelled:
        await timeline.append(
            conn,
            alert_id,
            "notifications_cancelled",
            {"count": cancelled, "purpose": "alert", "reason": reason},
            at_ms=now_ms,
        )
    return stopped


@dataclass(frozen=True, slots=True)
class Notified:
    recipient: Recipient
    channel: str
    address: str
    step: int  # the earliest step that reached this recipient on this channel


async def already_notified(
    conn: Conn,
    alert_id: str,
    purposes: Sequence[str],
    statuses: Sequence[str],
    *,
    maybe_sent: bool = False,
) -> list[Notified]:
    """Who was sent these purposes (rows in these statuses); with `maybe_sent`, also the
    rows cancelled after an attempt that may have reached them (in flight, or unsure)."""
    found = await sql.rows(
        conn,
        "SELECT recipient_kind, recipient_id, min(recipient_name) AS name, channel,"
        " min(address) AS address, min(step) AS step FROM notifications"
        " WHERE alert_id = %s AND purpose = ANY(%s) AND (status = ANY(%s)"
        " OR (%s AND status = 'cancelled' AND (sent_at IS NOT NULL"
        " OR attempt_started_at IS NOT NULL OR unsure_since IS NOT NULL)))"
        " GROUP BY recipient_kind, recipient_id, channel ORDER BY min(id)",
        (alert_id, list(purposes), list(statuses), maybe_sent),
    )
    return [
        Notified(
            Recipient(r["recipient_kind"], r["recipient_id"], r["name"], ""),
            r["channel"],
            r["address"],
            r["step"],
        )
        for r in found
    ]


async def enqueue_follow_ups(
    conn: Conn,
    settings: Settings,
    alert: Alert,
    purpose: Purpose,
    now_ms: int,
    *,
    handler: str | None = None,
    exclude: tuple[str, str] | None = None,
    lease_until_ms: int,
    extra: dict[str, str] | None = None,
) -> list[Claimed]:
    """Tell the people already reached that someone is handling it ('handled': plus the
    elder's wristband) or that it is over ('closed'); `extra` params go into each text."""
    elder = await targets.load_elder(conn, alert.elder_id)
    if elder is None:
        return []
    if purpose == "handled":
        # the alert's pending messages were cancelled just before (stop_escalation): who
        # got one, or may have, is told; who never did is not
        reached = await already_notified(
            conn, alert.id, ("alert",), ("pending", "sent", "delivered"), maybe_sent=True
        )
    else:
        reached = await already_notified(
            conn, alert.id, ("alert", "handled"), ("sent", "delivered"), maybe_sent=True
        )
    # a call is for the alert itself: who was also reached in writing is told in writing;
    # only who was reached by phone alone (a station's landline) gets a call about it
    written = {(n.recipient.kind, n.recipient.id) for n in reached if n.channel != "voice"}
    reached = [
        n
        for n in reached
        if n.channel != "voice" or (n.recipient.kind, n.recipient.id) not in written
    ]
    items = [
        NewNotification(
            alert.id,
            n.step,
            purpose,
            n.channel,
            n.recipient,
            n.address,
            message_params(settings, alert, elder, n.recipient, purpose, now_ms, handler)
            | (extra or {}),
        )
        for n in reached
        if (n.recipient.kind, n.recipient.id) != exclude
    ]
    if purpose == "handled":
        band = await targets.elder_wristband(conn, alert.elder_id, alert.device_id)
        if band is not None:
            items.append(
                NewNotification(
                    alert.id, 0, purpose, "downlink", band, band.id,
                    message_params(settings, alert, elder, band, purpose, now_ms, handler),
                )
            )  # fmt: skip
    queued = await outbox.enqueue_leased(conn, alert, items, lease_until_ms, now_ms=now_ms)
    await timeline.append(
        conn,
        alert.id,
        f"{purpose}_enqueued",
        {"notifications": len(queued), "handler": handler},
        at_ms=now_ms,
    )
    return queued


async def reached_in_round(conn: Conn, alert_id: str, round_: int) -> set[tuple[str, str, str]]:
    """(recipient kind, id, channel) sent this alert in escalation round `round_` (rows
    cancelled before any attempt reached nobody). The round is in the idempotency key
    (notifier.outbox.NewNotification): 'r{n}:' from the second round on."""
    found = await sql.rows(
        conn,
        "SELECT DISTINCT recipient_kind, recipient_id, channel FROM notifications"
        " WHERE alert_id = %(id)s AND purpose = 'alert'"
        " AND (status <> 'cancelled' OR sent_at IS NOT NULL)"
        " AND CASE WHEN %(round)s = 0 THEN split_part(idempotency_key, ':', 2) NOT LIKE 'r%%'"
        " ELSE split_part(idempotency_key, ':', 2) = 'r' || %(round)s END",
        {"id": alert_id, "round": round_},
    )
    return {(r["recipient_kind"], r["recipient_id"], r["channel"]) for r in found}


async def handler_display(conn: Conn, actor: str | None) -> str:
    """'grid_worker:GW1' -> '张三（网格员）'; other actors by role."""
    kind, _, recipient_id = (actor or "").partition(":")
    found = await targets.load_recipient(conn, kind, recipient_id)
    return found.display if found else "值班人员"


async def mark_handled(conn: Conn, change: AlertChange) -> bool:
    """Record that the notifier has acted on `change`; False when it already had."""
    cur = await conn.execute(
        "INSERT INTO notifier_inbox (change_id, alert_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING change_id",
        (change.id, change.alert_id),
    )
    return await cur.fetchone() is not None


async def watch_handler(conn: Conn, settings: Settings, alert: Alert, now_ms: int) -> None:
    """Arm the watch on the person who acknowledged (notifier.handler_watch): presses
    from now on are passed on to them, and their arrival is checked after
    handler_remind_after_s. Once: a redelivered or later acknowledgement keeps it."""
    policy = policy_for(alert.severity)
    await conn.execute(
        "INSERT INTO escalations (alert_id, policy, step, next_step_at, stopped_at,"
        " stopped_reason, presses_seen, handler_check_at)"
        " SELECT a.id, %(policy)s, -1, NULL, %(now)s, 'acknowledged', a.updates,"
        " COALESCE(a.acknowledged_at, %(now)s) + make_interval(secs => %(remind)s)"
        " FROM alerts a WHERE a.id = %(id)s"
        " ON CONFLICT (alert_id) DO UPDATE SET"
        " presses_seen = COALESCE(escalations.presses_seen, EXCLUDED.presses_seen),"
        " handler_check_at = CASE WHEN escalations.presses_seen IS NULL"
        " THEN EXCLUDED.handler_check_at ELSE escalations.handler_check_at END",
        {
            "policy": policy.name,
            "now": timeline.from_ms(now_ms),
            "remind": settings.handler_remind_after_s,
            "id": alert.id,
        },
    )


# Escalation step number of the message that sends a dispatched person to the alert (its
# own number: they may have had the step-0 alert already, and are sent again).
DISPATCH_STEP = -1


@dataclass(frozen=True, slots=True)
class Handling:
    """How an acknowledgement was made, as the 'handled' messages tell it: who has the
    alert, whether an operator sent them, whether the others are to stay away, and the
    operator's note for everyone (notes for the dispatched person alone reach them on
    their ack page and WeCom card)."""

    handler_actor: str
    handler: str  # "张三（网格员）", "值班人员"
    dispatched: bool
    stand_down: bool
    note: str


async def handling_of(conn: Conn, alert: Alert, change: AlertChange) -> Handling:
    """Read from the alert (its handler) and the timeline entry that acknowledged it (what
    the operator said with it: carewatch.alerts.status_entry)."""
    entry = await alerts.status_entry(conn, alert.id, "acknowledged")
    details = entry[1] if entry else {}
    actor = alert.acknowledged_by or change.actor or ""
    mode = details.get("mode")
    return Handling(
        actor,
        await handler_display(conn, actor),
        mode == "dispatch",
        # a person who acknowledged tells the others they need not come (as always);
        # an operator who takes over or dispatches does so only when they say so
        bool(details.get("stand_down")) if mode in ("take_over", "dispatch") else True,
        str(details.get("note") or "") if details.get("note_for") == "all" else "",
    )


async def closing_outcome(conn: Conn, alert: Alert) -> str:
    """How the alert ended, for the closing messages: 误报（reason）, 已到达并处理, 已送医."""
    entry = await alerts.status_entry(conn, alert.id, alert.status)
    details = entry[1] if entry else {}
    if alert.status == "false_alarm":
        reason = str(details.get("reason") or details.get("note") or "").strip()
        return f"误报：{reason}" if reason else "误报"
    return CLOSING_OUTCOMES.get(str(details.get("outcome")), "")


CLOSING_OUTCOMES = {"handled": "已到达并处理", "hospital": "已送医"}


async def enqueue_dispatch(
    conn: Conn,
    settings: Settings,
    alert: Alert,
    person: Recipient,
    note: str,
    now_ms: int,
    lease_until_ms: int,
) -> list[Claimed]:
    """Send the dispatched person the alert with their own ack link (SMS, WeCom) and the
    operator's note (WeCom card; their ack page shows it too)."""
    elder = await targets.load_elder(conn, alert.elder_id)
    if elder is None:
        return []
    params = message_params(settings, alert, elder, person, "alert", now_ms)
    if note:
        params["note"] = note
    items = [
        NewNotification(alert.id, DISPATCH_STEP, "alert", channel, person, address, params)
        for channel in ("sms", "wecom")
        if (address := person.address(channel))
    ]
    queued = await outbox.enqueue_leased(conn, alert, items, lease_until_ms, now_ms=now_ms)
    await timeline.append(
        conn,
        alert.id,
        "dispatch_enqueued",
        {"recipient": f"{person.kind}:{person.id}", "notifications": len(queued)},
        at_ms=now_ms,
    )
    return queued


async def on_acknowledged_or_closed(
    conn: Conn,
    settings: Settings,
    alert: Alert,
    change: AlertChange,
    now_ms: int,
    lease_until_ms: int,
) -> list[Claimed]:
    """What an acknowledged or closed alert means for the notifier, in the caller's
    transaction: the escalation stops; on acknowledgement everyone already reached (and
    the wristband) is told who is handling it, the handler excepted (a person an
    operator dispatched is sent the alert with their own link instead); on closing,
    pending notifications are cancelled and those reached are told how it ended.

    One path for every acknowledgement: the Escalator runs it when the change arrives on
    the alerts stream (the operator API, the rules engine), the ack app inside the
    action's own transaction (it then marks the change handled, so the Escalator skips
    it when it arrives)."""
    if change.status == "acknowledged":
        await stop_escalation(conn, alert.id, f"acknowledged by {change.actor}", now_ms)
        if alert.status == "acknowledged":
            await watch_handler(conn, settings, alert, now_ms)
        handling = await handling_of(conn, alert, change)
        kind, _, rid = handling.handler_actor.partition(":")
        queued = await enqueue_follow_ups(
            conn,
            settings,
            alert,
            "handled",
            now_ms,
            handler=handling.handler,
            exclude=(kind, rid),
            lease_until_ms=lease_until_ms,
            extra=handled_params(handling),
        )
        person = await targets.load_recipient(conn, kind, rid) if handling.dispatched else None
        if person is not None:
            entry = await alerts.status_entry(conn, alert.id, "acknowledged")
            details = entry[1] if entry else {}
            note = str(details.get("note") or "")
            queued += await enqueue_dispatch(
                conn, settings, alert, person, note, now_ms, lease_until_ms
            )
        return queued
    await stop_escalation(conn, alert.id, change.status, now_ms)
    await conn.execute(  # nobody is waited for any more (notifier.handler_watch)
        "UPDATE escalations SET presses_seen = NULL, handler_check_at = NULL WHERE alert_id = %s",
        (alert.id,),
    )
    cancelled = await outbox.cancel_pending(conn, alert.id)
    if cancelled:
        await timeline.append(
            conn, alert.id, "notifications_cancelled", {"count": cancelled}, at_ms=now_ms
        )
    outcome = await closing_outcome(conn, alert)
    return await enqueue_follow_ups(
        conn,
        settings,
        alert,
        "closed",
        now_ms,
        lease_until_ms=lease_until_ms,
        extra={"outcome": outcome} if outcome else None,
    )


async def policy_of(
    conn: Conn, alert: Alert, elder: Elder | None, name: str | None = None
) -> Policy:
    """The policy named `name` (the one an escalation started with) while it still
    exists; else the imported policy for the alert's severity, the elder's district and
    care profile (notifier.policies.select_policy), the built-in one when none applies."""
    district = elder.district if elder else None
    imported = await duty_db.load_policies(conn, alert.severity, district)
    if name is not None:
        named = policy_named(name, imported)
        if named is not None:
            return named
    profile = elder.care_profile if elder else None
    return select_policy(imported, alert.severity, district, profile)


def handled_params(handling: Handling) -> dict[str, str]:
    """What the 'handled' texts need beyond the handler: how it was handled (channels'
    templates: notifier.channels.templates) and what the others are told to do."""
    params = {"handled_as": "dispatch" if handling.dispatched else "self"}
    if not handling.stand_down:
        params["stand_down"] = "no"
    if handling.note:
        params["note"] = handling.note
    return params


# --- the escalation loop -----------------------------------------------------------------


INBOX_PRUNE_EVERY_S = 3600.0


class Escalator(NotifierLoop):
    async def handle(self, raw: bytes) -> None:
        """Bus handler for the alerts stream."""
        try:
            change = decode_alert_change(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._reject(raw, "bad_alert_change", str(exc))
            return
        if change.reason is not None and change.status == "open":
            queued = await self._process(change, self._renotify)
        elif change.status == "open":
            queued = await self._process(change, self._open)
        elif change.status in CLOSED_STATUSES or change.status == "acknowledged":
            queued = await self._process(change, self._acknowledged_or_closed)
        else:  # pending: the confirmation window is still running
            return
        self.sender.send_leased(queued)

    async def _reject(self, raw: bytes, reason: str, detail: str) -> None:
        ALERT_CHANGE_REJECTS.labels(reason).inc()
        log.warning("alert change rejected", extra={"reason": reason, "detail": detail})
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO dead_letters (topic, reason, detail, payload) VALUES (%s, %s, %s, %s)",
                ("alerts", reason, detail, raw),
            )

    async def _process(self, change: AlertChange, action: ChangeAction) -> list[Claimed]:
        async with self.pool.connection() as conn, conn.transaction():
            if not await mark_handled(conn, change):
                log.info("duplicate alert change skipped", extra={"change_id": change.id})
                return []
            alert = await load_alert(conn, change.alert_id, for_update=True)
            if alert is None:  # the rules engine commits before it publishes: a bad change
                ALERT_CHANGE_REJECTS.labels("unknown_alert").inc()
                log.warning("alert change for an unknown alert", extra={"change_id": change.id})
                await conn.execute(
                    "INSERT INTO dead_letters (topic, reason, detail, payload)"
                    " VALUES (%s, %s, %s, %s)",
                    ("alerts", "unknown_alert", change.alert_id, encode(change)),
                )
                return []
            return await action(conn, alert, change)

    async def _open(self, conn: Conn, alert: Alert, change: AlertChange) -> list[Claimed]:
        if alert.status != "open":  # it moved on before we got here
            return []
        elder = await targets.load_elder(conn, alert.elder_id)
        policy = await policy_of(conn, alert, elder)
        now = self.clock.now_ms()
        cur = await conn.execute(
            "INSERT INTO escalations (alert_id, policy, step, next_step_at)"
            " VALUES (%s, %s, -1, %s) ON CONFLICT DO NOTHING RETURNING alert_id",
            (alert.id, policy.name, timeline.from_ms(now)),
        )
        if await cur.fetchone() is None:
            return []
        return await self._carry_out(conn, alert, elder, policy, 0)

    async def _renotify(self, conn: Conn, alert: Alert, change: AlertChange) -> list[Claimed]:
        """A reminder, or a severity the rules engine raised: run the (new) policy again."""
        if alert.status != "open":  # acknowledged: a person is on it; closed: nothing to do
            return []
        elder = await targets.load_elder(conn, alert.elder_id)
        policy = await policy_of(conn, alert, elder)
        row = await sql.one(
            conn,
            "INSERT INTO escalations (alert_id, policy, step, next_step_at, round)"
            " VALUES (%s, %s, -1, NULL, 1) ON CONFLICT (alert_id) DO UPDATE SET"
            " policy = EXCLUDED.policy, round = escalations.round + 1, step = -1,"
            " next_step_at = NULL, stopped_at = NULL, stopped_reason = NULL RETURNING round",
            (alert.id, policy.name),
        )
        round_ = int(row["round"]) if row else 1
        await timeline.append(
            conn,
            alert.id,
            "escalation_restarted",
            {"reason": change.reason, "policy": policy.name, "round": round_},
            at_ms=self.clock.now_ms(),
        )
        return await self._carry_out(conn, alert, elder, policy, 0, round_)

    async def _acknowledged_or_closed(
        self, conn: Conn, alert: Alert, change: AlertChange
    ) -> list[Claimed]:
        lease_until_ms = self.sender.lease_until_ms()
        now = self.clock.now_ms()
        return await on_acknowledged_or_closed(
            conn, self.settings, alert, change, now, lease_until_ms
        )

    async def _carry_out(
        self,
        conn: Conn,
        alert: Alert,
        elder: Elder | None,
        policy: Policy,
        step: int,
        round_: int = 0,
    ) -> list[Claimed]:
        """Enqueue step `step` and schedule the next; in the caller's transaction, which
        read `elder` (the alert's, None if not in the registry) for the policy already:
        one statement less on the alarm path. A step that reaches nobody (no targets,
        nobody on duty, no allowed channel) is skipped at once, not waited out."""
        now = self.clock.now_ms()
        s = self.settings
        repeats = s.escalation_repeat_count if alert.severity == "critical" else 0
        while True:
            plan = plan_step(
                policy,
                step,
                self.clock,
                s.escalation_wait_s,
                repeats,
                s.escalation_repeat_interval_s,
            )
            if plan is None or elder is None:
                reason = "no steps left" if plan is None else "elder not in registry"
                await conn.execute(
                    "UPDATE escalations SET next_step_at = NULL WHERE alert_id = %s", (alert.id,)
                )
                await timeline.append(
                    conn, alert.id, "escalation_finished", {"reason": reason}, at_ms=now
                )
                return []
            local = targets.local_time(now, self.settings.timezone)
            recipients = await targets.resolve(conn, elder, plan.targets, local)
            channels = step_channels(
                plan,
                alert.severity,
                local.time(),
                voice=s.voice_enabled,
                quiet_start=s.voice_quiet_start,
                quiet_end=s.voice_quiet_end,
            )
            prefs = await duty_db.load_preferences(conn, [r.phone for r in recipients if r.phone])
            # a step after the first skips who an earlier step of this round already
            # reached on that channel (the first family contact is in steps 0 and 1); a
            # repeat of the last step reaches everyone again, as it is meant to
            # (but such a step is still waited out: it is skipped only when it reaches
            # nobody at all)
            reached = set() if plan.repeat else await reached_in_round(conn, alert.id, round_)
            reachable = [
                (r, channel, address)
                for r in recipients
                for channel in allowed_channels(channels, alert.severity, r.phone, prefs)
                if (address := r.address(channel))
            ]
            items = [
                NewNotification(
                    alert.id, step, "alert", channel, r, address,
                    message_params(self.settings, alert, elder, r, "alert", now),
                    round_,
                )
                for r, channel, address in reachable
                if (r.kind, r.id, channel) not in reached
            ]  # fmt: skip
            if reachable or plan.next_due_ms is None:
                break
            await timeline.append(
                conn,
                alert.id,
                "escalation_step_skipped",
                {"policy": policy.name, "step": step, "targets": list(plan.targets)},
                at_ms=now,
            )
            step += 1
        queued = await outbox.enqueue_leased(
            conn, alert, items, self.sender.lease_until_ms(), now_ms=now
        )
        next_at = timeline.from_ms(plan.next_due_ms) if plan.next_due_ms is not None else None
        await conn.execute(
            "UPDATE escalations SET step = %s, next_step_at = %s WHERE alert_id = %s",
            (step, next_at, alert.id),
        )
        await timeline.append(
            conn,
            alert.id,
            "escalation_step",
            {
                "policy": policy.name,
                "step": step,
                "repeat": plan.repeat,
                "channels": list(channels),
                "targets": list(plan.targets),
                "recipients": [f"{r.kind}:{r.id}" for r in recipients],
                "notifications": len(queued),
                "next_step_at_ms": plan.next_due_ms,
            },
            at_ms=now,
        )
        ESCALATION_STEPS.labels(policy.name, str(step)).inc()
        if step == len(policy.steps) - 1:  # repeats are numbered past it
            ESCALATION_LAST_STEP.labels(policy.name).inc()
        log.info(
            "escalation step",
            extra={"alert_id": alert.id, "step": step, "notifications": len(queued)},
        )
        return queued

    async def run_due(self) -> int:
        """Carry out every escalation step that is due; the number of escalations advanced."""
        now = self.clock.now_ms()
        queued: list[Claimed] = []
        async with self.pool.connection() as conn, conn.transaction():
            due = await sql.rows(
                conn,
                "SELECT alert_id::text AS alert_id, policy, step, round FROM escalations"
                " WHERE next_step_at <= %s ORDER BY next_step_at LIMIT %s"
                " FOR UPDATE SKIP LOCKED",
                (timeline.from_ms(now), self.batch_size),
            )
            for row in due:
                alert = await load_alert(conn, row["alert_id"])
                if alert is None or alert.status != "open":
                    status = alert.status if alert else "missing"
                    await stop_escalation(conn, row["alert_id"], f"alert {status}", now)
                    continue
                elder = await targets.load_elder(conn, alert.elder_id)
                policy = await policy_of(conn, alert, elder, row["policy"])
                step = row["step"] + 1
                queued += await self._carry_out(conn, alert, elder, policy, step, row["round"])
        self.sender.send_leased(queued)
        return len(due)

    async def prune_inbox(self) -> int:
        """Forget handled alert-change ids older than the redelivery horizon, short ack
        codes long expired, and provider pushes older than that horizon."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM notifier_inbox WHERE processed_at < now() - make_interval(secs => %s)",
                (self.settings.dedup_ttl_s,),
            )
            await short_links.prune(conn, self.clock.now_ms())
            # provider pushes are retried for hours at most: a day later a repeat is not
            # coming, and what each push did is in the alert timeline
            await conn.execute(
                "DELETE FROM provider_receipts"
                " WHERE received_at < now() - make_interval(secs => %s)",
                (self.settings.dedup_ttl_s,),
            )
            return max(cur.rowcount, 0)

    async def run(self, stop: asyncio.Event) -> None:
        poll_s = self.settings.outbox_poll_ms / 1000
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while not stop.is_set():
            try:
                advanced = await self.run_due()
                if loop.time() >= next_prune:
                    await self.prune_inbox()
                    next_prune = loop.time() + INBOX_PRUNE_EVERY_S
            except Exception:
                log.exception("escalation poll failed")
                advanced = 0
            if advanced < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
