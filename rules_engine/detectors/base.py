"""The detector contract and the view of one elder that detectors decide on.

A delivery of an event goes through a detector in three steps (rules_engine.engine runs
them; the worker, the evaluation engine and the test harness all go through the engine):

1. `wants(event)`: a pure predicate (no I/O, no state change). Events no detector wants
   cost nothing more. A detector that wants only telemetry carrying one of a few data
   fields names them in `telemetry_fields`: the engine then asks it about such
   telemetry only (tests/test_detector_contract.py checks the names against wants()).
2. `observe(event, known)`: the detector's only state change, called exactly once per
   event id (the engine remembers the result, so a redelivered or retried event gets
   the observation it got the first time). It updates the per-device / per-elder state
   (streaming fall model, vital-sign runs, counters) and returns an observation, or
   None when the event changes nothing worth a decision (it never reaches the
   database). `known` is the elder's profile as the engine last learned it from a view
   (when `uses_profile(event)`; its `active` alerts are not to be used here).
3. `decide(observation, view, now_ms)`: pure; may run any number of times (on a cached
   view, then again on the view the store loads under the elder's lock, again when the
   transaction is retried) and gives the same decisions for the same arguments. It may
   read the detector's state, never change it.

Timers: `on_timer(timer, view, now_ms)`, pure like decide. Periodic I/O (learned
routines, the device sweep, stored reports) is not a detector's: the worker's edge
(rules_engine.inputs) reads it and hands it to the detectors as data.

The store loads the view and applies the decisions inside one transaction per event,
under a per-elder lock, so detectors never see a half-applied state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from carewatch.messages import AlertKind, AlertStatus, Event, Severity
from rules_engine.decisions import Decision, OpenAlert, RepeatAlert, alert_id_for
from rules_engine.geo import LatLon, Zone
from rules_engine.thresholds import Thresholds


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """An alert of the elder that is still pending, open or acknowledged."""

    alert_id: str
    kind: AlertKind
    severity: Severity
    status: AlertStatus
    device_id: str | None
    device_time_ms: int
    rule: str
    confidence: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def opened_by(cls, d: OpenAlert) -> ActiveAlert:
        """The active alert an OpenAlert decision leaves behind (what the store loads)."""
        return cls(
            d.alert_id,
            d.kind,
            d.severity,
            d.status,
            d.device_id,
            d.device_time_ms,
            d.rule,
            d.confidence,
            d.details,
        )


@dataclass(frozen=True, slots=True)
class ElderView:
    elder_id: str
    thresholds: Thresholds
    active: Mapping[str, ActiveAlert] = field(default_factory=dict)  # by kind (one per kind)
    profile_id: str | None = None  # care_profiles.id ('cognitive' = at risk of wandering)
    profile: Mapping[str, object] = field(default_factory=dict)  # raw care_profiles.thresholds
    home: LatLon | None = None  # elders.lat/lon
    zones: tuple[Zone, ...] = ()  # geofence_zones of the elder (migration 009)


@dataclass(frozen=True, slots=True)
class DueTimer:
    timer_id: str
    kind: str
    elder_id: str
    due_ms: int
    payload: Mapping[str, object]


Obs = TypeVar("Obs")


class Detector(Generic[Obs]):
    """Base class: override `wants`, `observe` and `decide`; timer owners list
    `timer_kinds` and override `on_timer`. `Obs` is the detector's observation type."""

    timer_kinds: frozenset[str] = frozenset()
    # wants() is false for telemetry whose data has none of these fields (None: it may
    # want any telemetry): the engine does not ask it about the others
    telemetry_fields: frozenset[str] | None = None

    def wants(self, event: Event) -> bool:
        """Pure predicate, no I/O: events no detector wants never reach the database."""
        return False

    def uses_profile(self, event: Event) -> bool:
        """Pure: does observe() need the elder's known profile for this event?"""
        return False

    def observe(self, event: Event, known: ElderView | None) -> Obs | None:
        """The one state change per event (see the module docstring); None: nothing to
        decide."""
        return None

    def decide(self, seen: Obs, view: ElderView, now_ms: int) -> Sequence[Decision]:
        return ()

    def on_timer(self, timer: DueTimer, view: ElderView, now_ms: int) -> Sequence[Decision]:
        return ()


class EventDetector(Detector[Event]):
    """A detector without state: the event is the observation."""

    def observe(self, event: Event, known: ElderView | None) -> Event | None:
        return event


def open_or_repeat(
    event: Event,
    elder: ElderView,
    *,
    kind: AlertKind,
    severity: Severity,
    status: Literal["open", "pending"],
    rule: str,
    threshold: Mapping[str, float],
    confidence: float | None = None,
) -> OpenAlert | RepeatAlert:
    """One active alert per (elder, kind): a repeat folds into the active one."""
    active = elder.active.get(kind)
    if active is not None:
        return RepeatAlert(
            alert_id=active.alert_id,
            kind=kind,
            source_event_id=event.id,
            device_id=event.device_id,
            device_time_ms=event.device_time_ms,
        )
    return OpenAlert(
        alert_id=alert_id_for(kind, event.id),
        kind=kind,
        severity=severity,
        status=status,
        rule=rule,
        threshold=threshold,
        confidence=confidence,
        device_id=event.device_id,
        source_event_id=event.id,
        device_time_ms=event.device_time_ms,
    )
