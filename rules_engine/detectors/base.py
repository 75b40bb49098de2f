"""The detector interface and the view of one elder that detectors decide on.

A detector is pure: given an Event (or a due timer), what the rules engine knows about
the elder (active alerts, thresholds) and a Clock, it returns Decisions. The store
loads the view and applies the decisions inside one transaction per event, under a
per-elder lock, so detectors never see a half-applied state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from carewatch.clock import Clock
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


class Detector:
    """Base class: override `wants` and `on_event`; timer owners list `timer_kinds`."""

    timer_kinds: frozenset[str] = frozenset()

    def wants(self, event: Event) -> bool:
        """Cheap pre-check without I/O: events no detector wants never reach the DB.

        Called once per delivery, outside the transaction. A streaming detector (e.g.
        accelerometer windows) may update its in-memory state here and return True only
        when it has something to decide; deliveries repeat, so such state must ignore
        samples it has already seen (by device time).
        """
        return False

    def on_event(self, event: Event, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        return ()

    def on_timer(self, timer: DueTimer, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        return ()


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
