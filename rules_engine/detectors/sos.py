"""SOS key: a critical alert at once; the same device may cancel it within a grace window.

The window is measured in device time (press to cancel), both ends inclusive, so a
cancel delayed by the network still counts if the elder pressed it in time. A cancel
after the window, from another device, or on an alert a human already acknowledged
only goes into the timeline: somebody is, or should be, on the way.
"""

from __future__ import annotations

from collections.abc import Sequence

from carewatch.messages import Event
from rules_engine.decisions import Annotate, CancelAlert, Decision
from rules_engine.detectors.base import ElderView, EventDetector, open_or_repeat

RULE_PRESS = "sos.press"
RULE_CANCEL = "sos.cancel"


class SosDetector(EventDetector):
    def wants(self, event: Event) -> bool:
        return event.type == "event" and event.event in ("sos", "sos_cancel")

    def decide(self, event: Event, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        window_s = elder.thresholds.sos_cancel_window_s
        if event.event == "sos":
            return [
                open_or_repeat(
                    event,
                    elder,
                    kind="sos",
                    severity="critical",
                    status="open",
                    rule=RULE_PRESS,
                    threshold={"sos_cancel_window_s": window_s},
                    confidence=1.0,  # a deliberate press
                )
            ]
        active = elder.active.get("sos")
        if active is None:
            return []  # nothing to cancel (already closed, or never opened)
        elapsed_ms = event.device_time_ms - active.device_time_ms
        details: dict[str, object] = {
            "event_id": event.id,
            "device_id": event.device_id,
            "elapsed_ms": elapsed_ms,
            "window_ms": elder.thresholds.sos_cancel_window_ms,
        }
        reason = None
        if event.device_id != active.device_id:
            reason = "other_device"
        elif active.status != "open":
            reason = f"alert_{active.status}"
        elif not 0 <= elapsed_ms <= elder.thresholds.sos_cancel_window_ms:
            reason = "outside_window"
        if reason is not None:
            return [Annotate(active.alert_id, "cancel_ignored", {**details, "reason": reason})]
        return [CancelAlert(active.alert_id, "sos", RULE_CANCEL, event.id, details)]
