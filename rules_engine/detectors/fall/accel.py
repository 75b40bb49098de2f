"""Engine plug-in for server-side fall detection on wristband accelerometer windows.

Telemetry whose data has "accel" ({hz, x, y, z}, as ingest publishes it) is fed to one
streaming `FallSignalModel` per device, in the fall detector's `observe()`, without I/O:
only a detection reaches the database. A detection
opens, or folds into, the elder's 'fall' alert through the same path as the device's
fall flag (fusion.open_or_fuse): 'pending' with the confirmation timer, rule
"fall.accel", the detector's confidence and features in the details, and every fall
threshold used as the alert's threshold.

Clapping, not falling: a detection without any free fall and with other hits around it
(`other_impacts` >= 1) has clapping's signature. The first, hand-tuned detector let such
clapping through; the two-stage detector scores clapping low at every care profile's
operating point on the dev recordings, but a profile set to a very sensitive point can
still let it through. Such a detection still opens the pending fall
("hit_series_without_freefall" in its details) but waits
`fall_accel_series_confirm_window_s` (120 s) instead of the usual window, so that two
wristband reports can show steps after it: an accelerometer-only fall followed by walking
is cancelled at the timer (confirmation.confirm); one followed by stillness is confirmed,
only later. A device or radar flag fusing in keeps its normal behaviour (confirmed at the
timer whatever moved).

Per-device state lives in this worker's memory (one owner per events shard). A restart
loses the few seconds of buffered signal, so a fall whose impact arrived before the
restart and whose stillness after it is not detected by this path. That is acceptable:
the window is seconds long, the wristband's own fall flag and the radar are independent
sources, and a person who stays down is caught by inactivity; rebuilding the buffer
from stored telemetry would put a database read on the hot path of every device.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import msgspec

from carewatch.messages import AccelWindow, Event
from rules_engine.decisions import Decision
from rules_engine.detectors.base import ElderView
from rules_engine.detectors.fall.fusion import ACCEL_SOURCE, open_or_fuse
from rules_engine.detectors.fall.signal_model import (
    FallDetection,
    FallSignalModel,
    FallThresholds,
)
from rules_engine.detectors.rejects import count_reject

log = logging.getLogger(__name__)

RULE = "fall.accel"
SOURCE = ACCEL_SOURCE


def hit_series_without_freefall(detection: FallDetection) -> bool:
    """No free fall before the impact and another hit around it: clapping's signature."""
    features = detection.features
    return features.get("freefall_ms", 0.0) <= 0.0 and features.get("other_impacts", 0.0) >= 1.0


def fall_thresholds(elder: ElderView) -> FallThresholds:
    """The elder's care profile thresholds: the operating point of the care profile id
    (signal_model.PROFILE_OPERATING_POINTS) with the profile's stored fall thresholds on
    top; a broken profile falls back to the defaults (and says so) rather than silencing
    fall detection for the elder."""
    try:
        return FallThresholds.for_elder(elder.profile_id, elder.profile)
    except ValueError as exc:
        log.warning(
            "invalid fall thresholds in care profile, defaults used",
            extra={"elder_id": elder.elder_id, "profile_id": elder.profile_id, "error": str(exc)},
        )
        return FallThresholds()


def is_accel_window(event: Event) -> bool:
    return event.type == "telemetry" and "accel" in event.data


@dataclass(frozen=True, slots=True)
class AccelFall:
    """A detection, with the thresholds the device's model used for it."""

    detection: FallDetection
    thresholds: FallThresholds


class AccelSource:
    """One streaming signal model per device (this worker's memory)."""

    def __init__(self) -> None:
        self._devices: dict[str, FallSignalModel] = {}
        self._profiles: dict[str, tuple[ElderView, FallThresholds]] = {}  # per elder

    def _thresholds(self, known: ElderView | None) -> FallThresholds:
        if known is None:
            return FallThresholds()
        derived = self._profiles.get(known.elder_id)
        if derived is None or derived[0] is not known:
            derived = self._profiles[known.elder_id] = (known, fall_thresholds(known))
        return derived[1]

    def observe(self, event: Event, known: ElderView | None) -> AccelFall | None:
        """Feed the window to the device's model (with the elder's profile thresholds;
        an edited profile applies from this window on)."""
        thresholds = self._thresholds(known)
        model = self._devices.get(event.device_id)
        if model is None:
            model = self._devices[event.device_id] = FallSignalModel(thresholds)
        elif model.thresholds != thresholds:
            model.thresholds = thresholds
        try:
            window = msgspec.convert(event.data["accel"], AccelWindow)
            detection = model.feed(window, event.device_time_ms)
        except (msgspec.ValidationError, ValueError) as exc:
            # the raw window is kept in the telemetry table by ingest; count and move on
            count_reject("accel_fall", "bad_window")
            log.warning(
                "unusable accelerometer window skipped",
                extra={"event_id": event.id, "device_id": event.device_id, "error": str(exc)},
            )
            return None
        return None if detection is None else AccelFall(detection, thresholds)


def accel_decisions(event: Event, seen: AccelFall, elder: ElderView, now_ms: int) -> list[Decision]:
    detection = seen.detection
    threshold = {
        **asdict(seen.thresholds),
        "fall_confirm_window_s": elder.thresholds.fall_confirm_window_s,
    }
    details: dict[str, object] = {
        "impact_ms": detection.impact_ms,
        "features": detection.features,
    }
    window_s: float | None = None
    if hit_series_without_freefall(detection):
        details["hit_series_without_freefall"] = True
        window_s = max(
            elder.thresholds.fall_confirm_window_s,
            elder.thresholds.fall_accel_series_confirm_window_s,
        )
        threshold["fall_accel_series_confirm_window_s"] = window_s
    return open_or_fuse(
        event,
        elder,
        now_ms,
        source=SOURCE,
        rule=RULE,
        confidence=detection.confidence,
        threshold=threshold,
        details=details,
        confirm_window_s=window_s,
    )
