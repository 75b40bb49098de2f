"""Device-reported falls (wristband fall flag, radar fall flag), with a confirmation window.

Opening and confirming go through rules_engine.detectors.fall.fusion, which the
accelerometer detector shares: several sources fold into one alert, and stillness
during the window raises the confidence.

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
from rules_engine.decisions import Annotate, CancelAlert, CancelTimer, Decision
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.fall.fusion import (
    SOURCE_CONFIDENCE,
    TIMER_KIND,
    confirm,
    confirm_timer_id,
    flag_source,
    open_or_fuse,
)

RULE_FLAG = "fall.device_flag"
RULE_CANCEL = "fall.cancel"
FALL_DEVICE_KINDS = frozenset({"wristband", "radar"})


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
        source = flag_source(event)
        return open_or_fuse(
            event,
            elder,
            clock,
            source=source,
            rule=RULE_FLAG,
            confidence=SOURCE_CONFIDENCE[source],
            threshold={"fall_confirm_window_s": elder.thresholds.fall_confirm_window_s},
        )

    def on_timer(self, timer: DueTimer, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        active = elder.active.get("fall")
        if active is None or active.alert_id != timer.payload.get("alert_id"):
            return []  # cancelled or closed meanwhile: nothing to confirm
        if active.status != "pending":
            return []
        return [confirm(active, timer.timer_id)]
