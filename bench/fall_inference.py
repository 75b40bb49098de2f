"""Fall detection cost in the rules worker: microseconds per accelerometer window.

    .venv/bin/python -m bench.fall_inference [--windows 3000]

Feeds 1 s windows at 50 Hz (what a wristband sends) of synthetic walking, jogging and
falls (simulators.accel_trials) through one streaming FallSignalModel, and times
separately the two parts of a candidate impact's decision: the cues
(fall_features.impact_features) and the trees (FallModel.probability). Writes
bench/results/fall_inference.json. Figures on a shared, loaded machine compare only
within one run.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import table, write_results
from carewatch.messages import AccelWindow
from rules_engine.detectors.fall.features import feature_vector, impact_features
from rules_engine.detectors.fall.model import shipped_model
from rules_engine.detectors.fall.signal_model import Candidate, FallSignalModel
from simulators.accel_trials import HZ, generate_trial

RATE = 50
DECIMATE = HZ // RATE


def _windows(code: str, count: int) -> list[AccelWindow]:
    out: list[AccelWindow] = []
    rep = 1
    while len(out) < count:
        acc = generate_trial(code, subject=1, rep=rep, seed=7)[::DECIMATE]
        for k in range(0, len(acc) - RATE + 1, RATE):
            c = acc[k : k + RATE]
            out.append(
                AccelWindow(hz=RATE, x=c[:, 0].tolist(), y=c[:, 1].tolist(), z=c[:, 2].tolist())
            )
        rep += 1
    return out[:count]


def _per_window(code: str, count: int) -> dict[str, float]:
    windows = _windows(code, count)
    seen: list[Candidate] = []
    detector = FallSignalModel(on_candidate=seen.append)
    times = np.empty(len(windows))
    t_ms = 1_764_000_000_000
    for n, window in enumerate(windows):
        began = time.perf_counter_ns()
        detector.feed(window, t_ms)
        times[n] = (time.perf_counter_ns() - began) / 1000.0
        t_ms += 1000
    return {
        "windows": len(windows),
        "candidates": len(seen),
        "us_per_window_median": round(float(np.median(times)), 1),
        "us_per_window_p99": round(float(np.percentile(times, 99)), 1),
    }


def _per_candidate(repeats: int) -> dict[str, float]:
    acc = generate_trial("F01", subject=1, rep=1, seed=7)[::DECIMATE]
    model = shipped_model()
    mag = np.linalg.norm(acc, axis=1)
    i = int(np.argmax(mag))
    pad = np.tile(acc[-1], (round(model.windows.after_ms / 20) + 2, 1))
    sig = np.vstack([acc, pad])
    mag = np.linalg.norm(sig, axis=1)
    began = time.perf_counter_ns()
    for _ in range(repeats):
        features = impact_features(sig, mag, i, 20.0, model.windows)
    cues_us = (time.perf_counter_ns() - began) / 1000.0 / repeats
    vector = feature_vector(features)
    began = time.perf_counter_ns()
    for _ in range(repeats):
        model.probability(vector)
    trees_us = (time.perf_counter_ns() - began) / 1000.0 / repeats
    return {
        "cues_us": round(cues_us, 1),
        "trees_us": round(trees_us, 1),
        "trees": len(model.trees),
    }


def run(windows: int) -> dict[str, Any]:
    return {
        "walking": _per_window("D01", windows),
        "jogging": _per_window("D03", windows),
        "falls": _per_window("F01", windows),
        "candidate": _per_candidate(max(100, windows // 10)),
    }


def summary_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for name in ("walking", "jogging", "falls"):
        f = figures[name]
        rows.append(
            (
                f"fall detector, {name}",
                f"{f['us_per_window_median']} us/window (p99 {f['us_per_window_p99']})",
                f"{f['candidates']} candidates",
                f"{f['windows']} windows",
            )
        )
    c = figures["candidate"]
    rows.append(
        ("one candidate decided", f"{c['cues_us']} us cues", f"{c['trees_us']} us trees", "")
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=3000, help="1 s windows per activity")
    args = parser.parse_args()
    figures = run(args.windows)
    print(table([("what", "time", "", ""), *summary_rows(figures)]))
    path = write_results("fall_inference", figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
