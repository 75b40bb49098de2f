"""A real home's ambient sensor log as the device messages its sensors would publish.

The log layout is the one of `../shared/data/homes/` (CASAS), one event a line:

    YYYY-MM-DD HH:MM:SS[.ffffff] <area> <sensor> <state> [<activity>]

times in the home's local time. Each (area, sensor) becomes one registered device with a
kind and a room (卧室/卫生间/客厅/厨房/门口/书房...), by `SensorMap`: the built-in rules
below, or a CSV `area,sensor,kind,room` (docs/inactivity.md says how to map another
layout). States become schema-v1 payloads:

| kind | state | message |
| --- | --- | --- |
| pir | ON / OFF | telemetry `motion: true / false` |
| door (the front door) | OPEN / CLOSE | event `door_open` / `door_close` |
| contact (closet, fridge...) | OPEN or ON / CLOSE or OFF | event `contact_open` / `contact_close` |
| switch (a light) | ON / OFF | event `switch_on` / `switch_off` |

Nothing here does I/O beyond reading the file, and the same file always gives the same
bytes (sequence numbers count up per device from the log's order).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from carewatch.messages import DeviceEvent, EventType, Telemetry
from carewatch.topics import TopicKind
from simulators.days import SimMessage

BEDROOM, BATHROOM, LIVING, KITCHEN, ENTRANCE, STUDY = (
    "卧室",
    "卫生间",
    "客厅",
    "厨房",
    "门口",
    "书房",
)

# Area names of the CASAS homes -> room. A sensor over an armchair or a table belongs to
# the room it is in.
AREA_ROOMS: dict[str, str] = {
    "bedroom": BEDROOM,
    "bathroom": BATHROOM,
    "kitchen": KITCHEN,
    "livingroom": LIVING,
    "loungechair": LIVING,
    "diningroom": "餐厅",
    "workarea": STUDY,
    "office": STUDY,
    "outsidedoor": ENTRANCE,
    "entry": ENTRANCE,
    "frontdoor": ENTRANCE,
}


class LogError(ValueError):
    """The file is not in the layout described above (with the line that is not)."""


@dataclass(frozen=True, slots=True)
class Sensor:
    device_id: str
    kind: str  # a registry device kind: pir, door, contact, switch
    room: str


@dataclass(frozen=True, slots=True)
class LogEvent:
    at_ms: int
    device_id: str
    state: str  # ON, OFF, OPEN, CLOSE (upper case)
    activity: str  # the annotation, "" when the log has none


class SensorMap:
    """(area, sensor) -> Sensor: explicit rows first, then the built-in rules."""

    def __init__(self, rows: Mapping[tuple[str, str], tuple[str, str]] | None = None) -> None:
        self._rows = {(a.lower(), s.lower()): v for (a, s), v in (rows or {}).items()}
        self._sensors: dict[tuple[str, str], Sensor] = {}

    @classmethod
    def from_csv(cls, path: Path) -> SensorMap:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            if set(reader.fieldnames or ()) < {"area", "sensor", "kind", "room"}:
                raise LogError(f"{path}: expected the columns area,sensor,kind,room")
            rows = {(r["area"], r["sensor"]): (r["kind"], r["room"]) for r in reader}
        return cls(rows)

    def sensor(self, area: str, name: str, state: str) -> Sensor:
        key = (area.lower(), name.lower())
        known = self._sensors.get(key)
        if known is not None:
            return known
        if key in self._rows:
            kind, room = self._rows[key]
        else:
            kind, room = _guess(key[0], key[1], state)
        made = Sensor(f"HOME-{area}-{name}", kind, room)
        self._sensors[key] = made
        return made

    def sensors(self) -> list[Sensor]:
        return sorted(self._sensors.values(), key=lambda s: s.device_id)


def _guess(area: str, name: str, state: str) -> tuple[str, str]:
    room = AREA_ROOMS.get(area) or AREA_ROOMS.get(name) or "其他"
    if "light" in name:
        return "switch", room
    if state in ("OPEN", "CLOSE"):
        return ("door", ENTRANCE) if "frontdoor" in name or name == "door" else ("contact", room)
    if "closet" in name or "cabinet" in name or "fridge" in name:
        return "contact", room
    return "pir", room


def read_log(
    path: Path, tz: ZoneInfo, sensor_map: SensorMap | None = None
) -> tuple[list[LogEvent], list[Sensor]]:
    """Every event of the log in time order, and the sensors it names."""
    smap = sensor_map or SensorMap()
    opener = gzip.open if path.name.endswith(".gz") else open
    events: list[LogEvent] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5:
                raise LogError(f"{path}:{number}: expected 'date time area sensor state'")
            try:
                local = datetime.fromisoformat(f"{parts[0]} {parts[1]}")
            except ValueError as exc:
                raise LogError(f"{path}:{number}: bad time {parts[0]} {parts[1]}") from exc
            state = parts[4].upper()
            sensor = smap.sensor(parts[2], parts[3], state)
            at_ms = round(local.replace(tzinfo=tz).timestamp() * 1000)
            events.append(LogEvent(at_ms, sensor.device_id, state, " ".join(parts[5:])))
    events.sort(key=lambda e: e.at_ms)  # stable: the log's order within a millisecond
    return events, smap.sensors()


_EVENTS: dict[tuple[str, str], EventType] = {
    ("door", "OPEN"): "door_open",
    ("door", "CLOSE"): "door_close",
    ("contact", "OPEN"): "contact_open",
    ("contact", "ON"): "contact_open",
    ("contact", "CLOSE"): "contact_close",
    ("contact", "OFF"): "contact_close",
    ("switch", "ON"): "switch_on",
    ("switch", "OFF"): "switch_off",
}


def messages(events: Iterable[LogEvent], sensors: Iterable[Sensor]) -> Iterator[SimMessage]:
    """The device messages of the log (events of unknown state are skipped)."""
    kinds = {s.device_id: s.kind for s in sensors}
    seqs: dict[str, int] = {}
    for e in events:
        kind = kinds[e.device_id]
        seq = seqs.get(e.device_id, 0) + 1
        seqs[e.device_id] = seq
        topic: TopicKind
        if kind == "pir" and e.state in ("ON", "OFF"):
            topic = "telemetry"
            body: msgspec.Struct = Telemetry(v=1, seq=seq, ts=e.at_ms, motion=e.state == "ON")
        elif (kind, e.state) in _EVENTS:
            topic = "event"
            body = DeviceEvent(v=1, seq=seq, ts=e.at_ms, type=_EVENTS[(kind, e.state)])
        else:
            continue
        yield SimMessage(e.device_id, topic, msgspec.json.encode(body), e.at_ms)
