"""Detector thresholds: the elder's care profile overrides, Settings fill the rest.

Profiles (高龄 / 独居 / 失能 / 认知障碍) keep overrides in care_profiles.thresholds
(jsonb), e.g. {"fall_confirm_window_s": 20}. The store reads them fresh for every
decision it applies, so an edited profile applies without a restart: at once to
anything that writes, and within `rules_view_cache_s` to telemetry the worker decided
on its cached view of the elder (rules_engine.view_cache) and found to change nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields

from carewatch.settings import Settings
from rules_engine.fields import is_number

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Thresholds:
    # Add a field here (same name as its Settings default) to give a detector a new knob.
    sos_cancel_window_s: float
    fall_confirm_window_s: float
    # Fields with a default here have no Settings counterpart: the default is the fallback.
    # Fall fusion: another source within this long of the alert's fall raises confidence.
    fall_fusion_window_s: float = 60.0
    # An accelerometer-only fall whose impact is one of a pair of hits without free fall
    # (the signature clapping shares) waits this long instead of fall_confirm_window_s:
    # long enough for two wristband reports (one a minute) to show steps after it.
    fall_accel_series_confirm_window_s: float = 120.0
    # Vital signs: out of range for the sustain time (no gap over vitals_max_gap_s).
    vitals_hr_low: float = 40.0
    vitals_hr_high: float = 130.0
    vitals_hr_sustain_s: float = 300.0
    vitals_hr_critical_low: float = 30.0
    vitals_hr_critical_high: float = 160.0
    vitals_spo2_low: float = 90.0
    vitals_spo2_sustain_s: float = 180.0
    vitals_spo2_critical_low: float = 85.0
    vitals_temp_high: float = 38.5
    vitals_temp_sustain_s: float = 600.0
    vitals_temp_critical_high: float = 39.5
    vitals_max_gap_s: float = 150.0
    # Geofence (防走失): default circle around home, fixes outside before an alert.
    geofence_home_radius_m: float = 500.0
    geofence_confirm_fixes: float = 2.0
    # Night (quiet hours, local time): a wandering elder at night is critical.
    quiet_start_h: float = 22.0
    quiet_end_h: float = 7.0
    # Inactivity (no sign of life): the learned routine, clamped to floor..ceiling; the
    # floor is higher in quiet hours. Out of home (door, then nothing inside) waits up
    # to the out ceiling. Unanswered, the warning becomes critical one threshold later.
    inactivity_floor_day_s: float = 2 * 3600.0
    inactivity_floor_night_s: float = 8 * 3600.0
    inactivity_ceiling_s: float = 12 * 3600.0
    inactivity_out_ceiling_s: float = 10 * 3600.0
    # A night gap (it starts in, or runs into, quiet hours) without a learned routine may
    # last until quiet hours end plus this grace: a night floor counted from the last
    # sign before bed alarmed at dawn on elders who went to bed early (asleep at 21:15,
    # 8 h -> 05:15). Still capped by the ceiling.
    inactivity_morning_grace_s: float = 2 * 3600.0
    # Inactivity by room (sensors with a room in the ledger and a learned home routine,
    # rules_engine/home_routine.py): the usual still period of the room at that hour,
    # times the margin, between the room floor and the ceiling; time in the bathroom
    # beyond the usual stay (times the margin, within its floor..ceiling); a night bed
    # exit with no return to the bedroom within the usual time (same clamp of its own).
    inactivity_room_margin: float = 1.25
    inactivity_room_floor_s: float = 2 * 3600.0
    inactivity_bathroom_floor_s: float = 1800.0
    inactivity_bathroom_ceiling_s: float = 2 * 3600.0
    inactivity_night_exit_floor_s: float = 1800.0
    inactivity_night_exit_ceiling_s: float = 3000.0
    # Water meter: no use for this long; continuous flow over the rate for this long.
    water_none_s: float = 12 * 3600.0
    water_flow_s: float = 3600.0
    # Device health (wristband): silent this long = offline; battery below the percent
    # (cleared at the clear percent); off the wrist this long within the day hours.
    device_offline_s: float = 1800.0
    low_battery_pct: float = 20.0
    low_battery_clear_pct: float = 25.0
    off_wrist_s: float = 1800.0
    off_wrist_day_start_h: float = 8.0
    off_wrist_day_end_h: float = 21.0
    device_reminder_s: float = 2 * 3600.0

    @property
    def sos_cancel_window_ms(self) -> int:
        return round(self.sos_cancel_window_s * 1000)

    @property
    def fall_confirm_window_ms(self) -> int:
        return round(self.fall_confirm_window_s * 1000)

    @property
    def fall_fusion_window_ms(self) -> int:
        return round(self.fall_fusion_window_s * 1000)


THRESHOLD_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Thresholds))


def resolve_thresholds(defaults: Settings, overrides: Mapping[str, object]) -> Thresholds:
    """Profile values where present and valid, else the Settings default.

    An invalid override (text, negative, NaN) is ignored with a warning instead of
    breaking detection for the elder: a wrong profile must never silence an alert.
    """
    values: dict[str, float] = {}
    for key in THRESHOLD_KEYS:
        raw = overrides.get(key)
        if is_number(raw) and math.isfinite(raw) and raw >= 0:
            values[key] = float(raw)
            continue
        if raw is not None:
            log.warning("invalid care profile threshold ignored", extra={"key": key})
        values[key] = float(getattr(defaults, key)) if key in _IN_SETTINGS else _FIELD_DEFAULTS[key]
    return Thresholds(**values)


# Asked of the class once: getattr(settings, key, None) on a key Settings lacks goes
# through pydantic's __getattr__ and an AttributeError, ~1.5 us a key, and this runs for
# every view the rules worker loads: ~58 us a view before, 6 us now (~10 % of the
# CPU of a cold start, where most telemetry needs a view).
_IN_SETTINGS = frozenset(THRESHOLD_KEYS) & frozenset(Settings.model_fields)
_FIELD_DEFAULTS: dict[str, float] = {
    f.name: float(f.default) for f in fields(Thresholds) if f.default is not MISSING
}
