"""The detectors that read telemetry signals (accelerometer, movement, vital signs,
position), built together because the fall detectors share what they saw."""

from __future__ import annotations

from rules_engine.detectors.base import Detector
from rules_engine.detectors.fall.accel import AccelFallPlugin
from rules_engine.detectors.fall.fusion import FallMovementDetector, RecentFalls
from rules_engine.detectors.geofence import GeofenceDetector
from rules_engine.detectors.vitals import VitalsDetector


def signal_detectors(timezone: str) -> list[Detector]:
    """`timezone` (settings.timezone) decides what is night for the geofence severity."""
    recent = RecentFalls()
    return [
        AccelFallPlugin(recent),
        FallMovementDetector(recent),
        VitalsDetector(),
        GeofenceDetector(timezone),
    ]
