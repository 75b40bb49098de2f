"""PostgreSQL side of the rules engine: load an elder's view, apply decisions, timers.

Every event (and every due timer) is one transaction: take the elder's advisory lock
(events and timers of one elder are serialised, whichever worker runs them), mark the
event seen (a redelivery stops there), lock the elder's active alerts, decide, write
alerts + alert_events + rule_timers + the outbox, commit. Publishing happens after
commit, from the outbox (carewatch.alert_outbox).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from carewatch import alert_outbox as outbox
from carewatch import alerts, bus
from carewatch.alerts import Alert
from carewatch.clock import Clock
from carewatch.messages import OPEN_STATUSES, AlertChange, Event
from carewatch.settings import Settings
from rules_engine.apply import (
    AlertState,
    Annotated,
    Opened,
    Renotified,
    Repeated,
    Transitioned,
    Updated,
    apply,
)
from rules_engine.decisions import CancelTimer, Decision, ScheduleTimer
from rules_engine.detectors.base import ActiveAlert, DueTimer, ElderView
from rules_engine.geo import LatLon, Zone
from rules_engine.thresholds import resolve_thresholds
from rules_engine.timeconv import dt_to_ms, ms_to_dt

log = logging.getLogger(__name__)

ACTOR = "rules"

Cursor = AsyncCursor[DictRow]
DecideEvent = Callable[[ElderView], Sequence[Decision]]
DecideTimer = Callable[[DueTimer, ElderView], Sequence[Decision]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event or timer did. `changes` are committed and still to be published."""

    result: Literal["applied", "duplicate", "unknown_elder", "gone"]
    changes: list[AlertChange] = field(default_factory=list)


# --- entry points --------------------------------------------------------------------


async def apply_event(
    pool: AsyncConnectionPool,
    event: Event,
    decide: DecideEvent,
    defaults: Settings,
    clock: Clock,
) -> Outcome:
    """Apply one event exactly once; a redelivery returns the changes it made before.

    An event of an elder missing from the registry is rolled back unseen, so the
    caller's dead-letter write decides whether it is kept (a redelivery retries it).
    """
    try:
        async with pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await _lock_elder(cur, event.elder_id)
            await cur.execute(
                "INSERT INTO rules_seen_events (event_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (event.id,),
            )
            if cur.rowcount == 0:
                return Outcome("duplicate", await outbox.for_source(cur, event.id))
            loaded = await _load_view(cur, event.elder_id, defaults)
            if loaded is None:
                raise _UnknownElder
            view, rows = loaded
            changes = await _apply(cur, view, rows, decide(view), defaults, clock, event.id)
            return Outcome("applied", changes)
    except _UnknownElder:
        return Outcome("unknown_elder")


class _UnknownElder(Exception):
    """Raised inside the transaction to roll it back."""


async def load_view(
    pool: AsyncConnectionPool, elder_id: str, defaults: Settings
) -> ElderView | None:
    """The elder's view read in one statement, without locks or a transaction, for the
    worker's view cache (rules_engine.view_cache): nothing is written on its strength
    alone, whatever writes decides again on the view apply_event loads under the lock."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_VIEW_AT_ONCE, (elder_id, list(OPEN_STATUSES), elder_id))
        return _view_of(await cur.fetchone(), elder_id, defaults)


async def timer_states(pool: AsyncConnectionPool, timer_ids: Sequence[str]) -> dict[str, bool]:
    """Which of `timer_ids` exist, each with whether it is still pending (not fired)."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, fired_at IS NULL AS pending FROM rule_timers WHERE id = ANY(%s)",
            (list(timer_ids),),
        )
        return {row["id"]: bool(row["pending"]) for row in await cur.fetchall()}


async def due_timers(pool: AsyncConnectionPool, now_ms: int, limit: int = 200) -> list[DueTimer]:
    """Unfired timers due by `now_ms` (unlocked candidates; `fire_timer` claims each)."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, kind, elder_id, due_at, payload FROM rule_timers"
            " WHERE fired_at IS NULL AND due_at <= %s ORDER BY due_at LIMIT %s",
            (ms_to_dt(now_ms), limit),
        )
        return [_timer(row) for row in await cur.fetchall()]


async def fire_timer(
    pool: AsyncConnectionPool,
    timer_id: str,
    elder_id: str,
    decide: DecideTimer,
    defaults: Settings,
    clock: Clock,
) -> Outcome:
    """Claim one due timer, apply its effect and mark it fired in one transaction.

    The elder lock is taken before the timer row lock (the order events use too), and
    SKIP LOCKED lets concurrent workers pass over a timer another one is firing.
    """
    async with pool.connection() as conn, conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await _lock_elder(cur, elder_id)
        await cur.execute(
            "SELECT id, kind, elder_id, due_at, payload FROM rule_timers"
            " WHERE id = %s AND fired_at IS NULL AND due_at <= %s FOR UPDATE SKIP LOCKED",
            # due_at again: an event may have pushed the deadline back since it was listed
            (timer_id, ms_to_dt(clock.now_ms())),
        )
        row = await cur.fetchone()
        if row is None:
            return Outcome("gone")  # fired, cancelled or being fired elsewhere
        timer = _timer(row)
        # marked fired before its effects (same transaction, so still atomic): an effect
        # may arm this very timer again (a deadline re-armed from a later sign of life)
        await cur.execute(
            "UPDATE rule_timers SET fired_at = %s WHERE id = %s",
            (ms_to_dt(clock.now_ms()), timer_id),
        )
        loaded = await _load_view(cur, elder_id, defaults)
        if loaded is None:
            return Outcome("unknown_elder")
        view, rows = loaded
        decisions = decide(timer, view)
        changes = await _apply(cur, view, rows, decisions, defaults, clock, timer_id)
        return Outcome("applied", changes)


async def abandon_timer(pool: AsyncConnectionPool, timer: DueTimer, detail: str) -> None:
    """A timer whose effect fails every time: keep it as a dead letter, stop retrying it."""
    body = json.dumps(
        {
            "id": timer.timer_id,
            "kind": timer.kind,
            "elder_id": timer.elder_id,
            "due_ms": timer.due_ms,
            "payload": dict(timer.payload),
        },
        default=str,
    ).encode()
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO dead_letters (topic, reason, detail, payload)"
            " VALUES ('rule_timers', 'rules_timer_failed', %s, %s)",
            (detail[:2000], body),
        )
        await conn.execute(
            "UPDATE rule_timers SET fired_at = now() WHERE id = %s AND fired_at IS NULL",
            (timer.timer_id,),
        )


async def dead_letter(
    pool: AsyncConnectionPool,
    *,
    topic: str,
    device_id: str | None,
    reason: str,
    detail: str,
    payload: bytes,
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO dead_letters (topic, device_id, reason, detail, payload)"
            " VALUES (%s, %s, %s, %s, %s)",
            (topic, device_id, reason, detail[:2000], payload),
        )


async def prune(pool: AsyncConnectionPool, older_than_s: float) -> int:
    """Forget seen events and published changes older than the redelivery horizon."""
    async with pool.connection() as conn:
        seen = await conn.execute(
            "DELETE FROM rules_seen_events WHERE seen_at < now() - make_interval(secs => %s)",
            (older_than_s,),
        )
        sent = await conn.execute(
            "DELETE FROM rules_outbox WHERE published_at < now() - make_interval(secs => %s)",
            (older_than_s,),
        )
        return max(seen.rowcount, 0) + max(sent.rowcount, 0)


# --- inside the transaction ----------------------------------------------------------


async def _lock_elder(cur: Cursor, elder_id: str) -> None:
    await cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"rules:{elder_id}",)
    )


async def _load_view(
    cur: Cursor, elder_id: str, defaults: Settings
) -> tuple[ElderView, dict[str, Alert]] | None:
    """The elder's thresholds (read fresh: profile edits apply at once), zones and active
    alerts, the alerts locked against concurrent changes until the transaction ends;
    with the active alerts' rows by id, for the writes."""
    await cur.execute(_VIEW_LOCKED, (elder_id, list(OPEN_STATUSES), elder_id))
    row = await cur.fetchone()
    view = _view_of(row, elder_id, defaults)
    if row is None or view is None:
        return None
    rows = {
        r["id"]: Alert(
            r["id"],
            elder_id,
            r["device_id"],
            r["kind"],
            r["severity"],
            r["status"],
            int(r["device_time_ms"]),
            int(r["version"]),
            r["acknowledged_by"],
        )
        for r in row["active"]
    }
    return view, rows


def _view_of(row: DictRow | None, elder_id: str, defaults: Settings) -> ElderView | None:
    if row is None:
        return None
    active = [_alert(r, int(r["device_time_ms"])) for r in row["active"]]
    return _view(elder_id, defaults, row, active, row["zones"])


# The view in one statement, alerts and zones aggregated as JSON: psycopg spends far more
# CPU per statement than PostgreSQL does on these. _VIEW_LOCKED locks the active alerts in
# a CTE (one with a locking clause is never inlined: it runs, and locks, in full).
_VIEW_COLUMNS = """
SELECT cp.id AS profile_id, cp.thresholds, e.lat, e.lon,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
      'id', a.id::text, 'kind', a.kind, 'severity', a.severity, 'status', a.status,
      'device_id', a.device_id, 'rule', a.rule, 'confidence', a.confidence,
      'details', a.details, 'version', a.version, 'acknowledged_by', a.acknowledged_by,
      'device_time_ms', floor(extract(epoch FROM a.device_time) * 1000)::bigint)), '[]')
   FROM active a) AS active,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
      'name', z.name, 'centre_lat', z.centre_lat, 'centre_lon', z.centre_lon,
      'radius_m', z.radius_m, 'polygon', z.polygon) ORDER BY z.id), '[]')
   FROM geofence_zones z WHERE z.elder_id = e.id) AS zones
FROM elders e LEFT JOIN care_profiles cp ON cp.id = e.care_profile_id WHERE e.id = %s
"""
_ACTIVE = (
    "WITH active AS (SELECT id, kind, severity, status, device_id, rule, confidence, details,"
    " device_time, version, acknowledged_by FROM alerts WHERE elder_id = %s AND status = ANY(%s))"
)
_ACTIVE_LOCKED = (
    "WITH active AS (SELECT id, kind, severity, status, device_id, rule, confidence, details,"
    " device_time, version, acknowledged_by FROM alerts WHERE elder_id = %s AND status = ANY(%s)"
    " FOR NO KEY UPDATE)"
)
_VIEW_AT_ONCE = _ACTIVE + _VIEW_COLUMNS
_VIEW_LOCKED = _ACTIVE_LOCKED + _VIEW_COLUMNS


def _alert(r: Mapping[str, Any], device_time_ms: int) -> ActiveAlert:
    return ActiveAlert(
        alert_id=r["id"],
        kind=r["kind"],
        severity=r["severity"],
        status=r["status"],
        device_id=r["device_id"],
        device_time_ms=device_time_ms,
        rule=r["rule"],
        confidence=r["confidence"],
        details=r["details"] if isinstance(r["details"], dict) else {},
    )


def _view(
    elder_id: str,
    defaults: Settings,
    row: Mapping[str, Any],
    active: Sequence[ActiveAlert],
    zone_rows: Sequence[Mapping[str, Any]],
) -> ElderView:
    overrides = row["thresholds"] if isinstance(row["thresholds"], dict) else {}
    zones: list[Zone] = []
    for r in zone_rows:
        if r["polygon"] is not None:
            points = tuple(LatLon(float(p[0]), float(p[1])) for p in r["polygon"])
            zones.append(Zone(r["name"], points=points))
        else:
            centre = LatLon(r["centre_lat"], r["centre_lon"])
            zones.append(Zone(r["name"], centre=centre, radius_m=r["radius_m"]))
    return ElderView(
        elder_id,
        resolve_thresholds(defaults, overrides),
        {a.kind: a for a in active},
        profile_id=row["profile_id"],
        profile=overrides,
        home=LatLon(row["lat"], row["lon"]),
        zones=tuple(zones),
    )


def _timer(row: DictRow) -> DueTimer:
    return DueTimer(
        timer_id=row["id"],
        kind=row["kind"],
        elder_id=row["elder_id"],
        due_ms=dt_to_ms(row["due_at"]),
        payload=row["payload"] if isinstance(row["payload"], dict) else {},
    )


async def _apply(
    cur: Cursor,
    view: ElderView,
    rows: dict[str, Alert],
    decisions: Sequence[Decision],
    defaults: Settings,
    clock: Clock,
    source: str,
) -> list[AlertChange]:
    """Carry out `decisions` (rules_engine.apply decides what they do) as SQL: alert state
    through its owner (carewatch.alerts), which writes each change's outbox row under
    `source`, and the timers here. `rows` are the elder's active alerts, kept current."""
    now_ms = clock.now_ms()
    elder_id = view.elder_id
    _, effects = apply(AlertState.of(view.active), decisions, now_ms)
    changes: list[AlertChange] = []

    def changed(change: AlertChange) -> None:
        changes.append(change)
        rows[change.alert_id] = alerts.after(rows[change.alert_id], change)

    for e in effects:
        match e:
            case Opened(alert=a, decision=d):
                row = Alert(
                    a.alert_id, elder_id, a.device_id, a.kind, a.severity, a.status,
                    a.device_time_ms, 1,
                )  # fmt: skip
                change = await alerts.open_alert(
                    cur,
                    row,
                    source_event_id=d.source_event_id,
                    rule=d.rule,
                    threshold=d.threshold,
                    confidence=d.confidence,
                    details=d.details,
                    actor=ACTOR,
                    at_ms=now_ms,
                    source=source,
                )
                if change is None:
                    log.warning(
                        "alert already exists, open skipped", extra={"alert_id": a.alert_id}
                    )
                else:
                    rows[a.alert_id] = row
                    changes.append(change)
            case Transitioned():
                made = await alerts.transition(
                    cur,
                    rows[e.before.alert_id],
                    e.action,
                    ACTOR,
                    now_ms,
                    source=source,
                    details=e.details,
                    confidence=e.confidence,
                )
                # the rules engine's actions (confirm, cancel, resolve) always change it
                assert made is not None, f"{e.action} left alert {e.before.alert_id} as it was"
                changed(made)
            case Renotified():
                changed(
                    await alerts.renotify(
                        cur,
                        rows[e.before.alert_id],
                        e.reason,
                        ACTOR,
                        now_ms,
                        source=source,
                        severity=e.severity,
                        details=e.details,
                    )
                )
            case Repeated(decision=d):
                repeat = {"event_id": d.source_event_id, "device_id": d.device_id}
                await alerts.count_repeat(cur, d.alert_id, repeat, actor=ACTOR, at_ms=now_ms)
            case Updated(decision=d):
                await alerts.update_details(
                    cur, d.alert_id, d.action, d.confidence, d.details, actor=ACTOR, at_ms=now_ms
                )
            case Annotated(decision=d):
                await alerts.record(cur, d.alert_id, d.action, d.details, at_ms=now_ms, actor=ACTOR)
            case ScheduleTimer():
                await cur.execute(
                    _SCHEDULE_REARM if e.replace else _SCHEDULE,
                    (
                        e.timer_id,
                        bus.shard_of(elder_id, defaults.bus_shards),
                        elder_id,
                        e.kind,
                        ms_to_dt(e.due_ms),
                        Jsonb(dict(e.payload)),
                    ),
                )
            case CancelTimer():
                await cur.execute(
                    "DELETE FROM rule_timers WHERE id = %s AND fired_at IS NULL", (e.timer_id,)
                )
            case _:
                assert_never(e)
    return changes


_SCHEDULE = (
    "INSERT INTO rule_timers (id, shard, elder_id, kind, due_at, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
# A sliding deadline moved (and armed again if it had fired): ScheduleTimer(replace=True).
_SCHEDULE_REARM = (
    "INSERT INTO rule_timers (id, shard, elder_id, kind, due_at, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
    " due_at = EXCLUDED.due_at, payload = EXCLUDED.payload, fired_at = NULL"
)
