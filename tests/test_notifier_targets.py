"""The pure target choice of notifier.targets, the one owner of whom a target kind
reaches: used by the escalation's loaders and by `carewatch notifier check` alike."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from notifier.rosters import Leave, Roster, Shift
from notifier.targets import (
    SUBSTITUTE_ROLE,
    Elder,
    Recipient,
    Station,
    grid_cover,
    stand_ins_needed,
    station_for,
    station_pool,
    substitute_station_ids,
)

TZ = ZoneInfo("Asia/Shanghai")
WEDNESDAY = date(2026, 12, 9)
ELDER = Elder("E1", "王秀英", "", "渝中区", "G1", 29.50, 106.50)


def at(day: date, hh: int) -> datetime:
    return datetime.combine(day, time(hh), TZ)


def _station(
    sid: str, lat: float, district: str = "渝中区", staffed: bool = True, hours: str = "00-00"
) -> Station:
    start, end = (time(int(h)) for h in hours.split("-"))
    return Station(sid, sid, "community_station", lat, 106.50, staffed, start, end,
                   "023-63851234", None, district)  # fmt: skip


def _worker(wid: str, role: str = "网格员") -> Recipient:
    return Recipient("grid_worker", wid, wid, role, "13800000001")


# --- stations ----------------------------------------------------------------------------


def test_the_elder_s_own_district_comes_first_even_when_another_is_nearer() -> None:
    own_far = _station("OWN", 29.60)
    other_near = _station("NEAR", 29.501, district="江北区")
    stations = [own_far, other_near]
    assert station_for(stations, Roster(), ELDER, at(WEDNESDAY, 10)) == own_far
    assert station_for(stations, Roster(), ELDER, time(10)) == own_far
    # none of the district on duty: the nearest of any district
    closed = [_station("OWN", 29.60, hours="08-09"), other_near]
    assert station_for(closed, Roster(), ELDER, at(WEDNESDAY, 10)) == other_near
    assert station_for(closed, Roster(), ELDER, time(10)) == other_near
    unstaffed = [_station("OWN", 29.60, staffed=False), other_near]
    assert station_for(unstaffed, Roster(), ELDER, at(WEDNESDAY, 10)) == other_near
    assert station_for([], Roster(), ELDER, at(WEDNESDAY, 10)) is None


def test_a_substitute_of_another_district_stands_in_within_the_elder_s_district() -> None:
    on_leave = _station("A1", 29.55)
    own_far = _station("A2", 29.70)
    sub_near = _station("B1", 29.501, district="江北区", staffed=False)
    roster = Roster((), (Leave("station", "A1", WEDNESDAY, WEDNESDAY, "B1"),))
    stations = [on_leave, own_far, sub_near]
    # the substitute counts in the first (own district) pool: nearer than A2
    assert station_for(stations, roster, ELDER, at(WEDNESDAY, 10)) == sub_near
    # the day after, A1 is back
    assert station_for(stations, roster, ELDER, at(date(2026, 12, 10), 10)) == on_leave
    # with a time alone rosters do not apply: A1 by its hours
    assert station_for(stations, roster, ELDER, time(10)) == on_leave


def test_a_substitute_of_another_district_is_reached_only_standing_in() -> None:
    """A station named as a substitute (here for an old leave of a station elsewhere) is
    loaded with the district's pool, but reached for an elder of another district only
    while it stands in for one of that district's stations: not on its own hours, even
    when it is nearer (a station across a district border once took such an elder's
    SOS in the first round whenever it had ever been anyone's substitute)."""
    own_far = _station("A2", 29.70)
    sub_near = _station("C1", 29.501, district="江北区")
    roster = Roster((), (Leave("station", "X9", date(2020, 1, 1), date(2020, 1, 2), "C1"),))
    stations = [own_far, sub_near]
    assert substitute_station_ids(roster) == {"C1"}
    assert station_pool(stations, roster, "渝中区", dated=True) == stations
    assert station_pool(stations, roster, "渝中区", dated=False) == [own_far]
    assert station_for(stations, roster, ELDER, at(WEDNESDAY, 10)) == own_far
    assert station_for(stations, roster, ELDER, time(10)) == own_far
    # with no station of its own district reachable, every district's are: C1 is nearest
    assert station_for([sub_near], roster, ELDER, at(WEDNESDAY, 10)) == sub_near


def test_the_district_s_stations_with_the_substitutes_give_the_same_answer_as_all() -> None:
    """What the escalation loads first (the district's pool: its staffed stations and
    every named substitute) decides its own district's round like every station does;
    when that round finds nobody, the escalation asks every station. A staffed
    substitute of another district (C1, named for an old leave, open and nearer than
    D1) must not win the every-district round over that partial pool."""
    stations = [
        _station("A1", 29.55, hours="08-18"),
        _station("A2", 29.70, hours="20-08"),
        _station("A3", 29.52, staffed=False),
        _station("B1", 29.501, district="江北区", staffed=False),
        _station("B2", 29.502, district="江北区", hours="08-20"),
        _station("C1", 29.49, district="南岸区", hours="12-14"),
        _station("D1", 29.499, district="沙坪坝区", hours="12-14"),
    ]
    roster = Roster(
        (Shift("station", "A1", frozenset({1, 2, 3, 4, 5}), time(9), time(17)),),
        (
            Leave("station", "A1", WEDNESDAY, WEDNESDAY, "B1"),
            Leave("station", "X9", date(2020, 1, 1), date(2020, 1, 2), "C1"),
        ),
    )
    loaded = station_pool(stations, roster, ELDER.district, dated=True)
    assert {s.id for s in loaded} == {"A1", "A2", "B1", "C1"}
    asked_all = 0
    for day in (WEDNESDAY, date(2026, 12, 10), date(2026, 12, 12)):
        for hh in range(24):
            moment = at(day, hh)
            everyone = station_for(stations, roster, ELDER, moment)
            first = station_for(loaded, roster, ELDER, moment, own_district_only=True)
            if first is None:
                asked_all += 1  # the escalation's second query: every station
            else:
                assert first == everyone, moment
            escalation = first or station_for(stations, roster, ELDER, moment)
            assert escalation == everyone, moment
    assert asked_all  # the weekend's noon: no station of its own, D1 (never C1) is reached
    assert station_for(stations, roster, ELDER, at(date(2026, 12, 12), 12)).id == "D1"  # type: ignore[union-attr]


# --- grid workers ------------------------------------------------------------------------


def test_grid_cover_on_duty_workers_and_their_stand_ins() -> None:
    gw1, gw2 = _worker("GW1"), _worker("GW2")
    elsewhere = _worker("GW7")
    roster = Roster(
        (Shift("grid_worker", "GW1", frozenset({1, 2, 3, 4, 5}), time(8), time(20)),),
        (Leave("grid_worker", "GW2", WEDNESDAY, WEDNESDAY, "GW7"),),
    )
    others = {"GW7": elsewhere, "GW1": gw1}
    # Tuesday 10:00: both of the grid's own
    tuesday = at(date(2026, 12, 8), 10)
    assert stand_ins_needed([gw1, gw2], roster, tuesday) == []
    assert grid_cover([gw1, gw2], roster, tuesday, others) == [gw1, gw2]
    # Wednesday 21:00: GW1 is off, GW2 on leave: GW7 of another grid stands in
    night = at(WEDNESDAY, 21)
    assert stand_ins_needed([gw1, gw2], roster, night) == ["GW7"]
    stand_in = Recipient("grid_worker", "GW7", "GW7", SUBSTITUTE_ROLE, "13800000001")
    assert grid_cover([gw1, gw2], roster, night, others) == [stand_in]
    # a stand-in nobody could load is left out
    assert grid_cover([gw1, gw2], roster, night, {}) == []
    assert grid_cover([], roster, night, others) == []


def test_a_stand_in_of_the_same_grid_keeps_its_role_and_is_reached_once() -> None:
    gw1, gw2 = _worker("GW1"), _worker("GW2")
    roster = Roster((), (Leave("grid_worker", "GW1", WEDNESDAY, WEDNESDAY, "GW2"),))
    found = grid_cover([gw1, gw2], roster, at(WEDNESDAY, 10), {"GW1": gw1, "GW2": gw2})
    assert found == [gw2]
    assert stand_ins_needed([gw1, gw2], roster, at(WEDNESDAY, 10)) == []
