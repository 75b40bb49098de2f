"""The database edge of the visits package: load what the ranking needs, record check-ins.

The caller (the operator API) decides which elders: it passes rows it read under the
caller's scope (operator_api.elders.elders_in_scope: id, name, grid_id, care_profile_id,
lives_alone, last_sign_of_life); everything here is keyed by those ids.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from visits.decline import BASELINE_DAYS, RECENT_DAYS, DayActivity
from visits.ranking import VisitInputs

Outcome = Literal["visited", "phoned", "not_home"]
OUTCOMES: tuple[Outcome, ...] = ("visited", "phoned", "not_home")
OUTCOME_LABELS: dict[str, str] = {
    "visited": "已入户走访",
    "phoned": "已电话访问",
    "not_home": "未遇本人",
}
# Check-ins that reached the elder: a sign of life, and a visit done.
CONTACT_OUTCOMES: tuple[Outcome, ...] = ("visited", "phoned")
MAX_NOTE = 500

DEVICE_LABELS: dict[str, str] = {
    "wristband": "手环",
    "pir": "人体感应",
    "door": "门磁",
    "water_meter": "水表",
    "radar": "雷达",
    "smoke": "烟感",
    "gas": "燃气探测器",
    "leak": "水浸探测器",
    "contact": "门窗磁",
    "switch": "开关",
    "plug": "智能插座",
    "power_meter": "电表",
}
LOW_BATTERY_PCT = 20
ALERT_WINDOW = timedelta(days=30)
# Activity days read: the baseline and the recent window (and a spare day, so a list
# opened just after midnight still has a full baseline).
ACTIVITY_DAYS = RECENT_DAYS + BASELINE_DAYS + 1
# A past day's figures are kept once it ended this long ago (uploads that come late).
SETTLE = timedelta(hours=1)

Row = dict[str, Any]


async def _rows(conn: AsyncConnection[Any], query: LiteralString, params: Any) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


_DETAILS = """
SELECT e.id, e.address,
  (SELECT count(*) FROM alerts a WHERE a.elder_id = e.id AND a.opened_at >= %(since)s
     AND a.status <> 'false_alarm') AS alerts_30d,
  (SELECT count(*) FROM alerts a WHERE a.elder_id = e.id AND a.opened_at >= %(since)s
     AND a.status = 'false_alarm') AS false_alarms_30d,
  (SELECT max(v.at) FROM visit_checkins v WHERE v.elder_id = e.id
     AND v.outcome IN ('visited', 'phoned')) AS last_visit
FROM elders e WHERE e.id = ANY(%(ids)s)
"""

_DEVICES = """
SELECT elder_id, kind, online, battery FROM devices WHERE elder_id = ANY(%(ids)s)
ORDER BY elder_id, kind, id
"""

# One row per elder and local day: the wristband's step counter restarts at local
# midnight, so its maximum is the day's steps; motion and water use are counted readings.
# A day with no reading of a measure has NULL for it (missing), not 0.
_ACTIVITY = """
SELECT t.elder_id, (t.ts AT TIME ZONE %(tz)s)::date AS day,
  max((t.data->>'steps')::numeric) FILTER (WHERE jsonb_typeof(t.data->'steps') = 'number')
    AS steps,
  CASE WHEN bool_or(t.data ? 'motion')
    THEN count(*) FILTER (WHERE t.data->'motion' = 'true'::jsonb) END AS motion,
  CASE WHEN bool_or(jsonb_typeof(t.data->'water_flow') = 'number')
    THEN count(*) FILTER (WHERE jsonb_typeof(t.data->'water_flow') = 'number'
                            AND (t.data->>'water_flow')::float8 > 0.1) END AS water
FROM telemetry t
WHERE t.elder_id = ANY(%(ids)s) AND t.ts >= %(since)s AND t.ts < %(until)s
GROUP BY 1, 2
"""


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _day_start(day: date, now: datetime) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=now.tzinfo)


def _activity(row: Row) -> DayActivity:
    return DayActivity(
        steps=_float(row["steps"]), motion=_float(row["motion"]), water=_float(row["water"])
    )


async def daily_activity(
    conn: AsyncConnection[Any], ids: Sequence[str], now: datetime, tz: str
) -> dict[str, dict[date, DayActivity]]:
    """Each elder's figures for the ACTIVITY_DAYS local days up to yesterday (the decline
    signal never uses the day still running). Days kept in visit_activity_days are read
    from there; the others are computed from telemetry in one query, and kept once they
    ended SETTLE ago."""
    today = now.date()
    days = [today - timedelta(days=n) for n in range(1, ACTIVITY_DAYS)]
    kept = await _rows(
        conn,
        "SELECT elder_id, day, steps, motion, water FROM visit_activity_days"
        " WHERE elder_id = ANY(%(ids)s) AND day >= %(first)s AND day < %(today)s",
        {"ids": list(ids), "first": days[-1], "today": today},
    )
    found: dict[str, dict[date, DayActivity]] = defaultdict(dict)
    for row in kept:
        found[row["elder_id"]][row["day"]] = _activity(row)
    missing = [(e, d) for e in ids for d in days if d not in found.get(e, {})]
    if not missing:
        return found
    elders = sorted({e for e, _d in missing})
    first = min(d for _e, d in missing)
    computed: dict[tuple[str, date], DayActivity] = {}
    params = {
        "ids": elders,
        "tz": tz,
        "since": _day_start(first, now),
        "until": _day_start(today, now),
    }
    for row in await _rows(conn, _ACTIVITY, params):
        computed[(row["elder_id"], row["day"])] = _activity(row)
    settled = [(e, d) for e, d in missing if _day_start(d + timedelta(days=1), now) + SETTLE <= now]
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO visit_activity_days (elder_id, day, steps, motion, water)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (elder_id, day) DO UPDATE"
            " SET steps = EXCLUDED.steps, motion = EXCLUDED.motion, water = EXCLUDED.water,"
            " computed_at = now()",
            [
                (e, d, a.steps, a.motion, a.water)
                for e, d in settled
                for a in [computed.get((e, d), DayActivity())]
            ],
        )
    for (e, d), a in computed.items():
        found[e][d] = a
    return found


async def load_inputs(
    conn: AsyncConnection[Any], elders: Sequence[Row], now: datetime, tz: str
) -> list[VisitInputs]:
    """VisitInputs of these elders at `now` (aware, in the site's zone named `tz`)."""
    ids = [e["id"] for e in elders]
    if not ids:
        return []
    details = {
        r["id"]: r for r in await _rows(conn, _DETAILS, {"ids": ids, "since": now - ALERT_WINDOW})
    }
    offline: dict[str, list[str]] = defaultdict(list)
    low: dict[str, list[str]] = defaultdict(list)
    for d in await _rows(conn, _DEVICES, {"ids": ids}):
        label: str = DEVICE_LABELS.get(d["kind"]) or d["kind"]
        if not d["online"]:
            offline[d["elder_id"]].append(label)
        elif d["battery"] is not None and d["battery"] <= LOW_BATTERY_PCT:
            low[d["elder_id"]].append(label)
    activity = await daily_activity(conn, ids, now, tz)
    return [
        VisitInputs(
            elder_id=e["id"],
            name=e["name"],
            grid_id=e["grid_id"],
            address=details[e["id"]]["address"],
            care_profile_id=e["care_profile_id"],
            lives_alone=e["lives_alone"],
            alerts_30d=details[e["id"]]["alerts_30d"],
            false_alarms_30d=details[e["id"]]["false_alarms_30d"],
            devices_offline=tuple(offline[e["id"]]),
            devices_low_battery=tuple(low[e["id"]]),
            last_sign_of_life=e["last_sign_of_life"],
            last_visit=details[e["id"]]["last_visit"],
            activity=activity.get(e["id"], {}),
        )
        for e in elders
    ]


async def record_checkin(
    conn: AsyncConnection[Any], elder_id: str, outcome: Outcome, actor: str, note: str
) -> Row:
    """Store one check-in (the caller has checked the elder is in its scope)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    rows = await _rows(
        conn,
        "INSERT INTO visit_checkins (elder_id, outcome, actor, note) VALUES (%s, %s, %s, %s)"
        " RETURNING id, elder_id, at, outcome, actor, note",
        (elder_id, outcome, actor, note[:MAX_NOTE]),
    )
    return rows[0]


async def recent_checkins(
    conn: AsyncConnection[Any], elder_ids: Sequence[str], limit: int = 50
) -> list[Row]:
    """The latest check-ins of these elders, newest first."""
    return await _rows(
        conn,
        "SELECT id, elder_id, at, outcome, actor, note FROM visit_checkins"
        " WHERE elder_id = ANY(%s) ORDER BY at DESC, id DESC LIMIT %s",
        (list(elder_ids), limit),
    )


def latest_by_elder(checkins: Sequence[Row]) -> Mapping[str, Row]:
    """The newest check-in per elder from a newest-first list."""
    found: dict[str, Row] = {}
    for c in checkins:
        found.setdefault(c["elder_id"], c)
    return found
