"""Alert state: the one writer of `alerts` and `alert_events`.

Every change to an alert goes through here, in the caller's transaction, whoever makes
it: the rules engine opens, confirms, cancels, resolves and re-notifies, the ack app and
the operator API acknowledge and resolve, the notifier records its steps on the timeline.
One rule for the version: it goes up by one exactly when a change is published (a status
change, or a re-notification), and that change's id is `change_id(...)`. A status change
writes the row, the timeline entry and the outbox row (carewatch.alert_outbox) together,
so what is committed is also published (after commit, or by the outbox sweep).

Callers hold the alert row lock (they read it FOR NO KEY UPDATE, or the rules engine's
view query did) before they call `transition` or `renotify`. Connections and cursors
passed in return dict rows (every pool in carewatch does: carewatch.db.pool).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from carewatch import alert_outbox
from carewatch.alert_lifecycle import Action, next_status
from carewatch.messages import CLOSED_STATUSES, AlertChange, AlertKind, AlertStatus, Severity

Db = AsyncConnection[Any] | AsyncCursor[Any]

# The timeline entry each action writes.
TIMELINE_ACTION: dict[Action, str] = {
    "confirm": "confirmed",
    "cancel": "cancelled",
    "acknowledge": "acknowledged",
    "arrive": "arrived",
    "join": "joined",
    "resolve": "resolved",
    "false_alarm": "false_alarm",
    "reopen": "reopened",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // _MS


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert row, as its readers (notifications, the ack page, the writers) need it."""

    id: str
    elder_id: str
    device_id: str | None
    kind: AlertKind
    severity: Severity
    status: AlertStatus
    device_time_ms: int
    version: int
    acknowledged_by: str | None = None
    # when the server opened the alert (the rules engine's clock, moments after it
    # received the event); None when not known
    opened_ms: int | None = None
    # when the first acknowledgement was made (alerts.acknowledged_at); None before
    acknowledged_ms: int | None = None

    def event_time_ms(self, max_skew_s: float) -> int:
        """When it happened, to tell people: see `event_time_ms`."""
        return event_time_ms(self.device_time_ms, self.opened_ms, max_skew_s)


# A device clock this far ahead of the server's is wrong, not early.
DEVICE_AHEAD_TOLERANCE_MS = 5_000


def device_clock_off(device_time_ms: int, server_ms: int | None, max_skew_s: float) -> bool:
    """Whether a device's timestamp cannot be right: ahead of the server's receive time, or
    behind it by more than max_skew_s (pure). Unknown server time: trust the device."""
    if server_ms is None:
        return False
    behind_ms = server_ms - device_time_ms
    return behind_ms < -DEVICE_AHEAD_TOLERANCE_MS or behind_ms > max_skew_s * 1000


def event_time_ms(device_time_ms: int, server_ms: int | None, max_skew_s: float) -> int:
    """The time a message says it happened: the device's own, unless the device clock is
    off (a reset or drifting wristband said "16:02" of a press at 19:02); then the time
    the server received it (pure)."""
    if device_clock_off(device_time_ms, server_ms, max_skew_s):
        assert server_ms is not None
        return server_ms
    return device_time_ms


def change_id(alert_id: str, status: AlertStatus, version: int) -> str:
    """The id of the change that left the alert in `status` at `version`: consumers
    deduplicate by it."""
    return f"{alert_id}:{status}:{version}"


def after(alert: Alert, change: AlertChange) -> Alert:
    """`alert` as `change` (one of its own, from this module) left it."""
    version = int(change.id.rsplit(":", 1)[1])
    return replace(alert, status=change.status, severity=change.severity, version=version)


_SELECT = (
    "SELECT id::text AS id, elder_id, device_id, kind, severity, status, device_time,"
    " version, acknowledged_by, opened_at, acknowledged_at FROM alerts WHERE id = %s"
)
# NO KEY UPDATE: serialises status changes without blocking the foreign-key checks of
# concurrent inserts into alert_events and notifications (a sender recording a delivery)
_SELECT_FOR_UPDATE = _SELECT + " FOR NO KEY UPDATE"


def from_row(row: Mapping[str, Any]) -> Alert:
    """An alert from a row of `alerts` (device_time as timestamptz). The database's CHECK
    constraints hold severity and status to their literals; kind is written only here."""
    return Alert(
        id=str(row["id"]),
        elder_id=row["elder_id"],
        device_id=row["device_id"],
        kind=cast(AlertKind, row["kind"]),
        severity=cast(Severity, row["severity"]),
        status=cast(AlertStatus, row["status"]),
        device_time_ms=_ms(row["device_time"]),
        version=int(row["version"]),
        acknowledged_by=row["acknowledged_by"],
        opened_ms=None if row.get("opened_at") is None else _ms(row["opened_at"]),
        acknowledged_ms=(
            None if row.get("acknowledged_at") is None else _ms(row["acknowledged_at"])
        ),
    )


async def load(
    conn: AsyncConnection[Any], alert_id: str, *, for_update: bool = False
) -> Alert | None:
    """The alert, locked against concurrent changes until the transaction ends when
    `for_update`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SELECT_FOR_UPDATE if for_update else _SELECT, (alert_id,))
        row = await cur.fetchone()
    return None if row is None else from_row(row)


# --- writes ----------------------------------------------------------------------------


async def open_alert(
    db: Db,
    alert: Alert,
    *,
    source_event_id: str,
    rule: str,
    threshold: Mapping[str, object],
    confidence: float | None,
    details: Mapping[str, object],
    actor: str,
    at_ms: int,
    source: str,
) -> AlertChange | None:
    """Insert `alert` (version 1) with its 'opened' timeline entry and outbox row; None
    when it already exists (an event redelivered after its seen-marker was pruned: its
    effects are in place and are not recorded twice)."""
    cur = await db.execute(
        "INSERT INTO alerts (id, elder_id, device_id, kind, severity, status, source_event_id,"
        " device_time, opened_at, rule, threshold, confidence, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (
            alert.id,
            alert.elder_id,
            alert.device_id,
            alert.kind,
            alert.severity,
            alert.status,
            source_event_id,
            _at(alert.device_time_ms),
            _at(at_ms),
            rule,
            Jsonb(dict(threshold)),
            confidence,
            Jsonb(dict(details)),
        ),
    )
    if cur.rowcount == 0:
        return None
    opened: dict[str, object] = {
        "status": alert.status,
        "rule": rule,
        "event_id": source_event_id,
        "device_id": alert.device_id,
        "threshold": dict(threshold),
    }
    await record(db, alert.id, "opened", opened, at_ms=at_ms, actor=actor)
    return await _publish(db, alert, alert.status, 1, actor, at_ms, source)


async def transition(
    db: Db,
    alert: Alert,
    action: Action,
    actor: str,
    at_ms: int,
    *,
    source: str,
    details: Mapping[str, object] | None = None,
    confidence: float | None = None,
    handler: str | None = None,
) -> AlertChange | None:
    """Apply `action` to `alert` (read under its row lock): the lifecycle decides the new
    status (TransitionError, nothing written, when the action is not allowed). The
    timeline gets the action in any case; when the status changes, the row is stamped
    (confirmed_at, the first acknowledgement, closed_at), the version goes up by one and
    the AlertChange is written to the outbox under `source` and returned. An action that
    leaves the status as it was (a second acknowledgement, 'arrived') returns None.

    The first acknowledgement wins: the row lock orders concurrent ones, the first moves
    the alert to 'acknowledged' and names its handler (`handler`, by default the actor:
    an operator dispatching someone names that person), and every later one finds it
    acknowledged, changes nothing and is recorded with who already has it
    (`handled_by`): see `first_acknowledgement`."""
    status = next_status(alert.status, action)
    entry: dict[str, object] = {"from": alert.status, "to": status, **(details or {})}
    if action == "acknowledge" and alert.status == "acknowledged":
        entry["handled_by"] = alert.acknowledged_by
    version = None
    if status != alert.status:
        row = await _returning(
            db,
            "UPDATE alerts SET status = %(status)s, version = version + 1,"
            " confidence = COALESCE(%(confidence)s, confidence),"
            " confirmed_at = CASE WHEN %(confirm)s THEN %(now)s ELSE confirmed_at END,"
            " acknowledged_at = CASE WHEN %(ack)s THEN coalesce(acknowledged_at, %(now)s)"
            "  ELSE acknowledged_at END,"
            " acknowledged_by = CASE WHEN %(ack)s THEN coalesce(acknowledged_by, %(actor)s)"
            "  ELSE acknowledged_by END,"
            " closed_at = CASE WHEN %(closed)s THEN %(now)s WHEN %(reopen)s THEN NULL"
            "  ELSE closed_at END"
            " WHERE id = %(id)s RETURNING version",
            {
                "status": status,
                "confidence": confidence,
                "confirm": action == "confirm",
                "ack": status == "acknowledged",
                "closed": status in CLOSED_STATUSES,
                "reopen": action == "reopen",
                "now": _at(at_ms),
                "actor": handler or actor,
                "id": alert.id,
            },
        )
        version = int(row["version"])
    await record(db, alert.id, TIMELINE_ACTION[action], entry, at_ms=at_ms, actor=actor)
    if version is None:
        return None
    return await _publish(db, alert, status, version, actor, at_ms, source)


def first_acknowledgement(after: Alert, actor: str) -> bool:
    """Whether `actor`'s acknowledgement, applied by `transition`, is the one that counts:
    the alert (as read after it, in the same transaction) names them as its handler."""
    return after.status == "acknowledged" and after.acknowledged_by == actor


async def status_entry(
    conn: AsyncConnection[Any], alert_id: str, status: AlertStatus
) -> tuple[str, dict[str, Any]] | None:
    """The actor and details of the timeline entry that moved the alert into `status`
    (what an operator said with it: a note, whom they dispatched, why it was a false
    alarm); None when it never was."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT actor, details FROM alert_events WHERE alert_id = %s"
            " AND details->>'to' = %s AND details->>'from' IS DISTINCT FROM details->>'to'"
            " ORDER BY at DESC, id DESC LIMIT 1",
            (alert_id, status),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return str(row["actor"]), dict(row["details"] or {})


async def operator_notes(
    conn: AsyncConnection[Any], alert_id: str, viewer: str | None
) -> list[str]:
    """The notes operators left with a take-over or a dispatch for `viewer` (an actor,
    'grid_worker:GW1'): those meant for everyone (`note_for` 'all') and those meant for
    them (the person dispatched), oldest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT details->>'note' AS note FROM alert_events WHERE alert_id = %s"
            " AND coalesce(details->>'note', '') <> ''"
            " AND details->>'note_for' IN ('all', %s) ORDER BY at, id",
            (alert_id, viewer or ""),
        )
        return [str(r["note"]) for r in await cur.fetchall()]


async def renotify(
    db: Db,
    alert: Alert,
    reason: Literal["escalated", "reminder"],
    actor: str,
    at_ms: int,
    *,
    source: str,
    severity: Severity | None,
    details: Mapping[str, object],
) -> AlertChange:
    """Same status, new version (and severity, when raised): the change the notifier
    escalates again on. The timeline entry is `reason`."""
    row = await _returning(
        db,
        "UPDATE alerts SET severity = COALESCE(%s, severity), version = version + 1"
        " WHERE id = %s RETURNING version, severity",
        (severity, alert.id),
    )
    entry = dict(details)
    if severity is not None:
        entry["severity"] = {"from": alert.severity, "to": severity}
    await record(db, alert.id, reason, entry, at_ms=at_ms, actor=actor)
    after = replace(alert, severity=cast(Severity, row["severity"]), version=int(row["version"]))
    return await _publish(db, after, alert.status, after.version, actor, at_ms, source, reason)


async def count_repeat(
    db: Db, alert_id: str, details: Mapping[str, object], *, actor: str, at_ms: int
) -> None:
    """A repeat of the condition folded into the open alert (no new version)."""
    await db.execute("UPDATE alerts SET updates = updates + 1 WHERE id = %s", (alert_id,))
    await record(db, alert_id, "repeated", dict(details), at_ms=at_ms, actor=actor)


async def update_details(
    db: Db,
    alert_id: str,
    action: str,
    confidence: float | None,
    details: Mapping[str, object],
    *,
    actor: str,
    at_ms: int,
) -> None:
    """New confidence and details merged into the alert (no new version), on the
    timeline as `action`."""
    await db.execute(
        "UPDATE alerts SET confidence = COALESCE(%s, confidence), details = details || %s"
        " WHERE id = %s",
        (confidence, Jsonb(dict(details)), alert_id),
    )
    await record(
        db, alert_id, action, {"confidence": confidence, **details}, at_ms=at_ms, actor=actor
    )


async def record(
    db: Db, alert_id: str, action: str, details: Mapping[str, object], *, at_ms: int, actor: str
) -> None:
    """One timeline entry; the alert itself is left as it is."""
    await db.execute(
        "INSERT INTO alert_events (alert_id, at, actor, action, details)"
        " VALUES (%s, %s, %s, %s, %s)",
        (alert_id, _at(at_ms), actor, action, Jsonb(dict(details))),
    )


# --- inside -------------------------------------------------------------------------------


async def _returning(db: Db, query: str, params: Any) -> Mapping[str, Any]:
    if isinstance(db, AsyncConnection):
        async with db.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
    else:
        await db.execute(query, params)
        row = await db.fetchone()
    assert row is not None, "the alert row is locked by this transaction"
    return cast(Mapping[str, Any], row)


async def _publish(
    db: Db,
    alert: Alert,
    status: AlertStatus,
    version: int,
    actor: str,
    at_ms: int,
    source: str,
    reason: Literal["escalated", "reminder"] | None = None,
) -> AlertChange:
    change = AlertChange(
        id=change_id(alert.id, status, version),
        alert_id=alert.id,
        elder_id=alert.elder_id,
        kind=alert.kind,
        severity=alert.severity,
        status=status,
        device_time_ms=alert.device_time_ms,
        changed_ms=at_ms,
        actor=actor,
        reason=reason,
    )
    await alert_outbox.write(db, source, [change])
    return change
