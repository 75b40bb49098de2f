"""Server-side fall detection on wristband accelerometer windows.

A fall seen from the wrist is a short sequence of physical events:

1. the body drops: the wrist is partly in free fall (|a| well below 1 g) just before
2. the impact: a sharp peak of |a| when the body (or the hand breaking the fall) hits the floor;
3. the wrist ends up in another orientation than it had while the person was upright
   (the gravity vector seen by the sensor has turned);
4. the person lies still for a while after the impact.

Daily activity produces each of these on its own (clapping and jogging make big peaks,
lying down on a bed turns the wrist and ends still), but rarely the whole sequence. The
detector therefore requires an impact that is the hardest hit before the stillness, an
orientation change across it, and stillness after it; and it rejects an impact that is one
of a series of hits (clapping, jogging, hopping), because a fall is a single event. Free
fall only raises the confidence: the wrist often does not show it (the arm is flung out to
break the fall), so requiring it would miss real falls.

Because stillness can only be observed once it has lasted, a fall is reported when the
stillness window has elapsed, a few seconds after the impact.

The detector is pure and streaming: one instance per device, fed consecutive
`AccelWindow` chunks with their device start time. It keeps a short buffer of raw samples so
a fall that spans two chunks is seen whole, and resamples whatever the device sends to one
fixed rate so every threshold means the same thing for every device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from carewatch.messages import AccelWindow

FloatArray = npt.NDArray[np.float64]

# Care profile presets (care_profiles.id -> overrides of the fall thresholds). The
# database copy of a profile (care_profiles.thresholds) takes precedence; these presets are
# what `carewatch eval falls --profile NAME` uses without a database.
FALL_PROFILE_PRESETS: dict[str, dict[str, float]] = {
    "standard": {},
    # Very old people fall slower and softer (less muscle to break the fall into a hard
    # landing, but also less free fall): accept a softer impact.
    "elderly_80plus": {"impact_g": 2.2},
    # Nobody would notice a missed fall: accept a softer impact (more false alarms).
    "alone": {"impact_g": 2.2},
    # Elders with reduced mobility move little after a fall and fall from a lower height.
    "disabled": {"impact_g": 2.0, "orientation_change_deg": 35.0},
    "cognitive": {},
}


@dataclass(frozen=True)
class FallThresholds:
    """Every number the detector uses; a care profile may override any of them."""

    rate_hz: float = 50.0  # detector sampling rate; input is resampled to it
    impact_g: float = 2.5  # minimum peak |a| of the impact
    impact_cluster_ms: float = 1000.0  # peaks closer than this are one impact (the highest)
    series_window_ms: float = 4000.0  # impacts this long before the fall's impact, or ...
    series_max_impacts: float = 1.0  # ... after it before stillness: more is not a fall
    series_hit_g: float = 2.5  # what counts as a hit in such a series
    freefall_g: float = 0.6  # |a| below this counts as (partial) free fall
    freefall_min_ms: float = 60.0  # free fall this long gives half the free-fall confidence
    freefall_lookback_ms: float = 1000.0  # free fall is searched this long before the impact
    orientation_change_deg: float = 45.0  # minimum turn of gravity, upright vs lying
    upright_gap_ms: float = 700.0  # "before" posture ends this long before the impact
    upright_window_ms: float = 1000.0  # and is averaged over this long
    settle_min_ms: float = 500.0  # stillness may start this soon after the impact
    settle_max_ms: float = 3500.0  # and must start no later than this
    stillness_window_ms: float = 2000.0  # how long the person must stay still
    stillness_max_var: float = 0.005  # g^2: summed per-axis variance allowed while still
    gap_reset_ms: float = 1000.0  # a hole in the data longer than this restarts the buffer

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"fall threshold {f.name} must be a finite number >= 0")
        if self.rate_hz <= 0 or self.stillness_window_ms <= 0:
            raise ValueError("fall thresholds rate_hz and stillness_window_ms must be > 0")
        if self.settle_max_ms < self.settle_min_ms:
            raise ValueError("fall threshold settle_max_ms must be >= settle_min_ms")

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> FallThresholds:
        """Defaults overridden by a care profile's thresholds.

        Accepts either the whole profile thresholds object with a nested `"fall"` section
        (`{"fall": {"impact_g": 2.2}, "inactivity": {...}}`), in which every key must be a
        fall threshold (a typo is an error, not a silently ignored setting), or a flat
        mapping, from which only the fall threshold names are taken.
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
        return replace(cls(), **values)

    @classmethod
    def preset(cls, name: str) -> FallThresholds:
        """The built-in thresholds of a care profile id (see FALL_PROFILE_PRESETS)."""
        if name not in FALL_PROFILE_PRESETS:
            known = ", ".join(sorted(FALL_PROFILE_PRESETS))
            raise ValueError(f"unknown care profile {name!r} (known: {known})")
        return cls.from_profile(FALL_PROFILE_PRESETS[name])

    @property
    def history_ms(self) -> float:
        """How much raw signal must be kept to decide on the oldest undecided impact."""
        before = max(
            self.upright_gap_ms + self.upright_window_ms,
            self.freefall_lookback_ms,
            self.series_window_ms,
        )
        after = max(self.settle_max_ms + self.stillness_window_ms, self.impact_cluster_ms)
        return before + after + 1000.0


@dataclass(frozen=True)
class FallDetection:
    impact_ms: int  # device time of the impact peak
    decided_ms: int  # device time at which the stillness window had elapsed
    confidence: float  # 0..1
    features: dict[str, float]  # peak_g, freefall_ms, orientation_change_deg, stillness, ...


def _ramp(value: float, low: float, high: float) -> float:
    """0 at `low`, 1 at `high`, linear in between."""
    if high <= low:
        return 1.0 if value >= high else 0.0
    return float(min(1.0, max(0.0, (value - low) / (high - low))))


def _angle_deg(a: FloatArray, b: FloatArray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-6 or nb < 1e-6:
        return 0.0
    cos = float(np.dot(a, b)) / (na * nb)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _longest_run(mask: npt.NDArray[np.bool_]) -> int:
    best = run = 0
    for flag in mask:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


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


class AccelFallDetector:
    """Streaming fall detector for one device: feed chunks in device-time order."""

    def __init__(self, thresholds: FallThresholds | None = None) -> None:
        self.thresholds = thresholds or FallThresholds()
        self._t = np.empty(0, dtype=np.float64)  # raw sample times, device ms
        self._xyz = np.empty((0, 3), dtype=np.float64)
        self._decided_until = -math.inf  # impacts at or before this time are settled

    def reset(self) -> None:
        self._t = np.empty(0, dtype=np.float64)
        self._xyz = np.empty((0, 3), dtype=np.float64)
        self._decided_until = -math.inf

    def feed(self, window: AccelWindow, start_ms: int) -> FallDetection | None:
        """Add one chunk; return a fall whose stillness window completed in it, if any.

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
            else:
                fresh = t > last
                t, xyz = t[fresh], xyz[fresh]
        if len(t) == 0:
            return None
        self._t = np.concatenate([self._t, t])
        self._xyz = np.vstack([self._xyz, xyz])
        keep = self._t >= self._t[-1] - self.thresholds.history_ms
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

    def _decide(self) -> FallDetection | None:
        th = self.thresholds
        step = 1000.0 / th.rate_hz
        first = math.ceil(self._t[0] / step) * step
        if self._t[-1] < first + step:
            return None
        grid = np.arange(first, self._t[-1] + step / 2, step)
        sig = resample(self._t, self._xyz, grid)
        mag = np.linalg.norm(sig, axis=1)
        end = grid[-1]
        cluster = round(th.impact_cluster_ms / step)
        for i in np.flatnonzero(mag >= th.impact_g).tolist():
            ti = float(grid[i])
            if ti <= self._decided_until:
                continue
            if i + cluster >= len(mag):
                return None  # the impact's neighbourhood has not arrived yet
            lo = max(0, i - cluster)
            if mag[i] < mag[lo : i + cluster + 1].max() or (mag[lo:i] == mag[i]).any():
                continue  # not the highest peak of its impact
            still = self._stillness_start(sig, i, step)
            if still is None:
                if end < ti + th.settle_max_ms + th.stillness_window_ms:
                    return None  # stillness may still come: decide on a later chunk
                self._decided_until = ti
                continue
            j0, j1 = still
            detection = self._evaluate(sig, mag, grid, i, j0, j1, step)
            if detection is None:
                self._decided_until = ti
                continue
            self._decided_until = float(grid[j1 - 1])
            return detection
        return None

    def _stillness_start(self, sig: FloatArray, i: int, step: float) -> tuple[int, int] | None:
        """First window [j0, j1) of the stillness length, starting within the settle
        range after the impact, whose summed per-axis variance is low enough."""
        th = self.thresholds
        n = round(th.stillness_window_ms / step)
        j_first = i + max(1, round(th.settle_min_ms / step))
        j_last = min(i + round(th.settle_max_ms / step), len(sig) - n)
        if j_last < j_first:
            return None
        # Variance of every window at once from running sums: E[x^2] - E[x]^2.
        c1 = np.vstack([np.zeros((1, 3)), np.cumsum(sig, axis=0)])
        c2 = np.vstack([np.zeros((1, 3)), np.cumsum(sig * sig, axis=0)])
        starts = np.arange(j_first, j_last + 1)
        mean = (c1[starts + n] - c1[starts]) / n
        var = ((c2[starts + n] - c2[starts]) / n - mean * mean).sum(axis=1)
        ok = np.flatnonzero(var <= th.stillness_max_var)
        if len(ok) == 0:
            return None
        j0 = int(starts[ok[0]])
        return j0, j0 + n

    def _evaluate(
        self,
        sig: FloatArray,
        mag: FloatArray,
        grid: FloatArray,
        i: int,
        j0: int,
        j1: int,
        step: float,
    ) -> FallDetection | None:
        th = self.thresholds
        ff_lo = max(0, i - round(th.freefall_lookback_ms / step))
        freefall_ms = _longest_run(mag[ff_lo:i] < th.freefall_g) * step
        up_hi = i - round(th.upright_gap_ms / step)
        up_lo = max(0, up_hi - round(th.upright_window_ms / step))
        if up_hi - up_lo >= 2:
            orientation = _angle_deg(sig[up_lo:up_hi].mean(axis=0), sig[j0:j1].mean(axis=0))
        else:
            orientation = 0.0  # no upright posture in the buffer (data just resumed)
        if float(mag[i + 1 : j0].max(initial=0.0)) > float(mag[i]):
            return None  # a harder impact follows before the stillness: judge that one
        if orientation < th.orientation_change_deg:
            return None  # the wrist ends where it was: the person did not go down
        others = self._other_impacts(mag, i, j0, step)
        if others > th.series_max_impacts:
            return None  # one hit in a series: clapping, jogging, hopping
        still_var = float(sig[j0:j1].var(axis=0).sum())
        peak = float(mag[i])
        stillness = 1.0 - still_var / th.stillness_max_var if th.stillness_max_var else 1.0
        scores = (
            (0.3, _ramp(peak, th.impact_g * 0.8, th.impact_g * 2.0)),
            (0.2, _ramp(freefall_ms, 0.0, max(2.0 * th.freefall_min_ms, step))),
            (0.25, _ramp(orientation, 0.0, max(2.0 * th.orientation_change_deg, 1.0))),
            (0.25, stillness),
        )
        confidence = round(sum(w * s for w, s in scores), 3)
        return FallDetection(
            impact_ms=round(grid[i]),
            decided_ms=round(grid[j1 - 1]),
            confidence=confidence,
            features={
                "peak_g": round(peak, 3),
                "freefall_ms": round(freefall_ms, 1),
                "orientation_change_deg": round(orientation, 1),
                "stillness": round(stillness, 3),
                "stillness_var_g2": round(still_var, 5),
                "other_impacts": float(others),
            },
        )

    def _other_impacts(self, mag: FloatArray, i: int, j0: int, step: float) -> int:
        """Separate hits (local maxima over series_hit_g) outside the impact's own cluster:
        in the series window before it, and between it and the stillness. Hits inside the
        cluster are not counted: a real fall's arm bounces there too."""
        th = self.thresholds
        cluster = round(th.impact_cluster_ms / step)
        before = (max(1, i - round(th.series_window_ms / step)), i - cluster)
        after = (i + cluster + 1, j0)
        count = 0
        for lo, hi in (before, after):
            if hi <= lo:
                continue
            m = mag[lo - 1 : hi + 1]
            peaks = (m[1:-1] >= th.series_hit_g) & (m[1:-1] >= m[:-2]) & (m[1:-1] > m[2:])
            count += int(peaks.sum())
        return count
