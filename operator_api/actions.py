"""Human actions on an alert (take over, dispatch, resolve, false alarm, note), in one
transaction each.

The change is the alert state owner's (carewatch.alerts); the escalation, the pending
notifications and the 'handled'/'closed' messages are the notifier's, which acts on the
published AlertChange exactly as on an acknowledgement through a signed link, reading
what the operator said with it from the timeline entry written here:

- *take over* (`acknowledge`): the operator has it. The others are told who, and are
  told to stay away only when the operator says so (`stand_down`); the note goes to
  everyone told (`note_for` 'all').
- *dispatch*: the operator sends a named person (grid worker, station, family member,
  duty officer), who becomes the alert's handler and is sent the alert with their own
  ack link; the others are told whom the duty officer sent. The note goes to the
  dispatched person (their WeCom card and ack page), or to everyone with `note_to`
  'everyone'.
- A false alarm closes the alert as `false_alarm` like the ack page's 误报 button, and
  needs a reason (`ReasonRequired`); a note only adds a timeline entry (status and
  escalation stay).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from carewatch import alerts
from carewatch.alert_lifecycle import TransitionError
from carewatch.clock import Clock, SystemClock
from carewatch.messages import AlertChange
from carewatch.metrics import ALERTS
from notifier import targets
from operator_api.db import fetch_one
from operator_api.models import ActionResult
from operator_api.scope import OutOfScope, Principal

log = logging.getLogger(__name__)

HumanAction = Literal["acknowledge", "resolve", "false_alarm", "note", "reopen"]
NoteTo = Literal["everyone", "dispatched"]
# Who can be dispatched: the registry's people and stations (notifier.targets kinds).
DispatchKind = Literal["grid_worker", "station", "family", "duty_officer"]


class ReasonRequired(ValueError):
    """A false alarm without a reason (HTTP 422)."""

    message_zh = "标记误报须说明原因。"
    message_en = "A false alarm needs a reason."


# The console's list of false-alarm reasons (code -> words); the ack page offers its own
# words (notifier.ack_app), the API takes either.
FALSE_ALARM_REASONS: dict[str, str] = {
    "pressed_by_mistake": "误按",
    "device_fault": "设备故障或误报警",
    "elder_fine": "已核实老人无事",
    "test": "测试",
    "other": "其他",
}


def false_alarm_details(reason: str | None, note: str) -> dict[str, object]:
    """The timeline details of a false alarm (pure). `reason` is one of
    FALSE_ALARM_REASONS' codes (the console's list) or the reason in words (the ack
    page's buttons, the API); 422 without one, or with 'other' and no text. `reason` in
    the result is the words the family's closing message quotes (notifier)."""
    words = " ".join((reason or "").split())
    if not words:
        raise ReasonRequired(ReasonRequired.message_en)
    if words not in FALSE_ALARM_REASONS:
        return {"reason": words}
    if words == "other" and not note.strip():
        raise ReasonRequired("reason 'other' needs a note")
    label = FALSE_ALARM_REASONS[words]
    return {
        "false_alarm_reason": words,
        "false_alarm_reason_label": label,
        "reason": " ".join(note.split()) if words == "other" else label,
    }


class PersonNotFound(LookupError):
    """The person to dispatch is not in the registry (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Whom an operator sends, and what the others are told."""

    kind: DispatchKind
    id: str
    note_to: NoteTo = "dispatched"
    stand_down: bool = False

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


# Publishes an AlertChange already in the outbox (the app binds it to its broker).
Announce = Callable[[AlertChange], Awaitable[None]]


class AlertNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ActionResult
    change: AlertChange | None  # None when the status did not change


async def act_and_announce(
    pool: AsyncConnectionPool,
    announce: Announce,
    principal: Principal,
    alert_id: UUID,
    action: HumanAction,
    note: str,
    details: Mapping[str, object] | None = None,
    *,
    dispatch: Dispatch | None = None,
) -> ActionResult:
    """apply_action, then announce the change. The change is in the outbox with the
    action, so a failed announcement is only late: the rules workers' sweep publishes it."""
    outcome = await apply_action(
        pool, principal, alert_id, action, note, details, dispatch=dispatch
    )
    if outcome.change is not None:
        try:
            await announce(outcome.change)
        except Exception:
            log.warning(
                "alert change left in the outbox for the sweep",
                extra={"alert_id": str(alert_id)},
                exc_info=True,
            )
    return outcome.result


async def apply_action(
    pool: AsyncConnectionPool,
    principal: Principal,
    alert_id: UUID,
    action: HumanAction,
    note: str,
    details: Mapping[str, object] | None = None,
    clock: Clock | None = None,
    *,
    dispatch: Dispatch | None = None,
) -> Outcome:
    """Apply `action`; raises AlertNotFound, OutOfScope, TransitionError, ReasonRequired
    or PersonNotFound (nothing written). An `acknowledge` is a take-over, or with
    `dispatch` sends that person (see the module's docstring): `details` may carry
    `stand_down` for a take-over.

    The alert state owner (carewatch.alerts) writes the row, the timeline and the outbox
    row; the notifier stops the escalation, cancels what is pending and tells the others
    when the change reaches it, as it does for an acknowledgement through a signed link.
    `details` (e.g. the console's outcome category) join the note in the timeline entry."""
    at_ms = (clock or SystemClock()).now_ms()
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(
            conn,
            "SELECT a.id::text AS id, a.elder_id, a.device_id, a.kind, a.severity, a.status,"
            " a.device_time, a.version, a.acknowledged_by, e.grid_id FROM alerts a"
            " JOIN elders e ON e.id = a.elder_id WHERE a.id = %s FOR NO KEY UPDATE OF a",
            (alert_id,),
        )
        if row is None:
            raise AlertNotFound(str(alert_id))
        if not principal.sees_grid(row["grid_id"]):
            raise OutOfScope("alert outside this token's scope")
        alert = alerts.from_row(row)
        actor = principal.actor
        entry: dict[str, object] = {"note": note, "via": "operator_api", **(details or {})}
        handler = None
        if action == "false_alarm":
            reason = " ".join(str(entry.get("reason") or note).split())
            if not reason:
                raise ReasonRequired(ReasonRequired.message_en)
            entry["reason"] = reason
        if action == "acknowledge":
            entry["mode"] = "take_over"
            entry["stand_down"] = bool(entry.get("stand_down"))
            entry["note_for"] = "all"
            if dispatch is not None:
                if alert.status != "open":  # someone has it: not sent over their head
                    raise TransitionError(alert.status, "dispatch")
                if await targets.load_recipient(conn, dispatch.kind, dispatch.id) is None:
                    raise PersonNotFound(dispatch.actor)
                handler = dispatch.actor
                entry.update(
                    mode="dispatch",
                    dispatched=dispatch.actor,
                    stand_down=dispatch.stand_down,
                    note_for="all" if dispatch.note_to == "everyone" else dispatch.actor,
                )
        if action == "note":  # the timeline only: status and escalation stay as they are
            await alerts.record(conn, str(alert.id), "note", entry, at_ms=at_ms, actor=actor)
            change = None
        else:
            change = await alerts.transition(
                conn,
                alert,
                action,
                actor,
                at_ms,
                source=f"operator:{alert.id}",
                details=entry,
                handler=handler,
            )
    new_status = alert.status if change is None else change.status
    log.info(
        "alert %s via operator API",
        "note" if action == "note" else alerts.TIMELINE_ACTION[action],
        extra={"alert_id": str(alert_id), "actor": actor, "status": new_status},
    )
    if change is not None:
        ALERTS.labels(alert.kind, new_status).inc()
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    result = ActionResult(
        alert_id=alert_id, previous_status=alert.status, status=new_status, actor=actor, at=at
    )
    return Outcome(result, change)
