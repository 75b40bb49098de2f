"""The set of detectors a worker runs, and the detector contract carried out in order.

For each delivered event (rules_engine.detectors.base has the contract):

    wanting(event)                    pure: the detectors that want it
    needs_profile(event, wanting)     pure: some of them need the elder's profile, not
                                      known (or 10 min stale): the caller reads a view
                                      and hands it to learn(view, at_ms)
    observe(event, wanting)           each wanting detector's observe(), once per event
                                      id; a repeat gets what was observed the first time
    observe_known(event, wanting)     the two above in one for the worker's hot path:
                                      None if the profile is needed first
    decide(observed, view, now_ms)    pure, as often as the caller needs (cached view,
                                      locked view, retried transaction)

Timers: on_timer(timer, view, now_ms), pure. The engine does no I/O; what it is built
from comes from the Settings it is given (`default_engine(settings)`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from carewatch.messages import Event
from carewatch.settings import Settings
from rules_engine.decisions import Decision
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.device_health import DeviceHealthDetector
from rules_engine.detectors.environment import EnvironmentDetector
from rules_engine.detectors.fall.detector import FallDetector
from rules_engine.detectors.geofence import GeofenceDetector
from rules_engine.detectors.home_sensors import HomeSensorHealthDetector
from rules_engine.detectors.inactivity import InactivityDetector
from rules_engine.detectors.sos import SosDetector
from rules_engine.detectors.vitals import VitalsDetector
from rules_engine.detectors.water import WaterDetector
from rules_engine.home_routine import HomeRoutineBook, RoomBook
from rules_engine.routine import RoutineBook

AnyDetector = Detector[Any]

PROFILE_MAX_AGE_MS = 10 * 60 * 1000  # a profile edit reaches observe() within this
OBSERVED_MEMORY = 65_536  # events whose observations are remembered for redeliveries
TELEMETRY_SHAPES = 4096  # telemetry field sets whose candidate detectors are remembered

Seen = tuple[tuple[AnyDetector, object], ...]
NOTHING: Seen = ()


@dataclass(frozen=True, slots=True)
class Observed:
    """What the wanting detectors observed of one event: (detector, observation) pairs,
    only those with something to decide. Empty: the event needs no decision."""

    event: Event
    seen: Seen

    def __bool__(self) -> bool:
        return bool(self.seen)


@dataclass(frozen=True, slots=True)
class _Known:
    view: ElderView
    learned_ms: int


class KnownProfiles:
    """Per elder: the last view learned (for its profile: thresholds, profile id, zones,
    home), and when (device time). Stale after `max_age_ms`, so a profile edit reaches
    the streaming detectors within that time without a restart. Per worker, bounded."""

    def __init__(self, max_age_ms: int = PROFILE_MAX_AGE_MS, max_elders: int = 500_000) -> None:
        self._max_age_ms = max_age_ms
        self._max = max_elders
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def get(self, elder_id: str, device_ms: int) -> ElderView | None:
        known = self._known.get(elder_id)
        if known is None or abs(device_ms - known.learned_ms) > self._max_age_ms:
            return None
        return known.view

    def learn(self, view: ElderView, device_ms: int) -> None:
        self._known[view.elder_id] = _Known(view, device_ms)
        self._known.move_to_end(view.elder_id)
        while len(self._known) > self._max:
            self._known.popitem(last=False)


class Engine:
    def __init__(self, detectors: Sequence[AnyDetector]) -> None:
        self.detectors = tuple(detectors)
        self._by_timer_kind: dict[str, AnyDetector] = {}
        for detector in self.detectors:
            for kind in detector.timer_kinds:
                if kind in self._by_timer_kind:
                    raise ValueError(f"timer kind {kind!r} is owned by two detectors")
                self._by_timer_kind[kind] = detector
        self.profiles = KnownProfiles()
        # event id -> what was observed, in two generations of plain dicts (cheaper per
        # event than an LRU): between OBSERVED_MEMORY and twice that many of the latest
        self._observed: dict[str, Seen] = {}
        self._observed_before: dict[str, Seen] = {}
        # telemetry's data fields, in order -> the detectors that may want it
        self._by_fields: dict[tuple[str, ...], tuple[AnyDetector, ...]] = {}

    def wants(self, event: Event) -> bool:
        return any(d.wants(event) for d in self._candidates(event))

    def wanting(self, event: Event) -> tuple[AnyDetector, ...]:
        return tuple([d for d in self._candidates(event) if d.wants(event)])

    def _candidates(self, event: Event) -> tuple[AnyDetector, ...]:
        """The detectors whose wants() may be true: for telemetry, those whose
        `telemetry_fields` it carries one of (remembered per field set: a fleet sends a
        handful of shapes), so most wants() are never asked."""
        if event.type != "telemetry":
            return self.detectors
        shape = tuple(event.data)
        found = self._by_fields.get(shape)
        if found is None:
            if len(self._by_fields) >= TELEMETRY_SHAPES:
                self._by_fields.clear()  # a device sending ever new fields: stay bounded
            found = self._by_fields[shape] = tuple(
                d
                for d in self.detectors
                if d.telemetry_fields is None or not d.telemetry_fields.isdisjoint(shape)
            )
        return found

    def needs_profile(self, event: Event, wanting: Sequence[AnyDetector]) -> bool:
        """True if observe() needs the elder's profile first (learn a view)."""
        return (
            self.profiles.get(event.elder_id, event.device_time_ms) is None
            and self._remembered(event.id) is None
            and any(d.uses_profile(event) for d in wanting)
        )

    def learn(self, view: ElderView, at_ms: int) -> None:
        self.profiles.learn(view, at_ms)

    def observe(self, event: Event, wanting: Sequence[AnyDetector] | None = None) -> Observed:
        """Each wanting detector observes `event` once; a repeat (a redelivery, a retried
        transaction) gets what they observed the first time without touching them."""
        seen = self._remembered(event.id)
        if seen is None:
            known = self.profiles.get(event.elder_id, event.device_time_ms)
            seen = self._observe(event, self.wanting(event) if wanting is None else wanting, known)
        return Observed(event, seen)

    def observe_known(self, event: Event, wanting: Sequence[AnyDetector]) -> Seen | None:
        """needs_profile() and observe() in one, for the worker's hot path: what the
        wanting detectors observe (NOTHING, most telemetry), or None when the profile is
        needed first (then learn() and observe() as usual). Same outcome, without
        building an Observed for the events with nothing to decide."""
        seen = self._remembered(event.id)
        if seen is not None:
            return seen
        known = self.profiles.get(event.elder_id, event.device_time_ms)
        if known is None and any(d.uses_profile(event) for d in wanting):
            return None
        return self._observe(event, wanting, known)

    def _remembered(self, event_id: str) -> Seen | None:
        seen = self._observed.get(event_id)
        return self._observed_before.get(event_id) if seen is None else seen

    def _observe(
        self, event: Event, wanting: Sequence[AnyDetector], known: ElderView | None
    ) -> Seen:
        seen: Seen = NOTHING
        for detector in wanting:
            observation = detector.observe(event, known)
            if observation is not None:
                seen = (*seen, (detector, observation))
        if len(self._observed) >= OBSERVED_MEMORY:
            self._observed_before, self._observed = self._observed, {}
        self._observed[event.id] = seen
        return seen

    def decide(self, observed: Observed, view: ElderView, now_ms: int) -> list[Decision]:
        decisions: list[Decision] = []
        for detector, observation in observed.seen:
            decisions.extend(detector.decide(observation, view, now_ms))
        return decisions

    def on_timer(self, timer: DueTimer, view: ElderView, now_ms: int) -> list[Decision]:
        detector = self._by_timer_kind.get(timer.kind)
        if detector is None:
            return []  # a timer of a detector this build no longer has: fire it as a no-op
        return list(detector.on_timer(timer, view, now_ms))

    def run(
        self, event: Event, view_of: Callable[[], ElderView], now_ms: int
    ) -> list[Decision] | None:
        """The whole contract for a caller whose view is in memory (the evaluation, tests):
        None if the event needs no decision (it would not reach the database)."""
        wanting = self.wanting(event)
        if not wanting:
            return None
        if self.needs_profile(event, wanting):
            self.learn(view_of(), event.device_time_ms)
        observed = self.observe(event, wanting)
        if not observed:
            return None
        return self.decide(observed, view_of(), now_ms)


def default_engine(settings: Settings) -> Engine:
    """The detectors of a worker, built from `settings` (the site's timezone)."""
    tz = ZoneInfo(settings.timezone)
    rooms = RoomBook()  # one per worker: inactivity reads it, home-sensor health too
    return Engine(
        [
            SosDetector(),
            FallDetector(),
            EnvironmentDetector(),
            VitalsDetector(),
            GeofenceDetector(settings.timezone),
            InactivityDetector(RoutineBook(tz), tz, rooms, HomeRoutineBook(tz)),
            WaterDetector(),
            DeviceHealthDetector(tz),
            HomeSensorHealthDetector(rooms),
        ]
    )
