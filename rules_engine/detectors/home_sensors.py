"""Home-sensor health: a door contact or motion sensor that goes silent or sticks.

Every home sensor kind has an expected reporting pattern (`EXPECTED`): how long it may
stay silent while the elder is visibly at home, and how long it may hold an active state
(motion on, door open) without another report. Home sensors report on change, so silence
is judged when another of the elder's sensors reports: the elder is at home and moving,
and this sensor has said nothing for longer than its kind allows (a motion sensor 48 h,
the front door 72 h: weekly outings with a dead contact used to look like emergencies).
A sensor with a heartbeat (the simulated PIR every 15 min, the door every hour) is held
to the same allowances (see the Roadmap in docs/inactivity.md).

A silent or stuck sensor opens a `device_offline` alert (rule `device.home_sensor_silent`
or `device.home_sensor_stuck`, with the device, its kind and room in the details), reminded
every `device_reminder_s` like a wristband's (device_health's reminder timers); its next
report resolves it. One device alert per elder: a second broken sensor folds into the
first one's alert until it is resolved.

While such an alert is active the inactivity rule says so in its alerts (`sensors_down`
in the details, and the context text), and a gap that starts at the entrance while the
door contact is down is treated as a possible outing (the out-of-home ceiling), not
fired blind at the still threshold (detectors/inactivity.py).

State is this worker's memory of the last report per sensor, rebuilt from the store: the
first time this process hears from an elder, the worker's edge (rules_engine.inputs)
reads the last stored report of each of the elder's home sensors (telemetry of the last `RECALL_DAYS`, else the device's
`last_seen`), so a sensor that never reports again after a restart is still found.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from carewatch.messages import Event
from rules_engine.decisions import Decision, OpenAlert, alert_id_for
from rules_engine.detectors.base import Detector, ElderView
from rules_engine.detectors.clearing import resolve_if_active
from rules_engine.detectors.device_health import _reminder
from rules_engine.home_routine import RoomBook

H = 3600.0
SILENT_RULE = "device.home_sensor_silent"
STUCK_RULE = "device.home_sensor_stuck"
BACK_RULE = "device.home_sensor_back"
HOME_RULES = frozenset({SILENT_RULE, STUCK_RULE})


SENSOR_LABELS: Mapping[str, str] = {"pir": "人体感应器", "door": "门磁", "contact": "门窗磁"}


@dataclass(frozen=True, slots=True)
class Expected:
    silent_s: float | None  # longest silence while the elder is active at home
    stuck_s: float | None  # longest hold of an active state (motion on, open)


EXPECTED: Mapping[str, Expected] = {
    "pir": Expected(48 * H, 4 * H),
    "door": Expected(72 * H, 12 * H),
    # a cupboard or closet may go unused for weeks: only a contact held open is trouble
    "contact": Expected(None, 24 * H),
}  # light switches, plugs and meters: no expectation (a lamp unused for weeks is normal)


@dataclass(frozen=True, slots=True)
class Report:
    at_ms: int
    active: bool  # motion on, door/contact open
    event_id: str


@dataclass(frozen=True, slots=True)
class Trouble:
    device_id: str
    kind: str
    rule: str
    since_ms: int  # the sensor's last report
    limit_s: float


def _active_state(event: Event) -> bool | None:
    """The sensor's state in this report, None if it says nothing about it."""
    if event.type == "event":
        return _event_state(event.event)
    if event.type == "telemetry":
        motion = event.data.get("motion")
        return motion if isinstance(motion, bool) else False  # a heartbeat
    return None


def _event_state(name: object) -> bool | None:
    if name in ("door_open", "contact_open", "switch_on"):
        return True
    if name in ("door_close", "contact_close", "switch_off"):
        return False
    return None


def stored_state(data: Mapping[str, object]) -> bool:
    """The state of a stored report (telemetry.data; events are stored as data.event)."""
    if "event" in data:
        return _event_state(data["event"]) is True
    return data.get("motion") is True


RECALL_DAYS = 7  # longer than any kind's allowance (72 h)
RECALL_PER_REFRESH = 20


def troubles(
    reports: Mapping[str, tuple[str, Report]], now_ms: int, reporting: str
) -> list[Trouble]:
    """The elder's sensors that broke their kind's pattern by `now_ms`, judged when
    `reporting` (another sensor of the elder) reports: silent, or stuck active."""
    out: list[Trouble] = []
    for device_id, (kind, last) in sorted(reports.items()):
        expected = EXPECTED.get(kind)
        if expected is None or device_id == reporting:
            continue
        quiet_s = (now_ms - last.at_ms) / 1000
        if last.active and expected.stuck_s is not None and quiet_s > expected.stuck_s:
            out.append(Trouble(device_id, kind, STUCK_RULE, last.at_ms, expected.stuck_s))
        elif expected.silent_s is not None and quiet_s > expected.silent_s:
            out.append(Trouble(device_id, kind, SILENT_RULE, last.at_ms, expected.silent_s))
    return out


@dataclass(frozen=True, slots=True)
class SensorsSeen:
    event: Event
    found: tuple[Trouble, ...]  # the elder's sensors in trouble, as of this report


class HomeSensorHealthDetector(Detector[SensorsSeen]):
    """Decides over this worker's memory of each home sensor's last report (the stored
    reports of elders first heard here are read by rules_engine.inputs: `to_recall`,
    `recalled`)."""

    def __init__(self, rooms: RoomBook | None = None, max_elders: int = 500_000) -> None:
        self.rooms = rooms or RoomBook()
        self._reports: dict[str, dict[str, tuple[str, Report]]] = {}  # elder -> device
        self._flagged: dict[str, set[str]] = {}  # elder -> sensors found broken here
        self._recall: OrderedDict[str, None] = OrderedDict()  # elders to load from the store
        self._max = max_elders

    def to_recall(self, limit: int = RECALL_PER_REFRESH) -> list[str]:
        """Elders first heard by this process, whose stored last reports are to be read."""
        return list(itertools.islice(self._recall, limit))

    def recalled(self, elder_id: str, stored: Sequence[tuple[str, str, Report]]) -> None:
        """The stored last reports of `elder_id`; a report seen here since is newer and
        kept."""
        self._recall.pop(elder_id, None)
        reports = self._reports.get(elder_id)
        if reports is None:
            return  # forgotten meanwhile (the bound): loaded again when heard
        for device_id, kind, report in stored:
            known = reports.get(device_id)
            if known is None or known[1].at_ms < report.at_ms:
                reports[device_id] = (kind, report)

    def wants(self, event: Event) -> bool:
        return event.device_kind in EXPECTED and _active_state(event) is not None

    def observe(self, event: Event, known: ElderView | None) -> SensorsSeen | None:
        state = _active_state(event)
        if event.device_kind not in EXPECTED or state is None:
            return None
        at = min(event.device_time_ms, event.received_ms)
        reports = self._reports.get(event.elder_id)
        if reports is None:
            if len(self._reports) >= self._max:
                self._reports.clear()  # bounded; a worker's elders are far fewer
                self._flagged.clear()
                self._recall.clear()
            reports = self._reports[event.elder_id] = {}
            self._recall[event.elder_id] = None
        previous = reports.get(event.device_id)
        if previous is None or previous[1].at_ms <= at:
            reports[event.device_id] = (event.device_kind, Report(at, state, event.id))
        found = troubles(reports, at, event.device_id)
        flagged = self._flagged.setdefault(event.elder_id, set())
        back = event.device_id in flagged
        new = {t.device_id for t in found} - flagged
        if not back and not new:
            return None
        flagged.discard(event.device_id)
        flagged |= new
        return SensorsSeen(event, tuple(found))

    def decide(self, seen: SensorsSeen, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        event, found = seen.event, seen.found
        decisions: list[Decision] = []
        active = elder.active.get("device_offline")
        if active is not None and active.rule in HOME_RULES and active.device_id == event.device_id:
            decisions += resolve_if_active(
                elder,
                "device_offline",
                BACK_RULE,
                event.id,
                device_id=event.device_id,
                details={"device_id": event.device_id},
            )
            active = None
        if not found or active is not None:
            return decisions  # nothing new, or one device alert per elder already
        first = found[0]
        source_id = f"{first.rule}:{first.device_id}@{first.since_ms}"
        alert_id = alert_id_for("device_offline", source_id)
        details: dict[str, object] = {
            "device_id": first.device_id,
            "sensor_kind": first.kind,
            "room": self.rooms.room(first.device_id),
            "last_seen_ms": first.since_ms,
            "others": [t.device_id for t in found[1:]],
        }
        return [
            *decisions,
            OpenAlert(
                alert_id=alert_id,
                kind="device_offline",
                severity="warning",
                status="open",
                rule=first.rule,
                threshold={"limit_s": first.limit_s},
                confidence=None,
                device_id=first.device_id,
                source_event_id=source_id,
                device_time_ms=min(event.device_time_ms, event.received_ms),
                details=details,
            ),
            _reminder(alert_id, "device_offline", 1, now_ms, elder.thresholds),
        ]


def sensors_down(elder: ElderView) -> list[Mapping[str, object]]:
    """The elder's home sensors known broken (their active device alert), for the rules
    that depend on them."""
    active = elder.active.get("device_offline")
    if active is None or active.rule not in HOME_RULES:
        return []
    return [
        {
            "device_id": active.device_id,
            "sensor_kind": active.details.get("sensor_kind"),
            "room": active.details.get("room"),
            "rule": active.rule,
        }
    ]


def down_text(down: Sequence[Mapping[str, object]]) -> str:
    """（卧室人体感应器可能失效）: what the people paged should know about the sensors."""
    names = []
    for d in down:
        room = d.get("room")
        kind = d.get("sensor_kind")
        label = SENSOR_LABELS.get(kind, "传感器") if isinstance(kind, str) else "传感器"
        names.append(f"{room if isinstance(room, str) else ''}{label}")
    return f"（{'、'.join(names)}可能失效）" if names else ""
