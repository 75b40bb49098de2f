"""Detector thresholds: the elder's care profile overrides, Settings fill the rest.

Profiles (高龄 / 独居 / 失能 / 认知障碍) keep overrides in care_profiles.thresholds
(jsonb), e.g. {"fall_confirm_window_s": 20}. The store reads them on every decision,
so an edited profile applies to the next event without a restart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from carewatch.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Thresholds:
    # Add a field here (same name as its Settings default) to give a detector a new knob.
    sos_cancel_window_s: float
    fall_confirm_window_s: float

    @property
    def sos_cancel_window_ms(self) -> int:
        return round(self.sos_cancel_window_s * 1000)

    @property
    def fall_confirm_window_ms(self) -> int:
        return round(self.fall_confirm_window_s * 1000)


THRESHOLD_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Thresholds))


def resolve_thresholds(defaults: Settings, overrides: Mapping[str, object]) -> Thresholds:
    """Profile values where present and valid, else the Settings default.

    An invalid override (text, negative, NaN) is ignored with a warning instead of
    breaking detection for the elder: a wrong profile must never silence an alert.
    """
    values: dict[str, float] = {}
    for key in THRESHOLD_KEYS:
        raw = overrides.get(key)
        if (
            isinstance(raw, int | float)
            and not isinstance(raw, bool)
            and math.isfinite(raw)
            and raw >= 0
        ):
            values[key] = float(raw)
            continue
        if raw is not None:
            log.warning("invalid care profile threshold ignored", extra={"key": key})
        values[key] = float(getattr(defaults, key))
    return Thresholds(**values)
