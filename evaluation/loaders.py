"""Readers for recorded fall/ADL trials: SisFall and UMAFall folders, the dev CSV.

Every reader yields `Trial`s with a uniformly sampled signal in g, which is what a
wristband sends. A file that cannot be read is skipped and reported (`SkippedFile`), never
fatal: one corrupt recording must not hide the figures of the others.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rules_engine.detectors.fall.signal_model import FloatArray, resample

# SisFall: <code>_<subject>_R<nn>.txt, e.g. F05_SA12_R03.txt (code D.. = ADL, F.. = fall).
SISFALL_NAME = re.compile(r"^(?P<code>[DF]\d{2})_(?P<subject>S[AE]\d{2})_R(?P<rep>\d{2})\.txt$")
SISFALL_HZ = 200.0
SISFALL_G_PER_COUNT = 32.0 / 8192.0  # ADXL345, +-16 g over 13 bits

# UMAFall: UMAFall_Subject_02_Fall_backwardFall_1_2016-06-13_20-51-32.csv
UMAFALL_NAME = re.compile(
    r"^UMAFall_Subject_(?P<subject>\d+)_(?P<kind>ADL|Fall)_(?P<activity>.+)_(?P<rep>\d+)_"
    r"(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{2}-\d{2}-\d{2})\.csv$",
    re.IGNORECASE,
)
UMAFALL_ACCELEROMETER = 0
UMAFALL_WRIST = "WRIST"

DEV_COLUMNS = ("trial", "subject", "label", "activity", "t_ms", "ax_g", "ay_g", "az_g")
# Optional last column: the annotated time of the fall's impact (same clock as t_ms), on
# the trial's rows; empty when unknown. `carewatch eval export` writes it.
DEV_FALL_COLUMN = "fall_ms"


@dataclass(frozen=True)
class Trial:
    trial_id: str
    subject: str
    activity: str  # activity code or name, the unit of the per-activity breakdown
    is_fall: bool
    hz: float  # uniform sampling rate of xyz
    start_ms: int  # time of the first sample
    xyz: FloatArray = field(repr=False)  # (n, 3), g
    fall_ms: int | None = None  # annotated impact of a fall, when the dataset has one

    @property
    def duration_s(self) -> float:
        return len(self.xyz) / self.hz


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


class LayoutError(ValueError):
    """PATH is neither a SisFall folder, a UMAFall folder nor the dev CSV."""


def regularise(t_ms: FloatArray, xyz: FloatArray) -> tuple[float, int, FloatArray]:
    """Irregular time-stamped samples -> (rate, start_ms, uniform samples).

    Recorders such as the SensorTag in UMAFall stamp samples unevenly and sometimes twice;
    the wristband protocol sends uniform windows, so trials are put on a uniform grid at
    their own nominal rate (whole Hz) before being fed to the detector.
    """
    if len(t_ms) < 2 or not (np.isfinite(t_ms).all() and np.isfinite(xyz).all()):
        raise ValueError("fewer than two samples, or non-finite values")
    order = np.argsort(t_ms, kind="stable")
    t_ms, xyz = t_ms[order], xyz[order]
    span = float(t_ms[-1] - t_ms[0])
    if span <= 0:
        raise ValueError("fewer than two distinct timestamps")
    hz = float(max(1, round((len(t_ms) - 1) * 1000.0 / span)))
    grid = t_ms[0] + np.arange(int(span * hz / 1000.0) + 1) * (1000.0 / hz)
    return hz, round(float(t_ms[0])), resample(t_ms, xyz, grid)


# ------------------------------------------------------------------ SisFall


def read_sisfall_file(path: Path) -> Trial:
    match = SISFALL_NAME.match(path.name)
    if match is None:
        raise ValueError("file name is not <code>_<subject>_R<nn>.txt")
    rows: list[list[float]] = []
    text = path.read_text(encoding="ascii", errors="strict")
    for number, line in enumerate(text.replace(";", "\n").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            raise ValueError(f"line {number}: expected 9 comma-separated columns")
        rows.append([int(p) * SISFALL_G_PER_COUNT for p in parts[:3]])
    if len(rows) < 2:
        raise ValueError("no samples")
    code = match["code"]
    return Trial(
        trial_id=path.stem,
        subject=match["subject"],
        activity=code,
        is_fall=code.startswith("F"),
        hz=SISFALL_HZ,
        start_ms=0,
        xyz=np.asarray(rows, dtype=np.float64),
    )


# ------------------------------------------------------------------ UMAFall


def umafall_sensor_positions(lines: list[str]) -> dict[int, str]:
    """Sensor id -> body position from the '%' header ("%<mac>; 3; WRIST; SensorTag")."""
    positions: dict[int, str] = {}
    for line in lines:
        if not line.startswith("%"):
            continue
        parts = [p.strip() for p in line.lstrip("%").split(";")]
        if len(parts) >= 3 and parts[1].isdigit() and parts[2].isalpha():
            positions[int(parts[1])] = parts[2].upper()
    return positions


def read_umafall_file(path: Path) -> Trial:
    match = UMAFALL_NAME.match(path.name)
    if match is None:
        raise ValueError("file name is not UMAFall_Subject_XX_ADL|Fall_<activity>_<n>_<date>.csv")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    positions = umafall_sensor_positions(lines)
    wrist = [sid for sid, pos in positions.items() if pos == UMAFALL_WRIST]
    if not wrist:
        raise ValueError("no sensor at position WRIST in the header")
    t: list[float] = []
    xyz: list[list[float]] = []
    for line in lines:
        if not line.strip() or line.startswith("%"):
            continue
        parts = [p.strip() for p in line.split(";")]
        if len(parts) < 7 or not all(parts[:7]):
            # a truncated row, or padding (subject 13's files end in lines of bare ';'):
            # the trial keeps its other samples
            continue
        if int(parts[5]) != UMAFALL_ACCELEROMETER or int(parts[6]) != wrist[0]:
            continue
        t.append(float(parts[0]))
        xyz.append([float(parts[2]), float(parts[3]), float(parts[4])])
    if len(t) < 2:
        raise ValueError("no wrist accelerometer rows")
    hz, start_ms, uniform = regularise(np.asarray(t), np.asarray(xyz))
    return Trial(
        trial_id=path.stem,
        subject=f"S{int(match['subject']):02d}",
        activity=match["activity"],
        is_fall=match["kind"].lower() == "fall",
        hz=hz,
        start_ms=start_ms,
        xyz=uniform,
    )


# ------------------------------------------------------------------ dev CSV


def read_dev_csv(path: Path) -> Iterator[Trial | SkippedFile]:
    """The dev file: one row per sample, `trial,subject,label,activity,t_ms,ax_g,ay_g,az_g`."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) not in (DEV_COLUMNS, (*DEV_COLUMNS, DEV_FALL_COLUMN)):
            raise LayoutError(f"{path}: columns are not {','.join(DEV_COLUMNS)}[,fall_ms]")
        current: list[dict[str, str]] = []
        for row in reader:
            if current and row["trial"] != current[0]["trial"]:
                yield _dev_trial(current)
                current = []
            current.append(row)
        if current:
            yield _dev_trial(current)


def _dev_trial(rows: list[dict[str, str]]) -> Trial | SkippedFile:
    first = rows[0]
    try:
        t = np.asarray([float(r["t_ms"]) for r in rows])
        xyz = np.asarray([[float(r["ax_g"]), float(r["ay_g"]), float(r["az_g"])] for r in rows])
        hz, start_ms, uniform = regularise(t, xyz)
        fall = (first.get(DEV_FALL_COLUMN) or "").strip()
        fall_ms = round(float(fall)) if fall else None
    except (ValueError, TypeError) as exc:
        return SkippedFile(first["trial"], str(exc))
    return Trial(
        trial_id=first["trial"],
        subject=first["subject"],
        activity=first["activity"],
        is_fall=first["label"].upper() == "FALL",
        hz=hz,
        start_ms=start_ms,
        xyz=uniform,
        fall_ms=fall_ms,
    )


# ------------------------------------------------------------------ layout detection


def _looks_like_dev_csv(path: Path) -> bool:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            header = next(csv.reader(io.StringIO(fh.readline())), [])
    except (OSError, UnicodeDecodeError):
        return False
    columns = tuple(h.strip() for h in header)
    return columns in (DEV_COLUMNS, (*DEV_COLUMNS, DEV_FALL_COLUMN))


def detect_layout(path: Path) -> str:
    """'sisfall', 'umafall' or 'dev_csv'; LayoutError with what was expected otherwise."""
    if path.is_file():
        if _looks_like_dev_csv(path):
            return "dev_csv"
        raise LayoutError(
            f"{path}: not the dev CSV (expected header {','.join(DEV_COLUMNS)}); "
            "for SisFall or UMAFall give the dataset folder"
        )
    if path.is_dir():
        for candidate in path.rglob("*"):
            if SISFALL_NAME.match(candidate.name):
                return "sisfall"
            if UMAFALL_NAME.match(candidate.name):
                return "umafall"
        raise LayoutError(
            f"{path}: no SisFall files (<code>_<subject>_R<nn>.txt, e.g. F01_SA01_R01.txt) "
            "and no UMAFall files (UMAFall_Subject_XX_ADL|Fall_<activity>_<n>_<date>.csv)"
        )
    raise LayoutError(f"{path}: no such file or folder")


def load_trials(path: Path) -> Iterator[Trial | SkippedFile]:
    """Every trial under PATH, in file-name order, with unreadable files reported."""
    layout = detect_layout(path)
    if layout == "dev_csv":
        yield from read_dev_csv(path)
        return
    pattern, reader = (
        (SISFALL_NAME, read_sisfall_file)
        if layout == "sisfall"
        else (UMAFALL_NAME, read_umafall_file)
    )
    files = sorted((p for p in path.rglob("*") if pattern.match(p.name)), key=lambda p: p.name)
    for file in files:
        try:
            yield reader(file)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            yield SkippedFile(str(file), str(exc))
