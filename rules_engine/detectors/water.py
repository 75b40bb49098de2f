"""Water-meter rules used by Chinese communities for elders who live alone.

- water_none: no use (flow above WATER_USE_MIN_LPM) for `water_none_s` (12 h): a
  sliding durable timer `water-none:{elder_id}`, pushed back by every use (throttled
  like inactivity) and first armed by the first meter reading this worker sees.
- water_flow: flow above `flow_lpm` (0.5 L/min) on every reading for `water_flow_s`
  (60 min): `water-flow:{elder_id}` is armed when a run starts and cancelled by the
  first reading at or below the rate (a break), which also resolves the alert.
Both open as 'warning'; use again resolves water_none. Only band changes reach the
database (memo.ValueMemo), plus uses that move the no-use deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from carewatch.messages import AlertKind, Event
from rules_engine.decisions import (
    CancelTimer,
    Decision,
    OpenAlert,
    ScheduleTimer,
    alert_id_for,
)
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.clearing import resolve_if_active
from rules_engine.detectors.inactivity import sign_time
from rules_engine.detectors.memo import DeadlineMemo, ValueMemo
from rules_engine.fields import is_number
from rules_engine.routine import WATER_USE_MIN_LPM

NONE = "water-none"
FLOW = "water-flow"
FLOW_LPM = 0.5


def _flow(event: Event) -> float | None:
    if event.type != "telemetry" or event.device_kind != "water_meter":
        return None
    raw = event.data.get("water_flow")
    return float(raw) if is_number(raw) else None


@dataclass(frozen=True, slots=True)
class WaterSeen:
    event: Event
    in_use: bool
    over: bool  # over the continuous-flow rate
    previously_over: bool | None  # None: this worker had not seen the meter


class WaterDetector(Detector[WaterSeen]):
    timer_kinds = frozenset({NONE, FLOW})
    telemetry_fields = frozenset({"water_flow"})  # _flow()

    def __init__(self, flow_lpm: float = FLOW_LPM, use_min_lpm: float = WATER_USE_MIN_LPM) -> None:
        self.flow_lpm = flow_lpm
        self.use_min_lpm = use_min_lpm
        self._band: ValueMemo[tuple[bool, bool]] = ValueMemo()  # (in use, over the rate)
        self._written = DeadlineMemo()

    def wants(self, event: Event) -> bool:
        return _flow(event) is not None

    def uses_profile(self, event: Event) -> bool:
        flow = _flow(event)
        return flow is not None and flow > self.use_min_lpm  # water_none_s, for the memory

    def observe(self, event: Event, known: ElderView | None) -> WaterSeen | None:
        """Band changes, and uses that move the no-use deadline by the slack or more."""
        flow = _flow(event)
        if flow is None:
            return None
        band = (flow > self.use_min_lpm, flow > self.flow_lpm)
        previous = self._band.swap(event.device_id, band)
        in_use, over = band
        previously_over = previous[1] if previous is not None else None
        at = sign_time(event)
        if previous == band and not (in_use and self._written.worth_writing(event.elder_id, at)):
            return None
        if in_use and known is not None:
            none_due = at + round(known.thresholds.water_none_s * 1000)
            self._written.wrote(event.elder_id, at, none_due)
        return WaterSeen(event, in_use, over, previously_over)

    def decide(self, seen: WaterSeen, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        event, in_use, over, previously_over = (
            seen.event,
            seen.in_use,
            seen.over,
            seen.previously_over,
        )
        th = elder.thresholds
        at = sign_time(event)
        payload: dict[str, object] = {"device_id": event.device_id, "since_ms": at}
        decisions: list[Decision] = []
        none_due = at + round(th.water_none_s * 1000)
        if in_use:
            decisions.append(
                ScheduleTimer(f"{NONE}:{elder.elder_id}", NONE, none_due, payload, replace=True)
            )
            decisions += resolve_if_active(elder, "water_none", "water.use_again", event.id)
        else:  # a meter is here: arm the no-use deadline unless one is running
            decisions.append(ScheduleTimer(f"{NONE}:{elder.elder_id}", NONE, none_due, payload))
        flow_timer = f"{FLOW}:{elder.elder_id}"
        if over:
            # a fresh run restarts the count; after a restart (unknown) keep the running one
            due = at + round(th.water_flow_s * 1000)
            fresh = previously_over is False
            decisions.append(ScheduleTimer(flow_timer, FLOW, due, payload, replace=fresh))
        else:
            decisions.append(CancelTimer(flow_timer))
            decisions += resolve_if_active(elder, "water_flow", "water.flow_stopped", event.id)
        return decisions

    def on_timer(self, timer: DueTimer, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        kind: AlertKind = "water_none" if timer.kind == NONE else "water_flow"
        if kind in elder.active:
            return ()
        th = elder.thresholds
        if kind == "water_none":
            rule, threshold = "water.none", {"water_none_s": th.water_none_s}
        else:
            rule = "water.continuous_flow"
            threshold = {"water_flow_s": th.water_flow_s, "water_flow_lpm": self.flow_lpm}
        device = timer.payload.get("device_id")
        source_id = f"{timer.timer_id}@{timer.due_ms}"
        return [
            OpenAlert(
                alert_id=alert_id_for(kind, source_id),
                kind=kind,
                severity="warning",
                status="open",
                rule=rule,
                threshold=threshold,
                confidence=None,
                device_id=device if isinstance(device, str) else None,
                source_event_id=source_id,
                device_time_ms=timer.due_ms,
                details={"since_ms": timer.payload.get("since_ms")},
            )
        ]
