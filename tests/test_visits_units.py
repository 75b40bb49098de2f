"""Pure parts of 定期巡访: the slow-decline signal, the ranking and its reasons, the
report's periods, rows and exports (no servers)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta

import pytest
from openpyxl import load_workbook

from operator_api.models import AreaReport, DurationStats
from operator_api.report_export import HEADERS, to_csv, to_xlsx
from operator_api.reports import AreaFigures, area_rows, period_bounds
from rules_engine.detectors.inactivity import SignsOfLife
from tests.support.visits import CHINA, activity
from visits.decline import DayActivity, decline, measure_change
from visits.ranking import VisitInputs, rank_visits, visit_item
from visits.signs import checkin_event

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=CHINA)
TODAY = NOW.date()


def elder(elder_id: str, **fields: object) -> VisitInputs:
    base: dict[str, object] = {
        "elder_id": elder_id,
        "name": f"老人{elder_id}",
        "grid_id": "G1",
        "last_sign_of_life": NOW - timedelta(hours=1),
        "last_visit": NOW - timedelta(days=3),
    }
    return VisitInputs(**(base | fields))  # type: ignore[arg-type]


def test_stable_activity_is_no_decline() -> None:
    assert decline(activity(TODAY, declining=False), TODAY) is None


def test_three_weeks_of_decline_is_found_on_every_measure() -> None:
    found = decline(activity(TODAY, declining=True), TODAY)
    assert found is not None
    assert {c.measure for c in found.changes} == {"steps", "motion", "water"}
    assert 0.35 <= found.drop <= 0.6  # the last week against the four before it
    assert found.reason().startswith("近7天活动较前4周下降：")
    assert "步数-" in found.reason() and "用水-" in found.reason()


def test_missing_days_neither_raise_nor_hide_a_decline() -> None:
    # a stable elder whose band was off for three of the last seven days: no decline
    gaps = frozenset({1, 3, 5})
    assert decline(activity(TODAY, declining=False, skip=gaps), TODAY) is None
    # a declining one with the same gaps (and gaps in the baseline) is still found
    gaps |= {10, 15, 20, 30}
    assert decline(activity(TODAY, declining=True, skip=gaps), TODAY) is not None
    # too few recent days to tell: nothing said
    assert decline(activity(TODAY, declining=True, skip=frozenset(range(1, 5))), TODAY) is None


def test_a_zero_day_counts_but_a_missing_measure_does_not() -> None:
    days = {TODAY - timedelta(days=n): DayActivity(steps=4000.0) for n in range(8, 36)}
    for n in range(1, 8):  # the band reported, the elder did not walk
        days[TODAY - timedelta(days=n)] = DayActivity(steps=0.0)
    change = measure_change(days, TODAY, "steps")
    assert change is not None and change.drop == 1.0
    assert measure_change(days, TODAY, "water") is None  # no water meter at all


def test_a_small_baseline_cannot_decline() -> None:
    days = {TODAY - timedelta(days=n): DayActivity(steps=100.0) for n in range(8, 36)}
    days |= {TODAY - timedelta(days=n): DayActivity(steps=10.0) for n in range(1, 8)}
    assert decline(days, TODAY) is None


def test_the_declining_elder_ranks_above_the_stable_one_and_says_why() -> None:
    stable = elder("E1", lives_alone=True, activity=activity(TODAY, declining=False))
    falling = elder("E2", lives_alone=True, activity=activity(TODAY, declining=True))
    ranked = rank_visits([stable, falling], NOW)
    assert [i.elder_id for i in ranked] == ["E2", "E1"]
    assert ranked[0].decline is not None
    assert ranked[0].reasons[0].text.startswith("近7天活动较前4周下降")
    assert "独居" in ranked[0].reason_text and "独居" in ranked[1].reason_text
    assert "下降" not in ranked[1].reason_text


def test_reasons_in_chinese_for_each_risk() -> None:
    item = visit_item(
        elder(
            "E3",
            care_profile_id="disabled",
            alerts_30d=2,
            false_alarms_30d=4,
            devices_offline=("手环",),
            devices_low_battery=("门磁",),
            last_sign_of_life=NOW - timedelta(hours=30),
            last_visit=None,
        ),
        NOW,
    )
    texts = [r.text for r in item.reasons]
    assert texts[0] == "已30小时无活动信号"  # the largest share first
    assert {"失能", "近30天告警2次", "近30天误报4次", "从未走访"} <= set(texts)
    assert "设备离线：手环，电量低：门磁" in texts
    assert item.days_since_visit is None
    # capped: false alarms at 3 points, devices at 4
    points = {r.text: r.points for r in item.reasons}
    assert points["近30天误报4次"] == 3.0 and points["设备离线：手环，电量低：门磁"] == 3.0


def test_a_recent_visit_lowers_the_rank() -> None:
    long_ago = elder("E4", last_visit=NOW - timedelta(days=22))
    visited = elder("E5", last_visit=NOW - timedelta(hours=2))
    ranked = rank_visits([visited, long_ago], NOW)
    assert [i.elder_id for i in ranked] == ["E4", "E5"]
    assert ranked[0].reason_text == "距上次走访22天" and ranked[1].days_since_visit == 0


@pytest.mark.parametrize(
    ("period", "day", "expected"),
    [
        ("week", date(2026, 12, 6), (date(2026, 11, 30), date(2026, 12, 6))),  # a Sunday
        ("week", date(2026, 11, 30), (date(2026, 11, 30), date(2026, 12, 6))),
        ("month", date(2026, 12, 6), (date(2026, 12, 1), date(2026, 12, 31))),
        ("month", date(2028, 2, 10), (date(2028, 2, 1), date(2028, 2, 29))),
    ],
)
def test_period_bounds(period: str, day: date, expected: tuple[date, date]) -> None:
    assert period_bounds(period, day) == expected  # type: ignore[arg-type]


def _report() -> AreaReport:
    a, b, c = AreaFigures(), AreaFigures(), AreaFigures()
    a.elders, a.due, a.done, a.alerts, a.false_alarms = 10, 4, 3, 2, 1
    a.ack_s, a.arrive_s = [60.0, 180.0], [600.0]
    b.elders, b.due, b.done, b.offline = 5, 2, 0, 2
    c.elders, c.due, c.done, c.alerts, c.ack_s = 7, 1, 1, 1, [30.0]
    rows = area_rows(
        {("渝中区", "解放碑街道"): a, ("渝中区", "七星岗街道"): b, ("江北区", "观音桥街道"): c}
    )
    return AreaReport(period="week", start=date(2026, 11, 30), end=date(2026, 12, 6), rows=rows)


def test_area_rows_give_each_street_then_its_district_total() -> None:
    rows = _report().rows
    assert [(r.level, r.district, r.street) for r in rows] == [  # by code point
        ("street", "江北区", "观音桥街道"),
        ("district", "江北区", None),
        ("street", "渝中区", "七星岗街道"),
        ("street", "渝中区", "解放碑街道"),
        ("district", "渝中区", None),
    ]
    total = rows[4]
    assert (total.elders, total.visits_due, total.visits_done, total.devices_offline) == (
        15,
        6,
        3,
        2,
    )
    assert total.visit_rate == 0.5 and total.false_alarm_rate == 0.5
    assert total.time_to_acknowledge == DurationStats(count=2, median_s=120.0, p90_s=168.0)
    assert rows[2].visit_rate == 0.0 and rows[2].false_alarm_rate is None


def test_csv_export_parses_with_chinese_headers() -> None:
    text = to_csv(_report()).decode("utf-8")
    assert text.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert tuple(table[0]) == HEADERS
    assert table[5][:6] == ["渝中区", "合计", "15", "6", "3", "50.0%"]
    assert table[4][8:10] == ["2.0", "2.8"]  # minutes: median 120 s, p90 168 s


def test_xlsx_export_has_a_title_row_then_the_header() -> None:
    sheet = load_workbook(io.BytesIO(to_xlsx(_report()))).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert str(rows[0][0]).startswith("巡访与告警统计（本周：2026-11-30 至 2026-12-06）")
    assert rows[1] == HEADERS
    assert rows[6][:5] == ("渝中区", "合计", 15, 6, 3)
    assert len(rows) == 2 + 5


@pytest.mark.parametrize("outcome", ["visited", "phoned", "not_home"])
def test_only_an_in_person_visit_is_a_sign_for_the_rules(outcome: str) -> None:
    checkin = {"id": 7, "elder_id": "E1", "at": NOW, "outcome": outcome, "actor": "grid_worker:GW1"}
    event = checkin_event(checkin)
    if outcome != "visited":
        assert event is None
        return
    assert event is not None
    assert (event.id, event.elder_id, event.type, event.event) == (
        "visit:7",
        "E1",
        "event",
        "visit_checkin",
    )
    assert event.device_time_ms == event.received_ms == int(NOW.timestamp() * 1000)
    assert SignsOfLife().classify(event) == "visit"
