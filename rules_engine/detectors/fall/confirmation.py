"""Confirmation of a pending fall: the durable timer `fall-confirm:{alert_id}` (fusion.py
arms it when it opens the pending alert) at
+fall_confirm_window_s (server time: device clocks drift, and the timer must fire even
if the device goes silent), and what it decides when it fires.

Stillness (no movement recorded during the window) raises the confidence once more; a
fall seen only by the accelerometer and followed by walking is cancelled
("fall.moved_normally"); otherwise the fall is confirmed ('open').
"""

from __future__ import annotations

from rules_engine.decisions import CancelAlert, ConfirmAlert
from rules_engine.detectors.base import ActiveAlert
from rules_engine.detectors.fall.fusion import ACCEL_SOURCE, fuse, sources_of

RULE_CONFIRM = "fall.confirm_window"
RULE_MOVED = "fall.moved_normally"
STILLNESS_CONFIDENCE = 0.5  # no movement during the confirmation window


def confirm(active: ActiveAlert, timer_id: str) -> ConfirmAlert | CancelAlert:
    """The confirmation window ran out: stillness (no recorded movement) raises the
    confidence; movement leaves it as the sources made it; an accelerometer-only fall
    followed by walking is cancelled (moved normally afterwards)."""
    walked = active.details.get("walked")
    if walked and set(sources_of(active)) == {ACCEL_SOURCE}:
        details = {"reason": "moved_normally_afterwards", "walked": walked}
        return CancelAlert(active.alert_id, "fall", RULE_MOVED, timer_id, details)
    moved = active.details.get("moved")
    if moved:
        return ConfirmAlert(
            active.alert_id, "fall", RULE_CONFIRM, timer_id, details={"moved": True}
        )
    raised = fuse(active.confidence, STILLNESS_CONFIDENCE)
    return ConfirmAlert(
        active.alert_id, "fall", RULE_CONFIRM, timer_id, raised, details={"moved": False}
    )
