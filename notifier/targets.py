"""Turn policy target kinds into concrete recipients from the registry.

Who a target kind reaches is decided by pure functions over plain records: which grid
workers cover a grid (`grid_cover`) and which station an elder's alert goes to
(`station_for`). The SQL below only loads those records; `carewatch notifier check`
(notifier.check) calls the same functions over everything it loads at once, so the
check cannot find coverage the escalation does not have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from carewatch.phones import is_mobile
from notifier import duty_db, sql
from notifier.policies import TargetKind
from notifier.rosters import Roster, cover_for, covers
from notifier.sql import Conn

RecipientKind = Literal["grid_worker", "family", "station", "duty_officer", "device"]
ChannelKey = Literal["sms", "wecom", "downlink", "voice"]

EARTH_RADIUS_KM = 6371.0088
STATION_KIND_LABELS = {
    "street_centre": "养老服务中心",
    "community_station": "养老服务站",
    "village_point": "互助养老点",
}
ROLE_LABELS: dict[RecipientKind, str] = {
    "grid_worker": "网格员",
    "family": "家属",
    "station": "养老服务站",
    "duty_officer": "区值班员",
    "device": "手环",
}
SUBSTITUTE_ROLE = "代班网格员"


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: RecipientKind
    id: str
    name: str
    role: str  # shown to others, e.g. "网格员", "女儿"
    phone: str | None = None
    wecom_userid: str | None = None

    @property
    def display(self) -> str:
        """How others are told who is handling it: "张三（网格员）"."""
        return f"{self.name}（{self.role}）"

    def address(self, channel: ChannelKey) -> str | None:
        if channel == "sms":
            # a station's landline takes calls, not SMS: it is reached on WeCom instead
            return self.phone if self.phone and is_mobile(self.phone) else None
        if channel == "wecom":
            return self.wecom_userid or None
        if channel == "voice":  # a call reaches a landline too
            return self.phone or None
        return self.id if self.kind == "device" else None


@dataclass(frozen=True, slots=True)
class Station:
    id: str
    name: str
    kind: str
    lat: float
    lon: float
    staffed: bool
    duty_start: time
    duty_end: time
    phone: str | None = None
    wecom_userid: str | None = None
    district: str = ""

    def as_recipient(self) -> Recipient:
        role = STATION_KIND_LABELS.get(self.kind, ROLE_LABELS["station"])
        return Recipient("station", self.id, self.name, role, self.phone, self.wecom_userid)


@dataclass(frozen=True, slots=True)
class Elder:
    id: str
    name: str
    address: str
    district: str
    grid_id: str
    lat: float
    lon: float
    care_profile: str | None = None


# --- pure ------------------------------------------------------------------------------


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def on_duty(start: time, end: time, at: time) -> bool:
    """Duty window [start, end); a window past midnight (20:00-08:00) wraps; start == end: 24 h."""
    if start == end:
        return True
    if start < end:
        return start <= at < end
    return at >= start or at < end


def _nearest(candidates: Sequence[Station], lat: float, lon: float) -> Station | None:
    """The nearest of `candidates` (the lower id on a tie)."""
    if not candidates:
        return None
    return min(candidates, key=lambda s: (haversine_km(lat, lon, s.lat, s.lon), s.id))


def stations_at(
    stations: Sequence[Station],
    roster: Roster,
    at: datetime,
    asked: Callable[[Station], bool] | None = None,
) -> list[Station]:
    """The staffed stations reachable at local time `at`: on duty by their roster (or,
    without one, their duty hours), or standing in for one on leave (pure). `asked`:
    which of `stations` are asked about (default: every one); the others are there only
    to stand in for them."""
    by_id = {s.id: s for s in stations}
    hours = {s.id: on_duty(s.duty_start, s.duty_end, at.time()) for s in stations}
    found: dict[str, Station] = {}
    for station in stations:
        if not station.staffed or (asked is not None and not asked(station)):
            continue
        cover = cover_for(roster, "station", station.id, at, hours)
        if cover is not None and cover.member_id in by_id:
            found.setdefault(cover.member_id, by_id[cover.member_id])
    return list(found.values())


def substitute_station_ids(roster: Roster) -> frozenset[str]:
    """Every station named to stand in for a station on leave, whatever the dates (pure)."""
    return frozenset(
        lv.substitute_id
        for lv in roster.leaves
        if lv.member_kind == "station" and lv.substitute_id is not None
    )


def station_pool(
    stations: Iterable[Station], roster: Roster, district: str | None, dated: bool
) -> list[Station]:
    """The stations loaded for an elder of `district` (None: of any district): the
    staffed ones, and with a date every station named as a substitute, wherever it is
    and whether staffed or not (pure). A substitute of another district is there only
    to stand in for the station on leave (reachable_stations), never for itself."""
    subs = substitute_station_ids(roster) if dated else frozenset()
    return [
        s
        for s in stations
        if (s.staffed and (district is None or s.district == district)) or s.id in subs
    ]


def reachable_stations(
    stations: Sequence[Station], roster: Roster, district: str | None, local: time | datetime
) -> list[Station]:
    """The stations of the pool of `district` (None: every district's) reachable at
    `local`: by the rosters with a local date and time, by duty hours with a time
    alone (pure)."""
    if isinstance(local, datetime):
        pool = station_pool(stations, roster, district, True)
        return stations_at(pool, roster, local, lambda s: district in (None, s.district))
    pool = station_pool(stations, roster, district, False)
    return [s for s in pool if s.staffed and on_duty(s.duty_start, s.duty_end, local)]


Reachable = Callable[[Sequence[Station], Roster, str | None, time | datetime], Sequence[Station]]


def station_for(
    stations: Sequence[Station],
    roster: Roster,
    elder: Elder,
    local: time | datetime,
    reachable: Reachable = reachable_stations,
    own_district_only: bool = False,
) -> Station | None:
    """The station a `nearest_station` target reaches for `elder` (pure): the nearest
    reachable one of the elder's own district's pool, else of every district's. With a
    local date and time the rosters apply (a station on leave passes on to its
    substitute); with a time alone only the stations' duty hours.

    `stations` may be every station, or only those of the elder's district with the
    substitutes, asked with `own_district_only` (the first pool needs no more; every
    district's needs every station): the answer is the same whenever one of that pool
    is reachable. `reachable`: `reachable_stations`, or a memo of it."""
    for district in (elder.district,) if own_district_only else (elder.district, None):
        found = _nearest(reachable(stations, roster, district, local), elder.lat, elder.lon)
        if found is not None:
            return found
    return None


def stand_ins_needed(workers: Sequence[Recipient], roster: Roster, at: datetime) -> list[str]:
    """Ids of grid workers of other grids standing in for `workers` at `at` (pure)."""
    own = {w.id for w in workers}
    found = covers(roster, "grid_worker", [w.id for w in workers], at)
    return [c.member_id for c in found if c.member_id not in own]


def grid_cover(
    workers: Sequence[Recipient],
    roster: Roster,
    at: datetime,
    others: Mapping[str, Recipient],
) -> list[Recipient]:
    """The grid's grid workers (`workers`, by id) on duty at `at`, or those standing in
    for them by the roster, each once in member order (pure). A stand-in from another
    grid is looked up in `others` (grid workers by id; one not there is left out) and
    shown as 代班网格员; one of the grid's own keeps its role."""
    by_id = {w.id: w for w in workers}
    found = covers(roster, "grid_worker", [w.id for w in workers], at)
    for c in found:
        other = others.get(c.member_id)
        if c.member_id not in by_id and other is not None:
            by_id[c.member_id] = Recipient(
                other.kind, other.id, other.name, SUBSTITUTE_ROLE, other.phone, other.wecom_userid
            )
    return [by_id[c.member_id] for c in found if c.member_id in by_id]


def local_time(now_ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))


# --- registry look-ups -------------------------------------------------------------------


_ELDER_SQL = (
    "SELECT id, name, coalesce(address, '') AS address, district, grid_id, lat, lon,"
    " care_profile_id AS care_profile FROM elders"
)


async def load_elder(conn: Conn, elder_id: str) -> Elder | None:
    row = await sql.one(conn, f"{_ELDER_SQL} WHERE id = %s", (elder_id,))
    return Elder(**row) if row else None


async def load_elders(conn: Conn) -> list[Elder]:
    """Every elder, by id (for notifier check)."""
    return [Elder(**r) for r in await sql.rows(conn, f"{_ELDER_SQL} ORDER BY id")]


# Every person-like recipient table, selected into the same columns, with whom they
# belong to (a grid, an elder, a district) as `owner`.
_PEOPLE_SQL: dict[RecipientKind, str] = {
    "grid_worker": "SELECT id, name, NULL AS relation, phone, wecom_userid, grid_id AS owner"
    " FROM grid_workers",
    "family": "SELECT id::text AS id, name, relation, phone, wecom_userid, elder_id AS owner"
    " FROM contacts",
    "duty_officer": "SELECT id, name, NULL AS relation, phone, wecom_userid, district AS owner"
    " FROM duty_officers",
}
# The owner column of each kind and the order a target reaches them in within an owner.
_OWNER: dict[RecipientKind, tuple[str, str]] = {
    "grid_worker": ("grid_id", "id"),
    "family": ("elder_id", "priority"),
    "duty_officer": ("district", "id"),
}
_STATION_SQL = (
    "SELECT id, name, kind, lat, lon, staffed, duty_start, duty_end, phone, wecom_userid,"
    " district FROM stations"
)


async def load_stations(conn: Conn) -> list[Station]:
    """Every station, by id (for notifier check)."""
    return [Station(**r) for r in await sql.rows(conn, f"{_STATION_SQL} ORDER BY id")]


def _recipient(kind: RecipientKind, row: dict[str, Any]) -> Recipient:
    return Recipient(
        kind,
        row["id"],
        row["name"],
        row["relation"] or ROLE_LABELS[kind],
        row["phone"],
        row["wecom_userid"],
    )


async def _people(
    conn: Conn, kind: RecipientKind, where: str, params: Sequence[object]
) -> list[Recipient]:
    found = await sql.rows(conn, f"{_PEOPLE_SQL[kind]} WHERE {where}", params)
    return [_recipient(kind, r) for r in found]


async def _people_of(
    conn: Conn, kind: RecipientKind, owner: str, limit: int | None = None
) -> list[Recipient]:
    """The grid's grid workers, the elder's family or the district's duty officers, in
    the order a target reaches them."""
    column, order = _OWNER[kind]
    return await _people(conn, kind, f"{column} = %s ORDER BY {order} LIMIT %s", (owner, limit))


async def people_by_owner(conn: Conn, kind: RecipientKind) -> dict[str, list[Recipient]]:
    """Every owner's people of `kind` (as `_people_of` gives them), by owner id (for
    notifier check)."""
    column, order = _OWNER[kind]
    found: dict[str, list[Recipient]] = {}
    for r in await sql.rows(conn, f"{_PEOPLE_SQL[kind]} ORDER BY {column}, {order}"):
        found.setdefault(r["owner"], []).append(_recipient(kind, r))
    return found


async def _nearest_station(conn: Conn, elder: Elder, local: time | datetime) -> list[Recipient]:
    # The elder's own district's stations (with the substitutes) first, every station
    # only if none of those is reachable: station_for gives the same answer over either.
    # The first query holds some other districts' stations (substitutes) but not all of
    # them, so only its own district's round is asked of it.
    dated = isinstance(local, datetime)
    for where, params in ((" AND district = %s", (elder.district,)), ("", ())):
        query = f"{_STATION_SQL} WHERE staffed{where}"
        if dated:
            query += (
                " OR id IN (SELECT substitute_id FROM duty_leaves WHERE member_kind = 'station')"
            )
        stations = [Station(**r) for r in await sql.rows(conn, query, params)]
        roster = (
            await duty_db.load_roster(conn, "station", [s.id for s in stations])
            if dated
            else Roster()
        )
        found = station_for(stations, roster, elder, local, own_district_only=bool(where))
        if found:
            return [found.as_recipient()]
    return []


async def grid_workers_at(conn: Conn, grid_id: str, at: datetime) -> list[Recipient]:
    """The grid's grid workers on duty at `at`, or those standing in for them (role
    代班网格员) by the duty roster."""
    workers = await _people_of(conn, "grid_worker", grid_id)
    roster = await duty_db.load_roster(conn, "grid_worker", [w.id for w in workers])
    missing = stand_ins_needed(workers, roster, at)
    others = (
        {r.id: r for r in await _people(conn, "grid_worker", "id = ANY(%s)", (missing,))}
        if missing
        else {}
    )
    return grid_cover(workers, roster, at, others)


async def resolve(
    conn: Conn, elder: Elder, kinds: Sequence[TargetKind], local: time | datetime
) -> list[Recipient]:
    """Recipients for `kinds`, in policy order, each person once. With a local date and
    time (not a time alone) the duty rosters apply to grid workers and stations."""
    found: list[Recipient] = []
    for kind in kinds:
        if kind == "grid_worker" and isinstance(local, datetime):
            found += await grid_workers_at(conn, elder.grid_id, local)
        elif kind == "grid_worker":
            found += await _people_of(conn, "grid_worker", elder.grid_id)
        elif kind in ("family_first", "family_all"):
            limit = 1 if kind == "family_first" else None
            found += await _people_of(conn, "family", elder.id, limit)
        elif kind == "nearest_station":
            found += await _nearest_station(conn, elder, local)
        else:
            found += await _people_of(conn, "duty_officer", elder.district)
    unique: dict[tuple[str, str], Recipient] = {}
    for r in found:
        unique.setdefault((r.kind, r.id), r)
    return list(unique.values())


async def elder_wristband(conn: Conn, elder_id: str, preferred: str | None) -> Recipient | None:
    """The elder's wristband (the alert's own device when it is one) for the downlink."""
    row = await sql.one(
        conn,
        "SELECT d.id, e.name FROM devices d JOIN elders e ON e.id = d.elder_id"
        " WHERE d.elder_id = %s AND d.kind = 'wristband' ORDER BY d.id = %s DESC, d.id LIMIT 1",
        (elder_id, preferred),
    )
    return Recipient("device", row["id"], row["name"], ROLE_LABELS["device"]) if row else None


async def load_recipient(conn: Conn, kind: str, recipient_id: str) -> Recipient | None:
    """One recipient by kind and id (who acknowledged, for the page and 'handled' texts)."""
    found: list[Recipient] = []
    if kind == "station":
        query = f"{_STATION_SQL} WHERE id = %s"
        found = [Station(**r).as_recipient() for r in await sql.rows(conn, query, (recipient_id,))]
    elif kind == "family" and recipient_id.isdigit():
        found = await _people(conn, "family", "id = %s", (int(recipient_id),))
    elif kind in ("grid_worker", "duty_officer"):
        found = await _people(conn, kind, "id = %s", (recipient_id,))  # type: ignore[arg-type]
    return found[0] if found else None
