"""Water-meter rules: pure table tests with a ManualClock (no servers)."""

from __future__ import annotations

import pytest

from rules_engine.detectors.water import WaterDetector
from tests.detector_sim import ELDER, Sim, local_ms, thresholds

MIN = 60_000


def sim(**overrides: float) -> Sim:
    return Sim(WaterDetector(), thresholds(**overrides))


def reading(s: Sim, at_ms: int, flow: float) -> bool:
    return s.at(at_ms, "M1", "water_meter", water_flow=flow)


def test_no_water_use_for_12_hours_opens_water_none_and_use_resolves_it() -> None:
    s = sim()
    reading(s, local_ms(24, 7), 2.0)  # morning wash
    t = local_ms(24, 7, 10)
    while t < local_ms(24, 19, 30):  # the meter keeps reporting: nothing flows
        reading(s, t, 0.0)
        t += 30 * MIN
    [opened] = s.changes
    assert (opened.what, opened.rule, opened.severity) == ("opened", "water.none", "warning")
    assert opened.at_ms == local_ms(24, 19)
    assert s.opened[opened.alert_id].threshold == {"water_none_s": 43200.0}
    assert s.opened[opened.alert_id].device_id == "M1"
    reading(s, local_ms(24, 20), 1.5)
    assert s.whats("water_none") == ["opened", "resolved"]


def test_regular_use_keeps_water_none_quiet() -> None:
    s = sim()
    for hour in range(7, 23, 3):
        reading(s, local_ms(24, hour), 3.0)
        reading(s, local_ms(24, hour, 5), 0.0)
    s.run_until(local_ms(25, 6))
    assert s.changes == []


def test_water_none_is_profile_configurable() -> None:
    s = sim(water_none_s=6 * 3600)
    reading(s, local_ms(24, 7), 2.0)
    s.run_until(local_ms(24, 13))
    assert s.whats("water_none") == ["opened"]


def test_a_meter_that_never_flowed_still_arms_the_no_use_deadline() -> None:
    s = sim()
    reading(s, local_ms(24, 8), 0.0)
    assert s.pending(f"water-none:{ELDER}") is not None
    s.run_until(local_ms(24, 20))
    assert s.whats("water_none") == ["opened"]


def test_continuous_flow_for_an_hour_opens_water_flow_and_a_break_resolves_it() -> None:
    s = sim()
    start = local_ms(24, 10)
    for minute in range(0, 70, 5):  # a tap left open: 0.8 L/min on every reading
        reading(s, start + minute * MIN, 0.8)
    water_flow = [c for c in s.changes if c.kind == "water_flow"]
    assert [c.what for c in water_flow] == ["opened"]
    assert water_flow[0].at_ms == start + 60 * MIN
    assert s.opened[water_flow[0].alert_id].rule == "water.continuous_flow"
    reading(s, start + 75 * MIN, 0.0)
    assert s.whats("water_flow") == ["opened", "resolved"]


@pytest.mark.parametrize("low_flow", [0.0, 0.3, 0.5])
def test_a_break_in_the_flow_restarts_the_hour(low_flow: float) -> None:
    s = sim()
    start = local_ms(24, 10)
    for minute in range(0, 50, 5):
        reading(s, start + minute * MIN, 0.8)
    reading(s, start + 50 * MIN, low_flow)  # at or below 0.5 L/min: a break
    for minute in range(55, 110, 5):
        reading(s, start + minute * MIN, 0.8)
    assert s.whats("water_flow") == []  # 55 min since the break
    reading(s, start + 115 * MIN, 0.8)
    assert s.whats("water_flow") == ["opened"]


def test_steady_readings_do_not_reach_the_database() -> None:
    s = sim()
    assert reading(s, local_ms(24, 10), 0.0)  # first reading of the meter
    assert not reading(s, local_ms(24, 10, 1), 0.0)  # nothing changed
    assert reading(s, local_ms(24, 10, 2), 0.8)  # flow starts
    assert not reading(s, local_ms(24, 10, 2) + 20_000, 0.9)  # same band, deadline moved 20 s
    assert reading(s, local_ms(24, 10, 4), 0.9)  # the no-use deadline moved 2 min
