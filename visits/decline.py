"""The slow-decline signal: an elder's daily activity falling over weeks against their own
baseline. Pure: daily figures in, a finding out.

For each measure (steps, motion events at home, water use) the recent level is the median
of the last RECENT_DAYS full days and the baseline the median of the BASELINE_DAYS before
them. Medians of the days that have data, so a missing day (a band left off, a meter
that did not report) neither drags the level down nor up; a measure needs MIN_RECENT_DAYS
and MIN_BASELINE_DAYS days with data, and a baseline above its floor (an elder who barely
walks cannot fall by half). A drop of DROP_AT_LEAST or more is a decline.

It raises the elder in the visit list (visits.ranking); it never pages anyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import median
from typing import Literal

Measure = Literal["steps", "motion", "water"]
MEASURES: tuple[Measure, ...] = ("steps", "motion", "water")
MEASURE_LABELS: dict[Measure, str] = {"steps": "步数", "motion": "室内活动", "water": "用水"}

RECENT_DAYS = 7
BASELINE_DAYS = 28
MIN_RECENT_DAYS = 4
MIN_BASELINE_DAYS = 10
DROP_AT_LEAST = 0.3
# Baselines below these are too small to fall by a share that means anything.
BASELINE_FLOOR: dict[Measure, float] = {"steps": 300.0, "motion": 10.0, "water": 5.0}


@dataclass(frozen=True, slots=True)
class DayActivity:
    """One local day's figures; None where the day has no data for that measure
    (no report at all), 0 where the device reported and saw nothing."""

    steps: float | None = None  # the wristband's daily step count (its counter's maximum)
    motion: float | None = None  # motion reports from the home's PIR/radar sensors
    water: float | None = None  # water meter readings with flow (minutes of use)

    def get(self, measure: Measure) -> float | None:
        value: float | None = getattr(self, measure)
        return value


@dataclass(frozen=True, slots=True)
class MeasureChange:
    measure: Measure
    recent: float  # median of the recent days
    baseline: float  # median of the baseline days
    recent_days: int
    baseline_days: int

    @property
    def drop(self) -> float:
        """Share lost, 0..1 (negative: a rise)."""
        return 1.0 - self.recent / self.baseline

    @property
    def label(self) -> str:
        return f"{MEASURE_LABELS[self.measure]}-{round(self.drop * 100)}%"


@dataclass(frozen=True, slots=True)
class Decline:
    """The measures that fell, largest drop first."""

    changes: tuple[MeasureChange, ...]

    @property
    def drop(self) -> float:
        return self.changes[0].drop

    def reason(self) -> str:
        labels = "、".join(c.label for c in self.changes)
        return f"近{RECENT_DAYS}天活动较前{BASELINE_DAYS // 7}周下降：{labels}"


def windows(today: date) -> tuple[list[date], list[date]]:
    """(recent days, baseline days), both before `today` (a day still running is partial)."""
    recent = [today - timedelta(days=n) for n in range(1, RECENT_DAYS + 1)]
    baseline = [
        today - timedelta(days=n) for n in range(RECENT_DAYS + 1, RECENT_DAYS + BASELINE_DAYS + 1)
    ]
    return recent, baseline


def measure_change(
    days: Mapping[date, DayActivity], today: date, measure: Measure
) -> MeasureChange | None:
    """Recent against baseline for one measure; None when the data cannot tell."""
    recent_days, baseline_days = windows(today)
    recent = [v for d in recent_days if d in days and (v := days[d].get(measure)) is not None]
    base = [v for d in baseline_days if d in days and (v := days[d].get(measure)) is not None]
    if len(recent) < MIN_RECENT_DAYS or len(base) < MIN_BASELINE_DAYS:
        return None
    baseline = median(base)
    if baseline < BASELINE_FLOOR[measure]:
        return None
    return MeasureChange(measure, median(recent), baseline, len(recent), len(base))


def decline(days: Mapping[date, DayActivity], today: date) -> Decline | None:
    """The measures whose recent level fell by DROP_AT_LEAST or more; None if none did."""
    fallen = [
        change
        for measure in MEASURES
        if (change := measure_change(days, today, measure)) is not None
        and change.drop >= DROP_AT_LEAST
    ]
    if not fallen:
        return None
    return Decline(tuple(sorted(fallen, key=lambda c: (-c.drop, c.measure))))
