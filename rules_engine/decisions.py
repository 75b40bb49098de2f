"""What the detectors decide: plain values the store turns into SQL, no I/O here.

Alert ids are derived from the event that opened the alert, so deciding twice on the
same event (a redelivery) names the same alert, and a timer id can be chosen before
the alert row exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from carewatch.messages import AlertKind, Severity

# Fixed namespace of carewatch alert ids (uuid5 over "{kind}:{source_event_id}").
_ALERT_NAMESPACE = uuid.UUID("5f0c2f3e-8a57-4f43-9a52-5c0b7e0d6a11")


def alert_id_for(kind: AlertKind, source_event_id: str) -> str:
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{kind}:{source_event_id}"))


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """A new alert: 'open' notifies at once, 'pending' waits for a confirmation timer."""

    alert_id: str
    kind: AlertKind
    severity: Severity
    status: Literal["open", "pending"]
    rule: str
    threshold: Mapping[str, float]  # the threshold values this decision used
    confidence: float | None
    device_id: str | None
    source_event_id: str
    device_time_ms: int
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RepeatAlert:
    """The same condition again while its alert is still active: fold it in."""

    alert_id: str
    kind: AlertKind
    source_event_id: str
    device_id: str | None
    device_time_ms: int


@dataclass(frozen=True, slots=True)
class CancelAlert:
    """The elder (or the device) withdrew the alert: it ends 'cancelled', still recorded."""

    alert_id: str
    kind: AlertKind
    rule: str
    source_event_id: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConfirmAlert:
    """A pending alert's confirmation window ran out: it becomes 'open'."""

    alert_id: str
    kind: AlertKind
    rule: str
    cause: str  # the timer id that fired
    confidence: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)  # into the timeline entry


@dataclass(frozen=True, slots=True)
class UpdateAlert:
    """Refine an active alert without a status change: a new confidence (None keeps it)
    and keys merged into its details; recorded in the timeline as `action`."""

    alert_id: str
    action: str
    confidence: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolveAlert:
    """The condition cleared by itself (device back online, battery charged): 'resolved'."""

    alert_id: str
    kind: AlertKind
    rule: str
    cause: str  # the event or timer id that showed it cleared
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RenotifyAlert:
    """No status change, but the notifier must act: the severity was raised
    ('escalated', `severity` is the new one) or the condition lasts ('reminder')."""

    alert_id: str
    kind: AlertKind
    reason: Literal["escalated", "reminder"]
    rule: str
    cause: str  # the timer id that fired
    severity: Severity | None = None  # None keeps the current severity
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Annotate:
    """A timeline entry on an alert without a status change (e.g. a late cancel)."""

    alert_id: str
    action: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """A durable timer; it survives worker restarts and fires exactly once."""

    timer_id: str
    kind: str
    due_ms: int
    payload: Mapping[str, object] = field(default_factory=dict)
    # False: an existing timer of this id is kept as it is. True: it is moved to due_ms
    # with this payload and armed again even if it fired (deadlines that sliding
    # activity keeps pushing back, e.g. "inactivity:{elder_id}").
    replace: bool = False


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str


Decision = (
    OpenAlert
    | RepeatAlert
    | CancelAlert
    | ConfirmAlert
    | UpdateAlert
    | ResolveAlert
    | RenotifyAlert
    | Annotate
    | ScheduleTimer
    | CancelTimer
)


def timers_deciding_effect(decisions: Sequence[Decision]) -> tuple[str, ...] | None:
    """The timer ids whose state decides whether `decisions` change anything, or None
    if some decision changes state whatever the timers are (an alert, a moved deadline).

    Only two decisions can leave everything as it was: cancelling a timer that is not
    pending, and scheduling (without replace) a timer id that exists already. Detectors
    issue both after a restart, when their memory cannot tell (e.g. the first worn=true
    of a band cancels an off-wrist timer that may have been armed before).
    """
    ids: list[str] = []
    for d in decisions:
        match d:
            case CancelTimer() | ScheduleTimer(replace=False):
                ids.append(d.timer_id)
            case _:
                return None
    return tuple(ids)


def without_effect(decisions: Sequence[Decision], timers: Mapping[str, bool]) -> bool:
    """Would applying `decisions` change nothing, given the existing timers (id -> still
    pending)? Each is judged on the same state: once one has an effect the answer is
    False, so the state the later ones see is unchanged by the earlier ones.

    A timer that has fired counts as an effect too, for the caller's sake rather than the
    timer's: firing may have changed the elder's alerts (an off-wrist or water-flow alert
    is opened by its timer, on whichever worker fires it), so a view cached before may
    miss an alert these decisions would resolve on a fresh one.
    """
    for d in decisions:
        match d:
            case CancelTimer():
                if d.timer_id in timers:
                    return False  # pending: it would be deleted; fired: see above
            case ScheduleTimer(replace=False):
                if not timers.get(d.timer_id, False):
                    return False  # a new timer would be armed; fired: see above
            case _:
                return False
    return True
