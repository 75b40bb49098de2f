"""Typed messages: device payloads (MQTT, schema v1) and bus messages between workers.

Device payloads are decoded with msgspec straight into these structs, so validation
and parsing are one step. Every uplink carries `v` (schema version), `seq`
(per-device sequence number, for dedup and gap detection) and `ts` (device time,
epoch milliseconds). Only the retained last-will status may omit seq/ts.

Structs made per device message are `gc=False`: they hold only decoded JSON, so they
cannot be part of a reference cycle, and leaving them out of the cyclic collector's
generations saved ingest about a microsecond per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1

Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
EpochMs = Annotated[int, msgspec.Meta(ge=1_000_000_000_000, le=10_000_000_000_000)]
Lat = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Lon = Annotated[float, msgspec.Meta(ge=-180, le=180)]

DeviceKind = Literal[
    "wristband",
    "pir",
    "door",
    "water_meter",
    "radar",
    "smoke",
    "gas",
    "leak",
    # signs of life (docs/inactivity.md): a contact on a fridge/cupboard/inner door, a
    # light switch, a smart plug (TV, kettle...) and the home's electricity meter
    "contact",
    "switch",
    "plug",
    "power_meter",
]
EventType = Literal[
    "sos",  # SOS key pressed
    "sos_cancel",  # elder cancelled the SOS on the device
    "fall",  # device-side fall flag (wristband or radar)
    "fall_cancel",  # "I'm OK" pressed after a fall
    "smoke",
    "gas",
    "leak",
    "bed_exit",
    "door_open",
    "door_close",
    "contact_open",  # a generic contact (fridge, cupboard, inner door): not the front door
    "contact_close",
    "switch_on",  # a light switch pressed
    "switch_off",
]
# Events that no device sends, published by carewatch itself on the elder's events shard:
# a grid worker's in-person visit (visits/, docs/visits.md), a sign of life for the
# inactivity rule. Devices cannot send them: DeviceEvent takes EventType only.
BusEventType = EventType | Literal["visit_checkin"]


class AccelWindow(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Raw accelerometer window in g, `hz` samples per second, equal-length axes."""

    hz: Annotated[float, msgspec.Meta(gt=0, le=1000)]
    x: Annotated[list[float], msgspec.Meta(max_length=4096)]
    y: Annotated[list[float], msgspec.Meta(max_length=4096)]
    z: Annotated[list[float], msgspec.Meta(max_length=4096)]


class Telemetry(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    v: Literal[1]
    seq: Seq
    ts: EpochMs
    hr: Annotated[int, msgspec.Meta(ge=0, le=300)] | None = None
    spo2: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    temp: Annotated[float, msgspec.Meta(ge=25, le=45)] | None = None
    steps: Annotated[int, msgspec.Meta(ge=0)] | None = None
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    worn: bool | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    motion: bool | None = None
    presence: bool | None = None
    water_flow: Annotated[float, msgspec.Meta(ge=0)] | None = None  # litres per minute
    # smart plug or electricity meter: instantaneous power; the meter's cumulative energy
    power_w: Annotated[float, msgspec.Meta(ge=0, le=100_000)] | None = None
    energy_kwh: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    accel: AccelWindow | None = None


class DeviceEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    v: Literal[1]
    seq: Seq
    ts: EpochMs
    type: EventType
    ref_seq: Seq | None = None  # the event a cancel refers to


class DeviceStatus(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    v: Literal[1]
    state: Literal["online", "offline"]
    seq: Seq | None = None
    ts: EpochMs | None = None
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    fw: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class DeviceCommand(msgspec.Struct, omit_defaults=True):
    """Downlink on cw/v1/dev/{id}/cmd, e.g. 'help is coming' shown on the wristband."""

    v: Literal[1]
    type: Literal["help_coming", "alert_closed"]
    alert_id: str
    text: str
    ts: int


# ------------------------------------------------------------------------------------
# Bus messages
# ------------------------------------------------------------------------------------

NormalisedType = Literal["telemetry", "event", "status"]


class Event(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """A validated device message, published on events.{shard} (shard by elder)."""

    # "{device_id}:{seq}:{device ts}" (status without seq: "{device_id}:status:{received_ms}");
    # the device time tells a reused seq (counter reset) from a copy (ingest.validate)
    id: str
    elder_id: str
    device_id: str
    device_kind: str
    type: NormalisedType
    device_time_ms: int
    received_ms: int
    seq: int | None = None
    event: BusEventType | None = None  # for type == "event"
    ref_seq: int | None = None
    state: str | None = None  # for type == "status"
    data: dict[str, object] = msgspec.field(default_factory=dict)  # telemetry fields


AlertKind = Literal[
    "sos",
    "fall",
    "inactivity",
    "vitals",
    "geofence",
    "smoke",
    "gas",
    "leak",
    "device_offline",
    "low_battery",
    "off_wrist",
    "water_none",
    "water_flow",
]
Severity = Literal["critical", "warning", "info"]
AlertStatus = Literal["pending", "open", "acknowledged", "resolved", "cancelled", "false_alarm"]
OPEN_STATUSES: tuple[AlertStatus, ...] = ("pending", "open", "acknowledged")
CLOSED_STATUSES: tuple[AlertStatus, ...] = ("resolved", "cancelled", "false_alarm")


class AlertChange(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Published on the `alerts` stream whenever an alert changes state."""

    id: str  # unique per change: "{alert_id}:{status}:{version}"
    alert_id: str
    elder_id: str
    kind: AlertKind
    severity: Severity
    status: AlertStatus
    device_time_ms: int
    changed_ms: int
    actor: str | None = None
    # Set when an alert changed without a status change and consumers must act on it:
    # "escalated" (severity raised, e.g. an inactivity warning became critical) or
    # "reminder" (the condition still lasts: notify again). None: a status change.
    reason: Literal["escalated", "reminder"] | None = None


def encode(msg: msgspec.Struct) -> bytes:
    return msgspec.json.encode(msg)


_event_decoder = msgspec.json.Decoder(Event)
_events_decoder = msgspec.json.Decoder(list[Event])
_parts_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_alert_decoder = msgspec.json.Decoder(AlertChange)


def decode_event(raw: bytes | str) -> Event:
    return _event_decoder.decode(raw)


# Telemetry travels on the bus in batches (docs/adr/0006-telemetry-batches-on-the-bus.md):
# one bus message holds the encoded events of one shard's micro-batch as a JSON array,
# so the bus's fixed cost per entry (append, read, acknowledge, framing) is paid per
# batch. A body that is one JSON object is one event, as every body was before.


def encode_events(encoded: Sequence[bytes]) -> bytes:
    """Already encoded events as one bus body: a JSON array, in order."""
    return b"[" + b",".join(encoded) + b"]"


def is_event_batch(raw: bytes) -> bool:
    """True if the body is a batch (a JSON array) rather than one event."""
    return raw.lstrip()[:1] == b"["


def decode_batch(raw: bytes) -> list[Event]:
    """The events of a batch body (is_event_batch). Raises msgspec's errors if any event
    in it is invalid (split_events then tells the good ones from the bad)."""
    return _events_decoder.decode(raw)


def decode_events(raw: bytes) -> list[Event]:
    """The events of one bus body: a batch, or one event."""
    return decode_batch(raw) if is_event_batch(raw) else [_event_decoder.decode(raw)]


def split_events(raw: bytes) -> list[bytes]:
    """A batch body's events as separate bodies, undecoded (one for a single event).
    Raises msgspec's errors if the body is not a JSON array at all."""
    if is_event_batch(raw):
        return [bytes(part) for part in _parts_decoder.decode(raw)]
    return [raw]


def decode_alert_change(raw: bytes | str) -> AlertChange:
    return _alert_decoder.decode(raw)
