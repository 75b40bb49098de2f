"""The rules engine in memory: the worker's detectors over a simulated message stream.

`SimRulesEngine` feeds each `SimMessage` through the same path the services take,
without the services: `ingest.validate.validate` (with a registry built from the
simulated elders) turns it into the `Event` ingest would publish, the engine's contract
(`wanting`, the profile learned from the view, `observe` once, `decide`) decides on an
`ElderView` built the way `rules_engine.store` builds it,
and the decisions are applied with the store's semantics to in-memory alerts and
durable timers. Time is the device time of the stream: the injected clock reads the
message being decided (or the due time of the timer being fired), and timers due before
a message fire before it, in due order, as the timer loop would have fired them.

Store semantics kept (rules_engine/apply.py decides for both; the store carries its
effects out as SQL, this module in memory):
- one transaction per event / timer: the decisions apply to a staged copy that is
  committed only if all of them apply; a decision that fails (an illegal transition,
  an alert id that is not active) rolls the event back and counts it as failed, as the
  worker dead-letters it (`rules_failed`);
- `OpenAlert` of an existing alert id does nothing (`ON CONFLICT DO NOTHING`);
- `ScheduleTimer(replace=False)` keeps an existing timer of that id, fired or not;
  `replace=True` moves it and arms it again even if it fired; `CancelTimer` deletes an
  unfired timer; a timer fires at most once (and not at all once pushed past now);
- the view holds the elder's pending / open / acknowledged alerts by kind, the care
  profile id and raw overrides, thresholds resolved over Settings, and home.
- the wristband silence sweep (`device_sweep.sweep`) runs once a minute of device time
  over the devices' last-seen times (every accepted message, as ingest keeps
  `devices.last_seen`), arming `device-offline` and `device-back` timers.

Simplifications (documented in docs/detection-evaluation.md):
- no learned routines: `RoutineBook` is never refreshed (no telemetry store), so the
  inactivity rule uses the profile's floors, as it does for a new elder;
- received time = device time (no network delay); events arrive in device-time order
  and exactly once (ingest deduplicates by device sequence);
- no zones (geofence_zones empty): the home circle of cognitive elders;
- humans are modelled by an optional responder: a fixed time after an alert became
  'open' it is acknowledged (kinds a rule clears by itself) or resolved (the rest).
  Without it an alert stays open for the whole run and every later occurrence folds
  into it as a repeat; with it, a condition that outlasts the response (a wander still
  under way) opens a new alert.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import assert_never

from carewatch import topics
from carewatch.alert_lifecycle import Action, next_status
from carewatch.db.registry import DeviceInfo
from carewatch.messages import OPEN_STATUSES, AlertKind, Severity
from carewatch.settings import Settings
from ingest.validate import Rejection, validate
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
from rules_engine.decisions import CancelTimer, Decision, ScheduleTimer
from rules_engine.detectors.base import ActiveAlert, DueTimer, ElderView
from rules_engine.device_sweep import BACK, OFFLINE
from rules_engine.engine import Engine
from rules_engine.geo import LatLon
from rules_engine.inputs import SWEEP_EVERY_MS
from rules_engine.thresholds import Thresholds, resolve_thresholds
from simulators.days import SimElder, SimMessage

log = logging.getLogger(__name__)

# Kinds whose rule resolves the alert when the condition clears (detectors/clearing.py).
SELF_CLEARING: frozenset[str] = frozenset(
    {"inactivity", "water_none", "water_flow", "device_offline", "low_battery", "off_wrist"}
)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One thing that happened to an alert, as the notifier would learn of it."""

    at_ms: int
    elder_id: str
    alert_id: str
    kind: AlertKind
    action: str  # opened, pending, confirmed, escalated, reminder, cancelled, resolved
    rule: str
    severity: Severity


@dataclass(frozen=True, slots=True)
class SimAlert:
    """An alert row (the columns the view and the evaluation read)."""

    alert: ActiveAlert
    elder_id: str
    opened_ms: int
    open_since_ms: int | None  # when it became 'open' (for the responder)
    updates: int = 0


@dataclass(slots=True)
class SimTimer:
    timer_id: str
    kind: str
    elder_id: str
    due_ms: int
    payload: Mapping[str, object]
    fired: bool = False


class TimerQueue:
    """`rule_timers` in memory: a dict of rows and a heap of (due, id) with lazy deletion
    (a heap entry whose row moved, fired or went is skipped when popped)."""

    def __init__(self) -> None:
        self.rows: dict[str, SimTimer] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._order = 0

    def schedule(self, elder_id: str, d: ScheduleTimer) -> None:
        row = self.rows.get(d.timer_id)
        if row is not None and not d.replace:
            return  # ON CONFLICT DO NOTHING
        self.rows[d.timer_id] = SimTimer(d.timer_id, d.kind, elder_id, d.due_ms, d.payload)
        self._push(d.due_ms, d.timer_id)

    def arm(
        self, timer_id: str, kind: str, elder_id: str, due_ms: int, payload: Mapping[str, object]
    ) -> None:
        """The sweep's INSERT ... ON CONFLICT DO NOTHING."""
        self.schedule(elder_id, ScheduleTimer(timer_id, kind, due_ms, payload))

    def cancel(self, timer_id: str) -> None:
        row = self.rows.get(timer_id)
        if row is not None and not row.fired:
            del self.rows[timer_id]

    def next_due_ms(self) -> int | None:
        while self._heap:
            due, _, timer_id = self._heap[0]
            row = self.rows.get(timer_id)
            if row is not None and not row.fired and row.due_ms == due:
                return due
            heapq.heappop(self._heap)  # stale entry
        return None

    def pop_due(self, now_ms: int) -> SimTimer | None:
        """The earliest unfired timer due by now (not yet marked fired)."""
        due = self.next_due_ms()
        if due is None or due > now_ms:
            return None
        _, _, timer_id = heapq.heappop(self._heap)
        return self.rows[timer_id]

    def _push(self, due_ms: int, timer_id: str) -> None:
        self._order += 1
        heapq.heappush(self._heap, (due_ms, self._order, timer_id))


class _Clock:
    """The injected clock: the device time of what is being decided."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


@dataclass(slots=True)
class Counters:
    messages: int = 0
    rejected: int = 0
    wanted: int = 0
    timers_fired: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


class SimRulesEngine:
    def __init__(
        self,
        elders: Sequence[SimElder],
        settings: Settings,
        engine: Engine,
        *,
        profile_overrides: Mapping[str, Mapping[str, object]] | None = None,
        respond_after_s: float | None = None,
        start_ms: int = 0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.respond_after_ms = None if respond_after_s is None else round(respond_after_s * 1000)
        self.registry: dict[str, DeviceInfo] = {
            device_id: DeviceInfo(device_id, e.elder_id, kind)
            for e in elders
            for kind, device_id in e.devices.items()
        }
        overrides = profile_overrides or {}
        self._elders = {e.elder_id: e for e in elders}
        self._profile = {e.elder_id: dict(overrides.get(e.profile, {})) for e in elders}
        self._thresholds: dict[str, Thresholds] = {
            e.elder_id: resolve_thresholds(settings, self._profile[e.elder_id]) for e in elders
        }
        self.alerts: dict[str, SimAlert] = {}  # by alert id, every status
        self.timers = TimerQueue()
        self.records: list[AlertRecord] = []
        self.counters = Counters()
        self.last_seen: dict[str, int] = {}  # wristband id -> received ms
        self._seen_events: set[str] = set()
        self._clock = _Clock(start_ms)
        self._next_sweep_ms = start_ms
        self._responses: list[tuple[int, str]] = []  # (due, alert id), lazily deleted
        self._alert_ids: dict[str, list[str]] = {}  # elder id -> ids of their alerts

    # --- feeding ---------------------------------------------------------------------

    def run(self, messages: Iterable[SimMessage], end_ms: int) -> None:
        for msg in messages:
            self.feed(msg)
        self.advance(end_ms)

    def feed(self, msg: SimMessage) -> None:
        self.advance(msg.device_time_ms)
        self.counters.messages += 1
        accepted = validate(
            topics.topic(msg.device_id, msg.kind),
            msg.payload,
            self.registry,
            received_ms=msg.device_time_ms,
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        if isinstance(accepted, Rejection):
            self.counters.rejected += 1
            log.warning("simulated message rejected", extra={"reason": accepted.reason})
            return
        event = accepted.event
        if event.device_kind == "wristband":
            seen = self.last_seen.get(event.device_id, 0)
            self.last_seen[event.device_id] = max(seen, accepted.device_update.received_ms)
        if event.id in self._seen_events:
            return  # rules_seen_events
        wanting = self.engine.wanting(event)
        if not wanting:
            return
        if self.engine.needs_profile(event, wanting):
            self.engine.learn(self.view(event.elder_id), event.device_time_ms)
        observed = self.engine.observe(event, wanting)
        if observed:
            self._seen_events.add(event.id)
            self.counters.wanted += 1
            self._clock.now = event.received_ms
            self._decide(
                event.elder_id,
                event.id,
                lambda view: self.engine.decide(observed, view, self._clock.now_ms()),
            )

    def advance(self, now_ms: int) -> None:
        """Fire the sweeps, timers and responses due by now_ms, in time order."""
        while True:
            due = self.timers.next_due_ms()
            candidates = [
                t for t in (due, self._next_sweep_ms, self._next_response_ms()) if t is not None
            ]
            at = min(candidates)
            if at > now_ms:
                break
            self._clock.now = at
            if at == self._next_sweep_ms:
                self._sweep(at)
                self._next_sweep_ms = at + SWEEP_EVERY_MS
            elif at == due:
                timer = self.timers.pop_due(at)
                assert timer is not None
                self._fire(timer)
            else:
                self._respond(at)
        self._clock.now = max(self._clock.now, now_ms)

    # --- the store's transaction ------------------------------------------------------

    def view(self, elder_id: str) -> ElderView:
        elder = self._elders[elder_id]
        rows = (self.alerts[alert_id] for alert_id in self._alert_ids.get(elder_id, ()))
        active: dict[str, ActiveAlert] = {
            a.alert.kind: a.alert for a in rows if a.alert.status in OPEN_STATUSES
        }
        return ElderView(
            elder_id,
            self._thresholds[elder_id],
            active,
            profile_id=elder.profile,
            profile=self._profile[elder_id],
            home=LatLon(*elder.home),
        )

    def _fire(self, timer: SimTimer) -> None:
        due = DueTimer(timer.timer_id, timer.kind, timer.elder_id, timer.due_ms, timer.payload)
        self.counters.timers_fired += 1
        timer.fired = True  # fired_at commits with the effect (or with its dead letter)
        self._decide(
            timer.elder_id,
            timer.timer_id,
            lambda view: self.engine.on_timer(due, view, self._clock.now_ms()),
        )

    def apply_decisions(
        self, elder_id: str, source: str, decisions: Sequence[Decision], at_ms: int
    ) -> None:
        """Apply `decisions` as one transaction at `at_ms`, as if a detector had made them
        (tests/test_decision_contract.py drives every runner with the same batches)."""
        self._clock.now = at_ms
        self._decide(elder_id, source, lambda _view: decisions)

    def _decide(
        self, elder_id: str, source: str, decide: Callable[[ElderView], Sequence[Decision]]
    ) -> None:
        view = self.view(elder_id)
        try:
            decisions: Sequence[Decision] = decide(view)
            staged, records, timer_ops = self._apply(view, decisions)
        except Exception as exc:  # the worker dead-letters it: the whole effect is lost
            self.counters.failed += 1
            self.counters.failures.append(f"{source}: {exc!r}")
            log.warning("decision failed", extra={"source": source, "error": repr(exc)})
            return
        for alert_id, a in staged.items():
            before = self.alerts.get(alert_id)
            if before is None:
                self._alert_ids.setdefault(elder_id, []).append(alert_id)
            if a.open_since_ms is not None and (before is None or before.open_since_ms is None):
                self._awaiting_response(a)
        self.alerts.update(staged)
        self.records.extend(records)
        for op in timer_ops:
            if isinstance(op, ScheduleTimer):
                self.timers.schedule(elder_id, op)
            else:
                self.timers.cancel(op.timer_id)

    def _apply(
        self, view: ElderView, decisions: Sequence[Decision]
    ) -> tuple[dict[str, SimAlert], list[AlertRecord], list[ScheduleTimer | CancelTimer]]:
        """rules_engine.apply decides; its effects go to staged rows, records and timers."""
        now = self._clock.now
        _, effects = apply(AlertState.of(view.active), decisions, now)
        staged: dict[str, SimAlert] = {}
        records: list[AlertRecord] = []
        timer_ops: list[ScheduleTimer | CancelTimer] = []

        def row(alert_id: str) -> SimAlert:
            return staged.get(alert_id) or self.alerts[alert_id]  # no row: the FK fails

        for e in effects:
            match e:
                case Opened(alert=alert, decision=d):
                    if d.alert_id in self.alerts:
                        continue  # a closed alert of that id: ON CONFLICT DO NOTHING
                    since = now if d.status == "open" else None
                    staged[d.alert_id] = SimAlert(alert, view.elder_id, now, since)
                    action = "opened" if d.status == "open" else "pending"
                    records.append(self._record(now, view.elder_id, alert, action, d.rule))
                case Transitioned(after=alert):
                    current = row(alert.alert_id)
                    since = now if alert.status == "open" else current.open_since_ms
                    staged[alert.alert_id] = replace(current, alert=alert, open_since_ms=since)
                    records.append(self._record(now, view.elder_id, alert, e.timeline, e.rule))
                case Renotified(after=alert):
                    staged[alert.alert_id] = replace(row(alert.alert_id), alert=alert)
                    records.append(self._record(now, view.elder_id, alert, e.reason, e.rule))
                case Repeated(decision=d):
                    current = row(d.alert_id)
                    staged[d.alert_id] = replace(current, updates=current.updates + 1)
                case Updated(after=alert):
                    if alert is not None:
                        staged[alert.alert_id] = replace(row(alert.alert_id), alert=alert)
                case Annotated():
                    pass  # a timeline entry only
                case ScheduleTimer() | CancelTimer():
                    timer_ops.append(e)
                case _:
                    assert_never(e)
        return staged, records, timer_ops

    @staticmethod
    def _record(now: int, elder_id: str, alert: ActiveAlert, action: str, rule: str) -> AlertRecord:
        return AlertRecord(now, elder_id, alert.alert_id, alert.kind, action, rule, alert.severity)

    # --- what the timer loop and people do -------------------------------------------

    def _sweep(self, now_ms: int) -> None:
        """device_sweep.sweep: silent wristbands, and offline alerts whose band is back."""
        for device_id, seen_ms in self.last_seen.items():
            elder_id = self.registry[device_id].elder_id
            if seen_ms >= now_ms - self._thresholds[elder_id].device_offline_s * 1000:
                continue
            payload = {"device_id": device_id, "last_seen_ms": seen_ms}
            self.timers.arm(f"{OFFLINE}:{device_id}@{seen_ms}", OFFLINE, elder_id, now_ms, payload)
        for a in self.alerts.values():
            alert = a.alert
            if alert.kind != "device_offline" or alert.status not in ("open", "acknowledged"):
                continue
            seen = self.last_seen.get(alert.device_id or "")
            if seen is None or seen <= alert.device_time_ms:
                continue
            back = {"alert_id": alert.alert_id, "device_id": alert.device_id, "last_seen_ms": seen}
            self.timers.arm(f"{BACK}:{alert.alert_id}", BACK, a.elder_id, now_ms, back)

    def _awaiting_response(self, a: SimAlert) -> None:
        if self.respond_after_ms is not None and a.open_since_ms is not None:
            due = a.open_since_ms + self.respond_after_ms
            heapq.heappush(self._responses, (due, a.alert.alert_id))

    def _next_response_ms(self) -> int | None:
        return self._responses[0][0] if self._responses else None

    def _respond(self, now_ms: int) -> None:
        """Somebody handled an alert open for respond_after_s: a condition its rule
        clears by itself (battery, band, inactivity, water) is acknowledged and left to
        the rule; anything else (a fall, a wander, an SOS) is closed once seen to."""
        _, alert_id = heapq.heappop(self._responses)
        a = self.alerts[alert_id]
        if a.alert.status != "open":
            return  # ended, or already acknowledged
        action: Action = "acknowledge" if a.alert.kind in SELF_CLEARING else "resolve"
        alert = replace(a.alert, status=next_status(a.alert.status, action))
        self.alerts[alert_id] = replace(a, alert=alert)
        name = "acknowledged" if action == "acknowledge" else "closed"
        self.records.append(self._record(now_ms, a.elder_id, alert, name, "responder"))
