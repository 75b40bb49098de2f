"""A detector driven through time without servers: events in, timers fired in order.

Decisions go through rules_engine.apply, the applier the store and the evaluation use
(one active alert per kind, the lifecycle, open once); timers as the store keeps them
(upsert/keep, cancel only unfired, a fired timer marked before its effects), so table
tests can play a day of an elder's life with a ManualClock in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never
from zoneinfo import ZoneInfo

from carewatch.clock import ManualClock
from carewatch.messages import Event, EventType, NormalisedType
from rules_engine.apply import (
    AlertState,
    Annotated,
    Opened,
    Renotified,
    Repeated,
    Transitioned,
    Updated,
    apply,
)
from rules_engine.decisions import CancelTimer, Decision, OpenAlert, ScheduleTimer
from rules_engine.detectors.base import ActiveAlert, Detector, DueTimer, ElderView
from rules_engine.engine import Engine
from rules_engine.thresholds import Thresholds

TZ = ZoneInfo("Asia/Shanghai")
ELDER = "E1"


def local_ms(day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of 2026-11-{day} hour:minute in Chongqing (23 Nov 2026 is a Monday)."""
    return round(datetime(2026, 11, day, hour, minute, tzinfo=TZ).timestamp() * 1000)


def thresholds(**overrides: float) -> Thresholds:
    return Thresholds(sos_cancel_window_s=10.0, fall_confirm_window_s=30.0, **overrides)


@dataclass
class Timer:
    kind: str
    due_ms: int
    payload: dict[str, object]
    fired: bool = False


@dataclass
class Change:
    at_ms: int
    alert_id: str
    kind: str
    what: str  # opened / resolved / escalated / reminder / cancelled / confirmed
    severity: str
    rule: str = ""


@dataclass
class Sim:
    detector: Detector[Any] | Engine  # one detector, or a set of them
    th: Thresholds = field(default_factory=thresholds)
    clock: ManualClock = field(default_factory=lambda: ManualClock(local_ms(23, 0)))
    timers: dict[str, Timer] = field(default_factory=dict)
    active: dict[str, ActiveAlert] = field(default_factory=dict)
    opened: dict[str, OpenAlert] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    _seq: int = 0
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        # the detector contract, as the worker runs it
        d = self.detector
        self.engine = d if isinstance(d, Engine) else Engine([d])

    # --- input -------------------------------------------------------------------------

    def event(
        self,
        device: str,
        device_kind: str,
        *,
        event: EventType | None = None,
        state: str | None = None,
        **data: object,
    ) -> Event:
        self._seq += 1
        now = self.clock.now_ms()
        kind: NormalisedType = "event" if event else "status" if state else "telemetry"
        return Event(
            id=f"{device}:{self._seq}",
            elder_id=ELDER,
            device_id=device,
            device_kind=device_kind,
            type=kind,
            device_time_ms=now,
            received_ms=now,
            seq=self._seq,
            event=event,
            state=state,
            data=dict(data),
        )

    def send(self, e: Event) -> bool:
        """Deliver at the clock's time (firing timers due first); True if it had something
        to decide (it would have reached the database)."""
        self.run_until(e.received_ms)
        decisions = self.engine.run(e, self.view, self.clock.now_ms())
        if decisions is None:
            return False
        self.apply(decisions)
        return True

    def at(self, ms: int, device: str, device_kind: str, **kw: object) -> bool:
        self.run_until(ms)
        return self.send(self.event(device, device_kind, **kw))  # type: ignore[arg-type]

    def run_until(self, ms: int) -> None:
        """Fire every timer due by `ms` in due order, the clock at each due time."""
        while True:
            due = sorted(
                (t.due_ms, tid) for tid, t in self.timers.items() if not t.fired and t.due_ms <= ms
            )
            if not due:
                break
            due_ms, tid = due[0]
            self.clock._now = max(self.clock.now_ms(), due_ms)
            t = self.timers[tid]
            timer = DueTimer(tid, t.kind, ELDER, t.due_ms, dict(t.payload))
            t.fired = True  # before its effects, which may arm it again, as the store does
            self.apply(self.engine.on_timer(timer, self.view(), self.clock.now_ms()))
        self.clock._now = max(self.clock.now_ms(), ms)

    # --- the store's semantics -----------------------------------------------------------

    def view(self) -> ElderView:
        return ElderView(ELDER, self.th, dict(self.active))

    def apply(self, decisions: Sequence[Decision]) -> None:
        """rules_engine.apply decides (the store's and the evaluation's applier); the
        effects go to this harness's alerts, changes and timers."""
        now = self.clock.now_ms()
        after, effects = apply(AlertState.of(self.active), decisions, now)
        # an id opened before (and closed since) keeps its row: ON CONFLICT DO NOTHING
        again = {e.alert.alert_id for e in effects if isinstance(e, Opened)} & set(self.opened)
        active = after.active_by_kind()
        self.active = {k: a for k, a in active.items() if a.alert_id not in again}
        for e in effects:
            match e:
                case Opened(alert=a) if a.alert_id in again:
                    pass
                case Opened(decision=d):
                    self.opened[d.alert_id] = d
                    self.changes.append(
                        Change(now, d.alert_id, d.kind, "opened", d.severity, d.rule)
                    )
                case Transitioned(before=a, after=b) if b.status in ("resolved", "cancelled"):
                    self.changes.append(
                        Change(now, a.alert_id, a.kind, e.timeline, a.severity, e.rule)
                    )
                case Renotified(after=b):
                    self.changes.append(
                        Change(now, b.alert_id, b.kind, e.reason, b.severity, e.rule)
                    )
                case ScheduleTimer():
                    if e.replace or e.timer_id not in self.timers:
                        self.timers[e.timer_id] = Timer(e.kind, e.due_ms, dict(e.payload))
                case CancelTimer():
                    t = self.timers.get(e.timer_id)
                    if t is not None and not t.fired:
                        del self.timers[e.timer_id]
                case Transitioned() | Repeated() | Updated() | Annotated():
                    pass
                case _:
                    assert_never(e)

    # --- reading -------------------------------------------------------------------------

    def whats(self, kind: str) -> list[str]:
        return [c.what for c in self.changes if c.kind == kind]

    def pending(self, timer_id: str) -> Timer | None:
        t = self.timers.get(timer_id)
        return t if t is not None and not t.fired else None
