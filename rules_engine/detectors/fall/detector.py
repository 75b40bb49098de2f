"""The fall detector: the one owner of the 'fall' alert kind and its confirmation timer.

Sources, fused into one alert (fusion.py): the wristband's and the radar's fall flags
(device events), and the server-side accelerometer model on wristband windows
(accel.py, signal_model.py). A fall opens a 'pending' alert and a durable timer at
+fall_confirm_window_s (confirmation.py). "I'm OK" (fall_cancel) before the timer fires
cancels it and nobody is notified; the timer firing confirms it ('open'). A zero window
opens the alert at once. The cancel may come from any of the elder's devices: a radar
has no button, the wristband does. Movement after a fall (motion, rising steps from any
of the elder's devices) is recorded on the pending alert and weighs in at the timer.

State (this worker's memory, one owner per events shard): the accelerometer models per
device, the elders with a recent fall and the last step count per device; `observe`
changes it once per event, `decide` and `on_timer` only read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from carewatch.messages import Event
from rules_engine.decisions import Annotate, CancelAlert, CancelTimer, Decision
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.fall.accel import (
    AccelFall,
    AccelSource,
    accel_decisions,
    is_accel_window,
)
from rules_engine.detectors.fall.confirmation import confirm
from rules_engine.detectors.fall.fusion import (
    SOURCE_CONFIDENCE,
    TIMER_KIND,
    Movement,
    MovementWatch,
    RecentFalls,
    confirm_timer_id,
    flag_source,
    is_movement_sample,
    movement_decisions,
    open_or_fuse,
)

RULE_FLAG = "fall.device_flag"
RULE_CANCEL = "fall.cancel"
FALL_DEVICE_KINDS = frozenset({"wristband", "radar"})


@dataclass(frozen=True, slots=True)
class FallSeen:
    """What one event told the fall detector."""

    event: Event
    flag: bool = False  # a wristband / radar fall flag
    cancel: bool = False  # "I'm OK"
    accel: AccelFall | None = None
    movement: Movement | None = None


class FallDetector(Detector[FallSeen]):
    timer_kinds = frozenset({TIMER_KIND})

    def __init__(self) -> None:
        self._recent = RecentFalls()
        self._accel = AccelSource()
        self._movement = MovementWatch(self._recent)

    def wants(self, event: Event) -> bool:
        if event.type == "event":
            return event.event in ("fall", "fall_cancel")
        return event.type == "telemetry" and (is_accel_window(event) or is_movement_sample(event))

    def uses_profile(self, event: Event) -> bool:
        return is_accel_window(event)  # the model's thresholds are the care profile's

    def observe(self, event: Event, known: ElderView | None) -> FallSeen | None:
        if event.type == "event":
            if event.event == "fall_cancel":
                return FallSeen(event, cancel=True)
            self._recent.saw_fall(event.elder_id, event.device_time_ms)  # any device's
            return FallSeen(event, flag=True) if event.device_kind in FALL_DEVICE_KINDS else None
        accel = self._accel.observe(event, known) if is_accel_window(event) else None
        movement = self._movement.observe(event)
        if accel is not None:
            self._recent.saw_fall(event.elder_id, event.device_time_ms)
        if accel is None and movement is None:
            return None
        return FallSeen(event, accel=accel, movement=movement)

    def decide(self, seen: FallSeen, view: ElderView, now_ms: int) -> Sequence[Decision]:
        event = seen.event
        if seen.flag:
            source = flag_source(event)
            return open_or_fuse(
                event,
                view,
                now_ms,
                source=source,
                rule=RULE_FLAG,
                confidence=SOURCE_CONFIDENCE[source],
                threshold={"fall_confirm_window_s": view.thresholds.fall_confirm_window_s},
            )
        if seen.cancel:
            return _cancel(event, view)
        decisions: list[Decision] = []
        if seen.accel is not None:
            decisions += accel_decisions(event, seen.accel, view, now_ms)
        if seen.movement is not None:
            decisions += movement_decisions(event, seen.movement, view)
        return decisions

    def on_timer(self, timer: DueTimer, view: ElderView, now_ms: int) -> Sequence[Decision]:
        active = view.active.get("fall")
        if active is None or active.alert_id != timer.payload.get("alert_id"):
            return []  # cancelled or closed meanwhile: nothing to confirm
        if active.status != "pending":
            return []
        return [confirm(active, timer.timer_id)]


def _cancel(event: Event, view: ElderView) -> list[Decision]:
    active = view.active.get("fall")
    if active is None:
        return []
    details: dict[str, object] = {"event_id": event.id, "device_id": event.device_id}
    if active.status != "pending":
        # already confirmed: people are on the way; a human closes it
        reason = f"alert_{active.status}"
        return [Annotate(active.alert_id, "cancel_ignored", {**details, "reason": reason})]
    return [
        CancelAlert(active.alert_id, "fall", RULE_CANCEL, event.id, details),
        CancelTimer(confirm_timer_id(active.alert_id)),
    ]
