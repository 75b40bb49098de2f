"""Engine plug-in for server-side fall detection on wristband accelerometer windows.

Telemetry whose data has "accel" ({hz, x, y, z}, as ingest publishes it) is fed to one
streaming `AccelFallDetector` per device, in `wants()`, without I/O: only a detection
(or the need to learn the elder's care profile) reaches the database. A detection
opens, or folds into, the elder's 'fall' alert through the same path as the device's
fall flag (correlation.open_or_fuse): 'pending' with the confirmation timer, rule
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
is cancelled at the timer (correlation.confirm); one followed by stillness is confirmed,
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
from collections.abc import Sequence
from dataclasses import asdict

import msgspec

from carewatch.clock import Clock
from carewatch.messages import AccelWindow, Event
from rules_engine.decisions import Decision
from rules_engine.detectors.base import Detector, ElderView
from rules_engine.detectors.fall.fusion import ACCEL_SOURCE, RecentFalls, open_or_fuse
from rules_engine.detectors.fall.signal_model import (
    AccelFallDetector,
    FallDetection,
    FallThresholds,
)
from rules_engine.detectors.rejects import count_reject
from rules_engine.detectors.streaming import EventMemo, ViewCache

log = logging.getLogger(__name__)

RULE = "fall.accel"
SOURCE = ACCEL_SOURCE


def hit_series_without_freefall(detection: FallDetection) -> bool:
    """No free fall before the impact and another hit around it: clapping's signature."""
    features = detection.features
    return features.get("freefall_ms", 0.0) <= 0.0 and features.get("other_impacts", 0.0) >= 1.0


def fall_thresholds(elder: ElderView) -> FallThresholds:
    """The elder's care profile thresholds: the operating point of the care profile id
    (accel_fall.PROFILE_OPERATING_POINTS) with the profile's stored fall thresholds on top;
    a broken profile falls back to the defaults (and says so) rather than silencing fall
    detection for the elder."""
    try:
        return FallThresholds.for_elder(elder.profile_id, elder.profile)
    except ValueError as exc:
        log.warning(
            "invalid fall thresholds in care profile, defaults used",
            extra={"elder_id": elder.elder_id, "profile_id": elder.profile_id, "error": str(exc)},
        )
        return FallThresholds()


class AccelFallPlugin(Detector):
    def __init__(self, recent: RecentFalls | None = None) -> None:
        self._recent = recent or RecentFalls()
        self._devices: dict[str, AccelFallDetector] = {}
        self._profiles: ViewCache[FallThresholds] = ViewCache(fall_thresholds)
        # Detections and rejections by event id: wants() runs more than once per delivery,
        # and the detector drops samples it has seen, so it answers a repeat with None.
        self._detections: EventMemo[FallDetection] = EventMemo()
        self._rejected: EventMemo[bool] = EventMemo()

    def wants(self, event: Event) -> bool:
        if event.type != "telemetry" or "accel" not in event.data:
            return False
        thresholds = self._profiles.get(event.elder_id, event.device_time_ms)
        if thresholds is None:
            return True  # learn the elder's profile first; on_event feeds this window
        return self._feed(event, thresholds) is not None

    def on_event(self, event: Event, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        thresholds = self._profiles.learn(elder, event.device_time_ms)
        detection = self._feed(event, thresholds)
        if detection is None:
            return []
        self._recent.saw_fall(event.elder_id, event.device_time_ms)
        used = self._devices[event.device_id].thresholds
        threshold = {
            **asdict(used),
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
            clock,
            source=SOURCE,
            rule=RULE,
            confidence=detection.confidence,
            threshold=threshold,
            details=details,
            confirm_window_s=window_s,
        )

    def _feed(self, event: Event, thresholds: FallThresholds) -> FallDetection | None:
        if event.id in self._detections:
            return self._detections[event.id]
        if event.id in self._rejected:
            return None
        detector = self._devices.get(event.device_id)
        if detector is None:
            detector = self._devices[event.device_id] = AccelFallDetector(thresholds)
        elif detector.thresholds != thresholds:
            detector.thresholds = thresholds  # profile edited: applies from this window on
        try:
            window = msgspec.convert(event.data["accel"], AccelWindow)
            detection = detector.feed(window, event.device_time_ms)
        except (msgspec.ValidationError, ValueError) as exc:
            # the raw window is kept in the telemetry table by ingest; count and move on
            self._rejected.put(event.id, True)
            count_reject("accel_fall", "bad_window")
            log.warning(
                "unusable accelerometer window skipped",
                extra={"event_id": event.id, "device_id": event.device_id, "error": str(exc)},
            )
            return None
        if detection is not None:
            self._detections.put(event.id, detection)
        return detection
