"""Device-reported falls (wristband fall flag, radar fall flag), with a confirmation window.

A fall opens a 'pending' alert and a durable timer at +fall_confirm_window_s (server
time: device clocks drift, and the timer must fire even if the device goes silent).
"I'm OK" (fall_cancel) before the timer fires cancels it and nobody is notified; the
timer firing confirms it ('open'). A zero window opens the alert at once. The cancel
may come from any of the elder's devices: a radar has no button, the wristband does.
"""

from __future__ import annotations

from collections.abc import Sequence

from carewatch.clock import Clock
from carewatch.messages import Event
from rules_engine.decisions import (
    Annotate,
    CancelAlert,
    CancelTimer,
    ConfirmAlert,
    Decision,
    OpenAlert,
    ScheduleTimer,
)
from rules_engine.detectors.base import Detector, DueTimer, ElderView, open_or_repeat

RULE_FLAG = "fall.device_flag"
RULE_CANCEL = "fall.cancel"
RULE_CONFIRM = "fall.confirm_window"
TIMER_KIND = "fall-confirm"
FALL_DEVICE_KINDS = frozenset({"wristband", "radar"})


def confirm_timer_id(alert_id: str) -> str:
    return f"{TIMER_KIND}:{alert_id}"


class DeviceFallDetector(Detector):
    timer_kinds = frozenset({TIMER_KIND})

    def wants(self, event: Event) -> bool:
        if event.type != "event":
            return False
        if event.event == "fall":
            return event.device_kind in FALL_DEVICE_KINDS
        return event.event == "fall_cancel"

    def on_event(self, event: Event, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        if event.event == "fall":
            return self._on_fall(event, elder, clock)
        active = elder.active.get("fall")
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

    def _on_fall(self, event: Event, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        window_ms = elder.thresholds.fall_confirm_window_ms
        decision = open_or_repeat(
            event,
            elder,
            kind="fall",
            severity="critical",
            status="pending" if window_ms > 0 else "open",
            rule=RULE_FLAG,
            threshold={"fall_confirm_window_s": elder.thresholds.fall_confirm_window_s},
        )
        if not isinstance(decision, OpenAlert) or decision.status == "open":
            return [decision]
        timer = ScheduleTimer(
            timer_id=confirm_timer_id(decision.alert_id),
            kind=TIMER_KIND,
            due_ms=clock.now_ms() + window_ms,
            payload={"alert_id": decision.alert_id},
        )
        return [decision, timer]

    def on_timer(self, timer: DueTimer, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        active = elder.active.get("fall")
        if active is None or active.alert_id != timer.payload.get("alert_id"):
            return []  # cancelled or closed meanwhile: nothing to confirm
        if active.status != "pending":
            return []
        return [ConfirmAlert(active.alert_id, "fall", RULE_CONFIRM, cause=timer.timer_id)]
