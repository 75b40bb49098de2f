"""A detector driven through time without servers: events in, timers fired in order.

Applies Decisions the way rules_engine.store does (one active alert per kind, timer
upsert/keep, cancel only unfired, a fired timer marked after its effects), so table
tests can play a day of an elder's life with a ManualClock in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from carewatch.clock import ManualClock
from carewatch.messages import Event, EventType, NormalisedType
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
from rules_engine.detectors.base import ActiveAlert, Detector, DueTimer, ElderView
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
    detector: Detector
    th: Thresholds = field(default_factory=thresholds)
    clock: ManualClock = field(default_factory=lambda: ManualClock(local_ms(23, 0)))
    timers: dict[str, Timer] = field(default_factory=dict)
    active: dict[str, ActiveAlert] = field(default_factory=dict)
    opened: dict[str, OpenAlert] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    _seq: int = 0

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
        """Deliver at the clock's time (firing timers due first); True if it was wanted."""
        self.run_until(e.received_ms)
        if not self.detector.wants(e):
            return False
        self.apply(self.detector.on_event(e, self.view(), self.clock))
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
            self.apply(self.detector.on_timer(timer, self.view(), self.clock))
        self.clock._now = max(self.clock.now_ms(), ms)

    # --- the store's semantics -----------------------------------------------------------

    def view(self) -> ElderView:
        return ElderView(ELDER, self.th, dict(self.active))

    def apply(self, decisions: Sequence[Decision]) -> None:
        now = self.clock.now_ms()
        for d in decisions:
            match d:
                case OpenAlert():
                    assert d.kind not in self.active, f"second active {d.kind} alert"
                    self.active[d.kind] = ActiveAlert.opened_by(d)
                    self.opened[d.alert_id] = d
                    self.changes.append(
                        Change(now, d.alert_id, d.kind, "opened", d.severity, d.rule)
                    )
                case ResolveAlert() | CancelAlert():
                    a = self.active.pop(d.kind)
                    assert a.alert_id == d.alert_id
                    what = "resolved" if isinstance(d, ResolveAlert) else "cancelled"
                    self.changes.append(Change(now, d.alert_id, d.kind, what, a.severity, d.rule))
                case RenotifyAlert():
                    a = self.active[d.kind]
                    assert a.alert_id == d.alert_id
                    self.active[d.kind] = replace(a, severity=d.severity or a.severity)
                    severity = d.severity or a.severity
                    self.changes.append(Change(now, d.alert_id, d.kind, d.reason, severity, d.rule))
                case ConfirmAlert():
                    self.active[d.kind] = replace(self.active[d.kind], status="open")
                case ScheduleTimer():
                    if d.replace or d.timer_id not in self.timers:
                        self.timers[d.timer_id] = Timer(d.kind, d.due_ms, dict(d.payload))
                case CancelTimer():
                    t = self.timers.get(d.timer_id)
                    if t is not None and not t.fired:
                        del self.timers[d.timer_id]
                case RepeatAlert() | Annotate() | UpdateAlert():
                    pass
                case _:
                    raise AssertionError(f"unexpected decision {d!r}")

    # --- reading -------------------------------------------------------------------------

    def whats(self, kind: str) -> list[str]:
        return [c.what for c in self.changes if c.kind == kind]

    def pending(self, timer_id: str) -> Timer | None:
        t = self.timers.get(timer_id)
        return t if t is not None and not t.fired else None
