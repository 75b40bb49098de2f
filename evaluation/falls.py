"""`carewatch eval falls PATH...`: the wrist fall detector on recorded trials.

Each trial is replayed through the same streaming `FallSignalModel` the rules engine
uses, in one-second windows as the wristband sends them (or, with `--loso`, through the
same detector whose second stage was trained without the trial's subject). The rules
that judge the alarms are stated here once and used by every path:

- **the fall's window**: a fall trial's fall is at its annotated impact when the dataset
  has one (`Trial.fall_ms`); otherwise at the hardest impact of the recording, P (the
  highest |a|). The window runs from FALL_BEFORE_MS before to FALL_AFTER_MS after it: the
  loss of balance comes at most about a second before the hardest hit, and the arm may hit
  the floor again while the body rolls and settles. An alarm whose impact lies in the
  window detects the fall; its latency is measured from the impact nearest to the alarm,
  which is the alarm's own impact (every candidate impact is a peak of |a|), or the
  annotation when there is one.
- **false alarms**: every alarm outside a fall's window, in daily-activity trials and in
  fall trials alike (before the fall, or after the person got up). False alarms per hour
  are over the time of scripted activity: daily-activity trials plus the parts of fall
  trials outside the fall's window, without any undecided tail.
- **undecided trials**: a trial that ends while the detector still waits for the seconds
  after an impact (`FallSignalModel.pending_impact_ms`) cannot be judged. A daily
  activity without an alarm that ends like that, and a fall without a detecting alarm whose
  window ends undecided, are reported apart and never counted as correct: sensitivity and
  specificity are over decided trials, and `sensitivity_all` counts undecided falls as
  misses.
- **precision** is detecting alarms over all alarms; F1 combines it with sensitivity.

Figures are given overall, per file, per subject and per activity.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carewatch.messages import AccelWindow
from evaluation.loaders import LayoutError, SkippedFile, Trial, load_trials
from rules_engine.detectors.fall.model import FallModel, shipped_model
from rules_engine.detectors.fall.signal_model import (
    Candidate,
    FallSignalModel,
    FallThresholds,
)

CHUNK_S = 1.0
FALL_BEFORE_MS = 1500
FALL_AFTER_MS = 5000
PROGRESS_EVERY = 100


@dataclass(frozen=True)
class Alarm:
    impact_ms: int
    raised_ms: int  # end of the window in which it was raised: when the server knows
    probability: float


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    dataset: str
    subject: str
    activity: str
    is_fall: bool
    start_ms: int
    duration_s: float
    fall_ms: int | None  # the fall's reference time (annotation, else the hardest impact)
    annotated: bool
    alarms: tuple[Alarm, ...]
    pending_ms: float | None  # an impact still undecided when the recording ended

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_s * 1000.0

    @property
    def window(self) -> tuple[float, float] | None:
        if self.fall_ms is None:
            return None
        return self.fall_ms - FALL_BEFORE_MS, self.fall_ms + FALL_AFTER_MS

    def _inside(self, alarm: Alarm) -> bool:
        w = self.window
        return w is not None and w[0] <= alarm.impact_ms <= w[1]

    @property
    def detection(self) -> Alarm | None:
        return next((a for a in self.alarms if self._inside(a)), None)

    @property
    def false_alarms(self) -> tuple[Alarm, ...]:
        return tuple(a for a in self.alarms if not self._inside(a))

    @property
    def latency_ms(self) -> int | None:
        d = self.detection
        if d is None:
            return None
        reference = self.fall_ms if self.annotated and self.fall_ms is not None else d.impact_ms
        return d.raised_ms - reference

    @property
    def outcome(self) -> str:
        """'detected' / 'missed' / 'undecided' for a fall; 'clean' / 'alarm' / 'undecided'
        for a daily activity."""
        if self.is_fall:
            if self.detection is not None:
                return "detected"
            w = self.window
            assert w is not None
            cut_short = self.end_ms < w[1] if self.annotated else False
            if cut_short or (self.pending_ms is not None and self.pending_ms <= w[1]):
                return "undecided"
            return "missed"
        if self.alarms:
            return "alarm"
        return "undecided" if self.pending_ms is not None else "clean"

    @property
    def activity_s(self) -> float:
        """Seconds of scripted activity in which a false alarm could have been judged."""
        lo, hi = float(self.start_ms), self.end_ms
        if self.pending_ms is not None:
            hi = min(hi, self.pending_ms)
        total = max(0.0, hi - lo)
        w = self.window
        if w is not None:
            total -= max(0.0, min(hi, w[1]) - max(lo, w[0]))
        return total / 1000.0


@dataclass
class Figures:
    """Figures for one group of trials (all, one file, one subject or one activity)."""

    group: str
    falls: int = 0
    detected: int = 0
    missed: int = 0
    falls_undecided: int = 0
    adl: int = 0
    adl_clean: int = 0
    adl_alarm: int = 0
    adl_undecided: int = 0
    activity_s: float = 0.0
    false_alarms: int = 0
    latencies_ms: list[int] = field(default_factory=list)

    def add(self, r: TrialResult) -> None:
        outcome = r.outcome
        if r.is_fall:
            self.falls += 1
            if outcome == "detected":
                self.detected += 1
                latency = r.latency_ms
                assert latency is not None
                self.latencies_ms.append(latency)
            elif outcome == "missed":
                self.missed += 1
            else:
                self.falls_undecided += 1
        else:
            self.adl += 1
            if outcome == "clean":
                self.adl_clean += 1
            elif outcome == "alarm":
                self.adl_alarm += 1
            else:
                self.adl_undecided += 1
        self.false_alarms += len(r.false_alarms)
        self.activity_s += r.activity_s

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.detected, self.detected + self.missed)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.adl_clean, self.adl_clean + self.adl_alarm)

    @property
    def false_alarms_per_hour(self) -> float | None:
        hours = self.activity_s / 3600.0
        return round(self.false_alarms / hours, 2) if hours > 0 else None

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64) / 1000.0
        alarms = self.detected + self.false_alarms
        precision = _ratio(self.detected, alarms)
        sens = self.sensitivity
        f1 = (
            round(2 * precision * sens / (precision + sens), 4)
            if precision is not None and sens is not None and precision + sens > 0
            else None
        )
        return {
            "group": self.group,
            "falls": self.falls,
            "detected": self.detected,
            "missed": self.missed,
            "falls_undecided": self.falls_undecided,
            "sensitivity": sens,
            "sensitivity_all": _ratio(self.detected, self.falls),
            "adl_trials": self.adl,
            "adl_clean": self.adl_clean,
            "adl_alarm": self.adl_alarm,
            "adl_undecided": self.adl_undecided,
            "specificity": self.specificity,
            "activity_hours": round(self.activity_s / 3600.0, 4),
            "false_alarms": self.false_alarms,
            "false_alarms_per_hour": self.false_alarms_per_hour,
            "precision": precision,
            "f1": f1,
            "latency_median_s": round(float(np.median(lat)), 2) if len(lat) else None,
            "latency_p95_s": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
        }


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def fall_reference(trial: Trial) -> tuple[int | None, bool]:
    """(the fall's reference time, whether it is annotated); (None, False) for an ADL."""
    if not trial.is_fall:
        return None, False
    if trial.fall_ms is not None:
        return trial.fall_ms, True
    peak = int(np.argmax(np.linalg.norm(trial.xyz, axis=1)))
    return trial.start_ms + round(peak * 1000.0 / trial.hz), False


def judge(
    trial: Trial, dataset: str, alarms: Sequence[Alarm], pending_ms: float | None
) -> TrialResult:
    fall_ms, annotated = fall_reference(trial)
    return TrialResult(
        trial_id=trial.trial_id,
        dataset=dataset,
        subject=trial.subject,
        activity=trial.activity,
        is_fall=trial.is_fall,
        start_ms=trial.start_ms,
        duration_s=trial.duration_s,
        fall_ms=fall_ms,
        annotated=annotated,
        alarms=tuple(alarms),
        pending_ms=pending_ms,
    )


def windows_of(trial: Trial, chunk_s: float = CHUNK_S) -> Iterable[tuple[AccelWindow, int, int]]:
    """(window, device start ms, device end ms) as the wristband would publish the trial."""
    per_chunk = max(1, round(trial.hz * chunk_s))
    for k in range(0, len(trial.xyz), per_chunk):
        chunk = trial.xyz[k : k + per_chunk]
        start_ms = trial.start_ms + round(k * 1000.0 / trial.hz)
        window = AccelWindow(
            hz=trial.hz, x=chunk[:, 0].tolist(), y=chunk[:, 1].tolist(), z=chunk[:, 2].tolist()
        )
        yield window, start_ms, start_ms + round(len(chunk) * 1000.0 / trial.hz)


def replay(
    trial: Trial,
    detector: FallSignalModel,
    dataset: str = "",
    chunk_s: float = CHUNK_S,
) -> TrialResult:
    """Feed one trial through the detector in wristband-sized windows."""
    alarms: list[Alarm] = []
    for window, start_ms, end_ms in windows_of(trial, chunk_s):
        detection = detector.feed(window, start_ms)
        if detection is not None:
            alarms.append(Alarm(detection.impact_ms, end_ms, detection.confidence))
    return judge(trial, dataset, alarms, detector.pending_impact_ms)


@dataclass
class Evaluation:
    results: list[TrialResult]
    skipped: list[SkippedFile]
    mode: str = "shipped model"

    def groups(self, key: Callable[[TrialResult], str]) -> list[Figures]:
        by: dict[str, Figures] = {}
        for r in self.results:
            name = key(r)
            by.setdefault(name, Figures(name)).add(r)
        return [by[k] for k in sorted(by)]

    def overall(self) -> Figures:
        fig = Figures("ALL")
        for r in self.results:
            fig.add(r)
        return fig

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "overall": self.overall().as_dict(),
            "by_file": [f.as_dict() for f in self.groups(lambda r: r.dataset)],
            "by_subject": [f.as_dict() for f in self.groups(lambda r: r.subject)],
            "by_activity": [f.as_dict() for f in self.groups(lambda r: r.activity)],
            "undecided_trials": [r.trial_id for r in self.results if r.outcome == "undecided"],
            "skipped": [asdict(s) for s in self.skipped],
        }


def dataset_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name or str(path)


def read_all(paths: Sequence[Path]) -> tuple[list[tuple[str, Trial]], list[SkippedFile]]:
    trials: list[tuple[str, Trial]] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        for item in load_trials(path):
            if isinstance(item, SkippedFile):
                skipped.append(item)
                print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
            else:
                trials.append((dataset_name(path), item))
    return trials, skipped


def evaluate(
    items: Iterable[Trial | SkippedFile],
    thresholds: FallThresholds,
    model: FallModel | None = None,
    dataset: str = "",
    progress: bool = False,
) -> Evaluation:
    """Every trial through a fresh streaming detector (trials are separate recordings)."""
    results: list[TrialResult] = []
    skipped: list[SkippedFile] = []
    for item in items:
        if isinstance(item, SkippedFile):
            skipped.append(item)
            print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
            continue
        results.append(replay(item, FallSignalModel(thresholds, model), dataset))
        if progress and len(results) % PROGRESS_EVERY == 0:
            print(f"... {len(results)} trials", file=sys.stderr, flush=True)
    return Evaluation(results, skipped)


# ------------------------------------------------------------------ candidates (LOSO, training)


@dataclass(frozen=True)
class TrialCandidates:
    """Every impact the detector's first stage decided on in one trial, with what the
    second stage needs to replay its decisions under any model and operating point."""

    dataset: str
    trial: Trial
    candidates: tuple[Candidate, ...]
    pending_ms: float | None

    def alarms(
        self,
        probabilities: Sequence[float],
        threshold: float,
        refractory_ms: float,
        late: bool = False,
    ) -> list[Alarm]:
        """The alarms the streaming detector raises with these probabilities: exactly its
        rule (threshold, then the refractory time after an alarm), in the order it decides;
        the late decisions only when `late` (they were recorded for every impact)."""
        alarms: list[Alarm] = []
        quiet_until = -math.inf
        step = 1000.0 / self.trial.hz
        for c, p in zip(self.candidates, probabilities, strict=True):
            if c.late and not late:
                continue
            if p >= threshold and c.impact_ms > quiet_until:
                quiet_until = c.impact_ms + refractory_ms
                alarms.append(Alarm(c.impact_ms, round(c.seen_ms + step), round(p, 3)))
        return alarms


def collect_candidates(
    dataset: str, trial: Trial, thresholds: FallThresholds, model: FallModel | None = None
) -> TrialCandidates:
    found: list[Candidate] = []
    detector = FallSignalModel(thresholds, model, on_candidate=found.append)
    for window, start_ms, _ in windows_of(trial):
        detector.feed(window, start_ms)
    return TrialCandidates(dataset, trial, tuple(found), detector.pending_impact_ms)


# ------------------------------------------------------------------ table and CLI


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def format_table(title: str, groups: Sequence[Figures]) -> str:
    header = (
        f"{title:<26} {'falls':>9} {'und':>3} {'sens':>6} {'ADL ok':>9} {'und':>3} "
        f"{'spec':>6} {'act h':>6} {'FA':>4} {'FA/h':>6} {'prec':>6} {'F1':>6} "
        f"{'lat med':>7} {'lat p95':>7}"
    )
    lines = [header, "-" * len(header)]
    for fig in groups:
        d = fig.as_dict()
        if d["group"] == "ALL":
            lines.append("-" * len(header))
        falls = f"{d['detected']}/{d['detected'] + d['missed']}" if d["falls"] else "-"
        adl = f"{d['adl_clean']}/{d['adl_clean'] + d['adl_alarm']}" if d["adl_trials"] else "-"
        lines.append(
            f"{d['group'][:26]:<26} {falls:>9} {d['falls_undecided'] if d['falls'] else '-':>3} "
            f"{_cell(d['sensitivity'], '.3f'):>6} {adl:>9} "
            f"{d['adl_undecided'] if d['adl_trials'] else '-':>3} "
            f"{_cell(d['specificity'], '.3f'):>6} {d['activity_hours']:>6.2f} "
            f"{d['false_alarms']:>4} {_cell(d['false_alarms_per_hour'], '.1f'):>6} "
            f"{_cell(d['precision'], '.3f'):>6} {_cell(d['f1'], '.3f'):>6} "
            f"{_cell(d['latency_median_s'], '.2f'):>7} {_cell(d['latency_p95_s'], '.2f'):>7}"
        )
    return "\n".join(lines)


def format_report(evaluation: Evaluation, by_activity: bool = True) -> str:
    parts = [
        format_table("file", [*evaluation.groups(lambda r: r.dataset), evaluation.overall()]),
        format_table("subject", evaluation.groups(lambda r: r.subject)),
    ]
    if by_activity:
        parts.append(format_table("activity", evaluation.groups(lambda r: r.activity)))
    parts.append(
        "falls: detected/decided, und: undecided (cut short, never counted correct); "
        "ADL ok: without alarm/decided; FA: alarms outside any fall's window, also in fall "
        "trials; FA/h per hour of scripted activity; latency in s from the impact to the end "
        "of the window that raised the alarm"
    )
    if evaluation.skipped:
        parts.append(f"{len(evaluation.skipped)} file(s) skipped (see stderr)")
    return "\n\n".join(parts)


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
    from evaluation import fall_training

    paths: list[Path] = list(args.path) if isinstance(args.path, list) else [args.path]
    model_path: Path | None = getattr(args, "model", None)
    train_out: Path | None = getattr(args, "train", None)
    try:
        model = FallModel.load(model_path) if model_path is not None else shipped_model()
        if train_out is not None:
            trained = fall_training.train(paths, progress=True)
            train_out.write_text(json.dumps(trained.as_json(), indent=1) + "\n", encoding="utf-8")
            print(f"wrote {train_out}")
            print(json.dumps(trained.meta.get("loso", {}), indent=1))
            return 0
        thresholds = thresholds_for(args.profile)
        if getattr(args, "loso", False):
            evaluation = fall_training.loso(paths, thresholds, progress=True)
        else:
            trials, skipped = read_all(paths)
            evaluation = Evaluation([], skipped)
            for n, (dataset, trial) in enumerate(trials, start=1):
                detector = FallSignalModel(thresholds, model)
                evaluation.results.append(replay(trial, detector, dataset))
                if n % PROGRESS_EVERY == 0:
                    print(f"... {n} trials", file=sys.stderr, flush=True)
    except (LayoutError, ValueError, OSError) as exc:
        print(f"carewatch eval falls: {exc}", file=sys.stderr)
        return 2
    if not evaluation.results:
        shown = ", ".join(str(p) for p in paths)
        print(f"carewatch eval falls: no readable trial under {shown}", file=sys.stderr)
        return 1
    shown = " ".join(str(p) for p in paths)
    print(
        f"fall detector on {shown} ({evaluation.mode}, profile {args.profile}, "
        f"alarm probability {thresholds.alarm_probability:.3f})"
    )
    print(format_report(evaluation))
    json_path: Path | None = getattr(args, "json", None)
    if json_path is not None:
        figures = evaluation.as_dict()
        figures["profile"] = args.profile
        figures["thresholds"] = asdict(thresholds)
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0
