"""Wristband health: offline, low battery, off the wrist; reminded until it clears.

- device_offline: the MQTT last will ("offline" status) opens it at once; a band
  silent for longer than `device_offline_s` is found by a sweep of devices.last_seen
  (device_sweep.py, once a minute) that arms a due timer. The band's "online" status,
  or the sweep seeing it heard again, resolves it. Telemetry never needs a write
  to keep a heartbeat.
- low_battery: a reading below `low_battery_pct` opens it; `low_battery_clear_pct` or
  more (charged) resolves it. Only battery changes reach the database.
- off_wrist: worn=false arms `off-wrist:{device_id}`, due once `off_wrist_s` of day
  time (`off_wrist_day_*_h`, local) has passed; worn=true cancels it and resolves.
Every alert here reminds: `device-reminder:{alert_id}:{n}` every `device_reminder_s`
while it is still active publishes a 'reminder' change for the notifier.
One alert per (elder, kind): a second band's trouble folds into the first's alert,
and only the band that opened an alert resolves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from carewatch.messages import AlertKind, Event
from rules_engine.decisions import (
    CancelTimer,
    Decision,
    OpenAlert,
    RenotifyAlert,
    ScheduleTimer,
    alert_id_for,
)
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.clearing import resolve_if_active
from rules_engine.detectors.memo import ValueMemo
from rules_engine.device_sweep import BACK, OFFLINE
from rules_engine.fields import is_integer
from rules_engine.localtime import SITE_TZ, after_window_time
from rules_engine.thresholds import Thresholds

OFF_WRIST = "off-wrist"
REMINDER = "device-reminder"


def _battery(event: Event) -> int | None:
    raw = event.data.get("battery")
    return raw if is_integer(raw) else None


def _worn(event: Event) -> bool | None:
    raw = event.data.get("worn") if event.type == "telemetry" else None
    return raw if isinstance(raw, bool) else None


@dataclass(frozen=True, slots=True)
class HealthSeen:
    event: Event
    worn_before: bool | None  # the band's previous worn report (None: unknown)


class DeviceHealthDetector(Detector[HealthSeen]):
    """Silence is found outside the detector (rules_engine.inputs: device_sweep arms the
    timers); this detector decides on statuses, battery, worn and those timers."""

    timer_kinds = frozenset({OFFLINE, BACK, OFF_WRIST, REMINDER})
    telemetry_fields = frozenset({"battery", "worn"})  # _battery(), _worn()

    def __init__(self, tz: ZoneInfo = SITE_TZ) -> None:
        self.tz = tz
        self._battery: ValueMemo[int] = ValueMemo()
        self._worn: ValueMemo[bool] = ValueMemo()

    def wants(self, event: Event) -> bool:
        if event.device_kind != "wristband":
            return False
        if event.type == "status":
            return True
        data = event.data  # _battery(event) or _worn(event) is not None, inline: hot
        return type(data.get("battery")) is int or (
            event.type == "telemetry" and type(data.get("worn")) is bool
        )

    def observe(self, event: Event, known: ElderView | None) -> HealthSeen | None:
        """Statuses always (rare: online/offline transitions); battery and worn when they
        change."""
        battery, worn = _battery(event), _worn(event)
        device = event.device_id
        changed = battery is not None and self._battery.swap(device, battery) != battery
        worn_before: bool | None = None
        if worn is not None:
            worn_before = self._worn.swap(device, worn)
            changed = changed or worn_before != worn
        if event.type != "status" and not changed:
            return None
        return HealthSeen(event, worn_before)

    def decide(self, seen: HealthSeen, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        event = seen.event
        th = elder.thresholds
        decisions: list[Decision] = []
        device = event.device_id
        if event.type == "status" and event.state == "offline":
            decisions += self._open(elder, "device_offline", "device.last_will", event, th, now_ms)
        elif event.type == "status":
            decisions += resolve_if_active(
                elder, "device_offline", "device.back_online", event.id, device_id=device
            )
        battery = _battery(event)
        if battery is not None:
            if battery < th.low_battery_pct:
                decisions += self._open(
                    elder, "low_battery", "device.low_battery", event, th, now_ms
                )
            elif battery >= th.low_battery_clear_pct:
                decisions += resolve_if_active(
                    elder, "low_battery", "device.charged", event.id, device_id=device
                )
        worn = _worn(event)
        if worn is not None:
            if worn:
                decisions.append(CancelTimer(f"{OFF_WRIST}:{device}"))
                decisions += resolve_if_active(
                    elder, "off_wrist", "device.worn_again", event.id, device_id=device
                )
            else:
                at = min(event.device_time_ms, event.received_ms)
                due = after_window_time(
                    at,
                    round(th.off_wrist_s * 1000),
                    th.off_wrist_day_start_h,
                    th.off_wrist_day_end_h,
                    self.tz,
                )
                payload2 = {"device_id": device, "since_ms": at}
                fresh = seen.worn_before is True  # taken off now; unknown: keep a running one
                decisions.append(
                    ScheduleTimer(f"{OFF_WRIST}:{device}", OFF_WRIST, due, payload2, fresh)
                )
        return decisions

    def _open(
        self,
        elder: ElderView,
        kind: AlertKind,
        rule: str,
        event: Event,
        th: Thresholds,
        now_ms: int,
    ) -> list[Decision]:
        if kind in elder.active:
            return []  # still the same trouble: the reminders carry it
        threshold = _threshold(kind, th)
        alert_id = alert_id_for(kind, event.id)
        return [
            OpenAlert(
                alert_id=alert_id,
                kind=kind,
                severity="warning",
                status="open",
                rule=rule,
                threshold=threshold,
                confidence=None,
                device_id=event.device_id,
                source_event_id=event.id,
                device_time_ms=event.device_time_ms,
                details={"battery": _battery(event)} if kind == "low_battery" else {},
            ),
            _reminder(alert_id, kind, 1, now_ms, th),
        ]

    def on_timer(self, timer: DueTimer, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        th = elder.thresholds
        if timer.kind == REMINDER:
            return self._remind(timer, elder, now_ms, th)
        if timer.kind == BACK:
            active = elder.active.get("device_offline")
            if active is None or active.alert_id != timer.payload.get("alert_id"):
                return ()
            details = {"last_seen_ms": timer.payload.get("last_seen_ms")}
            device = timer.payload.get("device_id")
            return resolve_if_active(
                elder,
                "device_offline",
                "device.heard_again",
                timer.timer_id,
                device_id=device if isinstance(device, str) else None,
                details=details,
            )
        kind: AlertKind = "device_offline" if timer.kind == OFFLINE else "off_wrist"
        if kind in elder.active:
            return ()
        device = timer.payload.get("device_id")
        source_id = f"{timer.timer_id}@{timer.due_ms}"
        alert_id = alert_id_for(kind, source_id)
        rule = "device.silent" if kind == "device_offline" else "device.off_wrist"
        return [
            OpenAlert(
                alert_id=alert_id,
                kind=kind,
                severity="warning",
                status="open",
                rule=rule,
                threshold=_threshold(kind, th),
                confidence=None,
                device_id=device if isinstance(device, str) else None,
                source_event_id=source_id,
                device_time_ms=timer.due_ms,
                details=dict(timer.payload),
            ),
            _reminder(alert_id, kind, 1, now_ms, th),
        ]

    def _remind(
        self, timer: DueTimer, elder: ElderView, now_ms: int, th: Thresholds
    ) -> Sequence[Decision]:
        kind = timer.payload.get("kind")
        n = timer.payload.get("n")
        active = elder.active.get(kind) if isinstance(kind, str) else None
        if active is None or active.alert_id != timer.payload.get("alert_id"):
            return ()  # resolved (or replaced): the reminders end with it
        count = n if isinstance(n, int) else 1
        return [
            RenotifyAlert(
                active.alert_id,
                active.kind,
                "reminder",
                f"{active.kind}.reminder",
                timer.timer_id,
                details={"n": count},
            ),
            _reminder(active.alert_id, active.kind, count + 1, now_ms, th),
        ]


def _reminder(alert_id: str, kind: AlertKind, n: int, now_ms: int, th: Thresholds) -> ScheduleTimer:
    return ScheduleTimer(
        f"{REMINDER}:{alert_id}:{n}",
        REMINDER,
        now_ms + round(th.device_reminder_s * 1000),
        {"alert_id": alert_id, "kind": kind, "n": n},
    )


def _threshold(kind: AlertKind, th: Thresholds) -> dict[str, float]:
    if kind == "device_offline":
        return {"device_offline_s": th.device_offline_s}
    if kind == "low_battery":
        return {
            "low_battery_pct": th.low_battery_pct,
            "low_battery_clear_pct": th.low_battery_clear_pct,
        }
    return {"off_wrist_s": th.off_wrist_s}
