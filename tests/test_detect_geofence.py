"""Geofence (防走失): zones, GPS jitter, day and night (pure, no servers)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from carewatch.messages import Event
from rules_engine.decisions import (
    Annotate,
    Decision,
    OpenAlert,
    RenotifyAlert,
    RepeatAlert,
    UpdateAlert,
)
from rules_engine.detectors.base import ElderView
from rules_engine.detectors.geofence import GeofenceDetector
from rules_engine.engine import Engine
from rules_engine.geo import LatLon, Zone, distance_m
from rules_engine.thresholds import Thresholds
from tests.events import EngineRun, telemetry_event

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOME = LatLon(29.5630, 106.5516)  # 解放碑
THRESHOLDS = Thresholds(sos_cancel_window_s=10.0, fall_confirm_window_s=30.0)
NORTH_PER_M = 1 / 111_195  # degrees of latitude per metre


def local_ms(hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 11, 25, hour, minute, tzinfo=SHANGHAI).timestamp() * 1000)


DAY = local_ms(10)


def at_m(north_m: float) -> LatLon:
    return LatLon(HOME.lat + north_m * NORTH_PER_M, HOME.lon)


def fix(t_ms: int, p: LatLon, device: str = "W1") -> Event:
    data = {"lat": p.lat, "lon": p.lon, "hr": 75}
    return telemetry_event(data, t_ms, seq=t_ms // 1000, device=device, lag_ms=300)


def walk(start_ms: int, *north_m: float) -> list[Event]:
    """One fix a minute at these distances north of home."""
    return [fix(start_ms + i * 60_000, at_m(m)) for i, m in enumerate(north_m)]


@dataclass
class Elder(EngineRun):
    engine: Engine = field(default_factory=lambda: Engine([GeofenceDetector("Asia/Shanghai")]))
    profile_id: str | None = "cognitive"
    zones: tuple[Zone, ...] = ()
    thresholds: Thresholds = THRESHOLDS

    def view(self) -> ElderView:
        return ElderView(
            "E1", self.thresholds, dict(self.active), self.profile_id, {}, HOME, self.zones
        )


def opened(decisions: list[Decision]) -> list[OpenAlert]:
    return [d for d in decisions if isinstance(d, OpenAlert)]


# --- geometry ----------------------------------------------------------------------------


def test_circle_and_polygon_zones() -> None:
    circle = Zone("home", centre=HOME, radius_m=500)
    assert circle.contains(at_m(499)) and not circle.contains(at_m(501))
    d = 0.002
    square = Zone("block", points=tuple(
        LatLon(HOME.lat + a, HOME.lon + b) for a, b in ((-d, -d), (-d, d), (d, d), (d, -d))
    ))  # fmt: skip
    assert square.contains(HOME)
    assert not square.contains(LatLon(HOME.lat + 2 * d, HOME.lon))
    assert not square.contains(LatLon(HOME.lat, HOME.lon - 2 * d))
    assert distance_m(HOME, at_m(1000)) == pytest.approx(1000, abs=1)
    with pytest.raises(ValueError, match="circle or a polygon"):
        Zone("nothing")


# --- table: what fires -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "north_m", "severity"),
    [
        ("stays home", (0, 100, 450, 200), None),
        ("one jittery fix across the fence", (480, 530, 470, 490), None),
        ("jitter back and forth", (510, 490, 520, 480, 530), None),
        ("two consecutive fixes outside", (300, 520, 600), "warning"),
        ("walks away", (100, 800, 1500, 2500), "warning"),
        ("exactly on the fence is inside", (500, 500, 500), None),
    ],
)
def test_leaving_the_home_circle(
    name: str, north_m: tuple[float, ...], severity: str | None
) -> None:
    events = walk(DAY, *north_m)
    found = opened(Elder().feed(events))
    if severity is None:
        assert found == [], name
        return
    [alert] = found
    assert (alert.kind, alert.status, alert.rule, alert.severity) == (
        "geofence",
        "open",
        "geofence.exit",
        severity,
    )
    assert alert.details["fixes_outside"] == 2
    assert alert.threshold["geofence_confirm_fixes"] == 2.0
    assert alert.threshold["geofence_home_radius_m"] == 500.0


@pytest.mark.parametrize(
    ("hour", "minute", "severity"),
    [
        (10, 0, "warning"),
        (21, 58, "warning"),  # the second fix is at 21:59
        (22, 0, "critical"),  # quiet hours start at 22:00 ...
        (3, 0, "critical"),
        (6, 58, "critical"),  # 06:59
        (7, 0, "warning"),  # ... and end at 07:00
    ],
)
def test_night_is_critical_day_is_warning(hour: int, minute: int, severity: str) -> None:
    [alert] = opened(Elder().feed(walk(local_ms(hour, minute) - 60_000, 0, 900, 900)))
    assert alert.severity == severity
    assert alert.details["night"] == (severity == "critical")


def test_quiet_hours_come_from_the_profile() -> None:
    early = replace(THRESHOLDS, quiet_start_h=20.0)
    [alert] = opened(Elder(thresholds=early).feed(walk(local_ms(20, 30), 0, 900, 900)))
    assert alert.severity == "critical"


def test_an_elder_not_at_risk_is_not_watched_and_costs_no_write() -> None:
    elder = Elder(profile_id="standard")
    assert elder.feed(walk(DAY, 0, 2000, 3000, 4000, 5000)) == []
    assert elder.to_db == 0  # one view read learns that there is nothing to watch


def test_a_defined_zone_watches_any_elder_and_replaces_the_home_circle() -> None:
    park = Zone("公园", centre=at_m(2000), radius_m=300)
    home = Zone("家", centre=HOME, radius_m=200)
    elder = Elder(profile_id="standard", zones=(home, park))
    # home, then 300 m out (outside both), then in the park: one fix outside only
    assert opened(elder.feed(walk(DAY, 0, 300, 1900, 2100))) == []
    [alert] = opened(elder.feed(walk(DAY + 3_600_000, 1000, 1200)))
    assert alert.details["zones"] == ["家", "公园"]


def test_fixes_inside_stay_out_of_the_database() -> None:
    elder = Elder()
    elder.feed(walk(DAY, *([100.0] * 30)))  # half an hour at home
    assert elder.to_db == 0  # the zones are refreshed from a view, once per ten minutes


def test_outside_updates_the_position_and_coming_back_is_recorded() -> None:
    elder = Elder()
    decisions = elder.feed(walk(DAY, 100, 900, 1200, 1500, 300, 200))
    alert = opened(decisions)[0]
    after = decisions[decisions.index(alert) + 1 :]
    repeat, moved, back = after
    assert isinstance(repeat, RepeatAlert) and repeat.alert_id == alert.alert_id
    assert isinstance(moved, UpdateAlert) and moved.action == "outside"
    assert isinstance(back, Annotate) and back.action == "returned_inside"
    assert back.alert_id == alert.alert_id  # recorded once: the later fix inside is not


def test_confirm_fixes_from_the_profile() -> None:
    strict = replace(THRESHOLDS, geofence_confirm_fixes=3.0)
    assert opened(Elder(thresholds=strict).feed(walk(DAY, 0, 900, 900))) == []
    assert len(opened(Elder(thresholds=strict).feed(walk(DAY, 0, 900, 900, 900)))) == 1


def test_late_fixes_do_not_count_twice() -> None:
    elder = Elder()
    first = walk(DAY, 0, 900)
    # the same outside fix delivered again, and an older one arriving late
    assert opened(elder.feed([*first, first[1], fix(DAY + 30_000, at_m(900))])) == []


def test_still_outside_when_night_falls_escalates_the_warning() -> None:
    elder = Elder()
    [warning] = opened(elder.feed(walk(local_ms(21, 50), 0, 900, 900)))
    assert warning.severity == "warning"
    later = elder.feed(walk(local_ms(22, 5), 1200))
    assert [type(d) for d in later] == [RepeatAlert, UpdateAlert, RenotifyAlert]
    escalated = later[-1]
    assert isinstance(escalated, RenotifyAlert)
    assert (escalated.reason, escalated.severity) == ("escalated", "critical")
