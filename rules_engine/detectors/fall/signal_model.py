"""Server-side fall detection on wristband accelerometer windows.

A fall seen from the wrist is a short sequence of physical events: the body drops (the
wrist is partly in free fall), an impact (a sharp peak of |a|), the wrist ends in another
posture (lying, the forearm usually flat), and the arm moves much less than before, at
once or after a few seconds of struggling. Daily activity produces each of these on its
own (clapping and jogging make big peaks, lying down on a bed turns the wrist and ends
still), rarely all of them together.

The detector works in two stages:

1. **candidates** (physics, no learning): every impact, a peak of |a| of at least
   `impact_g` that is the highest within `impact_cluster_ms`, is described once
   `decide_after_ms` of signal has followed it, by the cues of
   `rules_engine.detectors.fall.features` (impact against the arm's own activity, free
   fall, stillness relative to the activity before, final posture, other hits around it);
2. **decision** (learned): a logistic regression trained on the dev recordings
   (`fall_model.json`, trained reproducibly by `carewatch eval falls --train`) turns the
   cues into a probability; an alarm is raised when it reaches `alarm_probability`, an
   operating point measured on the leave-one-subject-out ROC (care profile presets are
   such points). After an alarm, impacts within `refractory_ms` are not reported again;
3. **late decision** (optional): when the model's windows have `late_after_ms` and the
   thresholds' `late_decision` is 1, an impact without an alarm is described and scored
   again that long after it (the cue `after_s` tells the model which decision it is), for
   people who settle late. It can only add an alarm for an impact that has none.

No cue is a veto: a fall while jogging, or one after which the arm keeps moving for a few
seconds, can still score high enough on the others.

The detector is pure and streaming: one instance per device, fed consecutive
`AccelWindow` chunks with their device start time. It keeps a short buffer of raw samples so
that an impact and the seconds around it are seen whole, and resamples whatever the device
sends to one fixed rate so every number means the same thing for every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from carewatch.messages import AccelWindow
from rules_engine.detectors.fall.features import FeatureWindows, feature_vector, impact_features
from rules_engine.detectors.fall.model import FallModel, shipped_model

FloatArray = npt.NDArray[np.float64]


def _operating_point(name: str) -> float:
    return shipped_model().operating_points[name]


def _late_decision(name: str) -> float:
    return 1.0 if shipped_model().late_decision.get(name, False) else 0.0


@dataclass(frozen=True)
class FallThresholds:
    """Every number the detector uses; a care profile may override any of them."""

    rate_hz: float = 50.0  # detector sampling rate; input is resampled to it
    impact_g: float = 1.8  # a peak of |a| at least this high is a candidate impact
    impact_cluster_ms: float = 1000.0  # peaks closer than this are one impact (the highest)
    # the model's probability at which an alarm is raised; default: its standard point
    alarm_probability: float = field(default_factory=lambda: _operating_point("standard"))
    refractory_ms: float = 5000.0  # after an alarm, impacts this soon are the same fall
    # 1: an impact without an alarm is decided again late_after_ms after it (the model's
    # windows), for people who settle late; 0: one decision only. Default: the standard point's
    late_decision: float = field(default_factory=lambda: _late_decision("standard"))
    gap_reset_ms: float = 1000.0  # a hole in the data longer than this restarts the buffer

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"fall threshold {f.name} must be a finite number >= 0")
        if self.rate_hz <= 0:
            raise ValueError("fall threshold rate_hz must be > 0")
        if self.alarm_probability > 1:
            raise ValueError("fall threshold alarm_probability must be <= 1")
        if self.late_decision not in (0.0, 1.0):
            raise ValueError("fall threshold late_decision must be 0 or 1")

    @classmethod
    def from_profile(
        cls, profile: Mapping[str, Any], base: FallThresholds | None = None
    ) -> FallThresholds:
        """`base` (the defaults if None) overridden by a care profile's thresholds.

        Accepts either the whole profile thresholds object with a nested `"fall"` section
        (`{"fall": {"alarm_probability": 0.3}, "inactivity": {...}}`), in which every key
        must be a fall threshold (a typo is an error, not a silently ignored setting), or
        a flat mapping, from which only the fall threshold names are taken.
        """
        names = {f.name for f in fields(cls)}
        section = profile.get("fall")
        if isinstance(section, Mapping):
            unknown = sorted(set(section) - names)
            if unknown:
                raise ValueError(f"unknown fall threshold(s) in profile: {', '.join(unknown)}")
            chosen: Mapping[str, Any] = section
        else:
            chosen = {k: v for k, v in profile.items() if k in names}
        values: dict[str, float] = {}
        for key, value in chosen.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fall threshold {key} must be a number, got {value!r}")
            values[key] = float(value)
        return replace(base or cls(), **values)

    @classmethod
    def for_elder(cls, profile_id: str | None, profile: Mapping[str, Any]) -> FallThresholds:
        """What the engine uses: the preset of the elder's care profile id (the defaults
        for an id without one), overridden by the profile's stored thresholds."""
        presets = fall_profile_presets()
        base = cls.from_profile(presets[profile_id]) if profile_id in presets else cls()
        return cls.from_profile(profile, base)

    @classmethod
    def preset(cls, name: str) -> FallThresholds:
        """The built-in thresholds of a care profile id: an operating point of the model
        (see PROFILE_OPERATING_POINTS)."""
        presets = fall_profile_presets()
        if name not in presets:
            known = ", ".join(sorted(presets))
            raise ValueError(f"unknown care profile {name!r} (known: {known})")
        return cls.from_profile(presets[name])

    def history_ms(self, model: FallModel) -> float:
        """How much raw signal must be kept to decide on the oldest undecided impact."""
        w = model.windows
        before = max(w.pre_ms, w.freefall_ms, 4000.0, self.impact_cluster_ms)
        after = max(w.after_ms, w.late_after_ms, self.impact_cluster_ms)
        return before + after + 1000.0


# Care profile id -> the operating point of the model it uses. Each is a point on the
# leave-one-subject-out ROC recorded in the model file (fall_model.json, operating_points;
# how each is chosen: evaluation/fall_training.py). "standard" keeps false
# alarms within budget; "balanced" accepts more of them for elders who fall softly or stay
# down unnoticed longer; "sensitive" trades many more for fewer misses, for elders nobody
# would see fall.
PROFILE_OPERATING_POINTS: dict[str, str] = {
    "standard": "standard",
    "cognitive": "standard",
    "elderly_80plus": "balanced",
    "disabled": "balanced",
    "alone": "sensitive",
}


def fall_profile_presets() -> dict[str, dict[str, float]]:
    """Care profile id -> fall threshold overrides, from the model's operating points."""
    return {
        name: {"alarm_probability": _operating_point(point), "late_decision": _late_decision(point)}
        for name, point in PROFILE_OPERATING_POINTS.items()
    }


@dataclass(frozen=True)
class FallDetection:
    impact_ms: int  # device time of the impact peak
    decided_ms: int  # device time of the last sample the decision looked at
    confidence: float  # 0..1: the model's probability
    features: dict[str, float]  # the cues (fall_features.FEATURE_NAMES) and a few summaries


@dataclass(frozen=True)
class Candidate:
    """One impact the detector decided on, alarm or not (for evaluation and training)."""

    impact_ms: int
    decided_ms: int  # device time of the last grid sample the features used
    seen_ms: float  # device time of the newest raw sample when it was decided
    features: dict[str, float]
    vector: FloatArray
    probability: float
    late: bool = False  # the late decision on an impact the first one let pass


def resample(t_ms: FloatArray, xyz: FloatArray, grid_ms: FloatArray) -> FloatArray:
    """Values of the (possibly irregular) signal at the grid times.

    Each grid point takes the mean of the raw samples within half a grid step of it (an
    anti-aliasing box filter when the input is faster than the grid); where there are none
    (input slower than the grid) it interpolates linearly between the neighbours.
    """
    half = (grid_ms[1] - grid_ms[0]) / 2 if len(grid_ms) > 1 else 0.0
    lo = np.searchsorted(t_ms, grid_ms - half, side="left")
    hi = np.searchsorted(t_ms, grid_ms + half, side="left")
    count = (hi - lo).astype(np.float64)
    csum = np.vstack([np.zeros((1, 3)), np.cumsum(xyz, axis=0)])
    out = np.empty((len(grid_ms), 3), dtype=np.float64)
    has = count > 0
    out[has] = (csum[hi[has]] - csum[lo[has]]) / count[has, None]
    if not has.all():
        for axis in range(3):
            out[~has, axis] = np.interp(grid_ms[~has], t_ms, xyz[:, axis])
    return out


def _summary(features: dict[str, float], probability: float) -> dict[str, float]:
    """The cues, rounded, plus the names the engine and older alerts use."""
    out = {k: round(v, 4) for k, v in features.items()}
    out["other_impacts"] = features["hits_before"] + features["hits_after"]
    out["probability"] = round(probability, 4)
    return out


class FallSignalModel:
    """Streaming fall detector for one device: feed chunks in device-time order."""

    def __init__(
        self,
        thresholds: FallThresholds | None = None,
        model: FallModel | None = None,
        on_candidate: Callable[[Candidate], None] | None = None,
    ) -> None:
        self.thresholds = thresholds or FallThresholds()
        self.model = model or shipped_model()
        self._on_candidate = on_candidate
        self._t = np.empty(0, dtype=np.float64)  # raw sample times, device ms
        self._xyz = np.empty((0, 3), dtype=np.float64)
        self._decided_until = -math.inf  # impacts at or before this time are settled
        self._quiet_until = -math.inf  # no new alarm for impacts before this (refractory)
        self._pending: float | None = None
        self._late: list[float] = []  # impacts without an alarm awaiting the late decision

    def reset(self) -> None:
        self._t = np.empty(0, dtype=np.float64)
        self._xyz = np.empty((0, 3), dtype=np.float64)
        self._decided_until = -math.inf
        self._quiet_until = -math.inf
        self._pending = None
        self._late = []

    @property
    def pending_impact_ms(self) -> float | None:
        """The earliest candidate impact still waiting for the signal after it, if any: a
        recording that stops here ends with an undecided impact."""
        return self._pending

    def feed(self, window: AccelWindow, start_ms: int) -> FallDetection | None:
        """Add one chunk; return a fall decided in it, if any.

        Raises ValueError for a chunk that is not a usable signal (unequal axes,
        non-finite values); the caller counts and keeps it. Samples that overlap what was
        already received (a re-sent chunk) are dropped; a hole longer than gap_reset_ms
        restarts the buffer, because nothing can be interpolated across it.
        """
        xyz = self._validated(window)
        if len(xyz) == 0:
            return None
        t = start_ms + np.arange(len(xyz), dtype=np.float64) * (1000.0 / window.hz)
        if len(self._t):
            last = self._t[-1]
            if t[0] - last > self.thresholds.gap_reset_ms + 1000.0 / window.hz:
                self._t = np.empty(0, dtype=np.float64)
                self._xyz = np.empty((0, 3), dtype=np.float64)
                self._pending = None
                self._late = []
            else:
                fresh = t > last
                t, xyz = t[fresh], xyz[fresh]
        if len(t) == 0:
            return None
        self._t = np.concatenate([self._t, t])
        self._xyz = np.vstack([self._xyz, xyz])
        keep = self._t >= self._t[-1] - self.thresholds.history_ms(self.model)
        self._t, self._xyz = self._t[keep], self._xyz[keep]
        return self._decide()

    @staticmethod
    def _validated(window: AccelWindow) -> FloatArray:
        if not (len(window.x) == len(window.y) == len(window.z)):
            raise ValueError("accelerometer window axes have different lengths")
        xyz = np.column_stack([window.x, window.y, window.z]).astype(np.float64)
        if xyz.size and not np.isfinite(xyz).all():
            raise ValueError("accelerometer window holds non-finite values")
        return xyz.reshape(-1, 3)

    def _raw_peak(self, ti: float, step: float) -> float | None:
        """The highest raw |a| within half a grid step of the impact at device time ti:
        the samples the grid point at ti averaged (or the nearest one)."""
        lo, hi = np.searchsorted(self._t, [ti - step / 2, ti + step / 2], side="left")
        if hi <= lo:
            return None
        return float(np.linalg.norm(self._xyz[lo:hi], axis=1).max())

    def _decide(self) -> FallDetection | None:
        th = self.thresholds
        step = 1000.0 / th.rate_hz
        first = math.ceil(self._t[0] / step) * step
        self._pending = None
        if self._t[-1] < first + step:
            return None
        grid = np.arange(first, self._t[-1] + step / 2, step)
        sig = resample(self._t, self._xyz, grid)
        mag = np.linalg.norm(sig, axis=1)
        cluster = round(th.impact_cluster_ms / step)
        horizon = max(cluster, round(self.model.windows.after_ms / step))
        found = self._decide_late(grid, sig, mag, step)
        late = (
            th.late_decision > 0 and self.model.windows.late_after_ms > self.model.windows.after_ms
        )
        for i in np.flatnonzero(mag >= th.impact_g).tolist():
            ti = float(grid[i])
            if ti <= self._decided_until:
                continue
            lo = max(0, i - cluster)
            hi = min(len(mag), i + cluster + 1)
            if mag[i] < mag[lo:hi].max() or (mag[lo:i] == mag[i]).any():
                continue  # not the highest peak of its impact (so far)
            if i + horizon >= len(mag):
                self._pending = ti  # the seconds after the impact have not arrived yet
                break
            decision = self._score(grid, sig, mag, i, step, self.model.windows, found, False)
            if decision is None:
                self._pending = ti  # a second fall in one chunk: decided on the next one
                break
            self._decided_until = ti
            alarm, detection = decision
            found = detection or found
            if late and not alarm:
                self._late.append(ti)
        return found

    def _decide_late(
        self, grid: FloatArray, sig: FloatArray, mag: FloatArray, step: float
    ) -> FallDetection | None:
        """The late decision on impacts the first one let pass, once late_after_ms of
        signal has followed them: only an alarm can come of it, never a retraction."""
        w = self.model.windows
        late_w = replace(w, after_ms=w.late_after_ms)
        horizon = round(w.late_after_ms / step)
        found: FallDetection | None = None
        while self._late:
            i = round((self._late[0] - float(grid[0])) / step)
            if i < 0:  # fell out of the buffer (cannot happen with history_ms)
                self._late.pop(0)
                continue
            if i + horizon >= len(mag):
                break
            decision = self._score(grid, sig, mag, i, step, late_w, found, True)
            if decision is None:
                break  # a second alarm in one chunk: decided on the next one
            self._late.pop(0)
            found = decision[1] or found
        return found

    def _score(
        self,
        grid: FloatArray,
        sig: FloatArray,
        mag: FloatArray,
        i: int,
        step: float,
        windows: FeatureWindows,
        found: FallDetection | None,
        late: bool,
    ) -> tuple[bool, FallDetection | None] | None:
        """Describe and score the impact at grid index i with the signal up to
        windows.after_ms after it: (alarm, its detection), or None when it would be a
        second alarm in this chunk (then it waits for the next one, unrecorded)."""
        th = self.thresholds
        ti = float(grid[i])
        features = impact_features(sig, mag, i, step, windows, self._raw_peak(ti, step))
        vector = feature_vector(features)
        probability = self.model.probability(vector)
        alarm = probability >= th.alarm_probability and ti > self._quiet_until
        if alarm and found is not None:
            return None
        decided_ms = round(grid[i + round(windows.after_ms / step)])
        if self._on_candidate is not None:
            self._on_candidate(
                Candidate(
                    round(ti), decided_ms, float(self._t[-1]), features, vector, probability, late
                )
            )
        if not alarm:
            return False, None
        self._quiet_until = ti + th.refractory_ms
        return True, FallDetection(
            impact_ms=round(ti),
            decided_ms=decided_ms,
            confidence=round(probability, 3),
            features=_summary(features, probability),
        )
