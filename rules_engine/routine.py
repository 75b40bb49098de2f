"""The elder's own routine, learned from the telemetry store: how long they are usually
still, by hour of the week.

For each of the last `weeks` weeks and each local hour, the longest gap between two
signs of life that began in that hour (a nap that starts at 13:10 and ends at 16:00 is
a 2 h 50 min gap of the 13:00 slot). The routine of an hour of the week is the 95th
percentile of those gaps over the weeks, if at least `min_weeks` weeks saw one. The
inactivity detector clamps it between the profile's floor and ceiling.

Learning is I/O (one aggregate query per elder); deciding is not: `RoutineBook`
caches routines in memory, `get()` never blocks (a miss returns None, the detector
uses the floor, and the elder is queued), and `refresh()` runs in the timer loop.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock
from rules_engine.localtime import SITE_TZ
from rules_engine.timeconv import ms_to_dt

log = logging.getLogger(__name__)

WEEK_MS = 7 * 86_400_000
WATER_USE_MIN_LPM = 0.1  # a meter reading above this is somebody using water


@dataclass(frozen=True, slots=True)
class Routine:
    gap_p95_s: Mapping[int, float] = field(default_factory=dict)  # by hour of week

    def usual_gap_s(self, hour_of_week: int) -> float | None:
        return self.gap_p95_s.get(hour_of_week)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def learn_routine(slot_gaps: Iterable[tuple[int, float]], min_weeks: int = 3) -> Routine:
    """From (hour of week, longest gap in seconds) per hour slot of the history."""
    by_hour: dict[int, list[float]] = defaultdict(list)
    for hour, gap_s in slot_gaps:
        by_hour[hour].append(gap_s)
    return Routine(
        {h: percentile(gaps, 0.95) for h, gaps in by_hour.items() if len(gaps) >= min_weeks}
    )


# Signs of life as stored in telemetry.data (see ingest/validate.py); steps count only
# when they went up since the device's previous step report.
_SLOT_GAPS = """
WITH recent AS (
    SELECT ts, device_id, data, data ? 'steps' AS has_steps FROM telemetry
    WHERE elder_id = %(elder)s AND ts >= %(since)s AND ts < %(until)s
), stepped AS (
    SELECT ts, data, (data->>'steps')::bigint AS steps,
           lag((data->>'steps')::bigint)
               OVER (PARTITION BY device_id, has_steps ORDER BY ts) AS prev_steps
    FROM recent
), signs AS (
    SELECT ts FROM stepped
    WHERE data->>'motion' = 'true'
       OR (data->>'water_flow')::float8 > %(water)s
       OR data->>'event' IN ('door_open', 'door_close', 'bed_exit')
       OR steps > prev_steps
), gaps AS (
    SELECT ts, lead(ts) OVER (ORDER BY ts) - ts AS gap FROM signs
)
SELECT date_trunc('hour', ts AT TIME ZONE %(tz)s) AS slot,
       max(extract(epoch FROM gap))::float8 AS gap_s
FROM gaps WHERE gap IS NOT NULL GROUP BY 1
"""


async def load_slot_gaps(
    pool: AsyncConnectionPool, elder_id: str, now_ms: int, weeks: int, tz: ZoneInfo
) -> list[tuple[int, float]]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            _SLOT_GAPS,
            {
                "elder": elder_id,
                "since": ms_to_dt(now_ms - weeks * WEEK_MS),
                "until": ms_to_dt(now_ms),
                "water": WATER_USE_MIN_LPM,
                "tz": tz.key,
            },
        )
        rows = await cur.fetchall()
    # slot is a naive local timestamp: its weekday and hour are the local ones
    return [(r["slot"].weekday() * 24 + r["slot"].hour, float(r["gap_s"])) for r in rows]


@dataclass(frozen=True, slots=True)
class _Entry:
    routine: Routine
    loaded_ms: int


class RoutineBook:
    """Routines cached per elder; stale or missing ones are queued for `refresh()`."""

    def __init__(
        self,
        tz: ZoneInfo = SITE_TZ,
        *,
        weeks: int = 4,
        min_weeks: int = 3,
        refresh_every_s: float = 6 * 3600,
        per_refresh: int = 5,
        max_elders: int = 500_000,
    ) -> None:
        self.tz = tz
        self.weeks = weeks
        self.min_weeks = min_weeks
        self._refresh_every_ms = round(refresh_every_s * 1000)
        self._per_refresh = per_refresh
        self._max = max_elders
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._wanted: OrderedDict[str, None] = OrderedDict()

    def get(self, elder_id: str, now_ms: int) -> Routine | None:
        entry = self._entries.get(elder_id)
        if entry is None or now_ms - entry.loaded_ms >= self._refresh_every_ms:
            self._wanted[elder_id] = None
        return entry.routine if entry is not None else None

    def put(self, elder_id: str, routine: Routine, now_ms: int) -> None:
        self._entries[elder_id] = _Entry(routine, now_ms)
        self._entries.move_to_end(elder_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def refresh(self, pool: AsyncConnectionPool, clock: Clock) -> None:
        """Learn the routines of up to `per_refresh` queued elders (oldest request first)."""
        for _ in range(min(self._per_refresh, len(self._wanted))):
            elder_id, _none = self._wanted.popitem(last=False)
            now_ms = clock.now_ms()
            try:
                gaps = await load_slot_gaps(pool, elder_id, now_ms, self.weeks, self.tz)
            except Exception:
                self._wanted[elder_id] = None  # retried on a later refresh
                raise
            routine = learn_routine(gaps, self.min_weeks)
            self.put(elder_id, routine, now_ms)
            log.debug(
                "routine learned", extra={"elder_id": elder_id, "hours": len(routine.gap_p95_s)}
            )
