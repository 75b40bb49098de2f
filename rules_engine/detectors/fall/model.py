"""The learned second stage of the wrist fall detector: small gradient-boosted trees.

The model file (`fall_model.json`, next to this module, versioned in the repository) holds
the feature order, the trees, the feature windows the features were computed with, the
operating points chosen on the leave-one-subject-out ROC and the LOSO figures those points
gave. `carewatch eval falls --train OUT` writes it from the dev files, deterministically
(evaluation/fall_training.py); a test checks that the shipped file still
reproduces its recorded figures.

A tree node is `(feature, threshold, left, right, value)`: an inner node sends a vector
left when `x[feature] <= threshold`; a leaf (feature -1) adds `value` to the logit.
Scoring one impact walks each tree once (a few hundred comparisons in plain Python, see
bench/fall_inference.py); it runs once per candidate impact, not per window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rules_engine.detectors.fall.features import FEATURE_NAMES, FeatureWindows, FloatArray

MODEL_PATH = Path(__file__).with_name("fall_model.json")

Node = tuple[int, float, int, int, float]  # feature, threshold, left, right, value
Tree = tuple[Node, ...]


@dataclass(frozen=True)
class FallModel:
    features: tuple[str, ...]
    trees: tuple[Tree, ...]
    base: float = 0.0
    windows: FeatureWindows = field(default_factory=FeatureWindows)
    operating_points: dict[str, float] = field(default_factory=dict)
    # whether each operating point also takes the late decision (FeatureWindows.late_after_ms)
    late_decision: dict[str, bool] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features != FEATURE_NAMES:
            raise ValueError("fall model: feature names differ from what this code computes")
        n = len(self.features)
        for tree in self.trees:
            if not tree:
                raise ValueError("fall model: empty tree")
            for feature, threshold, left, right, value in tree:
                if not (math.isfinite(threshold) and math.isfinite(value)):
                    raise ValueError("fall model: non-finite threshold or value")
                if feature >= n or (feature >= 0 and not (0 < left < len(tree) > right > 0)):
                    raise ValueError("fall model: a node points outside its tree")
        for name, p in self.operating_points.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fall model: operating point {name} is not a probability")

    def logit(self, x: FloatArray) -> float:
        values = x.tolist()
        z = self.base
        for tree in self.trees:
            k = 0
            node = tree[0]
            while node[0] >= 0:
                k = node[2] if values[node[0]] <= node[1] else node[3]
                node = tree[k]
            z += node[4]
        return z

    def probability(self, x: FloatArray) -> float:
        return 1.0 / (1.0 + math.exp(-min(max(self.logit(x), -500.0), 500.0)))

    def logits(self, xs: FloatArray) -> FloatArray:
        """Many feature vectors at once (rows), for training and evaluation."""
        rows = np.arange(len(xs))
        z = np.full(len(xs), self.base)
        for tree in self.trees:
            nodes = np.asarray(tree, dtype=np.float64)
            feature = nodes[:, 0].astype(np.int64)
            k = np.zeros(len(xs), dtype=np.int64)
            for _ in range(len(tree)):
                f = feature[k]
                inner = f >= 0
                if not inner.any():
                    break
                go_left = xs[rows, np.maximum(f, 0)] <= nodes[k, 1]
                nxt = np.where(go_left, nodes[k, 2], nodes[k, 3]).astype(np.int64)
                k = np.where(inner, nxt, k)
            z += nodes[k, 4]
        return z

    def probabilities(self, xs: FloatArray) -> FloatArray:
        out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(self.logits(xs), -500, 500)))
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "gradient_boosted_trees",
            "features": list(self.features),
            "base": self.base,
            "windows": {k: float(v) for k, v in vars(self.windows).items()},
            "operating_points": self.operating_points,
            "late_decision": self.late_decision,
            "trees": [
                [[f, round(t, 8), left, right, round(v, 8)] for f, t, left, right, v in tree]
                for tree in self.trees
            ],
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FallModel:
        if data.get("kind") != "gradient_boosted_trees":
            raise ValueError("fall model: only kind 'gradient_boosted_trees' is supported")
        windows = dict(data.get("windows", {}))
        if "forearm_axis" in windows:
            windows["forearm_axis"] = int(windows["forearm_axis"])
        trees = tuple(
            tuple(
                (int(f), float(t), int(left), int(right), float(v)) for f, t, left, right, v in tree
            )
            for tree in data["trees"]
        )
        return cls(
            features=tuple(data["features"]),
            trees=trees,
            base=float(data.get("base", 0.0)),
            windows=FeatureWindows(**windows),
            operating_points={k: float(v) for k, v in data.get("operating_points", {}).items()},
            late_decision={k: bool(v) for k, v in data.get("late_decision", {}).items()},
            meta=dict(data.get("meta", {})),
        )

    @classmethod
    def load(cls, path: Path) -> FallModel:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def shipped_model() -> FallModel:
    """The model file versioned next to this module."""
    return FallModel.load(MODEL_PATH)
