"""A fall seen by several sources is one alert; what the elder does next changes its weight.

Fusion: the wristband's fall flag, the radar's fall flag and the server-side
accelerometer detection all open (or fold into) the elder's one 'fall' alert. Each
source is recorded once in the alert's details ("sources") and timeline; a second,
different source within `fall_fusion_window_s` (device time) of the alert's fall raises
the confidence by noisy-OR, 1 - (1 - c_alert) * (1 - c_source): independent detectors
agreeing make a false alarm much less likely. A source arriving later is a repeat.

Correlation: a fallen person who does not get up is the dangerous case. Movement from
any of the elder's devices (PIR/radar motion, wristband steps going up) after the fall
and before the confirmation timer is recorded on the pending alert ("moved"; steps also
as "walked"); when the timer confirms an alert without movement, the confidence is
raised again (stillness as one more independent source) and it stays critical.

Movement does not cancel a fall a device flagged: only "I'm OK" does (detector.py),
because a person can crawl and still need help. A fall seen ONLY by the server-side
accelerometer that is followed by walking (steps counted between two reports after it)
is cancelled at the timer instead (confirmation.py, kept as a cancelled alert):
the accelerometer alone false-alarms on hard hits such as clapping, and someone who
walks on did not stay down. PIR motion alone does not cancel it (crawling, a visitor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from carewatch.messages import Event
from rules_engine.decisions import (
    Decision,
    OpenAlert,
    RepeatAlert,
    ScheduleTimer,
    UpdateAlert,
    alert_id_for,
)
from rules_engine.detectors.base import ActiveAlert, ElderView
from rules_engine.fields import is_integer

TIMER_KIND = "fall-confirm"  # the confirmation timer a pending fall opens with
ACCEL_SOURCE = "accel"  # the accelerometer detector's source name
Movement = Literal["motion", "steps"]

# Prior confidence of each source on its own. Consumer wristband and radar fall flags
# have high false-alarm rates in daily use (sitting down hard, dropping the arm), so
# they count as a coin toss that leans to a fall; the accelerometer detector reports its
# own per-detection confidence.
SOURCE_CONFIDENCE = {"wristband_flag": 0.6, "radar_flag": 0.6}
FALL_HINT_MS = 10 * 60 * 1000  # how long after a fall movement is worth a transaction


def confirm_timer_id(alert_id: str) -> str:
    return f"{TIMER_KIND}:{alert_id}"


def fuse(*confidences: float | None) -> float:
    """Noisy-OR of independent sources (None counts as no evidence)."""
    miss = 1.0
    for c in confidences:
        miss *= 1.0 - min(1.0, max(0.0, c or 0.0))
    return round(1.0 - miss, 3)


def flag_source(event: Event) -> str:
    return "radar_flag" if event.device_kind == "radar" else "wristband_flag"


def open_or_fuse(
    event: Event,
    elder: ElderView,
    now_ms: int,
    *,
    source: str,
    rule: str,
    confidence: float,
    threshold: Mapping[str, float],
    details: Mapping[str, object] | None = None,
    confirm_window_s: float | None = None,
) -> list[Decision]:
    """Open a pending fall with its confirmation timer (`confirm_window_s`, default the
    elder's fall_confirm_window_s), or fold this source into the elder's active fall
    (raising its confidence when a new source agrees in time)."""
    entry: dict[str, object] = {
        "event_id": event.id,
        "device_id": event.device_id,
        "device_time_ms": event.device_time_ms,
        "confidence": confidence,
        "rule": rule,
        **(details or {}),
    }
    active = elder.active.get("fall")
    if active is None:
        window_s = elder.thresholds.fall_confirm_window_s
        if confirm_window_s is not None and window_s > 0:  # 0: the profile wants no wait
            window_s = confirm_window_s
        opening = _Opening(source, rule, confidence, threshold, entry, round(window_s * 1000))
        return _open(event, now_ms, opening)
    repeat = RepeatAlert(
        alert_id=active.alert_id,
        kind="fall",
        source_event_id=event.id,
        device_id=event.device_id,
        device_time_ms=event.device_time_ms,
    )
    sources = dict(sources_of(active))
    window_ms = elder.thresholds.fall_fusion_window_ms
    if source in sources or abs(event.device_time_ms - active.device_time_ms) > window_ms:
        return [repeat]
    sources[source] = entry
    fused = fuse(active.confidence, confidence)
    return [repeat, UpdateAlert(active.alert_id, "source_agreed", fused, {"sources": sources})]


@dataclass(frozen=True, slots=True)
class _Opening:
    source: str
    rule: str
    confidence: float
    threshold: Mapping[str, float]
    entry: Mapping[str, object]
    window_ms: int


def _open(event: Event, now_ms: int, o: _Opening) -> list[Decision]:
    window_ms = o.window_ms
    opened = OpenAlert(
        alert_id=alert_id_for("fall", event.id),
        kind="fall",
        severity="critical",
        status="pending" if window_ms > 0 else "open",
        rule=o.rule,
        threshold=o.threshold,
        confidence=o.confidence,
        device_id=event.device_id,
        source_event_id=event.id,
        device_time_ms=event.device_time_ms,
        details={"sources": {o.source: dict(o.entry)}},
    )
    if opened.status == "open":
        return [opened]
    timer = ScheduleTimer(
        timer_id=confirm_timer_id(opened.alert_id),
        kind=TIMER_KIND,
        due_ms=now_ms + window_ms,
        payload={"alert_id": opened.alert_id},
    )
    return [opened, timer]


def sources_of(active: ActiveAlert) -> Mapping[str, object]:
    sources = active.details.get("sources")
    return sources if isinstance(sources, Mapping) else {}


# --- movement after a fall -----------------------------------------------------------


class RecentFalls:
    """Elders with a fall in the last minutes (device time), so that movement telemetry
    touches the database only when it matters.

    In memory: after a restart, movement during a fall's window is not recorded and the
    alert is confirmed as still, with the raised confidence. It was critical already and
    is confirmed either way, so the loss only overstates the confidence of that one fall.
    """

    def __init__(self) -> None:
        self.falls: dict[str, int] = {}  # elder -> device time of the latest fall

    def saw_fall(self, elder_id: str, device_ms: int) -> None:
        self.falls[elder_id] = max(device_ms, self.falls.get(elder_id, device_ms))

    def fell_at(self, elder_id: str, device_ms: int) -> int | None:
        """When the elder's recent fall happened, if `device_ms` is within the hint."""
        at = self.falls.get(elder_id)
        if at is None:
            return None
        if device_ms - at > FALL_HINT_MS:
            del self.falls[elder_id]
            return None
        return at if device_ms >= at else None


def is_movement_sample(event: Event) -> bool:
    """Telemetry that may show movement: motion, or a step counter."""
    return event.data.get("motion") is True or is_integer(event.data.get("steps"))


class MovementWatch:
    """Movement (motion, rising steps) after an elder's recent fall, per device."""

    def __init__(self, recent: RecentFalls) -> None:
        self._recent = recent
        self._last_steps: dict[str, tuple[int, int]] = {}  # device -> (device ms, steps)

    def observe(self, event: Event) -> Movement | None:
        """Motion, or steps counted between two samples both taken after the fall (the
        counter is cumulative: the first rise after a fall may be the walk before it)."""
        fell_at = self._recent.fell_at(event.elder_id, event.device_time_ms)
        steps = event.data.get("steps")
        last = self._last_steps.get(event.device_id)
        if is_integer(steps):
            if last is not None and event.device_time_ms <= last[0]:
                return None  # late or re-sent sample: says nothing new
            self._last_steps[event.device_id] = (event.device_time_ms, steps)
        if fell_at is None:
            return None
        if event.data.get("motion") is True:
            return "motion"
        if not is_integer(steps) or last is None:
            return None
        return "steps" if last[0] >= fell_at and steps > last[1] else None


def movement_decisions(event: Event, how: Movement, elder: ElderView) -> list[Decision]:
    """Record movement on the elder's pending fall: the first movement as "moved", the
    first steps as "walked"."""
    active = elder.active.get("fall")
    if active is None or active.status != "pending":
        return []
    if event.device_time_ms < active.device_time_ms:
        return []  # movement before the fall says nothing about after it
    seen = {"event_id": event.id, "device_id": event.device_id, "how": how}
    news: dict[str, object] = {}
    if not active.details.get("moved"):
        news["moved"] = seen
    if how == "steps" and not active.details.get("walked"):
        news["walked"] = seen
    if not news:
        return []
    return [UpdateAlert(active.alert_id, "movement", None, news)]
