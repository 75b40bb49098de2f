"""Pure detector tests: typed events and a ManualClock in, decisions out (no servers)."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from carewatch.clock import ManualClock
from carewatch.messages import AlertStatus, Event, EventType
from carewatch.settings import Settings, get_settings
from rules_engine.decisions import (
    Annotate,
    CancelAlert,
    CancelTimer,
    ConfirmAlert,
    Decision,
    OpenAlert,
    RepeatAlert,
    ScheduleTimer,
    alert_id_for,
)
from rules_engine.detectors.base import ActiveAlert, Detector, DueTimer, ElderView
from rules_engine.detectors.fall.detector import FallDetector
from rules_engine.engine import Engine, default_engine
from rules_engine.thresholds import Thresholds, resolve_thresholds
from tests.events import device_event

T0 = 1_764_000_000_000
THRESHOLDS = Thresholds(sos_cancel_window_s=10.0, fall_confirm_window_s=30.0)
ENGINE = default_engine(get_settings())


def ev(
    event: EventType, t_ms: int = T0, device: str = "W1", kind: str = "wristband", seq: int = 1
) -> Event:
    return device_event(event, t_ms, seq=seq, device=device, kind=kind)


def view(*active: ActiveAlert, thresholds: Thresholds = THRESHOLDS) -> ElderView:
    return ElderView("E1", thresholds, {a.kind: a for a in active})


def activate(d: Decision) -> ActiveAlert:
    """The active alert an OpenAlert decision leaves behind (what the store would load)."""
    assert isinstance(d, OpenAlert)
    return ActiveAlert.opened_by(d)


def decide(event: Event, elder: ElderView, clock: ManualClock | None = None) -> list[Decision]:
    """The whole contract on a fresh engine (the events here reuse ids)."""
    decisions = default_engine(get_settings()).run(
        event, lambda: elder, (clock or ManualClock(T0)).now_ms()
    )
    assert decisions is not None
    return decisions


SOS_OPEN = activate(decide(ev("sos"), view())[0])


# --- SOS -------------------------------------------------------------------------------


def test_sos_press_opens_a_critical_alert_at_once() -> None:
    [d] = decide(ev("sos"), view())
    assert isinstance(d, OpenAlert)
    assert (d.kind, d.severity, d.status, d.rule) == ("sos", "critical", "open", "sos.press")
    assert d.threshold == {"sos_cancel_window_s": 10.0}
    assert (d.source_event_id, d.device_id, d.device_time_ms) == ("W1:1", "W1", T0)
    assert d.alert_id == alert_id_for("sos", "W1:1")


@pytest.mark.parametrize(
    ("case", "cancel", "expected"),
    [
        ("inside window", ev("sos_cancel", T0 + 3_000, seq=2), CancelAlert),
        ("same millisecond", ev("sos_cancel", T0, seq=2), CancelAlert),
        ("last millisecond", ev("sos_cancel", T0 + 10_000, seq=2), CancelAlert),
        ("one ms after window", ev("sos_cancel", T0 + 10_001, seq=2), Annotate),
        ("long after window", ev("sos_cancel", T0 + 60_000, seq=2), Annotate),
        ("before the press", ev("sos_cancel", T0 - 1, seq=2), Annotate),
        ("other device", ev("sos_cancel", T0 + 1_000, device="W2", seq=2), Annotate),
    ],
)
def test_sos_cancel_window(case: str, cancel: Event, expected: type) -> None:
    [d] = decide(cancel, view(SOS_OPEN))
    assert isinstance(d, expected), case
    assert isinstance(d, CancelAlert | Annotate)
    assert d.alert_id == SOS_OPEN.alert_id
    if isinstance(d, CancelAlert):
        assert d.rule == "sos.cancel"
        assert d.source_event_id == cancel.id
    else:
        assert isinstance(d, Annotate)
        assert d.action == "cancel_ignored"


def test_sos_cancel_window_comes_from_the_thresholds() -> None:
    short = replace(THRESHOLDS, sos_cancel_window_s=2.0)
    [d] = decide(ev("sos_cancel", T0 + 3_000, seq=2), view(SOS_OPEN, thresholds=short))
    assert isinstance(d, Annotate)
    assert d.details["reason"] == "outside_window"


def test_sos_cancel_does_not_undo_an_acknowledged_alert() -> None:
    acked = replace(SOS_OPEN, status="acknowledged")
    [d] = decide(ev("sos_cancel", T0 + 1_000, seq=2), view(acked))
    assert isinstance(d, Annotate)
    assert d.details["reason"] == "alert_acknowledged"


def test_sos_cancel_without_an_active_alert_decides_nothing() -> None:
    assert decide(ev("sos_cancel", T0, seq=2), view()) == []


def test_repeat_sos_folds_into_the_open_alert() -> None:
    [d] = decide(ev("sos", T0 + 20_000, seq=5), view(SOS_OPEN))
    assert d == RepeatAlert(SOS_OPEN.alert_id, "sos", "W1:5", "W1", T0 + 20_000)


# --- device fall ----------------------------------------------------------------------


@pytest.mark.parametrize("device_kind", ["wristband", "radar"])
def test_fall_flag_opens_pending_alert_with_confirmation_timer(device_kind: str) -> None:
    clock = ManualClock(T0 + 700)  # server time, not device time, drives the timer
    opened, timer = decide(ev("fall", device="D1", kind=device_kind), view(), clock)
    assert isinstance(opened, OpenAlert)
    assert (opened.kind, opened.severity, opened.status) == ("fall", "critical", "pending")
    assert opened.rule == "fall.device_flag"
    assert opened.threshold == {"fall_confirm_window_s": 30.0}
    assert timer == ScheduleTimer(
        timer_id=f"fall-confirm:{opened.alert_id}",
        kind="fall-confirm",
        due_ms=T0 + 700 + 30_000,
        payload={"alert_id": opened.alert_id},
    )


def test_fall_pending_then_timer_confirms() -> None:
    clock = ManualClock(T0)
    opened, timer = decide(ev("fall"), view(), clock)
    assert isinstance(timer, ScheduleTimer)
    clock.advance(30)
    due = DueTimer(timer.timer_id, timer.kind, "E1", timer.due_ms, timer.payload)
    pending = activate(opened)
    [d] = ENGINE.on_timer(due, view(pending), clock.now_ms())
    # no movement recorded in the window: stillness (0.5) raises the flag's 0.6 to
    # 1 - 0.4 * 0.5 = 0.8 (correlation's noisy-or)
    still = {"moved": False}
    assert d == ConfirmAlert(
        pending.alert_id, "fall", "fall.confirm_window", timer.timer_id, 0.8, still
    )


def test_fall_cancel_before_the_timer_cancels_alert_and_timer() -> None:
    opened, timer = decide(ev("fall"), view())
    assert isinstance(timer, ScheduleTimer)
    pending = activate(opened)
    cancel, drop = decide(ev("fall_cancel", T0 + 29_999, seq=2), view(pending))
    assert isinstance(cancel, CancelAlert)
    assert (cancel.alert_id, cancel.rule) == (pending.alert_id, "fall.cancel")
    assert drop == CancelTimer(timer.timer_id)


def test_fall_cancel_after_confirmation_is_only_recorded() -> None:
    opened = activate(decide(ev("fall"), view())[0])
    [d] = decide(ev("fall_cancel", T0 + 40_000, seq=2), view(replace(opened, status="open")))
    assert isinstance(d, Annotate)
    assert d.details["reason"] == "alert_open"


@pytest.mark.parametrize("status", ["open", "acknowledged"])
def test_timer_of_an_alert_no_longer_pending_confirms_nothing(status: AlertStatus) -> None:
    opened = activate(decide(ev("fall"), view())[0])
    due = DueTimer(f"fall-confirm:{opened.alert_id}", "fall-confirm", "E1", T0, {})
    due = replace(due, payload={"alert_id": opened.alert_id})
    assert ENGINE.on_timer(due, view(replace(opened, status=status)), 0) == []
    assert ENGINE.on_timer(due, view(), 0) == []  # cancelled meanwhile


def test_zero_confirmation_window_opens_the_fall_at_once() -> None:
    no_window = replace(THRESHOLDS, fall_confirm_window_s=0.0)
    [d] = decide(ev("fall"), view(thresholds=no_window))
    assert isinstance(d, OpenAlert)
    assert d.status == "open"


def test_repeat_fall_while_pending_folds_in_without_a_second_timer() -> None:
    opened = activate(decide(ev("fall"), view())[0])
    d, *_ = decide(ev("fall", T0 + 5_000, device="R1", kind="radar", seq=9), view(opened))
    assert isinstance(d, RepeatAlert)  # a second source also raises confidence: test_detect_falls
    assert d.alert_id == opened.alert_id


def test_fall_flag_from_a_device_that_cannot_detect_falls_decides_nothing() -> None:
    pir_fall = ev("fall", device="P1", kind="pir")
    assert default_engine(get_settings()).run(pir_fall, view, T0) is None


# --- environment ----------------------------------------------------------------------


@pytest.mark.parametrize("alarm", ["smoke", "gas", "leak"])
def test_environment_alarm_opens_a_critical_alert_at_once(alarm: EventType) -> None:
    [d] = decide(ev(alarm, device="S1", kind=alarm), view())
    assert isinstance(d, OpenAlert)
    assert (d.kind, d.severity, d.status, d.rule) == (
        alarm,
        "critical",
        "open",
        f"environment.{alarm}",
    )


# --- engine and thresholds -------------------------------------------------------------


def test_telemetry_and_other_events_never_reach_the_database() -> None:
    telemetry = msgspec.structs.replace(ev("sos"), type="telemetry", event=None, data={"hr": 70})
    assert default_engine(get_settings()).run(telemetry, view, T0) is None
    # door events are signs of life (inactivity); a PIR's online status is nobody's business
    status = msgspec.structs.replace(
        ev("sos", device="P1", kind="pir"), type="status", event=None, state="online"
    )
    assert not ENGINE.wants(status)


def test_two_detectors_may_not_own_one_timer_kind() -> None:
    with pytest.raises(ValueError, match="fall-confirm"):
        Engine([FallDetector(), FallDetector()])


def test_unknown_timer_kind_fires_as_a_no_op() -> None:
    assert ENGINE.on_timer(DueTimer("x:1", "retired-kind", "E1", T0, {}), view(), 0) == []


def test_base_detector_wants_nothing() -> None:
    assert not Detector().wants(ev("sos"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, Thresholds(10.0, 30.0)),
        ({"fall_confirm_window_s": 20}, Thresholds(10.0, 20.0)),
        ({"sos_cancel_window_s": 5.5, "other_key": 1}, Thresholds(5.5, 30.0)),
        # invalid values fall back to the default instead of silencing detection
        ({"sos_cancel_window_s": -1, "fall_confirm_window_s": "20"}, Thresholds(10.0, 30.0)),
        (
            {"sos_cancel_window_s": True, "fall_confirm_window_s": float("nan")},
            Thresholds(10.0, 30.0),
        ),
    ],
)
def test_profile_thresholds_override_settings(
    overrides: dict[str, object], expected: Thresholds
) -> None:
    defaults = Settings(sos_cancel_window_s=10, fall_confirm_window_s=30, _env_file=None)
    assert resolve_thresholds(defaults, overrides) == expected
