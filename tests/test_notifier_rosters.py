"""Pure decisions over imported data: policy selection, duty rosters with substitutes,
channel preferences, the policy/roster ledger parser and the reachability check."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from carewatch.phones import is_landline
from notifier.check import Snapshot, find_gaps
from notifier.policies import ScopedPolicy, Step, policy_for, policy_named, select_policy
from notifier.policy_ledger import parse_files, parse_weekdays, policies_of
from notifier.rosters import (
    ChannelPreference,
    Cover,
    Leave,
    Roster,
    Shift,
    allowed_channels,
    cover_for,
    covers,
    shift_covers,
)
from notifier.targets import Elder, Recipient, Station, station_for
from registry.ledger_format import write_csv

TZ = ZoneInfo("Asia/Shanghai")
MONDAY = date(2026, 12, 7)
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), TZ)


def wd(n: int) -> date:
    """The n-th weekday (1 = Monday) of the week of MONDAY."""
    return date(2026, 12, 6 + n)


# --- policies ---------------------------------------------------------------------------

ANY_CRITICAL = ScopedPolicy("critical", None, None, (Step(("duty_officer",)),))
DISTRICT = ScopedPolicy("critical", "渝中区", None, (Step(("grid_worker",)),))
PROFILE = ScopedPolicy("critical", None, "disabled", (Step(("nearest_station",)),))
BOTH = ScopedPolicy("critical", "渝中区", "disabled", (Step(("family_all",)),))


def test_the_most_specific_imported_policy_wins_and_the_built_in_is_the_default() -> None:
    imported = [ANY_CRITICAL, DISTRICT, PROFILE, BOTH]
    assert select_policy(imported, "critical", "渝中区", "disabled").name == BOTH.name
    assert select_policy(imported, "critical", "江北区", "disabled").name == PROFILE.name
    assert select_policy(imported, "critical", "渝中区", "alone").name == DISTRICT.name
    assert select_policy(imported, "critical", "江北区", None).name == "critical@*/*"
    # a care profile is more specific than a district
    assert select_policy([DISTRICT, PROFILE], "critical", "渝中区", "disabled").name == PROFILE.name
    # nothing imported for warnings, or nothing at all: the built-in table
    assert select_policy(imported, "warning", "渝中区", None) == policy_for("warning")
    assert select_policy([], "critical", "渝中区", None) == policy_for("critical")
    # an escalation keeps the policy it started with while it exists
    assert policy_named(DISTRICT.name, imported) == DISTRICT.as_policy()
    assert policy_named("critical", []) == policy_for("critical")
    assert policy_named("critical@江北区/*", imported) is None


# --- rosters ----------------------------------------------------------------------------

WEEKDAYS_DAY = Shift("grid_worker", "GW1", frozenset({1, 2, 3, 4, 5}), time(8), time(20))
FRIDAY_NIGHT = Shift("grid_worker", "GW2", frozenset({5}), time(22), time(6))


def test_shifts_cover_their_weekdays_and_a_night_shift_runs_past_midnight() -> None:
    assert shift_covers(WEEKDAYS_DAY, at(wd(1), 8))
    assert not shift_covers(WEEKDAYS_DAY, at(wd(1), 20))
    assert not shift_covers(WEEKDAYS_DAY, at(wd(6), 10))
    assert shift_covers(FRIDAY_NIGHT, at(wd(5), 23))
    assert shift_covers(FRIDAY_NIGHT, at(wd(6), 5, 59))  # Saturday morning: Friday's shift
    assert not shift_covers(FRIDAY_NIGHT, at(wd(6), 23))
    assert not shift_covers(FRIDAY_NIGHT, at(wd(5), 3))  # Friday morning: Thursday's
    whole_day = Shift("station", "S", frozenset({7}), time(0), time(0))
    assert shift_covers(whole_day, at(wd(7), 3)) and not shift_covers(whole_day, at(wd(1), 3))


def test_a_member_on_leave_passes_its_shifts_to_its_substitute() -> None:
    roster = Roster(
        (WEEKDAYS_DAY,),
        (
            Leave("grid_worker", "GW1", wd(2), wd(3), "GW2"),
            Leave("grid_worker", "GW2", wd(3), wd(3), "GW3"),
            Leave("grid_worker", "GW1", wd(4), wd(4), None),
        ),
    )
    assert cover_for(roster, "grid_worker", "GW1", at(wd(1), 9)) == Cover("GW1")
    assert cover_for(roster, "grid_worker", "GW1", at(wd(2), 9)) == Cover("GW2", "GW1")
    # the substitute is on leave too: its own substitute stands in
    assert cover_for(roster, "grid_worker", "GW1", at(wd(3), 9)) == Cover("GW3", "GW1")
    # on leave with nobody named; or outside the shifts the absent member would work
    assert cover_for(roster, "grid_worker", "GW1", at(wd(4), 9)) is None
    assert cover_for(roster, "grid_worker", "GW1", at(wd(2), 21)) is None
    # a member without shifts keeps its old hours (a grid worker: always)
    assert cover_for(roster, "grid_worker", "GW9", at(wd(6), 3)) == Cover("GW9")
    circle = Roster(
        (),
        (
            Leave("grid_worker", "A", wd(1), wd(1), "B"),
            Leave("grid_worker", "B", wd(1), wd(1), "A"),
        ),
    )
    assert cover_for(circle, "grid_worker", "A", at(wd(1), 9)) is None
    assert covers(roster, "grid_worker", ["GW1", "GW2"], at(wd(2), 9)) == [Cover("GW2", "GW1")]


def _station(sid: str, lat: float, hours: tuple[int, int] = (0, 0)) -> Station:
    return Station(sid, sid, "community_station", lat, 106.5, True, time(hours[0]),
                   time(hours[1]), "023-63851234")  # fmt: skip


def test_station_rosters_and_a_closed_station_s_substitute() -> None:
    near, far = _station("NEAR", 29.50), _station("FAR", 29.60)
    roster = Roster(
        (Shift("station", "NEAR", frozenset({1, 2, 3, 4, 5}), time(8), time(18)),),
        (Leave("station", "NEAR", wd(3), wd(3), "FAR"),),
    )
    home = Elder("E1", "王秀英", "", "", "G1", 29.49, 106.5)
    assert station_for([near, far], roster, home, at(wd(1), 9)) == near
    assert station_for([near, far], roster, home, at(wd(1), 19)) == far
    assert station_for([near, far], roster, home, at(wd(3), 9)) == far
    assert station_for([near], roster, home, at(wd(6), 9)) is None


# --- channel preferences ----------------------------------------------------------------


def test_no_sms_to_a_landline_calls_only_for_critical_and_preferences_apply() -> None:
    both = ("sms", "wecom", "voice")
    assert is_landline("023-63851234") and not is_landline("13800000001")
    assert allowed_channels(both, "critical", "023-63851234", {}) == ("wecom", "voice")
    assert allowed_channels(both, "warning", "13800000001", {}) == ("sms", "wecom")
    prefs = {
        "13800000001": ChannelPreference("13800000001", frozenset({"wecom", "voice"})),
        "13800000002": ChannelPreference("13800000002", frozenset({"voice"}), True),
    }
    assert allowed_channels(both, "critical", "13800000001", prefs) == ("wecom", "voice")
    assert allowed_channels(both, "warning", "13800000001", prefs) == ("wecom",)
    assert allowed_channels(both, "warning", "13800000002", prefs) == ("voice",)


# --- the ledger parser ------------------------------------------------------------------


def test_the_example_ledgers_parse() -> None:
    parsed = parse_files(
        sorted(EXAMPLES.glob("*.csv")), ["policies", "shifts", "leaves", "channels"]
    )
    assert parsed.errors == []
    assert parsed.kinds == {"policies", "shifts", "leaves", "channels"}
    names = {p.name for p in policies_of(parsed)}
    assert "critical@渝中区/disabled" in names  # 照护类型 失能 is the care profile 'disabled'
    assert parse_weekdays("周一至周五") == frozenset({1, 2, 3, 4, 5})
    assert parse_weekdays("6,7") == parse_weekdays("周末") == frozenset({6, 7})


def test_every_bad_row_is_reported_with_line_field_and_reason(tmp_path: Path) -> None:
    english = write_csv(
        tmp_path / "policies.csv",
        ["district", "severity", "step", "targets", "channels", "wait_s"],
        [
            {"severity": "critical", "step": "1", "targets": "grid_worker", "channels": "sms"},
            {"severity": "urgent", "step": "2", "targets": "neighbour", "channels": "fax"},
            {"severity": "critical", "step": "4", "targets": "", "wait_s": "-1"},
        ],
    )
    parsed = parse_files([english], ["policies"])
    found = {(e.line, e.field) for e in parsed.errors}
    assert {(3, "severity"), (3, "targets"), (3, "channels"), (4, "wait_s")} <= found
    assert all(not e.chinese for e in parsed.errors)

    chinese = write_csv(
        tmp_path / "值班表.csv",
        ["类型", "编号", "星期", "开始时间", "结束时间"],
        [
            {"类型": "网格员", "编号": "GW1", "星期": "周一至周五", "开始时间": "08:00",
             "结束时间": "20:00"},
            {"类型": "保安", "编号": "GW1", "星期": "周八", "开始时间": "8点", "结束时间": "20:00"},
        ],
    )  # fmt: skip
    parsed = parse_files([chinese], ["shifts"])
    assert [str(e) for e in parsed.errors] == [
        f"{chinese}：第 3 行，类型（A列）：“保安”应填“网格员”或“服务站”",
        f"{chinese}：第 3 行，星期（C列）：“周八”不是有效的星期（如 1-5、6,7、周一至周五）",
        f"{chinese}：第 3 行，开始时间（D列）：“8点”不是时间（应写成 08:00）",
    ]
    unknown = write_csv(tmp_path / "x.csv", ["name", "phone"], [{"name": "a", "phone": "1"}])
    assert parse_files([unknown], ["shifts"]).errors[0].line == 1


def test_policy_steps_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        ["severity", "step", "targets"],
        [
            {"severity": "warning", "step": "1", "targets": "grid_worker"},
            {"severity": "warning", "step": "3", "targets": "family_first"},
            {"severity": "warning", "step": "1", "targets": "family_all"},
        ],
    )
    reasons = [e.reason for e in parse_files([path], ["policies"]).errors]
    assert any("duplicate step 1" in r for r in reasons)
    assert any("missing 2" in r for r in reasons)


# --- the check --------------------------------------------------------------------------


def _person(kind: str, pid: str, phone: str, wecom: str | None = None) -> Recipient:
    return Recipient(kind, pid, pid, kind, phone, wecom)  # type: ignore[arg-type]


def _snapshot(roster: Roster, preferences: dict[str, ChannelPreference]) -> Snapshot:
    gw = _person("grid_worker", "GW1", "13800000001")
    elder = Elder("E1", "王秀英", "", "渝中区", "G1", 29.5, 106.5)
    return Snapshot(
        elders=[elder],
        grid_workers={"G1": [gw]},
        people={("grid_worker", "GW1"): gw},
        family={"E1": [_person("family", "1", "023-63851234")]},  # a landline only
        stations=[],
        officers={"渝中区": [_person("duty_officer", "DO1", "13800000009")]},
        roster=roster,
        preferences=preferences,
        quiet=("00:00", "00:00"),
    )


def test_check_finds_a_grid_with_nobody_on_duty_and_the_elders_it_leaves_unreached() -> None:
    roster = Roster((WEEKDAYS_DAY,), (Leave("grid_worker", "GW1", wd(3), wd(3), None),))
    result = find_gaps(_snapshot(roster, {}), MONDAY, 7, "Asia/Shanghai")
    assert [g.grid_id for g in result.grids_without_cover] == ["G1"]
    windows = [(w.start, w.end) for w in result.grids_without_cover[0].windows]
    assert windows[0] == ("2026-12-07T00:00+08:00", "2026-12-07T08:00+08:00")
    assert ("2026-12-08T20:00+08:00", "2026-12-10T08:00+08:00") in windows  # Wednesday: leave
    assert windows[-1] == ("2026-12-11T20:00+08:00", "2026-12-14T00:00+08:00")
    # critical: the duty officer is always reached; warning: the family's landline takes
    # no SMS and no call for a warning, so nobody when the grid worker is off
    assert [(g.elder_id, g.severity) for g in result.unreached] == [("E1", "warning")]
    assert result.unreached[0].windows == result.grids_without_cover[0].windows
    assert not result.ok

    always = find_gaps(_snapshot(Roster(), {}), MONDAY, 7, "Asia/Shanghai")
    assert always.ok and always.grids_without_cover == []
    # the duty officer accepts WeCom only, and has no WeCom account: critical is unreached
    silent = {"13800000009": ChannelPreference("13800000009", frozenset({"wecom"}))}
    nobody = find_gaps(_snapshot(roster, silent), MONDAY, 1, "Asia/Shanghai")
    assert {g.severity for g in nobody.unreached} == {"critical", "warning"}


def test_xlsx_rosters_with_typed_time_and_date_cells_parse(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["类型", "编号", "请假开始", "请假结束", "替班人编号"])
    sheet.append(["网格员", "GW1", datetime(2026, 12, 24), datetime(2026, 12, 25), "GW2"])
    leaves = tmp_path / "请假表.xlsx"
    book.save(leaves)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["类型", "编号", "星期", "开始时间", "结束时间"])
    sheet.append(["服务站", "S1", 6, time(9, 0), time(17, 30)])
    shifts = tmp_path / "值班表.xlsx"
    book.save(shifts)

    parsed = parse_files([leaves, shifts], ["shifts", "leaves"])
    assert parsed.errors == []
    assert [lv for _, lv in parsed.leaves] == [
        Leave("grid_worker", "GW1", date(2026, 12, 24), date(2026, 12, 25), "GW2")
    ]
    assert [s for _, s in parsed.shifts] == [
        Shift("station", "S1", frozenset({6}), time(9), time(17, 30))
    ]


def test_check_reaches_the_station_the_escalation_reaches() -> None:
    """A station of the elder's district on leave passes on to its substitute of another
    district, and the escalation (notifier.targets.station_for) counts the substitute
    in the district's pool. The check used to keep only stations of the elder's own
    district there, picked another station that has WeCom, and said the elder was
    reached while the escalation went to the substitute, which has no WeCom."""
    elder = Elder("E1", "王秀英", "", "渝中区", "G1", 29.50, 106.50)

    def station(sid: str, lat: float, district: str, wecom: str | None, staffed: bool) -> Station:
        return Station(sid, sid, "community_station", lat, 106.50, staffed, time(0), time(0),
                       "023-63851234", wecom, district)  # fmt: skip

    stations = [
        station("A1", 29.55, "渝中区", "a1", True),  # on leave on Wednesday
        station("A2", 29.70, "渝中区", "a2", True),  # the district's other station, far away
        station("B1", 29.501, "江北区", None, False),  # A1's substitute, near, a landline only
    ]
    step = (Step(("nearest_station",), ("wecom",)),)
    snap = Snapshot(
        elders=[elder],
        grid_workers={},
        people={},
        family={},
        stations=stations,
        officers={},
        roster=Roster((), (Leave("station", "A1", wd(3), wd(3), "B1"),)),
        policies=[ScopedPolicy(severity, None, None, step) for severity in ("critical", "warning")],
        quiet=("00:00", "00:00"),
    )
    result = find_gaps(snap, MONDAY, 7, "Asia/Shanghai")
    assert [(g.severity, g.policy) for g in result.unreached] == [
        ("critical", "critical@*/*"),
        ("warning", "warning@*/*"),
    ]
    wednesday = [("2026-12-09T00:00+08:00", "2026-12-10T00:00+08:00")]
    assert all([(w.start, w.end) for w in g.windows] == wednesday for g in result.unreached)
    # staffed, the substitute of another district still takes the district's alerts only
    # while it stands in: on its own hours it is not in the elder's district's first
    # round, even though it is the nearest (A1 with WeCom is reached the other days)
    staffed = replace(snap, stations=[*stations[:2], replace(stations[2], staffed=True)])
    standing_in = find_gaps(staffed, MONDAY, 7, "Asia/Shanghai")
    assert [[(w.start, w.end) for w in g.windows] for g in standing_in.unreached] == [
        wednesday,
        wednesday,
    ]
