"""Human actions on an alert (acknowledge, resolve, false alarm, note), in one transaction each.

Acknowledging stops the escalation; resolving also cancels the alert's pending outbox
rows, so nobody is paged about an alert that is over. 'handled'/'closed' messages the
notifier queues for other recipients are left alone. A note only adds a timeline entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from carewatch import alert_outbox
from carewatch.alert_lifecycle import next_status, stops_escalation
from carewatch.messages import AlertChange
from carewatch.metrics import ALERTS
from operator_api.db import fetch_one
from operator_api.models import ActionResult
from operator_api.scope import OutOfScope, Principal

log = logging.getLogger(__name__)

HumanAction = Literal["acknowledge", "resolve", "false_alarm", "note"]
_EVENT_NAME: dict[HumanAction, str] = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "false_alarm": "false_alarm",
    "note": "note",
}


# Publishes an AlertChange already in the outbox (the app binds it to its broker).
Announce = Callable[[AlertChange], Awaitable[None]]


class AlertNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ActionResult
    change: AlertChange | None  # None when the status did not change


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


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
) -> Outcome:
    """Apply `action`; raises AlertNotFound, OutOfScope or TransitionError (nothing written).
    `details` (e.g. the console's outcome category) join the note in the timeline entry."""
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(
            conn,
            "SELECT a.status, a.kind, a.severity, a.elder_id, a.device_time,"
            " e.district, e.grid_id FROM alerts a"
            " JOIN elders e ON e.id = a.elder_id WHERE a.id = %s FOR NO KEY UPDATE OF a",
            (alert_id,),
        )
        if row is None:
            raise AlertNotFound(str(alert_id))
        if not principal.allows(row["district"], row["grid_id"]):
            raise OutOfScope("alert outside this token's scope")
        actor = principal.actor
        if action == "note":  # the timeline only: status and escalation stay as they are
            new_status = row["status"]
            updated = await fetch_one(
                conn, "SELECT now() AS at, version FROM alerts WHERE id = %s", (alert_id,)
            )
        elif action == "acknowledge":
            new_status = next_status(row["status"], action)
            updated = await fetch_one(
                conn,
                "UPDATE alerts SET status = %s, version = version + 1,"
                " acknowledged_at = COALESCE(acknowledged_at, now()),"
                " acknowledged_by = COALESCE(acknowledged_by, %s)"
                " WHERE id = %s RETURNING now() AS at, version",
                (new_status, actor, alert_id),
            )
        else:
            new_status = next_status(row["status"], action)
            updated = await fetch_one(
                conn,
                "UPDATE alerts SET status = %s, version = version + 1, closed_at = now()"
                " WHERE id = %s RETURNING now() AS at, version",
                (new_status, alert_id),
            )
        assert updated is not None  # the row is locked: it cannot have vanished
        at: datetime = updated["at"]
        entry = {"note": note, "from": row["status"], "to": new_status, "via": "operator_api"}
        entry.update(details or {})
        await conn.execute(
            "INSERT INTO alert_events (alert_id, at, actor, action, details)"
            " VALUES (%s, %s, %s, %s, %s)",
            (alert_id, at, actor, _EVENT_NAME[action], json.dumps(entry, ensure_ascii=False)),
        )
        if action != "note" and stops_escalation(action):
            await conn.execute(
                "UPDATE escalations SET next_step_at = NULL, stopped_at = %s, stopped_reason = %s"
                " WHERE alert_id = %s AND stopped_at IS NULL",
                (at, f"{_EVENT_NAME[action]} by {actor}", alert_id),
            )
        if action in ("resolve", "false_alarm"):
            await conn.execute(
                "UPDATE notifications SET status = 'cancelled', last_error = 'alert resolved'"
                " WHERE alert_id = %s AND status = 'pending' AND purpose = 'alert'",
                (alert_id,),
            )
        change = None
        if new_status != row["status"]:
            change = AlertChange(
                id=f"{alert_id}:{new_status}:{updated['version']}",
                alert_id=str(alert_id),
                elder_id=row["elder_id"],
                kind=row["kind"],
                severity=row["severity"],
                status=new_status,
                device_time_ms=_ms(row["device_time"]),
                changed_ms=_ms(at),
                actor=actor,
            )
            # committed with the action: published after commit, or by the sweep
            await alert_outbox.write(conn, f"operator:{change.id}", [change])
    log.info(
        "alert %s via operator API",
        _EVENT_NAME[action],
        extra={"alert_id": str(alert_id), "actor": actor, "status": new_status},
    )
    if change is not None:
        ALERTS.labels(row["kind"], new_status).inc()
    result = ActionResult(
        alert_id=alert_id, previous_status=row["status"], status=new_status, actor=actor, at=at
    )
    return Outcome(result, change)
