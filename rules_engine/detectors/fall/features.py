"""The physics of a fall seen from the wrist, as numbers: the features of one impact.

The streaming signal model (`signal_model.FallSignalModel`) finds candidate impacts and,
once `decide_after_ms` of signal has followed one, describes it here. The learned second
stage (`model.FallModel`) turns the description into a probability. Each feature is one
physical cue, computed relative to what the arm itself was doing before, so that one
number means the same for a jogger and for someone sitting:

- **impact**: how hard the hit was, absolutely (`peak_g`) and against the arm's own
  activity in the seconds before (`impact_ratio`: a 3 g step while jogging is ordinary, a
  3 g hit after sitting quietly is not);
- **free fall**: the wrist feeling less than 1 g just before the impact (`freefall_ms`,
  `freefall_min_g`, `freefall_deficit_gs`, the last being a velocity: g x s lost);
- **stillness**: how much the arm moved after the impact compared with before
  (`stillness_ratio`), and the stillest second anywhere after it (`stillest_var`), so that
  stillness which comes later, after a few seconds of moving the arm, still counts;
- **posture**: the final posture judged on its own (`final_forearm_vertical`: 0 when the
  forearm lies flat, 1 when it hangs or points up, with x along the forearm as on the
  wristbands we support) and the turn of gravity against the long-run posture before
  (`orientation_change_deg`) and against the second just before (`turn_short_deg`);
- **rhythm**: other hits in the seconds before and after (`hits_before`, `hits_after`).
  These are features, not a veto: a fall while jogging is still a fall;
- **when**: how long after the impact the decision is taken (`after_s`: `after_ms`, or
  `late_after_ms` for the late decision), so one model scores both decisions.

Everything here is pure numpy over a uniformly sampled signal; `FEATURE_NAMES` is the order
the model was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Movement below this (g, standard deviation of |a|) is "still" whatever the sensor's noise:
# a still arm before and after says nothing about a fall, however quiet each sensor is.
ACTIVITY_FLOOR_G = 0.05

FEATURE_NAMES: tuple[str, ...] = (
    "peak_g",
    "impact_ratio",
    "freefall_ms",
    "freefall_min_g",
    "freefall_deficit_gs",
    "pre_activity",
    "post_activity",
    "stillness_ratio",
    "stillest_var",
    "final_var",
    "orientation_change_deg",
    "turn_short_deg",
    "final_forearm_vertical",
    "pre_forearm_vertical",
    "hits_before",
    "hits_after",
    "bounce_g",
    "final_mag_g",
    "descent_activity",
    "after_peak_ratio",
    "impact_turn_deg",
    "after_s",
)

# The physical direction of a cue: +1 when more of it can only make a fall more likely, -1
# when less of it can only. Training keeps the model monotone in these; the other cues
# (rhythm, posture before, ...) may act either way.
FALL_DIRECTION: dict[str, int] = {
    "peak_g": 1,
    "impact_ratio": 1,
    "freefall_ms": 1,
    "freefall_deficit_gs": 1,
    "freefall_min_g": -1,
    "post_activity": -1,
    "stillness_ratio": -1,
    "stillest_var": -1,
    "final_var": -1,
    "orientation_change_deg": 1,
    "final_forearm_vertical": -1,
}


@dataclass(frozen=True)
class FeatureWindows:
    """Where each cue is looked for, in ms relative to the impact."""

    pre_ms: float = 5000.0  # the arm's own activity and posture: [-pre_ms, -gap_ms]
    gap_ms: float = 1000.0  # the loss of balance itself is not "before"
    freefall_ms: float = 1000.0  # free fall is searched this long before the impact
    freefall_g: float = 0.6  # |a| below this is (partial) free fall
    short_lo_ms: float = 1700.0  # the old "just before" posture: [-1700, -700]
    short_hi_ms: float = 700.0
    after_ms: float = 3500.0  # decide this long after the impact
    # a second, late decision this long after the impact (0: none), for people who keep
    # moving the arm for a few seconds and settle later; it can only add an alarm
    late_after_ms: float = 0.0
    still_ms: float = 1000.0  # the stillest window of this length after the impact
    final_ms: float = 1000.0  # the final posture: the last final_ms before deciding
    hit_g: float = 2.0  # what counts as another hit
    forearm_axis: int = 0  # the sensor axis along the forearm (0 = x)


def _angle_deg(a: FloatArray, b: FloatArray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-6 or nb < 1e-6:
        return 0.0
    cos = float(np.dot(a, b)) / (na * nb)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _longest_run(mask: npt.NDArray[np.bool_]) -> int:
    if not mask.any():
        return 0
    padded = np.concatenate([[0], mask.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


def _hits(mag: FloatArray, lo: int, hi: int, hit_g: float) -> int:
    """Local maxima of |a| at or over hit_g in [lo, hi)."""
    lo, hi = max(1, lo), min(len(mag) - 1, hi)
    if hi <= lo:
        return 0
    m = mag[lo - 1 : hi + 1]
    peaks = (m[1:-1] >= hit_g) & (m[1:-1] >= m[:-2]) & (m[1:-1] > m[2:])
    return int(peaks.sum())


def _forearm_vertical(g: FloatArray, axis: int) -> float:
    norm = float(np.linalg.norm(g))
    return abs(float(g[axis])) / norm if norm > 1e-6 else 0.0


def impact_features(
    sig: FloatArray,
    mag: FloatArray,
    i: int,
    step_ms: float,
    w: FeatureWindows,
    raw_peak_g: float | None = None,
) -> dict[str, float]:
    """The cues of the impact at sample i of `sig` (n x 3, g, one sample per step_ms).

    The signal must reach `w.after_ms` past the impact; before it, whatever is there is
    used (a recording or a buffer may start less than `w.pre_ms` before the impact).
    `raw_peak_g`, the highest |a| among the device's own samples at the impact, is the
    peak when given: a device faster than the grid has several samples per grid step,
    whose mean (the resampled peak) depends on where the grid falls between them.
    """

    def at(ms: float) -> int:
        return i + round(ms / step_ms)

    n = len(sig)
    end = min(n, at(w.after_ms) + 1)
    pre_lo, pre_hi = max(0, at(-w.pre_ms)), max(0, at(-w.gap_ms))
    if pre_hi - pre_lo < 3:  # hardly any signal before: use the impact's own neighbourhood
        pre_lo, pre_hi = max(0, i - 3), max(1, i)
    pre = sig[pre_lo:pre_hi]
    pre_mag = mag[pre_lo:pre_hi]
    peak = float(mag[i]) if raw_peak_g is None else max(float(mag[i]), raw_peak_g)

    ff = mag[max(0, at(-w.freefall_ms)) : i]
    freefall_ms = _longest_run(ff < w.freefall_g) * step_ms if len(ff) else 0.0
    deficit = float(np.clip(1.0 - ff, 0.0, None).sum()) * step_ms / 1000.0 if len(ff) else 0.0

    post_lo = min(end - 1, at(1500.0))
    post_mag = mag[post_lo:end]
    pre_activity = float(pre_mag.std()) if len(pre_mag) > 1 else 0.0
    post_activity = float(post_mag.std()) if len(post_mag) > 1 else 0.0

    k = max(2, round(w.still_ms / step_ms))
    s_lo = min(at(500.0), end - k)
    seg = sig[s_lo:end]
    c1 = np.cumsum(np.vstack([np.zeros((1, 3)), seg]), axis=0)
    c2 = np.cumsum(np.vstack([np.zeros((1, 3)), seg * seg]), axis=0)
    mean = (c1[k:] - c1[:-k]) / k
    var = ((c2[k:] - c2[:-k]) / k - mean * mean).sum(axis=1)
    stillest = float(max(var.min(), 0.0)) if len(var) else 0.0

    f_lo = max(i + 1, end - max(2, round(w.final_ms / step_ms)))
    final = sig[f_lo:end]
    final_g = final.mean(axis=0)
    final_var = float(final.var(axis=0).sum())
    pre_g = pre.mean(axis=0)
    s_lo2, s_hi2 = max(0, at(-w.short_lo_ms)), max(0, at(-w.short_hi_ms))
    short_g = sig[s_lo2:s_hi2].mean(axis=0) if s_hi2 - s_lo2 >= 2 else pre_g

    excess_before = float(np.percentile(np.abs(pre_mag - 1.0), 95)) if len(pre_mag) else 0.0
    return {
        "peak_g": peak,
        "impact_ratio": math.log(max(peak - 1.0, 0.01) / max(excess_before, 0.05)),
        "freefall_ms": freefall_ms,
        "freefall_min_g": float(ff.min()) if len(ff) else 1.0,
        "freefall_deficit_gs": deficit,
        "pre_activity": math.log(pre_activity + ACTIVITY_FLOOR_G),
        "post_activity": math.log(post_activity + ACTIVITY_FLOOR_G),
        "stillness_ratio": math.log(
            (post_activity + ACTIVITY_FLOOR_G) / (pre_activity + ACTIVITY_FLOOR_G)
        ),
        "stillest_var": math.log(stillest + 1e-4),
        "final_var": math.log(final_var + 1e-4),
        "orientation_change_deg": _angle_deg(pre_g, final_g),
        "turn_short_deg": _angle_deg(short_g, final_g),
        "final_forearm_vertical": _forearm_vertical(final_g, w.forearm_axis),
        "pre_forearm_vertical": _forearm_vertical(pre_g, w.forearm_axis),
        "hits_before": float(_hits(mag, at(-4000.0), at(-1000.0), w.hit_g)),
        "hits_after": float(_hits(mag, at(1000.0), end, w.hit_g)),
        "bounce_g": float(np.abs(mag[min(end - 1, at(200.0)) : at(1000.0)] - 1.0).mean())
        if at(1000.0) > at(200.0) and at(200.0) < end
        else 0.0,
        "final_mag_g": float(np.linalg.norm(final_g)),
        "descent_activity": float(mag[max(0, at(-1000.0)) : i].std()) if i > 1 else 0.0,
        "after_peak_ratio": float(mag[min(end - 1, at(1000.0)) : end].max()) / peak,
        "impact_turn_deg": _angle_deg(
            sig[max(0, at(-600.0)) : max(1, at(-200.0))].mean(axis=0),
            sig[min(end - 2, at(300.0)) : min(end - 1, at(800.0))].mean(axis=0),
        ),
        "after_s": w.after_ms / 1000.0,
    }


def feature_vector(features: dict[str, float]) -> FloatArray:
    return np.asarray([features[name] for name in FEATURE_NAMES], dtype=np.float64)
