"""`carewatch eval falls PATH`: the wrist fall detector on recorded trials.

Each trial is replayed through the same streaming `AccelFallDetector` the rules engine
uses, in one-second windows as the wristband sends them. Figures are per trial:

- sensitivity: fall trials with an alarm whose impact is within MATCH_TOLERANCE_MS of the
  trial's impact (the peak |a| of the recording), over fall trials;
- specificity: ADL trials without any alarm, over ADL trials;
- false alarms per hour of ADL recording;
- latency: from the trial's impact to the end of the window in which the alarm was raised
  (the earliest moment the server could know), median and 95th percentile.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carewatch.messages import AccelWindow
from rules_engine.detectors.accel_fall import AccelFallDetector, FallDetection, FallThresholds
from rules_engine.evaluation.loaders import LayoutError, SkippedFile, Trial, load_trials

CHUNK_S = 1.0
MATCH_TOLERANCE_MS = 2000
PROGRESS_EVERY = 50


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    activity: str
    is_fall: bool
    duration_s: float
    impact_ms: int | None  # peak |a| of a fall trial
    alarms: tuple[tuple[FallDetection, int], ...]  # (detection, device ms it was raised)

    @property
    def detected_latency_ms(self) -> int | None:
        """Latency of the alarm matching the fall's impact, None if the fall was missed."""
        if self.impact_ms is None:
            return None
        for detection, raised_ms in self.alarms:
            if abs(detection.impact_ms - self.impact_ms) <= MATCH_TOLERANCE_MS:
                return raised_ms - self.impact_ms
        return None


@dataclass
class Figures:
    """Figures for one group of trials (all, or one activity code)."""

    group: str
    falls: int = 0
    falls_detected: int = 0
    adl: int = 0
    adl_without_alarm: int = 0
    adl_hours: float = 0.0
    false_alarms: int = 0
    latencies_ms: list[int] = field(default_factory=list)

    def add(self, result: TrialResult) -> None:
        if result.is_fall:
            self.falls += 1
            latency = result.detected_latency_ms
            if latency is not None:
                self.falls_detected += 1
                self.latencies_ms.append(latency)
        else:
            self.adl += 1
            self.adl_hours += result.duration_s / 3600.0
            self.false_alarms += len(result.alarms)
            self.adl_without_alarm += not result.alarms

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64) / 1000.0
        return {
            "group": self.group,
            "falls": self.falls,
            "falls_detected": self.falls_detected,
            "sensitivity": _ratio(self.falls_detected, self.falls),
            "adl_trials": self.adl,
            "adl_without_alarm": self.adl_without_alarm,
            "specificity": _ratio(self.adl_without_alarm, self.adl),
            "adl_hours": round(self.adl_hours, 4),
            "false_alarms": self.false_alarms,
            "false_alarms_per_hour": (
                round(self.false_alarms / self.adl_hours, 2) if self.adl_hours else None
            ),
            "latency_median_s": round(float(np.median(lat)), 2) if len(lat) else None,
            "latency_p95_s": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
        }


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def replay(trial: Trial, detector: AccelFallDetector, chunk_s: float = CHUNK_S) -> TrialResult:
    """Feed one trial through the detector in wristband-sized windows."""
    per_chunk = max(1, round(trial.hz * chunk_s))
    alarms: list[tuple[FallDetection, int]] = []
    for k in range(0, len(trial.xyz), per_chunk):
        chunk = trial.xyz[k : k + per_chunk]
        start_ms = trial.start_ms + round(k * 1000.0 / trial.hz)
        window = AccelWindow(
            hz=trial.hz, x=chunk[:, 0].tolist(), y=chunk[:, 1].tolist(), z=chunk[:, 2].tolist()
        )
        detection = detector.feed(window, start_ms)
        if detection is not None:
            alarms.append((detection, start_ms + round(len(chunk) * 1000.0 / trial.hz)))
    impact_ms = None
    if trial.is_fall:
        peak = int(np.argmax(np.linalg.norm(trial.xyz, axis=1)))
        impact_ms = trial.start_ms + round(peak * 1000.0 / trial.hz)
    return TrialResult(
        trial_id=trial.trial_id,
        activity=trial.activity,
        is_fall=trial.is_fall,
        duration_s=trial.duration_s,
        impact_ms=impact_ms,
        alarms=tuple(alarms),
    )


@dataclass
class Evaluation:
    overall: Figures
    by_activity: dict[str, Figures]
    skipped: list[SkippedFile]

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.as_dict(),
            "by_activity": [f.as_dict() for _, f in sorted(self.by_activity.items())],
            "skipped": [asdict(s) for s in self.skipped],
        }


def evaluate(
    items: Iterable[Trial | SkippedFile], thresholds: FallThresholds, progress: bool = False
) -> Evaluation:
    overall = Figures("ALL")
    by_activity: dict[str, Figures] = {}
    skipped: list[SkippedFile] = []
    done = 0
    for item in items:
        if isinstance(item, SkippedFile):
            skipped.append(item)
            print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
            continue
        # A fresh detector per trial: trials are separate recordings, not one stream.
        result = replay(item, AccelFallDetector(thresholds))
        overall.add(result)
        by_activity.setdefault(item.activity, Figures(item.activity)).add(result)
        done += 1
        if progress and done % PROGRESS_EVERY == 0:
            print(f"... {done} trials", file=sys.stderr, flush=True)
    return Evaluation(overall, by_activity, skipped)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def format_table(evaluation: Evaluation) -> str:
    header = (
        f"{'activity':<28} {'falls':>9} {'sens':>6} {'ADL ok':>9} {'spec':>6} "
        f"{'ADL h':>6} {'FA':>4} {'FA/h':>6} {'lat med':>8} {'lat p95':>8}"
    )
    lines = [header, "-" * len(header)]
    groups = [f for _, f in sorted(evaluation.by_activity.items())] + [evaluation.overall]
    for fig in groups:
        d = fig.as_dict()
        if fig is evaluation.overall:
            lines.append("-" * len(header))
        falls = f"{d['falls_detected']}/{d['falls']}" if d["falls"] else "-"
        adl_ok = f"{d['adl_without_alarm']}/{d['adl_trials']}" if d["adl_trials"] else "-"
        lines.append(
            f"{d['group'][:28]:<28} {falls:>9} {_cell(d['sensitivity'], '.3f'):>6} "
            f"{adl_ok:>9} {_cell(d['specificity'], '.3f'):>6} "
            f"{_cell(d['adl_hours'] if d['adl_trials'] else None, '.2f'):>6} "
            f"{(d['false_alarms'] if d['adl_trials'] else '-')!s:>4} "
            f"{_cell(d['false_alarms_per_hour'], '.1f'):>6} "
            f"{_cell(d['latency_median_s'], '.2f'):>8} {_cell(d['latency_p95_s'], '.2f'):>8}"
        )
    lines.append(
        "latency in seconds from the impact to the end of the window that raised the alarm"
    )
    if evaluation.skipped:
        lines.append(f"{len(evaluation.skipped)} file(s) skipped (see stderr)")
    return "\n".join(lines)


def thresholds_for(profile: str) -> FallThresholds:
    """A built-in care profile id, or a JSON file holding a profile's thresholds."""
    path = Path(profile)
    if profile.endswith(".json") and path.is_file():
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a JSON object of thresholds")
        return FallThresholds.from_profile(loaded)
    return FallThresholds.preset(profile)


def cli_main(args: argparse.Namespace) -> int:
    try:
        thresholds = thresholds_for(args.profile)
        evaluation = evaluate(load_trials(args.path), thresholds, progress=True)
    except (LayoutError, ValueError) as exc:
        print(f"carewatch eval falls: {exc}", file=sys.stderr)
        return 2
    if evaluation.overall.falls + evaluation.overall.adl == 0:
        print(f"carewatch eval falls: no readable trial under {args.path}", file=sys.stderr)
        return 1
    print(f"fall detector on {args.path} (profile {args.profile})")
    print(format_table(evaluation))
    json_path: Path | None = getattr(args, "json", None)
    if json_path is not None:
        figures = evaluation.as_dict()
        figures["profile"] = args.profile
        figures["thresholds"] = asdict(thresholds)
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0
