"""Training the fall detector's second stage, and judging it with subjects left out.

`carewatch eval falls FILE... --train OUT.json` writes a model file; `--loso` reports
leave-one-subject-out figures. Both start the same way: every trial goes through the
streaming detector's first stage (the physics), which records each candidate impact with
its cues (`Candidate`). The cues do not depend on the model, so they are computed once;
the second stage and its operating point are then replayed exactly as the detector applies
them (`TrialCandidates.alarms`).

Labels for training, by the harness's own rule (evaluation/falls.py): in a
fall trial the hardest candidate inside the fall's window is the fall (positive), the other
candidates inside the window are left out (they belong to the fall, but they are not its
impact), every other candidate is not a fall (negative), in fall and daily-activity trials
alike.

The model is N_TREES gradient-boosted trees of depth DEPTH on the logistic loss with
balanced class weights: deterministic, numpy only. LOSO: for each
subject, a model is fitted on all the others and scores that subject's candidates.

Operating points are chosen on the pooled LOSO probabilities, never on anything else:
"standard" is the lowest probability at which per-trial specificity over decided trials is
at least SPECIFICITY_TARGET and no file has more than FALSE_ALARMS_PER_HOUR_TARGET false
alarms per hour of activity; "balanced" the lowest meeting the specificity alone;
"sensitive" the lowest at which specificity is at least SENSITIVE_SPECIFICITY. When the
feature windows have a late decision (`FeatureWindows.late_after_ms`), every impact is
recorded with both decisions (both rows carry the impact's label), and each point is chosen
with and without the late decision, keeping the one with the higher sensitivity. The final
model is fitted on every subject; the file records the LOSO figures at each point, which a
test reproduces.

Training never loads the model file it replaces: the first stage runs with `cue_model()`
(the code's feature windows, a constant probability, never an alarm).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluation.falls import (
    FALL_AFTER_MS,
    FALL_BEFORE_MS,
    Evaluation,
    Figures,
    TrialCandidates,
    TrialResult,
    collect_candidates,
    fall_reference,
    judge,
    read_all,
)
from rules_engine.detectors.fall.features import (
    FALL_DIRECTION,
    FEATURE_NAMES,
    FeatureWindows,
    FloatArray,
)
from rules_engine.detectors.fall.model import FallModel, Node, Tree
from rules_engine.detectors.fall.signal_model import FallThresholds

N_TREES = 100
DEPTH = 3
LEARNING_RATE = 0.1
L2 = 1.0
MIN_HESSIAN = 1.0
SPECIFICITY_TARGET = 0.97
FALSE_ALARMS_PER_HOUR_TARGET = 2.0
SENSITIVE_SPECIFICITY = 0.93
THRESHOLD_GRID = np.round(np.arange(0.02, 0.995, 0.005), 3)


def collect(
    paths: Sequence[Path], thresholds: FallThresholds, progress: bool = False
) -> list[TrialCandidates]:
    trials, _ = read_all(paths)
    out = []
    cues_only = cue_model()
    # record every impact and its late decision, never alarm
    first_stage = replace(thresholds, alarm_probability=1.0, late_decision=1.0)
    for n, (dataset, trial) in enumerate(trials, start=1):
        out.append(collect_candidates(dataset, trial, first_stage, cues_only))
        if progress and n % 200 == 0:
            print(f"... {n} trials", file=sys.stderr, flush=True)
    return out


def cue_model() -> FallModel:
    """A model that only carries the feature windows of this code (its probability is
    constant): the first stage's cues do not depend on a model, and training must not
    depend on the model file it is about to replace."""
    return FallModel(FEATURE_NAMES, (((-1, 0.0, 0, 0, 0.0),),), windows=FeatureWindows())


def labels(tc: TrialCandidates) -> FloatArray:
    """1 fall, 0 not a fall, NaN left out of training (see the module doc)."""
    y = np.zeros(len(tc.candidates))
    fall_ms, _ = fall_reference(tc.trial)
    if fall_ms is None or not tc.candidates:
        return y
    inside = [
        k
        for k, c in enumerate(tc.candidates)
        if fall_ms - FALL_BEFORE_MS <= c.impact_ms <= fall_ms + FALL_AFTER_MS
    ]
    if inside:
        y[inside] = np.nan
        hardest = max(inside, key=lambda k: tc.candidates[k].features["peak_g"])
        # both decisions on the hardest impact (the first and the late one) are the fall
        hardest_ms = tc.candidates[hardest].impact_ms
        y[[k for k in inside if tc.candidates[k].impact_ms == hardest_ms]] = 1.0
    return y


def fit_trees(
    x: FloatArray,
    y: FloatArray,
    n_trees: int = N_TREES,
    depth: int = DEPTH,
    rate: float = LEARNING_RATE,
    l2: float = L2,
) -> FallModel:
    """Gradient-boosted regression trees on the logistic loss (Newton steps, as XGBoost),
    with balanced class weights: exact splits over sorted features, deterministic.

    Each feature with a physical direction (fall_features.FALL_DIRECTION) is constrained
    monotone, as XGBoost's monotone_constraints: more free fall or a harder impact never
    lowers the probability, whatever corner of the feature space the dev data left empty.
    """
    n = len(x)
    pos = float(y.sum())
    weight = np.where(y > 0.5, n / (2 * max(pos, 1.0)), n / (2 * max(n - pos, 1.0)))
    order = np.argsort(x, axis=0, kind="stable")
    direction = np.asarray([FALL_DIRECTION.get(name, 0) for name in FEATURE_NAMES])
    grower = _Grower(x, order, direction, depth, rate, l2)
    logit = np.zeros(n)
    trees: list[Tree] = []
    for _ in range(n_trees):
        p = 1.0 / (1.0 + np.exp(-logit))
        tree = grower.tree(weight * (p - y), weight * p * (1.0 - p))
        trees.append(tree)
        logit += FallModel(FEATURE_NAMES, (tree,)).logits(x)
    return FallModel(FEATURE_NAMES, tuple(trees), windows=FeatureWindows())


class _Grower:
    def __init__(
        self,
        x: FloatArray,
        order: npt.NDArray[np.int64],
        direction: npt.NDArray[np.int64],
        depth: int,
        rate: float,
        l2: float,
    ) -> None:
        self.x, self.order, self.direction = x, order, direction
        self.depth, self.rate, self.l2 = depth, rate, l2
        self.g = self.h = np.zeros(0)
        self.nodes: list[Node] = []

    def tree(self, g: FloatArray, h: FloatArray) -> Tree:
        self.g, self.h, self.nodes = g, h, []
        self._grow(np.arange(len(self.x)), 0, -math.inf, math.inf)
        return tuple(self.nodes)

    def _grow(self, rows: npt.NDArray[np.int64], level: int, low: float, high: float) -> int:
        """Append the subtree over `rows` (leaf values within [low, high]); return its root."""
        x, g, h, l2 = self.x, self.g, self.h, self.l2
        g_sum, h_sum = float(g[rows].sum()), float(h[rows].sum())
        me = len(self.nodes)
        value = min(max(-g_sum / (h_sum + l2), low), high)
        self.nodes.append((-1, 0.0, 0, 0, value * self.rate))
        if level >= self.depth or len(rows) < 2:
            return me
        member = np.zeros(len(x), dtype=bool)
        member[rows] = True
        best: tuple[float, int, float, float, float] | None = None
        for f in range(x.shape[1]):
            o = self.order[:, f][member[self.order[:, f]]]
            xs = x[o, f]
            gl = np.cumsum(g[o])[:-1]
            hl = np.cumsum(h[o])[:-1]
            gr, hr = g_sum - gl, h_sum - hl
            valid = (xs[1:] > xs[:-1]) & (hl >= MIN_HESSIAN) & (hr >= MIN_HESSIAN)
            wl = np.clip(-gl / (hl + l2), low, high)
            wr = np.clip(-gr / (hr + l2), low, high)
            if self.direction[f]:
                valid &= self.direction[f] * (wr - wl) >= 0
            if not valid.any():
                continue
            gain = gl**2 / (hl + l2) + gr**2 / (hr + l2) - g_sum**2 / (h_sum + l2)
            j = int(np.argmax(np.where(valid, gain, -np.inf)))
            if best is None or gain[j] > best[0]:
                best = (float(gain[j]), f, float((xs[j] + xs[j + 1]) / 2), wl[j], wr[j])
        if best is None or best[0] <= 1e-9:
            return me
        _, f, threshold, wl_best, wr_best = best
        mid = (wl_best + wr_best) / 2
        left_bounds, right_bounds = (low, high), (low, high)
        if self.direction[f] > 0:
            left_bounds, right_bounds = (low, min(high, mid)), (max(low, mid), high)
        elif self.direction[f] < 0:
            left_bounds, right_bounds = (max(low, mid), high), (low, min(high, mid))
        left = self._grow(rows[x[rows, f] <= threshold], level + 1, *left_bounds)
        right = self._grow(rows[x[rows, f] > threshold], level + 1, *right_bounds)
        self.nodes[me] = (f, threshold, left, right, 0.0)
        return me


def _rows(tcs: Sequence[TrialCandidates]) -> tuple[FloatArray, FloatArray]:
    xs, ys = [], []
    for tc in tcs:
        y = labels(tc)
        for c, label in zip(tc.candidates, y, strict=True):
            if not math.isnan(label):
                xs.append(c.vector)
                ys.append(label)
    return np.asarray(xs).reshape(-1, len(FEATURE_NAMES)), np.asarray(ys)


def loso_probabilities(tcs: Sequence[TrialCandidates]) -> list[FloatArray]:
    """Each trial's candidate probabilities under the model fitted without its subject."""
    subjects = sorted({tc.trial.subject for tc in tcs})
    out: list[FloatArray] = [np.zeros(0)] * len(tcs)
    for subject in subjects:
        model = fit_trees(*_rows([tc for tc in tcs if tc.trial.subject != subject]))
        for k, tc in enumerate(tcs):
            if tc.trial.subject == subject and tc.candidates:
                out[k] = model.probabilities(np.vstack([c.vector for c in tc.candidates]))
    return out


def results_at(
    tcs: Sequence[TrialCandidates],
    probabilities: Sequence[FloatArray],
    threshold: float,
    refractory_ms: float,
    late: bool = False,
) -> list[TrialResult]:
    return [
        judge(
            tc.trial,
            tc.dataset,
            tc.alarms(p.tolist(), threshold, refractory_ms, late),
            tc.pending_ms,
        )
        for tc, p in zip(tcs, probabilities, strict=True)
    ]


def _meets(results: list[TrialResult], specificity: float, fa_per_hour: float | None) -> bool:
    ev = Evaluation(results, [])
    spec = ev.overall().specificity
    if spec is None or spec < specificity:
        return False
    if fa_per_hour is None:
        return True
    for fig in ev.groups(lambda r: r.dataset):
        rate = fig.false_alarms_per_hour
        if rate is not None and rate > fa_per_hour:
            return False
    return True


def choose_operating_points(
    tcs: Sequence[TrialCandidates], probabilities: Sequence[FloatArray], refractory_ms: float
) -> tuple[dict[str, float], dict[str, bool]]:
    """Each point: with and without the late decision, the lowest grid probability meeting
    its targets (the highest if none); of the two, the one with the higher sensitivity
    (on a tie, without the late decision: it never adds latency). Returns the
    probabilities and whether each point takes the late decision."""
    wanted = {
        "standard": (SPECIFICITY_TARGET, FALSE_ALARMS_PER_HOUR_TARGET),
        "balanced": (SPECIFICITY_TARGET, None),
        "sensitive": (SENSITIVE_SPECIFICITY, None),
    }
    points: dict[str, float] = {}
    late_points: dict[str, bool] = {}
    for name, (spec, fa) in wanted.items():
        best: tuple[float, float, bool] | None = None  # sensitivity, probability, late
        for late in (False, True):
            chosen = float(THRESHOLD_GRID[-1])
            results = results_at(tcs, probabilities, chosen, refractory_ms, late)
            for threshold in THRESHOLD_GRID:
                tried = results_at(tcs, probabilities, float(threshold), refractory_ms, late)
                if _meets(tried, spec, fa):
                    chosen, results = float(threshold), tried
                    break
            sensitivity = Evaluation(results, []).overall().sensitivity or 0.0
            if best is None or sensitivity > best[0]:
                best = (sensitivity, chosen, late)
        assert best is not None
        points[name], late_points[name] = best[1], best[2]
    return points, late_points


def roc(
    tcs: Sequence[TrialCandidates], probabilities: Sequence[FloatArray], refractory_ms: float
) -> list[dict[str, Any]]:
    """Sensitivity, specificity and false alarms per hour along the threshold grid."""
    out = []
    for late in (False, True):
        for threshold in THRESHOLD_GRID[::4]:
            results = results_at(tcs, probabilities, float(threshold), refractory_ms, late)
            d = Evaluation(results, []).overall().as_dict()
            out.append(
                {
                    "threshold": float(threshold),
                    "late_decision": late,
                    "sensitivity": d["sensitivity"],
                    "specificity": d["specificity"],
                    "false_alarms_per_hour": d["false_alarms_per_hour"],
                }
            )
    return out


def summary(evaluation: Evaluation) -> dict[str, Any]:
    """What the model file records of an evaluation: overall and per file."""
    figures: list[Figures] = [*evaluation.groups(lambda r: r.dataset), evaluation.overall()]
    return {f.group: f.as_dict() for f in figures}


def loso(paths: Sequence[Path], thresholds: FallThresholds, progress: bool = False) -> Evaluation:
    """Leave-one-subject-out figures at the thresholds' operating point."""
    tcs = collect(paths, thresholds, progress)
    probabilities = loso_probabilities(tcs)
    results = results_at(
        tcs,
        probabilities,
        thresholds.alarm_probability,
        thresholds.refractory_ms,
        thresholds.late_decision > 0,
    )
    return Evaluation(results, [], mode="leave-one-subject-out")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(paths: Sequence[Path], progress: bool = False) -> FallModel:
    # not the model file being replaced
    thresholds = FallThresholds(alarm_probability=1.0, late_decision=1.0)
    tcs = collect(paths, thresholds, progress)
    probabilities = loso_probabilities(tcs)
    points, late = choose_operating_points(tcs, probabilities, thresholds.refractory_ms)
    loso_figures = {
        name: summary(
            Evaluation(results_at(tcs, probabilities, p, thresholds.refractory_ms, late[name]), [])
        )
        for name, p in points.items()
    }
    final = fit_trees(*_rows(tcs))
    meta: dict[str, Any] = {
        "trained_on": [{"file": p.name, "sha256": _sha256(p)} for p in paths if p.is_file()],
        "subjects": sorted({tc.trial.subject for tc in tcs}),
        "trials": len(tcs),
        "candidates": sum(len(tc.candidates) for tc in tcs),
        "trees": {"n": N_TREES, "depth": DEPTH, "learning_rate": LEARNING_RATE, "l2": L2},
        "first_stage": {"impact_g": thresholds.impact_g, "rate_hz": thresholds.rate_hz},
        "command": "carewatch eval falls "
        + " ".join(p.name for p in paths)
        + " --train rules_engine/detectors/fall/fall_model.json",
        "loso": loso_figures,
        "loso_roc": roc(tcs, probabilities, thresholds.refractory_ms),
    }
    return FallModel(
        features=final.features,
        trees=final.trees,
        base=final.base,
        windows=FeatureWindows(),
        operating_points=points,
        late_decision=late,
        meta=meta,
    )
