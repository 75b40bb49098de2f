"""Rooms, and the elder's routine at home learned from signs of life by room.

`RoomBook`: where each home sensor is (devices.room, from the ledger: 卧室, 卫生间, 客厅,
厨房, 门口...) and its kind, cached in memory and refreshed off the hot path.

`learn()` (pure) turns a few days of signs of life, each with the room it came from, into
a `HomeRoutine`:
- still periods: for each local day, room and hour, the longest time without any sign of
  life that began with a sign in that room in that hour (a gap that starts with the front
  door is an outing, not a still period). The usual still period of (room, hour) is the
  95th percentile of those longest gaps over every day *and the neighbouring hours*
  (h-1, h, h+1), pooled, once there are `MIN_SAMPLES`: three days are enough, not the
  three weeks an hour-of-the-week bin needs;
- bathroom stays: from entering the bathroom to the move out of it;
- night bed exits: in quiet hours, after `BED_MIN_MS` with signs from the bedroom only,
  a move to another room; it ends with the move back to the bedroom. An exit with no
  return before quiet hours end is the elder getting up (the rise time);
- rise time: the local hour of those last exits.
Moves are the rules' own (`moved`, `Whereabouts`): a move that would start the bathroom
or night-exit rule must be seen (a walk within `WALK_MS`, or a second sign there).

The inactivity detector (detectors/inactivity.py) turns these into thresholds with a
margin, a floor and a ceiling. Learning is I/O (the signs come from the telemetry store):
`HomeRoutineBook` caches routines and learns up to a few elders per refresh.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock
from carewatch.rooms import BATHROOM, BEDROOM, ENTRANCE, normalise_room
from rules_engine.localtime import SITE_TZ, in_window
from rules_engine.routine import WATER_USE_MIN_LPM, percentile
from rules_engine.timeconv import ms_to_dt

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
POOL_H = 2  # a still period counts for its hour and POOL_H hours either side
OWN_ROOMS = frozenset({BEDROOM, ENTRANCE})  # rooms with a still distribution of their own
STILL_Q = 0.99  # the usual still period: this quantile of the pooled longest gaps
MIN_SAMPLES = 6  # (day, hour) slots behind a usual still period: 2 days x 3 hours
MIN_EVENTS = 3  # bathroom stays / night exits behind their usual
BED_MIN_MS = 30 * 60_000
LEARN_DAYS = 14
# A move from one room to another is seen as a walk: the sensor of the room left sees the
# elder get up and go. Frail elders take 20-30 s for the Timed Up and Go test (stand up,
# walk 3 m, turn, sit down); 2 min leaves room for a slow rise. A sign from another room
# that no sign led to within this time, and that no second sign from that room confirms,
# is not taken as the elder having moved there (a PIR triggered by sun, heat, a draught).
WALK_MS = 2 * 60_000


@dataclass(frozen=True, slots=True)
class Placement:
    room: str
    kind: str


class RoomBook:
    """Device id -> (room, kind) for home sensors with a room in the ledger."""

    def __init__(self, refresh_every_s: float = 300.0) -> None:
        self._rooms: dict[str, Placement] = {}
        self._refresh_every_ms = round(refresh_every_s * 1000)
        self._next_ms = 0

    def put(self, device_id: str, room: str, kind: str = "pir") -> None:
        self._rooms[device_id] = Placement(normalise_room(room), kind)

    def room(self, device_id: str) -> str | None:
        placed = self._rooms.get(device_id)
        return placed.room if placed is not None else None

    def get(self, device_id: str) -> Placement | None:
        return self._rooms.get(device_id)

    async def refresh(self, pool: AsyncConnectionPool, now_ms: int) -> None:
        if now_ms < self._next_ms:
            return
        self._next_ms = now_ms + self._refresh_every_ms
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, kind, room FROM devices WHERE room IS NOT NULL AND room <> ''"
            )
            rows = await cur.fetchall()
        fresh: dict[str, Placement] = {}
        for row in rows:
            device_id, kind, room = _row(row)
            fresh[device_id] = Placement(normalise_room(room), kind)
        self._rooms = fresh


def _row(row: object) -> tuple[str, str, str]:
    if isinstance(row, Mapping):
        return str(row["id"]), str(row["kind"]), str(row["room"])
    assert isinstance(row, tuple)
    return str(row[0]), str(row[1]), str(row[2])


@dataclass(frozen=True, slots=True)
class LifeSign:
    at_ms: int
    room: str | None  # None: a sign from no room (wristband steps, a meter)
    door: bool = False  # the front door: a gap after it is an outing


@dataclass(frozen=True, slots=True)
class HomeRoutine:
    still_s: Mapping[tuple[str, int], float] = field(default_factory=dict)  # (room, hour)
    bathroom_stay_s: float | None = None
    night_exit_s: float | None = None
    rise_h: float | None = None  # hours after noon of the earliest usual getting up
    days: float = 0.0

    def usual_still_s(self, room: str, hour: int) -> float | None:
        return self.still_s.get((room, hour))


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where the elder was last seen, from signs of sensors with a room.

    `room` is where the elder is taken to be. A move that would start one of the fast
    rules (entering the bathroom; leaving the bed at night) must be seen: a walk (a sign
    within `WALK_MS` of the last sign elsewhere) or a second sign from the new room. A
    lone sign that nothing led to is kept apart as `stray_room` until a second sign from
    that room confirms it (the elder did go there, at `stray_ms`), a sign within
    `WALK_MS` after it shows a walk from it, or a sign from `room` drops it. Any other
    move is taken at once: a lone sign can end a fast rule, never start one.
    """

    room: str
    since_ms: int  # the arrival in this room (first sign in it since another room)
    last_ms: int  # the last sign from this room
    bedroom_since_ms: int | None = None  # signs from the bedroom only since then
    exit_ms: int | None = None  # a night bed exit with no sign from the bedroom since
    stray_room: str | None = None  # a lone sign from another room, not (yet) a move
    stray_ms: int | None = None

    @property
    def seen_ms(self) -> int:
        """The last sign from any room (a stray included)."""
        return max(self.last_ms, self.stray_ms or 0)

    @property
    def sign_room(self) -> str:
        """The room of the last sign (a stray included)."""
        return self.stray_room or self.room


def moved(prev: Whereabouts | None, room: str, at_ms: int, quiet: bool) -> Whereabouts:
    """The whereabouts after a sign from `room` at `at_ms` (`quiet`: in quiet hours)."""
    if prev is None:
        return Whereabouts(room, at_ms, at_ms, at_ms if room == BEDROOM else None)
    if at_ms < prev.seen_ms:
        return prev  # older than what is known: changes nothing
    in_bed = (
        quiet and prev.bedroom_since_ms is not None and at_ms - prev.bedroom_since_ms >= BED_MIN_MS
    )
    starts_fast_rule = room == BATHROOM or (in_bed and prev.exit_ms is None)
    if room == prev.room:
        since = prev.since_ms
    elif room == prev.stray_room and at_ms == prev.stray_ms:
        return prev  # the same sign again: changes nothing
    elif room == prev.stray_room and prev.stray_ms is not None:
        since = prev.stray_ms  # a second sign: the elder did go there
    elif at_ms - prev.seen_ms <= WALK_MS or not starts_fast_rule:
        since = at_ms  # walked there from the last sign, or nothing hangs on it
    else:
        return replace(prev, stray_room=room, stray_ms=at_ms)
    if room == BEDROOM:
        bed = prev.bedroom_since_ms if prev.bedroom_since_ms is not None else since
        return Whereabouts(room, since, at_ms, bed, None)
    exit_ms = prev.exit_ms if quiet else None
    if (
        exit_ms is None
        and quiet
        and prev.bedroom_since_ms is not None
        and since - prev.bedroom_since_ms >= BED_MIN_MS
    ):
        exit_ms = since  # out of bed after a while in it, at night
    return Whereabouts(room, since, at_ms, None, exit_ms)


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def learn(
    signs: Sequence[LifeSign],
    tz: ZoneInfo = SITE_TZ,
    *,
    quiet_start_h: float = 22.0,
    quiet_end_h: float = 7.0,
) -> HomeRoutine:
    """The routine in `signs` (time order)."""
    if len(signs) < 2:
        return HomeRoutine()
    longest: dict[tuple[str, int, int], float] = {}  # (room, day, hour) -> longest gap
    room: str | None = None
    first_day = signs[0].at_ms // DAY_MS
    for a, b in itertools.pairwise(signs):
        if a.room is not None:
            room = a.room
        if room is not None and not a.door:
            local = _local(a.at_ms, tz)
            key = (room, a.at_ms // DAY_MS - first_day, local.hour)
            gap = (b.at_ms - a.at_ms) / 1000
            if gap > longest.get(key, -1.0):
                longest[key] = gap
    stays: list[float] = []
    exits: list[float] = []
    rises: list[float] = []
    where: Whereabouts | None = None
    for sign in signs:
        if sign.room is None:
            continue
        before = where
        where = moved(
            before, sign.room, sign.at_ms, in_window(sign.at_ms, quiet_start_h, quiet_end_h, tz)
        )
        if before is None:
            continue
        if before.room == BATHROOM and where.room != BATHROOM:  # the stay ended
            stays.append((where.since_ms - before.since_ms) / 1000)
        if before.exit_ms is not None and where.exit_ms is None:  # the night exit ended
            if where.room == BEDROOM:
                exits.append((where.since_ms - before.exit_ms) / 1000)
            else:
                rises.append(_after_noon_h(before.exit_ms, tz))  # never went back: got up
    pooled: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (r, _day, hour), gap in longest.items():
        for h in range(hour - POOL_H, hour + POOL_H + 1):
            pooled[(r, h % 24)].append(gap)
    # Day rooms share the home's still periods: where the elder sits for hours (armchair,
    # table, bed for a nap) is a habit of the time of day more than of one room, and a few
    # days of one room rarely show its longest sitting. Bedroom and entrance keep theirs.
    home: dict[int, list[float]] = defaultdict(list)
    for (r, h), gaps in pooled.items():
        if r not in OWN_ROOMS:
            home[h].extend(gaps)
    for r, h in list(pooled):
        if r not in OWN_ROOMS:
            pooled[(r, h)] = home[h]
    still = {k: percentile(v, STILL_Q) for k, v in pooled.items() if len(v) >= MIN_SAMPLES}
    return HomeRoutine(
        still,
        percentile(stays, 0.95) if len(stays) >= MIN_EVENTS else None,
        percentile(exits, 0.95) if len(exits) >= MIN_EVENTS else None,
        percentile(rises, 0.1) if len(rises) >= MIN_EVENTS else None,
        (signs[-1].at_ms - signs[0].at_ms) / DAY_MS,
    )


def _after_noon_h(ms: int, tz: ZoneInfo) -> float:
    local = _local(ms, tz)
    return (local.hour + local.minute / 60 - 12) % 24


def after_noon_h(ms: int, tz: ZoneInfo) -> float:
    """Local hours since the last noon (a night's times in order: 22:00 = 10, 02:00 = 14)."""
    return _after_noon_h(ms, tz)


# Signs of life by device from the telemetry store, as `SignsOfLife` classifies them
# (ingest/validate.py stores events as data->>'event'); steps and power need the previous
# value and are left to the band-free rooms' sensors: a routine by room needs rooms.
_SIGNS = """
SELECT (extract(epoch FROM ts) * 1000)::bigint AS at_ms, device_id, data->>'event' AS event
FROM telemetry
WHERE elder_id = %(elder)s AND ts >= %(since)s AND ts < %(until)s
  AND (data->>'motion' = 'true'
       OR (data->>'water_flow')::float8 > %(water)s
       OR data->>'event' IN ('door_open', 'door_close', 'bed_exit', 'contact_open',
                             'contact_close', 'switch_on', 'switch_off'))
ORDER BY ts
"""


async def load_signs(
    pool: AsyncConnectionPool,
    elder_id: str,
    rooms: RoomBook,
    now_ms: int,
    days: float,
    *,
    since_ms: int | None = None,
) -> list[LifeSign]:
    """The elder's signs of life before `now_ms`, from `days` before it (or `since_ms`)."""
    since = since_ms if since_ms is not None else now_ms - round(days * DAY_MS)
    async with pool.connection() as conn:
        cur = await conn.execute(
            _SIGNS,
            {
                "elder": elder_id,
                "since": ms_to_dt(since),
                "until": ms_to_dt(now_ms),
                "water": WATER_USE_MIN_LPM,
            },
        )
        rows = await cur.fetchall()
    out: list[LifeSign] = []
    for row in rows:
        at_ms, device_id, event = _sign_row(row)
        out.append(LifeSign(at_ms, rooms.room(device_id), event in ("door_open", "door_close")))
    return out


# What the whereabouts need to be right after a restart: a night in bed (bedroom only
# since the evening), a bathroom stay, a night exit: the inactivity ceiling's 12 h.
RECALL_MS = 12 * 3_600_000


def replay_whereabouts(
    signs: Sequence[tuple[int, str]],
    tz: ZoneInfo,
    start: Whereabouts | None = None,
    *,
    quiet_start_h: float = 22.0,
    quiet_end_h: float = 7.0,
) -> Whereabouts | None:
    """The whereabouts after (time, room) signs in time order, from `start`."""
    where = start
    for at_ms, room in signs:
        where = moved(where, room, at_ms, in_window(at_ms, quiet_start_h, quiet_end_h, tz))
    return where


def _sign_row(row: object) -> tuple[int, str, str | None]:
    if isinstance(row, Mapping):
        return int(row["at_ms"]), str(row["device_id"]), row["event"]
    assert isinstance(row, tuple)
    return int(row[0]), str(row[1]), row[2]


@dataclass(frozen=True, slots=True)
class _Entry:
    routine: HomeRoutine
    loaded_ms: int


class HomeRoutineBook:
    """Home routines cached per elder; `get()` never blocks, misses queue a refresh."""

    def __init__(
        self,
        tz: ZoneInfo = SITE_TZ,
        *,
        days: int = LEARN_DAYS,
        refresh_every_s: float = 6 * 3600,
        per_refresh: int = 5,
        max_elders: int = 500_000,
    ) -> None:
        self.tz = tz
        self.days = days
        self._refresh_every_ms = round(refresh_every_s * 1000)
        self._per_refresh = per_refresh
        self._max = max_elders
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._wanted: OrderedDict[str, None] = OrderedDict()

    def get(self, elder_id: str, now_ms: int) -> HomeRoutine | None:
        entry = self._entries.get(elder_id)
        if entry is None or now_ms - entry.loaded_ms >= self._refresh_every_ms:
            self._wanted[elder_id] = None
        return entry.routine if entry is not None else None

    def put(self, elder_id: str, routine: HomeRoutine, now_ms: int) -> None:
        self._entries[elder_id] = _Entry(routine, now_ms)
        self._entries.move_to_end(elder_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def refresh(self, pool: AsyncConnectionPool, rooms: RoomBook, clock: Clock) -> None:
        for _ in range(min(self._per_refresh, len(self._wanted))):
            elder_id, _none = self._wanted.popitem(last=False)
            now_ms = clock.now_ms()
            try:
                signs = await load_signs(pool, elder_id, rooms, now_ms, self.days)
            except Exception:
                self._wanted[elder_id] = None
                raise
            if any(s.room is not None for s in signs):
                self.put(elder_id, learn(signs, self.tz), now_ms)
            else:
                self.put(elder_id, HomeRoutine(), now_ms)  # no rooms: nothing to learn
