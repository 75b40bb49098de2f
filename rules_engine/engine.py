"""The set of detectors a worker runs, and dispatch of events and timers to them (pure)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock
from carewatch.messages import Event
from carewatch.settings import Settings, get_settings
from rules_engine.decisions import Decision
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.device_health import DeviceHealthDetector
from rules_engine.detectors.environment import EnvironmentDetector
from rules_engine.detectors.fall.detector import DeviceFallDetector
from rules_engine.detectors.home_sensors import HomeSensorHealthDetector
from rules_engine.detectors.inactivity import InactivityDetector
from rules_engine.detectors.signals import signal_detectors
from rules_engine.detectors.sos import SosDetector
from rules_engine.detectors.water import WaterDetector
from rules_engine.home_routine import RoomBook
from rules_engine.routine import Refreshing, RoutineBook

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self._by_timer_kind: dict[str, Detector] = {}
        for detector in self.detectors:
            for kind in detector.timer_kinds:
                if kind in self._by_timer_kind:
                    raise ValueError(f"timer kind {kind!r} is owned by two detectors")
                self._by_timer_kind[kind] = detector

    async def refresh(self, pool: AsyncConnectionPool, settings: Settings, clock: Clock) -> None:
        """Periodic I/O some detectors need off the hot path (learned routines, sweeps).

        A failing refresh is logged and retried on the next call; it must not hold up
        timers or the other detectors' refreshes.
        """
        for detector in self.detectors:
            if isinstance(detector, Refreshing):
                try:
                    await detector.refresh(pool, settings, clock)
                except Exception:
                    log.exception(
                        "detector refresh failed", extra={"detector": type(detector).__name__}
                    )

    def wants(self, event: Event) -> bool:
        return any(d.wants(event) for d in self.detectors)

    def wanting(self, event: Event) -> tuple[Detector, ...]:
        """The detectors that want `event`: asked once per delivery, then handed to
        on_event (a worker may decide an event twice, on a cached and a locked view)."""
        return tuple(d for d in self.detectors if d.wants(event))

    def on_event(
        self,
        event: Event,
        elder: ElderView,
        clock: Clock,
        wanting: Sequence[Detector] | None = None,
    ) -> list[Decision]:
        decisions: list[Decision] = []
        for detector in self.wanting(event) if wanting is None else wanting:
            decisions.extend(detector.on_event(event, elder, clock))
        return decisions

    def on_timer(self, timer: DueTimer, elder: ElderView, clock: Clock) -> list[Decision]:
        detector = self._by_timer_kind.get(timer.kind)
        if detector is None:
            return []  # a timer of a detector this build no longer has: fire it as a no-op
        return list(detector.on_timer(timer, elder, clock))


def default_engine() -> Engine:
    return Engine(
        [
            SosDetector(),
            DeviceFallDetector(),
            EnvironmentDetector(),
            *signal_detectors(get_settings().timezone),
            *_presence_detectors(ZoneInfo(get_settings().timezone)),
        ]
    )


def _presence_detectors(tz: ZoneInfo) -> list[Detector]:
    """Rules on the absence of events: inactivity, water meter, device health."""
    rooms = RoomBook()  # one per worker: inactivity refreshes it, home-sensor health reads it
    return [
        InactivityDetector(RoutineBook(tz), tz, rooms),
        WaterDetector(),
        DeviceHealthDetector(tz),
        HomeSensorHealthDetector(rooms),
    ]
