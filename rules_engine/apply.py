"""The one decision applier: what a batch of decisions does to an elder's alerts.

`apply(state, decisions, now_ms) -> (state, effects)` is pure. It holds the rules every
runner of the detectors shares: one active alert per elder and kind, an alert opened
twice is opened once, the alert lifecycle (carewatch.alert_lifecycle) on every status
change, a decision on an alert that is not active fails. Each runner then carries out
the effects its own way:

- rules_engine/store.py: effects -> SQL through carewatch.alerts, in the event's
  transaction (a failure rolls the whole event back);
- evaluation/sim_engine.py: effects -> in-memory alert rows and timers;
- tests/support/detector_sim.py (Sim) and tests/support/events.py (EngineRun): the
  detector table tests.

Timers are not part of the state: the effects pass ScheduleTimer / CancelTimer on, and
each runner keeps its timers (the store in rule_timers, the simulations in memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, assert_never

from carewatch.alert_lifecycle import Action, next_status
from carewatch.messages import OPEN_STATUSES, AlertKind, Severity
from rules_engine.decisions import (
    Annotate,
    CancelAlert,
    CancelTimer,
    ConfirmAlert,
    Decision,
    OpenAlert,
    RenotifyAlert,
    RepeatAlert,
    ResolveAlert,
    ScheduleTimer,
    UpdateAlert,
)
from rules_engine.detectors.base import ActiveAlert


class NotActive(KeyError):
    """A decision names an alert that is not active (the store's rows have no such id)."""


class SecondActive(ValueError):
    """An alert opened while another of its kind is active (the store's unique index
    alerts_one_open refuses it)."""


@dataclass(frozen=True, slots=True)
class AlertState:
    """The alerts a batch acts on, by id: the elder's active ones as loaded, and those
    the batch opened or changed (closed ones stay, with their final status)."""

    alerts: Mapping[str, ActiveAlert] = field(default_factory=dict)

    @classmethod
    def of(cls, active: Sequence[ActiveAlert] | Mapping[str, ActiveAlert]) -> AlertState:
        values = active.values() if isinstance(active, Mapping) else active
        return cls({a.alert_id: a for a in values})

    def active_by_kind(self) -> dict[AlertKind, ActiveAlert]:
        """The view's `active`: the pending, open and acknowledged alerts by kind."""
        return {a.kind: a for a in self.alerts.values() if a.status in OPEN_STATUSES}


# --- effects: what a runner carries out --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    alert: ActiveAlert
    decision: OpenAlert


@dataclass(frozen=True, slots=True)
class Transitioned:
    before: ActiveAlert
    after: ActiveAlert
    action: Action
    timeline: str  # the timeline entry: confirmed, cancelled, resolved
    rule: str
    details: Mapping[str, object]  # for the timeline entry
    confidence: float | None = None  # a new confidence (ConfirmAlert), None keeps it


@dataclass(frozen=True, slots=True)
class Renotified:
    before: ActiveAlert
    after: ActiveAlert
    reason: Literal["escalated", "reminder"]
    rule: str
    severity: Severity | None
    details: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Repeated:
    decision: RepeatAlert


@dataclass(frozen=True, slots=True)
class Updated:
    decision: UpdateAlert
    after: ActiveAlert | None  # None: not an active alert (the row, if any, is updated)


@dataclass(frozen=True, slots=True)
class Annotated:
    decision: Annotate


Effect = (
    Opened
    | Transitioned
    | Renotified
    | Repeated
    | Updated
    | Annotated
    | ScheduleTimer
    | CancelTimer
)


def apply(
    state: AlertState, decisions: Sequence[Decision], now_ms: int
) -> tuple[AlertState, list[Effect]]:
    """Apply `decisions` in order; raises NotActive, SecondActive or TransitionError
    (carewatch.alert_lifecycle) for a batch that cannot apply, which a runner rolls back
    as a whole. `now_ms` is the time of the batch (kept for runners' records)."""
    alerts = dict(state.alerts)
    effects: list[Effect] = []

    def active(alert_id: str) -> ActiveAlert:
        try:
            return alerts[alert_id]
        except KeyError:
            raise NotActive(alert_id) from None

    def transition(
        alert_id: str,
        action: Action,
        timeline: str,
        rule: str,
        details: Mapping[str, object],
        confidence: float | None = None,
    ) -> None:
        before = active(alert_id)
        status = next_status(before.status, action)
        after = replace(before, status=status, confidence=confidence or before.confidence)
        alerts[alert_id] = after
        effects.append(Transitioned(before, after, action, timeline, rule, details, confidence))

    for d in decisions:
        match d:
            case OpenAlert():
                if d.alert_id in alerts:
                    continue  # opened before (a redelivery): ON CONFLICT DO NOTHING
                if any(a.kind == d.kind and a.status in OPEN_STATUSES for a in alerts.values()):
                    raise SecondActive(f"a {d.kind} alert is active already")
                alerts[d.alert_id] = ActiveAlert.opened_by(d)
                effects.append(Opened(alerts[d.alert_id], d))
            case RepeatAlert():
                effects.append(Repeated(d))
            case CancelAlert():
                details = {"rule": d.rule, **d.details}
                transition(d.alert_id, "cancel", "cancelled", d.rule, details)
            case ConfirmAlert():
                details = {"rule": d.rule, "timer_id": d.cause, **d.details}
                transition(d.alert_id, "confirm", "confirmed", d.rule, details, d.confidence)
            case ResolveAlert():
                details = {"rule": d.rule, "cause": d.cause, **d.details}
                transition(d.alert_id, "resolve", "resolved", d.rule, details)
            case UpdateAlert():
                updated = None
                if d.alert_id in alerts:
                    current = alerts[d.alert_id]
                    updated = replace(
                        current,
                        confidence=d.confidence or current.confidence,
                        details={**current.details, **d.details},
                    )
                    alerts[d.alert_id] = updated
                effects.append(Updated(d, updated))
            case RenotifyAlert():
                before = active(d.alert_id)
                after = replace(before, severity=d.severity or before.severity)
                alerts[d.alert_id] = after
                details = {"rule": d.rule, "timer_id": d.cause, **d.details}
                effects.append(Renotified(before, after, d.reason, d.rule, d.severity, details))
            case Annotate():
                effects.append(Annotated(d))
            case ScheduleTimer() | CancelTimer():
                effects.append(d)
            case _:
                assert_never(d)
    return AlertState(alerts), effects
