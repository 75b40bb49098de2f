"""Human actions on an alert (acknowledge, resolve, false alarm, note), in one transaction each.

The change is the alert state owner's (carewatch.alerts); the escalation, the pending
notifications and the 'handled'/'closed' messages are the notifier's, which acts on the
published AlertChange exactly as on an acknowledgement through a signed link.
A false alarm closes the alert as `false_alarm` like the ack page's 误报 button; a note only
adds a timeline entry (status and escalation stay).
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
from carewatch.clock import Clock, SystemClock
from carewatch.messages import AlertChange
from carewatch.metrics import ALERTS
from operator_api.db import fetch_one
from operator_api.models import ActionResult
from operator_api.scope import OutOfScope, Principal

log = logging.getLogger(__name__)

HumanAction = Literal["acknowledge", "resolve", "false_alarm", "note", "reopen"]


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
) -> ActionResult:
    """apply_action, then announce the change. The change is in the outbox with the
    action, so a failed announcement is only late: the rules workers' sweep publishes it."""
    outcome = await apply_action(pool, principal, alert_id, action, note, details)
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
) -> Outcome:
    """Apply `action`; raises AlertNotFound, OutOfScope or TransitionError (nothing written).

    The alert state owner (carewatch.alerts) writes the row, the timeline and the outbox
    row; the notifier stops the escalation, cancels what is pending and tells the others
    when the change reaches it, as it does for an acknowledgement through a signed link.
    `details` (e.g. the console's outcome category) join the note in the timeline entry."""
    at_ms = (clock or SystemClock()).now_ms()
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(
            conn,
            "SELECT a.id::text AS id, a.elder_id, a.device_id, a.kind, a.severity, a.status,"
            " a.device_time, a.version, a.acknowledged_by, e.district, e.grid_id FROM alerts a"
            " JOIN elders e ON e.id = a.elder_id WHERE a.id = %s FOR NO KEY UPDATE OF a",
            (alert_id,),
        )
        if row is None:
            raise AlertNotFound(str(alert_id))
        if not principal.allows(row["district"], row["grid_id"]):
            raise OutOfScope("alert outside this token's scope")
        alert = alerts.from_row(row)
        actor = principal.actor
        entry: dict[str, object] = {"note": note, "via": "operator_api", **(details or {})}
        if action == "note":  # the timeline only: status and escalation stay as they are
            await alerts.record(conn, str(alert.id), "note", entry, at_ms=at_ms, actor=actor)
            change = None
        else:
            change = await alerts.transition(
                conn, alert, action, actor, at_ms, source=f"operator:{alert.id}", details=entry
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
