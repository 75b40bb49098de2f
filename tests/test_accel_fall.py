"""The wrist fall detector on crafted signals: what it must catch and what it must not."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from carewatch.messages import AccelWindow
from rules_engine.detectors.fall.features import FEATURE_NAMES, FeatureWindows
from rules_engine.detectors.fall.model import FallModel, shipped_model
from rules_engine.detectors.fall.signal_model import (
    Candidate,
    FallDetection,
    FallSignalModel,
    FallThresholds,
)

T0 = 1_764_000_000_000  # device epoch ms of the first sample
UPRIGHT = np.array([-1.0, 0.0, 0.0])  # arm hanging: gravity along the forearm
LYING = np.array([0.0, 0.0, -1.0])  # forearm flat on the floor
ON_LAP = np.array([-0.45, 0.0, -0.89])  # forearm on the thigh, about 63 degrees from hanging


class Signal:
    """A crafted wrist signal at `hz`, built segment by segment (g, wristband frame)."""

    def __init__(self, hz: float = 50.0, seed: int = 1) -> None:
        self.hz = hz
        self.parts: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    @property
    def now_ms(self) -> float:
        return sum(len(p) for p in self.parts) * 1000.0 / self.hz

    def hold(self, seconds: float, gravity: np.ndarray, noise: float = 0.01) -> Signal:
        n = round(seconds * self.hz)
        self.parts.append(gravity + self.rng.normal(0.0, noise, size=(n, 3)))
        return self

    def turn(self, seconds: float, start: np.ndarray, end: np.ndarray, scale: float) -> Signal:
        """Rotate gravity from start to end while only `scale` of it is felt (free fall)."""
        n = round(seconds * self.hz)
        f = np.linspace(0.0, 1.0, n)[:, None]
        v = (1 - f) * start + f * end
        self.parts.append(scale * v / np.linalg.norm(v, axis=1, keepdims=True))
        return self

    def hit(self, peak_g: float, gravity: np.ndarray, width_s: float = 0.06) -> Signal:
        """A half-sine collision on top of gravity (at least three samples wide)."""
        n = max(3, round(width_s * self.hz))
        pulse = peak_g * np.sin(np.pi * (np.arange(n) + 0.5) / n)
        noise = self.rng.normal(0.0, 0.05, size=(n, 3))
        self.parts.append(gravity + np.outer(pulse, gravity) + noise)
        return self

    def repeat(self, times: int, segment: Callable[[Signal], object]) -> Signal:
        for _ in range(times):
            segment(self)
        return self

    def array(self) -> np.ndarray:
        return np.vstack(self.parts)


def clean_fall(hz: float = 50.0, peak_g: float = 6.0) -> tuple[Signal, float]:
    """Standing, 0.4 s of partial free fall while turning, an impact, lying still.
    Returns the signal and the impact's time from the start (ms)."""
    s = Signal(hz).hold(2.5, UPRIGHT).turn(0.4, UPRIGHT, LYING, scale=0.3)
    impact_ms = s.now_ms + 30.0
    s.hit(peak_g, LYING).hold(0.3, LYING, noise=0.15).hold(5.0, LYING)
    return s, impact_ms


def feed(
    detector: FallSignalModel, xyz: np.ndarray, hz: float, chunk_s: float = 1.0
) -> list[FallDetection]:
    per = max(1, round(hz * chunk_s))
    found = []
    for k in range(0, len(xyz), per):
        c = xyz[k : k + per]
        window = AccelWindow(hz=hz, x=c[:, 0].tolist(), y=c[:, 1].tolist(), z=c[:, 2].tolist())
        result = detector.feed(window, T0 + round(k * 1000.0 / hz))
        if result is not None:
            found.append(result)
    return found


def candidates(sig: Signal) -> list[Candidate]:
    """Every impact the first stage decided on, with its cues."""
    seen: list[Candidate] = []
    feed(FallSignalModel(on_candidate=seen.append), sig.array(), sig.hz)
    return seen


def walking(s: Signal, seconds: float) -> Signal:
    """Arm swinging by +-25 degrees at 1.8 steps/s with a 0.3 g bounce each step."""
    n = round(seconds * s.hz)
    t = np.arange(n) / s.hz
    swing = np.radians(25.0) * np.sin(np.pi * 1.8 * t)
    grav = np.column_stack([-np.cos(swing), np.zeros(n), np.sin(swing)])
    bounce = 0.3 * np.sin(2 * np.pi * 1.8 * t) ** 2
    s.parts.append(grav * (1 + bounce)[:, None] + s.rng.normal(0.0, 0.02, size=(n, 3)))
    return s


def crawling(s: Signal, seconds: float) -> Signal:
    """On hands and knees, moving: the hand lifts and lands every 0.8 s (1.6 g)."""
    down = np.array([-0.9, 0.0, -0.44])
    for _ in range(round(seconds / 0.8)):
        s.turn(0.3, down, np.array([-0.6, 0.3, -0.74]), scale=0.9)
        s.hit(0.6, down, width_s=0.08).hold(0.42, down, noise=0.08)
    return s


# Each cue on its own, on the movements that confuse a wrist detector. The cue values are
# physics (what the signal holds), not the model's opinion.

RAISED = np.array([1.0, 0.0, 0.0])  # forearm pointing up (hands up): gravity along +x
HANDS_KNEES = np.array([-0.97, 0.0, -0.24])  # forearm vertical, hand on the floor


def fall_from_walking() -> Signal:
    s = walking(Signal(), 6.0).turn(0.45, UPRIGHT, LYING, scale=0.3)
    return s.hit(5.0, LYING).hold(0.3, LYING, noise=0.15).hold(6.0, LYING)


def slow_sit_on_bed() -> Signal:
    s = walking(Signal(), 6.0).turn(1.5, UPRIGHT, LYING, scale=0.92)
    return s.hit(0.4, LYING, width_s=0.2).hold(6.0, LYING)


def hands_up() -> Signal:
    # Arms raised and held, then dropped: the hand hits the thigh (3 g) and rests hanging.
    s = walking(Signal(), 3.0).turn(0.6, UPRIGHT, RAISED, scale=1.0).hold(2.0, RAISED)
    s.turn(0.4, RAISED, UPRIGHT, scale=1.0)
    return s.hit(2.0, UPRIGHT, width_s=0.05).hold(6.0, UPRIGHT)


def fall_onto_hands_and_knees() -> Signal:
    # The forearm ends vertical as when it hangs: posture cannot tell this fall apart.
    s = walking(Signal(), 6.0).turn(0.4, UPRIGHT, HANDS_KNEES, scale=0.3)
    return s.hit(5.0, HANDS_KNEES).hold(0.4, HANDS_KNEES, noise=0.15).hold(6.0, HANDS_KNEES)


def fall_then_crawling() -> Signal:
    s = walking(Signal(), 6.0).turn(0.4, UPRIGHT, HANDS_KNEES, scale=0.3)
    s.hit(5.0, HANDS_KNEES).hold(0.5, HANDS_KNEES, noise=0.15)
    return crawling(s, 6.0)


CUE_TABLE = [
    # name, make, {cue: (low, high)}
    (
        "fall from walking",
        fall_from_walking,
        {
            "peak_g": (4.0, 7.0),
            "freefall_ms": (300.0, 500.0),
            "impact_ratio": (2.0, 5.0),
            "stillness_ratio": (-5.0, -0.7),
            "final_forearm_vertical": (0.0, 0.2),
            "orientation_change_deg": (60.0, 120.0),
            "hits_before": (0.0, 0.0),
        },
    ),
    (
        "fall onto hands and knees",
        fall_onto_hands_and_knees,
        {
            "freefall_ms": (300.0, 500.0),
            "impact_ratio": (2.0, 5.0),
            "stillness_ratio": (-5.0, -0.7),
            "final_forearm_vertical": (0.9, 1.0),  # like a hanging arm
            "orientation_change_deg": (0.0, 30.0),
        },
    ),
    (
        "fall then crawling",
        fall_then_crawling,
        {
            "freefall_ms": (300.0, 500.0),
            "impact_ratio": (2.0, 5.0),
            "stillness_ratio": (-0.5, 2.0),  # no stillness: the arm keeps moving
            "hits_after": (0.0, 0.0),  # crawling's landings stay under 2 g
        },
    ),
    (
        "hands up",
        hands_up,
        {
            "freefall_ms": (0.0, 60.0),
            "final_forearm_vertical": (0.9, 1.0),  # hanging, not lying
            "turn_short_deg": (150.0, 180.0),  # from raised to hanging: a big turn
        },
    ),
]


@pytest.mark.parametrize(("name", "make", "expected"), CUE_TABLE, ids=[c[0] for c in CUE_TABLE])
def test_each_cue_on_crafted_movements(
    name: str, make: Callable[[], Signal], expected: dict[str, tuple[float, float]]
) -> None:
    found = candidates(make())
    hardest = max(found, key=lambda c: c.features["peak_g"])
    for cue, (low, high) in expected.items():
        assert low <= hardest.features[cue] <= high, (name, cue, hardest.features[cue])


def test_a_slow_sit_on_a_bed_is_no_impact_at_all() -> None:
    sig = slow_sit_on_bed()
    assert float(np.linalg.norm(sig.array(), axis=1).max()) < FallThresholds().impact_g
    assert candidates(sig) == []


HANDS_AND_KNEES_GAP = pytest.mark.xfail(
    strict=True,
    reason="known gap: the dev falls end with the forearm turned, so the learned stage leans "
    "on posture; a fall onto hands and knees (forearm vertical, as when it hangs) scores low "
    "despite free fall, impact and stillness. docs/fall-detection.md, Known gaps",
)


@pytest.mark.parametrize(
    ("make", "alarm"),
    [
        (fall_from_walking, True),
        pytest.param(fall_onto_hands_and_knees, True, marks=HANDS_AND_KNEES_GAP),
        (slow_sit_on_bed, False),
        (hands_up, False),
    ],
)
def test_the_shipped_model_on_crafted_movements(make: Callable[[], Signal], alarm: bool) -> None:
    sig = make()
    assert bool(feed(FallSignalModel(), sig.array(), sig.hz)) is alarm


def test_stillness_may_come_later_and_is_relative_to_the_arm() -> None:
    # The same fall, the arm moving for 2 s after the landing before it rests: the stillest
    # second is still found, and the stillness is judged against the walking before.
    late = walking(Signal(), 6.0).turn(0.45, UPRIGHT, LYING, scale=0.3).hit(5.0, LYING)
    late.hold(2.0, LYING, noise=0.2).hold(6.0, LYING)
    [c] = candidates(late)
    assert c.features["stillest_var"] < math.log(0.005)
    assert c.features["stillness_ratio"] < 0.0


def test_a_fall_while_jogging_is_not_vetoed_by_the_rhythm() -> None:
    s = Signal()
    s.repeat(14, lambda x: x.hit(2.0, UPRIGHT, width_s=0.08).hold(0.28, UPRIGHT, noise=0.3))
    s.turn(0.4, UPRIGHT, LYING, scale=0.3).hit(6.0, LYING).hold(0.3, LYING).hold(6.0, LYING)
    # The rhythm is a cue, not a veto: it lowers the probability (at the standard point
    # this fall is a near miss) but free fall, impact, turn and stillness outweigh it.
    fall = max(candidates(s), key=lambda c: c.features["freefall_ms"])
    assert fall.features["hits_before"] >= 5 and fall.probability > 0.8
    balanced = FallThresholds.preset("elderly_80plus")
    found = feed(FallSignalModel(balanced), s.array(), s.hz)
    assert len(found) == 1 and found[0].impact_ms == fall.impact_ms


def hard_sit_down() -> Signal:
    # Lowering onto a chair: a dip, then the landing seen at the wrist (about 2 g), hands
    # on the lap, still.
    return (
        Signal()
        .hold(2.5, UPRIGHT)
        .turn(0.5, UPRIGHT, ON_LAP, scale=0.75)
        .hit(1.0, ON_LAP, width_s=0.1)
        .hold(6.0, ON_LAP)
    )


def clapping() -> Signal:
    # Eight hard claps (6 g) with the forearms level, then arms down and still.
    level = np.array([0.0, -0.2, -0.98])
    s = Signal().hold(1.0, UPRIGHT).turn(0.4, UPRIGHT, level, scale=1.0)
    s.repeat(8, lambda x: x.hit(6.0, level, width_s=0.04).hold(0.35, level, noise=0.1))
    return s.turn(0.6, level, UPRIGHT, scale=1.0).hold(6.0, UPRIGHT)


def jogging() -> Signal:
    # Heel strikes of 3.5 g at 2.8 steps per second, then standing still.
    s = Signal().hold(1.0, UPRIGHT)
    s.repeat(14, lambda x: x.hit(3.5, UPRIGHT, width_s=0.08).hold(0.28, UPRIGHT, noise=0.3))
    return s.hold(6.0, UPRIGHT)


@pytest.mark.parametrize(
    ("name", "make"),
    [("hard sit-down", hard_sit_down), ("clapping", clapping), ("jogging", jogging)],
)
def test_daily_activity_is_not_a_fall(name: str, make: Callable[[], Signal]) -> None:
    sig = make()
    assert feed(FallSignalModel(), sig.array(), sig.hz) == [], name


def test_clean_fall_is_detected_at_its_impact() -> None:
    sig, impact_ms = clean_fall()
    found = feed(FallSignalModel(), sig.array(), sig.hz)
    assert len(found) == 1
    fall = found[0]
    assert abs(fall.impact_ms - (T0 + impact_ms)) <= 40
    # Decided once the seconds after the impact have been seen, not before.
    after = FallSignalModel().model.windows.after_ms
    assert fall.decided_ms - fall.impact_ms >= after - 40
    assert fall.features["peak_g"] > FallThresholds().impact_g
    assert fall.features["freefall_ms"] >= 60
    assert 80 <= fall.features["orientation_change_deg"] <= 100
    assert fall.confidence == pytest.approx(fall.features["probability"], abs=1e-3)
    assert fall.confidence >= FallThresholds().alarm_probability


@pytest.mark.parametrize("chunk_s", [0.37, 1.0, 2.5])
def test_fall_spanning_chunks_is_detected_the_same(chunk_s: float) -> None:
    sig, impact_ms = clean_fall()
    whole = feed(FallSignalModel(), sig.array(), sig.hz, chunk_s=60.0)
    pieces = feed(FallSignalModel(), sig.array(), sig.hz, chunk_s=chunk_s)
    assert len(whole) == len(pieces) == 1
    assert pieces[0].impact_ms == whole[0].impact_ms
    assert abs(pieces[0].impact_ms - (T0 + impact_ms)) <= 40


def test_chunk_boundary_inside_the_impact() -> None:
    sig, impact_ms = clean_fall()
    xyz = sig.array()
    cut = round(impact_ms * sig.hz / 1000.0)  # the impact sample opens the second chunk
    det = FallSignalModel()
    first = AccelWindow(
        hz=50.0, x=xyz[:cut, 0].tolist(), y=xyz[:cut, 1].tolist(), z=xyz[:cut, 2].tolist()
    )
    rest = xyz[cut:]
    second = AccelWindow(
        hz=50.0, x=rest[:, 0].tolist(), y=rest[:, 1].tolist(), z=rest[:, 2].tolist()
    )
    assert det.feed(first, T0) is None
    fall = det.feed(second, T0 + round(cut * 1000.0 / 50.0))
    assert fall is not None
    assert abs(fall.impact_ms - (T0 + impact_ms)) <= 40


@pytest.mark.parametrize("hz", [20.0, 25.0, 100.0, 200.0])
def test_any_input_rate_is_resampled(hz: float) -> None:
    sig, impact_ms = clean_fall(hz=hz)
    found = feed(FallSignalModel(), sig.array(), hz)
    assert len(found) == 1
    assert abs(found[0].impact_ms - (T0 + impact_ms)) <= 1000.0 / hz + 40


def test_fall_reported_once_while_lying_still() -> None:
    sig, _ = clean_fall()
    sig.hold(20.0, LYING)
    assert len(feed(FallSignalModel(), sig.array(), sig.hz)) == 1


def test_no_stillness_no_alarm() -> None:
    # Impact and turn, but the person gets straight up and walks on (arm swinging).
    s = Signal().hold(2.5, UPRIGHT).turn(0.4, UPRIGHT, LYING, scale=0.3).hit(6.0, LYING)
    s.turn(0.8, LYING, UPRIGHT, scale=1.0).hold(6.0, UPRIGHT, noise=0.25)
    assert feed(FallSignalModel(), s.array(), s.hz) == []


@pytest.mark.parametrize(
    ("profile", "detected"),
    [
        ({}, True),
        ({"fall": {"impact_g": 8.0}}, False),  # the impact is no candidate any more
        ({"impact_g": 8.0, "inactivity_hours": 12}, False),  # flat: other keys ignored
        ({"fall": {"alarm_probability": 1.0}}, False),
    ],
)
def test_profile_thresholds_change_the_outcome(profile: dict[str, object], detected: bool) -> None:
    sig, _ = clean_fall()
    th = FallThresholds.from_profile(profile)
    assert bool(feed(FallSignalModel(th), sig.array(), sig.hz)) is detected


def test_profile_rejects_typos_and_non_numbers() -> None:
    with pytest.raises(ValueError, match="impact_gg"):
        FallThresholds.from_profile({"fall": {"impact_gg": 3}})
    with pytest.raises(ValueError, match="must be a number"):
        FallThresholds.from_profile({"fall": {"impact_g": "high"}})
    with pytest.raises(ValueError, match="finite"):
        FallThresholds.from_profile({"fall": {"impact_g": math.nan}})
    with pytest.raises(ValueError, match="<= 1"):
        FallThresholds.from_profile({"fall": {"alarm_probability": 1.5}})
    with pytest.raises(ValueError, match="late_decision must be 0 or 1"):
        FallThresholds.from_profile({"fall": {"late_decision": 0.5}})
    assert FallThresholds.from_profile({"fall": {"late_decision": 1}}).late_decision == 1.0
    with pytest.raises(ValueError, match="unknown care profile"):
        FallThresholds.preset("nobody")


def test_care_profile_presets_are_operating_points_of_the_model() -> None:
    model = shipped_model()
    points, late = model.operating_points, model.late_decision
    assert FallThresholds().alarm_probability == points["standard"]
    assert FallThresholds.preset("standard").alarm_probability == points["standard"]
    assert FallThresholds.preset("alone").alarm_probability == points["sensitive"]
    assert points["sensitive"] < points["standard"]  # more falls caught, more false alarms
    # whether a point also takes the late decision is part of the point
    assert FallThresholds().late_decision == float(late["standard"])
    assert FallThresholds.preset("elderly_80plus").late_decision == float(late["balanced"])
    assert FallThresholds.preset("alone").late_decision == float(late["sensitive"])


def _model_by_decision_time(first: float, late: float) -> FallModel:
    """A model that only looks at when it decides: logit `first` at the first decision,
    `late` at the late one (for testing the detector's rule, not the physics)."""
    k = FEATURE_NAMES.index("after_s")
    tree = ((k, 5.0, 1, 2, 0.0), (-1, 0.0, 0, 0, first), (-1, 0.0, 0, 0, late))
    return FallModel(FEATURE_NAMES, (tree,), windows=FeatureWindows(late_after_ms=7000.0))


def _late_case(
    model: FallModel, late_decision: float
) -> tuple[list[FallDetection], list[Candidate], float]:
    s, impact_ms = clean_fall()
    s.hold(4.0, LYING)  # 9.3 s after the impact: room for the late decision
    seen: list[Candidate] = []
    th = FallThresholds(alarm_probability=0.5, late_decision=late_decision)
    found = feed(FallSignalModel(th, model, seen.append), s.array(), s.hz)
    return found, seen, T0 + impact_ms


def test_the_late_decision_adds_an_alarm_the_first_one_did_not_take() -> None:
    found, seen, impact = _late_case(_model_by_decision_time(-5.0, 5.0), 1.0)
    assert [c.late for c in seen] == [False, True]  # the same impact, decided twice
    assert seen[0].impact_ms == seen[1].impact_ms
    assert seen[1].features["after_s"] == 7.0
    assert len(found) == 1
    assert abs(found[0].impact_ms - impact) <= 40
    assert found[0].decided_ms - found[0].impact_ms == 7000  # its latency counts
    # without the late decision the same impact raises nothing
    found, seen, _ = _late_case(_model_by_decision_time(-5.0, 5.0), 0.0)
    assert found == [] and [c.late for c in seen] == [False]


def test_the_late_decision_never_repeats_an_alarm() -> None:
    # the first decision alarmed: no late decision is taken on that impact
    found, seen, _ = _late_case(_model_by_decision_time(5.0, 5.0), 1.0)
    assert len(found) == 1 and found[0].decided_ms - found[0].impact_ms == 3500
    assert [c.late for c in seen] == [False]


def test_bad_windows_are_rejected_clearly() -> None:
    det = FallSignalModel()
    with pytest.raises(ValueError, match="different lengths"):
        det.feed(AccelWindow(hz=50.0, x=[1.0, 1.0], y=[0.0], z=[0.0, 0.0]), T0)
    with pytest.raises(ValueError, match="non-finite"):
        det.feed(AccelWindow(hz=50.0, x=[math.inf], y=[0.0], z=[0.0]), T0)
    assert det.feed(AccelWindow(hz=50.0, x=[], y=[], z=[]), T0) is None


def test_resent_and_late_chunks_do_not_double_count() -> None:
    sig, _ = clean_fall()
    xyz = sig.array()
    det = FallSignalModel()
    found = []
    for k in range(0, len(xyz), 50):
        c = xyz[k : k + 50]
        w = AccelWindow(hz=50.0, x=c[:, 0].tolist(), y=c[:, 1].tolist(), z=c[:, 2].tolist())
        for _ in range(2):  # every chunk delivered twice (QoS 1 redelivery)
            r = det.feed(w, T0 + k * 20)
            if r is not None:
                found.append(r)
    assert len(found) == 1


def test_gap_in_the_data_restarts_the_buffer() -> None:
    # The impact arrives, then nothing for 10 s, then the person is seen lying still: the
    # detector must not join the two across the hole (it cannot know what happened).
    s = Signal().hold(2.5, UPRIGHT).turn(0.4, UPRIGHT, LYING, scale=0.3).hit(6.0, LYING)
    before = s.array()
    after = Signal().hold(8.0, LYING).array()
    det = FallSignalModel()
    assert feed(det, before, 50.0) == []
    w = AccelWindow(hz=50.0, x=after[:, 0].tolist(), y=after[:, 1].tolist(), z=after[:, 2].tolist())
    assert det.feed(w, T0 + 3_000 + 10_000) is None


STALE_PEAK_GAP = pytest.mark.xfail(
    strict=True,
    reason="known gap: a peak passed over because a higher reading lies within "
    "impact_cluster_ms becomes a candidate once that reading leaves the buffer, described "
    "seconds late with hardly any signal before it. The fix changes the dev candidates and "
    "needs a retrained model. docs/fall-detection.md, Known gaps",
)


@STALE_PEAK_GAP
def test_a_peak_passed_over_for_a_higher_one_never_becomes_a_candidate_later() -> None:
    # Claps every 0.5 s, each a little softer than the one before: in the whole recording
    # only the first is the highest reading within impact_cluster_ms of itself.
    level = np.array([0.0, -0.2, -0.98])
    s = Signal().hold(2.0, UPRIGHT).turn(0.4, UPRIGHT, level, scale=1.0)
    peaks = iter(np.linspace(5.0, 3.0, 12))
    s.repeat(12, lambda x: x.hit(next(peaks), level, width_s=0.04).hold(0.46, level, noise=0.02))
    s.hold(14.0, level)
    seen = candidates(s)
    assert len(seen) == 1
    # and every candidate is decided within a window of the decision time
    assert all(c.seen_ms - c.decided_ms <= 1000.0 for c in seen)
