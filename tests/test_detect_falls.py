"""Falls: server-side accelerometer detection, fusion of sources, stillness afterwards.

Pure: typed events, an ElderView and a ManualClock in, decisions out (no servers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace

import pytest
from prometheus_client import REGISTRY

from carewatch.messages import Event, EventType
from rules_engine.decisions import (
    CancelAlert,
    CancelTimer,
    ConfirmAlert,
    Decision,
    OpenAlert,
    RepeatAlert,
    ScheduleTimer,
    UpdateAlert,
)
from rules_engine.detectors.base import ActiveAlert, DueTimer, ElderView
from rules_engine.detectors.fall.confirmation import confirm
from rules_engine.detectors.fall.detector import FallDetector
from rules_engine.detectors.fall.model import shipped_model
from rules_engine.detectors.fall.signal_model import FallThresholds
from rules_engine.detectors.geofence import GeofenceDetector
from rules_engine.detectors.vitals import VitalsDetector
from rules_engine.engine import Engine
from rules_engine.thresholds import Thresholds
from simulators.accel_trials import HZ, generate_trial
from tests.events import device_event, telemetry_event

T0 = 1_764_000_000_000
THRESHOLDS = Thresholds(sos_cancel_window_s=10.0, fall_confirm_window_s=30.0)


def fall_engine() -> Engine:
    """The fall detectors and their telemetry peers as default_engine() has them, without
    the presence detectors (inactivity, device health), whose decisions are not ours."""
    return Engine([FallDetector(), VitalsDetector(), GeofenceDetector("Asia/Shanghai")])


def accel_events(
    code: str,
    device: str = "W1",
    start_ms: int = T0,
    chunk_s: float = 1.0,
    subject: int = 1,
    rep: int = 2,
) -> list[Event]:
    """A synthetic trial cut into windows as the wristband publishes them."""
    acc = generate_trial(code, subject=subject, rep=rep, seed=7)
    step = round(chunk_s * HZ)
    out = []
    for n, i in enumerate(range(0, len(acc), step)):
        chunk = acc[i : i + step]
        t = start_ms + round(i * 1000 / HZ)
        accel = {"hz": float(HZ), **{k: chunk[:, j].tolist() for j, k in enumerate("xyz")}}
        out.append(telemetry({"accel": accel}, t, device, seq=1000 + n))
    return out


def telemetry(
    data: Mapping[str, object], t_ms: int, device: str = "W1", seq: int = 1, kind: str = "wristband"
) -> Event:
    return telemetry_event(data, t_ms, seq=seq, device=device, kind=kind)


def flag(event: EventType, t_ms: int, device: str = "W1", kind: str = "wristband") -> Event:
    seq = t_ms - T0 + 1
    return device_event(event, t_ms, seq=seq, device=device, kind=kind)


def view(*active: ActiveAlert, profile: Mapping[str, object] | None = None) -> ElderView:
    return ElderView("E1", THRESHOLDS, {a.kind: a for a in active}, "standard", profile or {})


def activate(d: Decision) -> ActiveAlert:
    assert isinstance(d, OpenAlert)
    return ActiveAlert.opened_by(d)


def sources_of(details: Mapping[str, object]) -> set[str]:
    sources = details["sources"]
    assert isinstance(sources, dict)
    return set(sources)


def run(engine: Engine, events: list[Event], elder: ElderView) -> tuple[list[Decision], int]:
    """Feed events as the worker does; returns the decisions and how many needed the DB."""
    decisions: list[Decision] = []
    to_db = 0
    for e in events:
        decided = engine.run(e, lambda: elder, e.received_ms)
        if decided is not None:
            to_db += 1
            decisions.extend(decided)
    return decisions, to_db


def reaches_db(engine: Engine, e: Event) -> bool:
    return engine.run(e, view, e.received_ms) is not None


# --- accelerometer ---------------------------------------------------------------------


@pytest.mark.parametrize("code", ["F01", "F02", "F03"])
def test_a_fall_in_accel_windows_opens_one_pending_alert_with_timer(code: str) -> None:
    decisions, to_db = run(fall_engine(), accel_events(code), view())
    opened, timer = decisions
    assert isinstance(opened, OpenAlert)
    assert (opened.kind, opened.severity, opened.status, opened.rule) == (
        "fall",
        "critical",
        "pending",
        "fall.accel",
    )
    assert opened.confidence is not None and 0.5 < opened.confidence <= 1.0
    # the thresholds used, all of them: the standard operating point of the shipped model
    assert opened.threshold["alarm_probability"] == FallThresholds().alarm_probability
    assert opened.threshold["impact_g"] == FallThresholds().impact_g
    assert opened.threshold["fall_confirm_window_s"] == 30.0
    source = opened.details["sources"]["accel"]  # type: ignore[index]
    assert source["features"]["peak_g"] >= 2.5
    assert isinstance(timer, ScheduleTimer) and timer.kind == "fall-confirm"
    # only the detection (the profile is learned from a view, not in a transaction)
    assert to_db == 1


@pytest.mark.parametrize("code", ["D01", "D03", "D08", "D15", "D20"])
def test_daily_activity_in_accel_windows_opens_nothing(code: str) -> None:
    decisions, to_db = run(fall_engine(), accel_events(code), view())
    assert decisions == []
    assert to_db == 0  # the profile is learned from a view, nothing is written


def test_care_profile_thresholds_apply_and_are_recorded() -> None:
    deaf = view(profile={"fall": {"impact_g": 12.0}})  # no impact is a candidate
    assert run(fall_engine(), accel_events("F01"), deaf)[0] == []
    alone = view(profile={"fall": {"impact_g": 2.2}, "sos_cancel_window_s": 5})
    opened, _ = run(fall_engine(), accel_events("F01"), alone)[0]
    assert isinstance(opened, OpenAlert) and opened.threshold["impact_g"] == 2.2


def test_the_care_profile_id_picks_its_operating_point_stored_thresholds_win() -> None:
    points = shipped_model().operating_points
    alone = ElderView("E1", THRESHOLDS, {}, "alone", {})
    opened, _ = run(fall_engine(), accel_events("F01"), alone)[0]
    assert isinstance(opened, OpenAlert)
    assert opened.threshold["alarm_probability"] == points["sensitive"]
    strict = ElderView("E1", THRESHOLDS, {}, "alone", {"fall": {"alarm_probability": 1.0}})
    assert run(fall_engine(), accel_events("F01"), strict)[0] == []


def test_a_broken_profile_falls_back_to_defaults_instead_of_silencing() -> None:
    typo = view(profile={"fall": {"impactg": 2.2}})
    opened, _ = run(fall_engine(), accel_events("F01"), typo)[0]
    assert isinstance(opened, OpenAlert) and opened.threshold == {
        **asdict(FallThresholds()),
        "fall_confirm_window_s": 30.0,
    }


def test_redelivered_windows_and_retried_transactions_decide_the_same() -> None:
    engine = fall_engine()
    events = accel_events("F01")
    first, _ = run(engine, events, view())
    # the same deliveries again (redelivery, or a transaction retried): same answers
    again = [d for e in events for d in engine.run(e, view, e.received_ms) or []]
    assert [type(d) for d in again] == [OpenAlert, ScheduleTimer]
    assert again[0] == first[0]


def test_an_unusable_window_is_counted_and_skipped() -> None:
    engine = fall_engine()
    before = REGISTRY.get_sample_value(
        "carewatch_rules_rejected_samples_total", {"detector": "accel_fall", "reason": "bad_window"}
    )
    prime = accel_events("D01")[0]
    run(engine, [prime], view())
    bad = telemetry({"accel": {"hz": 50.0, "x": [1.0, 2.0], "y": [1.0], "z": []}}, T0 + 1000, seq=5)
    assert not reaches_db(engine, bad)
    assert not reaches_db(engine, bad)  # delivered again: observed once, counted once
    after = REGISTRY.get_sample_value(
        "carewatch_rules_rejected_samples_total", {"detector": "accel_fall", "reason": "bad_window"}
    )
    assert (after or 0) == (before or 0) + 1


# --- fusion -----------------------------------------------------------------------------


def test_device_flag_opens_with_its_source_and_prior_confidence() -> None:
    opened, _ = run(fall_engine(), [flag("fall", T0)], view())[0]
    assert isinstance(opened, OpenAlert)
    assert opened.confidence == 0.6
    assert sources_of(opened.details) == {"wristband_flag"}


def test_accel_agreeing_with_the_device_flag_folds_in_and_raises_confidence() -> None:
    engine = fall_engine()
    pending = activate(run(engine, [flag("fall", T0 + 1500)], view())[0][0])
    decisions, _ = run(engine, accel_events("F01"), view(pending))
    repeat, fused = decisions  # no second alert, no second timer
    assert isinstance(repeat, RepeatAlert) and repeat.alert_id == pending.alert_id
    assert isinstance(fused, UpdateAlert) and fused.action == "source_agreed"
    assert fused.confidence is not None and fused.confidence > 0.9
    assert sources_of(fused.details) == {"wristband_flag", "accel"}


def test_radar_flag_then_wristband_flag_raise_confidence_by_noisy_or() -> None:
    engine = fall_engine()
    pending = activate(run(engine, [flag("fall", T0, "R1", "radar")], view())[0][0])
    _, fused = run(engine, [flag("fall", T0 + 3000)], view(pending))[0]
    assert isinstance(fused, UpdateAlert)
    assert fused.confidence == pytest.approx(1 - 0.4 * 0.4)


@pytest.mark.parametrize(
    ("device", "kind", "dt_ms"),
    [
        ("W1", "wristband", 3_000),  # the same source again: a repeat, no more weight
        ("R1", "radar", 60_001),  # another source, but too late to be the same fall
    ],
)
def test_repeats_that_are_not_agreement_do_not_raise_confidence(
    device: str, kind: str, dt_ms: int
) -> None:
    engine = fall_engine()
    pending = activate(run(engine, [flag("fall", T0)], view())[0][0])
    [repeat] = run(engine, [flag("fall", T0 + dt_ms, device, kind)], view(pending))[0]
    assert isinstance(repeat, RepeatAlert)


def test_exactly_at_the_fusion_window_still_agrees() -> None:
    engine = fall_engine()
    pending = activate(run(engine, [flag("fall", T0)], view())[0][0])
    _, fused = run(engine, [flag("fall", T0 + 60_000, "R1", "radar")], view(pending))[0]
    assert isinstance(fused, UpdateAlert)


# --- correlation: movement after the fall --------------------------------------------------


def confirm_of(engine: Engine, opened: Decision, timer: Decision, elder: ElderView) -> Decision:
    assert isinstance(timer, ScheduleTimer)
    due = DueTimer(timer.timer_id, timer.kind, "E1", timer.due_ms, timer.payload)
    [d] = engine.on_timer(due, elder, timer.due_ms)
    return d


def test_no_movement_after_the_fall_raises_confidence_at_confirmation() -> None:
    engine = fall_engine()
    opened, timer = run(engine, [flag("fall", T0)], view())[0]
    pending = activate(opened)
    # the elder's other devices say nothing that moves: motion False, steps unchanged
    quiet = [
        telemetry({"motion": False}, T0 + 5_000, "P1", 1, "pir"),
        telemetry({"steps": 120}, T0 + 6_000, "W1", 2),
        telemetry({"steps": 120}, T0 + 20_000, "W1", 3),
    ]
    assert run(engine, quiet, view(pending)) == ([], 0)
    d = confirm_of(engine, opened, timer, view(pending))
    assert isinstance(d, ConfirmAlert)
    assert d.confidence == pytest.approx(1 - 0.4 * 0.5)  # flag 0.6, stillness 0.5
    assert d.details == {"moved": False}


@pytest.mark.parametrize(
    "moving",
    [
        [telemetry({"motion": True}, T0 + 5_000, "P1", 1, "pir")],
        [
            telemetry({"steps": 120}, T0 + 4_000, "W1", 2),
            telemetry({"steps": 131}, T0 + 9_000, "W1", 3),
        ],
    ],
)
def test_movement_during_the_window_is_recorded_and_confirms_without_boost(
    moving: list[Event],
) -> None:
    engine = fall_engine()
    opened, timer = run(engine, [flag("fall", T0)], view())[0]
    pending = activate(opened)
    [moved] = run(engine, moving, view(pending))[0]
    assert isinstance(moved, UpdateAlert) and moved.action == "movement"
    seen = replace(pending, details={**pending.details, **moved.details})
    d = confirm_of(engine, opened, timer, view(seen))
    assert isinstance(d, ConfirmAlert)
    assert d.confidence is None and d.details == {"moved": True}


def test_movement_without_a_recent_fall_never_reaches_the_database() -> None:
    engine = fall_engine()
    assert not reaches_db(engine, telemetry({"motion": True}, T0, "P1", 1, "pir"))
    run(engine, [flag("fall", T0)], view())
    late = telemetry({"motion": True}, T0 + 11 * 60_000, "P1", 2, "pir")
    assert not reaches_db(engine, late)


def test_im_ok_still_cancels_a_fall_found_by_the_accelerometer() -> None:
    engine = fall_engine()
    opened, timer = run(engine, accel_events("F02"), view())[0]
    cancel, drop = run(engine, [flag("fall_cancel", T0 + 9_000)], view(activate(opened)))[0]
    assert isinstance(cancel, CancelAlert) and cancel.alert_id == activate(opened).alert_id
    assert isinstance(timer, ScheduleTimer) and drop == CancelTimer(timer.timer_id)


def test_steps_counted_before_the_fall_are_not_movement_after_it() -> None:
    engine = fall_engine()
    # the cumulative counter rises from the walk that ended in the fall
    assert not reaches_db(engine, telemetry({"steps": 100}, T0 - 30_000, "W1", 900))
    opened, _ = run(engine, [flag("fall", T0)], view())[0]
    pending = activate(opened)
    first_after = telemetry({"steps": 130}, T0 + 20_000, "W1", 2)
    assert run(engine, [first_after], view(pending)) == ([], 0)
    # a later rise, between two samples both after the fall, is movement
    [moved] = run(engine, [telemetry({"steps": 135}, T0 + 25_000, "W1", 3)], view(pending))[0]
    assert isinstance(moved, UpdateAlert) and moved.action == "movement"


# --- clapping is not a fall: accelerometer-only falls followed by walking ------------------
# The misfire `carewatch eval days` found: clapping along to evening TV (peak ~6 g, no free
# fall, one other hit) became a confirmed critical fall, as nobody pressed "I'm OK".


# At the standard operating point clapping raises nothing; a care profile set to a very
# sensitive point (below the model's own points) lets this clapping trial through, which is
# what the engine's safety net for hit series without free fall is for.
CLAP_SENSITIVE = {"fall": {"alarm_probability": 0.05}}


def clapping() -> list[Event]:
    """A clapping trial the detector takes for a fall (no free fall, one other hit)."""
    return accel_events("D20", subject=2, rep=3)


def test_a_real_fall_keeps_the_usual_confirmation_window() -> None:
    opened, timer = run(fall_engine(), accel_events("F02"), view())[0]
    assert isinstance(opened, OpenAlert) and isinstance(timer, ScheduleTimer)
    assert "hit_series_without_freefall" not in opened.details["sources"]["accel"]  # type: ignore[index]
    last = accel_events("F02")[-1]
    assert timer.due_ms <= last.received_ms + 30_000


def test_clapping_then_walking_on_is_cancelled_as_moved_normally() -> None:
    engine = fall_engine()
    (opened, timer), _ = run(engine, clapping(), view(profile=CLAP_SENSITIVE))
    assert isinstance(opened, OpenAlert) and isinstance(timer, ScheduleTimer)
    accel = opened.details["sources"]["accel"]  # type: ignore[index]
    assert accel["hit_series_without_freefall"] is True
    assert accel["features"]["freefall_ms"] == 0.0
    assert opened.threshold["fall_accel_series_confirm_window_s"] == 120.0
    at = opened.device_time_ms
    assert timer.due_ms == at + 50 + 120_000  # received + the longer window
    pending = activate(opened)
    # the band's minute reports: steps between two reports after the clap
    band = [telemetry({"steps": 7561}, at + 25_000, "W1", 2)]
    band.append(telemetry({"steps": 7562}, at + 85_000, "W1", 3))
    [walked] = run(engine, band, view(pending))[0]
    assert isinstance(walked, UpdateAlert) and walked.action == "movement"
    assert walked.details["walked"] == {"event_id": "W1:3", "device_id": "W1", "how": "steps"}
    seen = replace(pending, details={**pending.details, **walked.details})
    d = confirm_of(engine, opened, timer, view(seen))
    assert isinstance(d, CancelAlert)  # kept as a cancelled alert, nobody notified
    assert (d.rule, d.source_event_id) == ("fall.moved_normally", timer.timer_id)
    assert d.details["reason"] == "moved_normally_afterwards"


def test_clapping_then_sitting_still_is_still_confirmed_only_later() -> None:
    engine = fall_engine()
    (opened, timer), _ = run(engine, clapping(), view(profile=CLAP_SENSITIVE))
    assert isinstance(timer, ScheduleTimer)
    d = confirm_of(engine, opened, timer, view(activate(opened)))
    assert isinstance(d, ConfirmAlert) and d.details == {"moved": False}


def test_a_profile_without_confirmation_window_opens_clapping_at_once() -> None:
    no_window = replace(THRESHOLDS, fall_confirm_window_s=0.0)
    elder = ElderView("E1", no_window, {}, "standard", CLAP_SENSITIVE)
    [opened] = run(fall_engine(), clapping(), elder)[0]
    assert isinstance(opened, OpenAlert) and opened.status == "open"


def pending_fall(sources: tuple[str, ...], **details: object) -> ActiveAlert:
    return ActiveAlert(
        "A1",
        "fall",
        "critical",
        "pending",
        "W1",
        T0,
        "fall.accel",
        0.6,
        {"sources": {s: {} for s in sources}, **details},
    )


STEPS = {"event_id": "W1:3", "device_id": "W1", "how": "steps"}
PIR = {"event_id": "P1:1", "device_id": "P1", "how": "motion"}


@pytest.mark.parametrize(
    ("sources", "details", "outcome"),
    [
        (("accel",), {"moved": STEPS, "walked": STEPS}, "cancelled"),
        (("accel",), {"moved": PIR, "walked": STEPS}, "cancelled"),
        (("accel",), {"moved": PIR}, "confirmed"),  # crawling, a visitor: not walking
        (("accel",), {}, "confirmed_still"),
        (("accel", "wristband_flag"), {"moved": STEPS, "walked": STEPS}, "confirmed"),
        (("wristband_flag",), {"moved": STEPS, "walked": STEPS}, "confirmed"),
        (("radar_flag",), {"moved": STEPS, "walked": STEPS}, "confirmed"),
        (("radar_flag",), {}, "confirmed_still"),
    ],
)
def test_only_accelerometer_falls_followed_by_walking_are_cancelled(
    sources: tuple[str, ...], details: dict[str, object], outcome: str
) -> None:
    d = confirm(pending_fall(sources, **details), "fall-confirm:A1")
    got = (
        "cancelled"
        if isinstance(d, CancelAlert)
        else "confirmed_still"
        if d.details == {"moved": False}
        else "confirmed"
    )
    assert got == outcome


def test_motion_then_steps_records_both_moved_and_walked() -> None:
    engine = fall_engine()
    opened, _ = run(engine, [flag("fall", T0)], view())[0]
    pending = activate(opened)
    [first] = run(engine, [telemetry({"motion": True}, T0 + 2_000, "P1", 1, "pir")], view(pending))[
        0
    ]
    assert isinstance(first, UpdateAlert) and set(first.details) == {"moved"}
    moved = replace(pending, details={**pending.details, **first.details})
    steps = [
        telemetry({"steps": 10}, T0 + 3_000, "W1", 2),
        telemetry({"steps": 40}, T0 + 9_000, "W1", 3),
    ]
    [second] = run(engine, steps, view(moved))[0]
    assert isinstance(second, UpdateAlert) and set(second.details) == {"walked"}
    walked = replace(moved, details={**moved.details, **second.details})
    assert run(engine, [telemetry({"steps": 60}, T0 + 15_000, "W1", 4)], view(walked))[0] == []
