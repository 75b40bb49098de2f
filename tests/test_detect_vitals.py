"""Vital signs sustained out of range (pure: events + ElderView + ManualClock, no servers)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from carewatch.messages import Event
from rules_engine.decisions import Decision, OpenAlert, RenotifyAlert, RepeatAlert
from rules_engine.detectors.base import ElderView
from rules_engine.detectors.vitals import VitalsDetector
from rules_engine.engine import Engine
from rules_engine.thresholds import Thresholds
from tests.events import EngineRun, telemetry_event

T0 = 1_764_000_000_000
THRESHOLDS = Thresholds(sos_cancel_window_s=10.0, fall_confirm_window_s=30.0)


def sample(t_s: float, data: dict[str, object], device: str = "W1") -> Event:
    t = T0 + round(t_s * 1000)
    return telemetry_event(data, t, seq=t - T0, device=device, lag_ms=40)


def series(sign: str, *points: tuple[float, float]) -> list[Event]:
    return [sample(t, {sign: v}) for t, v in points]


def every_minute(sign: str, value: float, start_s: float, end_s: float) -> list[Event]:
    t, out = start_s, []
    while t <= end_s:
        out.append(sample(t, {sign: value}))
        t += 60
    return out


@dataclass
class Elder(EngineRun):
    engine: Engine = field(default_factory=lambda: Engine([VitalsDetector()]))
    thresholds: Thresholds = THRESHOLDS

    def view(self) -> ElderView:
        return ElderView("E1", self.thresholds, dict(self.active))


def opened(decisions: list[Decision]) -> list[OpenAlert]:
    return [d for d in decisions if isinstance(d, OpenAlert)]


def profile(**overrides: float) -> Thresholds:
    return replace(THRESHOLDS, **overrides)


# --- table: what fires ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        (
            "one outlier among normal samples",
            series("hr", (0, 72), (60, 175), (120, 74), (180, 73), (240, 71), (300, 72)),
            None,
        ),
        (
            "high heart rate 4 min 59 s",
            series("hr", *[(t, 135) for t in (0, 60, 120, 180, 240, 299)]),
            None,
        ),
        (
            "high heart rate exactly 5 min",
            every_minute("hr", 135, 0, 300),
            ("vitals.hr", "warning"),
        ),
        ("heart rate beyond 160", every_minute("hr", 170, 0, 300), ("vitals.hr", "critical")),
        ("low heart rate 5 min", every_minute("hr", 38, 0, 300), ("vitals.hr", "warning")),
        ("heart rate below 30", every_minute("hr", 28, 0, 300), ("vitals.hr", "critical")),
        (
            "a normal sample resets the run",
            every_minute("hr", 135, 0, 240)
            + series("hr", (270, 80))
            + every_minute("hr", 135, 300, 540),
            None,
        ),
        (
            "a gap in the data is not sustained",
            series("hr", (0, 135), (60, 135), (120, 135), (300, 135), (360, 135), (420, 135)),
            None,
        ),
        ("spo2 below 90 for 3 min", every_minute("spo2", 88, 0, 180), ("vitals.spo2", "warning")),
        ("spo2 below 90 for 2 min", every_minute("spo2", 88, 0, 120), None),
        ("spo2 below 85", every_minute("spo2", 83, 0, 180), ("vitals.spo2", "critical")),
        ("spo2 at exactly 90 is normal", every_minute("spo2", 90, 0, 600), None),
        ("fever for 10 min", every_minute("temp", 38.7, 0, 600), ("vitals.temp", "warning")),
        ("fever for 9 min", every_minute("temp", 38.7, 0, 540), None),
        ("high fever", every_minute("temp", 39.8, 0, 600), ("vitals.temp", "critical")),
        ("temperature at exactly 38.5 is normal", every_minute("temp", 38.5, 0, 900), None),
    ],
)
def test_sustained_out_of_range(
    name: str, events: list[Event], expected: tuple[str, str] | None
) -> None:
    found = opened(Elder().feed(events))
    if expected is None:
        assert found == [], name
        return
    [alert] = found
    assert (alert.kind, alert.status, alert.rule, alert.severity) == ("vitals", "open", *expected)
    # it fires on the sample that completes the sustain time
    assert alert.source_event_id == events[-1].id


def test_the_alert_says_which_sign_and_records_the_threshold() -> None:
    [alert] = opened(Elder().feed(every_minute("spo2", 88, 0, 180)))
    assert alert.details["sign"] == "spo2"
    assert alert.details["value"] == 88.0
    assert alert.details["duration_s"] == 180.0
    assert alert.threshold == {
        "vitals_spo2_low": 90.0,
        "vitals_spo2_sustain_s": 180.0,
        "vitals_spo2_critical_low": 85.0,
        "vitals_max_gap_s": 150.0,
    }


def test_the_extreme_sign_names_a_combined_alert() -> None:
    # both runs complete on the last sample: heart rate 5 min, SpO2 3 min
    events = [
        sample(t, {"hr": 135, "spo2": 83} if t >= 120 else {"hr": 135}) for t in range(0, 301, 60)
    ]
    [alert] = opened(Elder().feed(events))
    assert (alert.rule, alert.severity) == ("vitals.spo2", "critical")
    assert alert.details["signs"] == {"hr": 135.0, "spo2": 83.0}


def test_while_open_further_samples_fold_into_the_alert() -> None:
    elder = Elder()
    decisions = elder.feed(every_minute("hr", 135, 0, 420))
    assert [type(d) for d in decisions[-3:]] == [OpenAlert, RepeatAlert, RepeatAlert]


def test_normal_samples_never_reach_the_database() -> None:
    elder = Elder()
    elder.feed([sample(t, {"hr": 72, "spo2": 97, "temp": 36.6}) for t in range(0, 3600, 60)])
    assert elder.to_db == 0


def test_samples_of_a_band_not_worn_are_ignored() -> None:
    elder = Elder()
    events = [sample(t, {"hr": 150, "worn": False}) for t in range(0, 601, 60)]
    assert elder.feed(events) == [] and elder.to_db == 0


def test_devices_keep_separate_runs() -> None:
    # two wristbands alternating: neither has a sustained run of its own
    events = [sample(t, {"hr": 135}, "W1" if t % 120 == 0 else "W2") for t in range(0, 301, 60)]
    assert opened(Elder().feed(events)) == []


@pytest.mark.parametrize(
    ("thresholds", "value", "fires", "limit"),
    [
        (profile(vitals_hr_high=150.0), 135, False, 150.0),  # a wider profile
        (profile(vitals_hr_high=100.0), 105, False, 110.0),  # clamped to the screening band
        (profile(vitals_hr_high=100.0), 115, True, 110.0),
        (profile(vitals_hr_sustain_s=120.0), 135, True, 130.0),  # a shorter sustain time
    ],
)
def test_care_profile_limits(
    thresholds: Thresholds, value: float, fires: bool, limit: float
) -> None:
    found = opened(Elder(thresholds=thresholds).feed(every_minute("hr", value, 0, 300)))
    assert bool(found) == fires
    if found:
        assert found[0].threshold["vitals_hr_high"] == limit


def test_a_retried_transaction_decides_the_same() -> None:
    elder = Elder()
    events = every_minute("hr", 135, 0, 300)
    [first] = opened(elder.feed(events))
    view = ElderView("E1", THRESHOLDS, {})
    observed = elder.engine.observe(events[-1])  # a redelivery: observed once, remembered
    assert elder.engine.decide(observed, view, 0) == [first]
    assert elder.engine.decide(observed, view, 0) == [first]


def test_an_open_warning_is_escalated_when_the_sign_turns_extreme() -> None:
    elder = Elder()
    [warning] = opened(elder.feed(every_minute("hr", 135, 0, 300)))
    assert warning.severity == "warning"
    decisions = elder.feed(every_minute("hr", 170, 360, 360))
    repeat, escalated = decisions
    assert isinstance(repeat, RepeatAlert)
    assert isinstance(escalated, RenotifyAlert)
    assert (escalated.alert_id, escalated.reason, escalated.severity) == (
        warning.alert_id,
        "escalated",
        "critical",
    )
    # once critical, further extreme samples only fold in
    elder.active["vitals"] = replace(elder.active["vitals"], severity="critical")
    assert [type(d) for d in elder.feed(every_minute("hr", 170, 420, 420))] == [RepeatAlert]
