"""Pure notifier decisions: escalation plans, station choice, backoff, downlink commands."""

from __future__ import annotations

from datetime import time

import pytest

from carewatch.clock import ManualClock
from notifier.channels.base import Message, SendResult
from notifier.channels.downlink import command_for
from notifier.outbox import outcome_of, retry_delay_s
from notifier.policies import (
    POLICIES,
    HandlerCheck,
    handler_check,
    in_quiet_hours,
    pass_on_press,
    plan_step,
    policy_for,
    step_channels,
)
from notifier.rosters import Roster
from notifier.targets import Elder, Station, haversine_km, on_duty, station_for

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

    elder = Elder("E1", "王秀英", "", "", "G1", *HOME)
    assert station_for(stations, Roster(), elder, time(10, 0)) == near_day_only
    # at 23:00 only the station with a night shift (wrapping past midnight) is on duty
    assert station_for(stations, Roster(), elder, time(23, 0)) == far_night
    assert station_for([near_unstaffed], Roster(), elder, time(10, 0)) is None


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
    # the cap on the rate of retries (outbox_retry_max_interval_s)
    assert [retry_delay_s(n, 1.0, 60.0) for n in (6, 7, 8, 10_000)] == [32.0, 60.0, 60.0, 60.0]


def test_outcome_of_a_send() -> None:
    assert outcome_of(SendResult(ok=True), 1, 3) == "sent"
    assert outcome_of(SendResult(ok=False, error="5xx"), 1, 3) == "retry"
    assert outcome_of(SendResult(ok=False, error="5xx"), 3, 3) == "failed"
    assert outcome_of(SendResult(ok=False, retryable=False, error="bad number"), 1, 3) == "failed"
    # an alert message of an open alert: a transient failure is never the last attempt
    transient = SendResult(ok=False, error="5xx")
    assert outcome_of(transient, 3, 3, keep_trying=True) == "retry"
    assert outcome_of(transient, 10_000, 3, keep_trying=True) == "retry"
    permanent = SendResult(ok=False, retryable=False, error="bad number")
    assert outcome_of(permanent, 1, 3, keep_trying=True) == "failed"


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
    # issued once: every attempt publishes the same command (a resend is byte-identical)
    issued = Message("k", "W1", "handled", {"alert_id": "a1", "issued_ms": "1764000000000"})
    assert command_for(issued, 1_764_000_005_000) == command_for(issued, 1_764_000_090_000)
    assert command_for(issued, 1_764_000_090_000).ts == 1_764_000_000_000  # type: ignore[union-attr]


# --- after an acknowledgement (issue 14, item 5) -----------------------------------------


def test_a_handler_who_does_not_arrive_is_reminded_then_others_are_alerted() -> None:
    acked = 1_764_000_000_000
    clock = ManualClock(acked)

    def check(stage: int, arrived: bool = False) -> HandlerCheck:
        return handler_check(acked, arrived, stage, clock, 600, 1200)

    assert check(0) == HandlerCheck(None, 0, acked + 600_000)  # armed: look at +10 min
    clock.advance(599)
    assert check(0).action is None
    clock.advance(1)
    assert check(0) == HandlerCheck("remind", 1, acked + 1_200_000)
    assert check(1) == HandlerCheck(None, 1, acked + 1_200_000)  # reminded once
    clock.advance(600)
    assert check(1) == HandlerCheck("escalate", 2, None)
    assert check(2) == HandlerCheck(None, 2, None)  # and that is all
    # late: straight to the escalation, no reminder first
    assert check(0).action == "escalate"
    # 已到达 ends the watch at any point
    assert check(0, arrived=True) == HandlerCheck(None, 0, None)
    assert check(1, arrived=True) == HandlerCheck(None, 1, None)


def test_presses_are_passed_on_at_most_once_per_interval() -> None:
    clock = ManualClock(1_764_000_000_000)
    assert pass_on_press(None, clock, 60)
    last = clock.now_ms()
    clock.advance(59.9)
    assert not pass_on_press(last, clock, 60)
    clock.advance(0.1)
    assert pass_on_press(last, clock, 60)


# --- issue 18: repeats, the night window, voice -----------------------------------------


def test_repeats_loop_the_last_step_then_stop() -> None:
    clock = ManualClock()
    policy = policy_for("critical")
    last = len(policy.steps) - 1
    final = plan_step(policy, last, clock, WAIT_S, repeats=2, repeat_interval_s=300)
    assert final is not None and final.repeat == 0
    assert final.next_due_ms == clock.now_ms() + 300_000  # a repeat follows
    first = plan_step(policy, last + 1, clock, WAIT_S, repeats=2, repeat_interval_s=300)
    assert first is not None and first.repeat == 1
    assert first.targets == policy.steps[-1].targets
    assert first.next_due_ms == clock.now_ms() + 300_000
    second = plan_step(policy, last + 2, clock, WAIT_S, repeats=2, repeat_interval_s=300)
    assert second is not None and second.repeat == 2 and second.next_due_ms is None
    assert plan_step(policy, last + 3, clock, WAIT_S, repeats=2, repeat_interval_s=300) is None
    # without repeats the last step is the end, as before
    assert plan_step(policy, last, clock, WAIT_S).next_due_ms is None  # type: ignore[union-attr]
    assert plan_step(policy, last + 1, clock, WAIT_S) is None


@pytest.mark.parametrize(
    ("at", "start", "end", "quiet"),
    [
        (time(23, 0), "22:00", "07:00", True),
        (time(3, 0), "22:00", "07:00", True),
        (time(7, 0), "22:00", "07:00", False),
        (time(21, 59), "22:00", "07:00", False),
        (time(13, 0), "12:00", "14:00", True),
        (time(3, 0), "00:00", "00:00", False),  # equal: no night window
    ],
)
def test_night_window(at: time, start: str, end: str, quiet: bool) -> None:
    assert in_quiet_hours(at, start, end) is quiet


def test_critical_steps_call_at_night_and_in_repeats_only() -> None:
    clock = ManualClock()
    policy = policy_for("critical")
    step0 = plan_step(policy, 0, clock, WAIT_S, repeats=1, repeat_interval_s=60)
    repeat = plan_step(policy, len(policy.steps), clock, WAIT_S, repeats=1, repeat_interval_s=60)
    assert step0 is not None and repeat is not None
    night = {"quiet_start": "22:00", "quiet_end": "07:00"}
    assert step_channels(step0, "critical", time(3), voice=True, **night) == (
        "sms",
        "wecom",
        "voice",
    )
    assert step_channels(step0, "critical", time(12), voice=True, **night) == ("sms", "wecom")
    assert step_channels(step0, "warning", time(3), voice=True, **night) == ("sms", "wecom")
    assert step_channels(step0, "critical", time(3), voice=False, **night) == ("sms", "wecom")
    assert "voice" in step_channels(repeat, "critical", time(12), voice=True, **night)
