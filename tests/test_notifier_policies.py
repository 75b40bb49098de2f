"""Pure notifier decisions: escalation plans, station choice, backoff, downlink commands."""

from __future__ import annotations

from datetime import time

import pytest

from carewatch.clock import ManualClock
from notifier.channels.base import Message, SendResult
from notifier.channels.downlink import command_for
from notifier.outbox import outcome_of, retry_delay_s
from notifier.policies import POLICIES, plan_step, policy_for
from notifier.targets import Station, haversine_km, nearest_staffed_station, on_duty

WAIT_S = 120.0


def test_critical_notifies_grid_worker_and_first_family_at_once_then_escalates() -> None:
    clock = ManualClock()
    policy = policy_for("critical")
    step0 = plan_step(policy, 0, clock, WAIT_S)
    assert step0 is not None
    assert step0.targets == ("grid_worker", "family_first")
    assert step0.channels == ("sms", "wecom")
    assert step0.next_due_ms == clock.now_ms() + 120_000

    clock.advance(120)
    step1 = plan_step(policy, 1, clock, WAIT_S)
    assert step1 is not None and step1.targets == ("family_all", "nearest_station")
    assert step1.next_due_ms == clock.now_ms() + 120_000

    clock.advance(120)
    step2 = plan_step(policy, 2, clock, WAIT_S)
    assert step2 is not None and step2.targets == ("duty_officer",)
    assert step2.next_due_ms is None  # the last step schedules nothing
    assert plan_step(policy, 3, clock, WAIT_S) is None


def test_warning_starts_with_the_grid_worker_alone() -> None:
    clock = ManualClock()
    plans = [plan_step(policy_for("warning"), s, clock, 30.0) for s in range(3)]
    assert [p.targets for p in plans if p] == [
        ("grid_worker",),
        ("family_first",),
        ("nearest_station",),
    ]
    assert plans[0] is not None and plans[0].next_due_ms == clock.now_ms() + 30_000


def test_info_is_never_pushed() -> None:
    assert POLICIES["info"].steps == ()
    assert plan_step(policy_for("info"), 0, ManualClock(), WAIT_S) is None


def test_negative_step_has_no_plan() -> None:
    assert plan_step(policy_for("critical"), -1, ManualClock(), WAIT_S) is None


def _station(
    sid: str, lat: float, lon: float, staffed: bool = True, hours: str = "08-20"
) -> Station:
    start, end = (time(int(h)) for h in hours.split("-"))
    return Station(sid, sid, "community_station", lat, lon, staffed, start, end)


HOME = (29.5630, 106.5770)


def test_nearest_station_skips_unstaffed_and_off_duty_stations() -> None:
    near_unstaffed = _station("near", 29.5640, 106.5775, staffed=False)
    near_day_only = _station("day", 29.5650, 106.5790, hours="08-20")
    far_night = _station("night", 29.5450, 106.5700, hours="20-08")
    stations = [near_unstaffed, near_day_only, far_night]

    assert nearest_staffed_station(stations, *HOME, time(10, 0)) == near_day_only
    # at 23:00 only the station with a night shift (wrapping past midnight) is on duty
    assert nearest_staffed_station(stations, *HOME, time(23, 0)) == far_night
    assert nearest_staffed_station([near_unstaffed], *HOME, time(10, 0)) is None


def test_duty_windows() -> None:
    assert on_duty(time(8), time(20), time(8))
    assert not on_duty(time(8), time(20), time(20))
    assert on_duty(time(20), time(8), time(2))
    assert not on_duty(time(20), time(8), time(12))
    assert on_duty(time(0), time(0), time(13, 37))  # round the clock


def test_great_circle_distance() -> None:
    # Chongqing Jiefangbei to Chaotianmen is about 1.6 km
    assert haversine_km(29.5580, 106.5770, 29.5700, 106.5860) == pytest.approx(1.6, abs=0.1)
    assert haversine_km(*HOME, *HOME) == 0


def test_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay_s(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay_s(40, 1.0) == 3600.0


def test_outcome_of_a_send() -> None:
    assert outcome_of(SendResult(ok=True), 1, 3) == "sent"
    assert outcome_of(SendResult(ok=False, error="5xx"), 1, 3) == "retry"
    assert outcome_of(SendResult(ok=False, error="5xx"), 3, 3) == "failed"
    assert outcome_of(SendResult(ok=False, retryable=False, error="bad number"), 1, 3) == "failed"


def test_downlink_commands_by_purpose() -> None:
    handled = command_for(Message("k", "W1", "handled", {"alert_id": "a1"}), 1_764_000_000_000)
    assert handled is not None
    assert (handled.type, handled.alert_id, handled.text) == (
        "help_coming",
        "a1",
        "已有人前来帮助，请保持冷静",
    )
    closed = command_for(Message("k", "W1", "closed", {"alert_id": "a1"}), 1)
    assert closed is not None and closed.type == "alert_closed"
    assert command_for(Message("k", "W1", "alert", {}), 1) is None
