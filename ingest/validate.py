"""Pure validation of one MQTT uplink: (topic, payload, registry) -> Accepted | Rejection.

No I/O here: the worker feeds it the in-memory device registry and the receive time,
so every decision about device input is a plain function, tested without servers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from carewatch import topics
from carewatch.db.registry import DeviceInfo
from carewatch.messages import DeviceEvent, DeviceStatus, Event, Telemetry

RejectReason = Literal[
    "bad_topic",
    "oversized",
    "malformed_json",
    "schema_invalid",
    "unknown_device",
    "store_refused",  # valid, but PostgreSQL refused its row (see ingest.flusher)
]


_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    "telemetry": msgspec.json.Decoder(Telemetry),
    "event": msgspec.json.Decoder(DeviceEvent),
    "status": msgspec.json.Decoder(DeviceStatus),
}


# The value types below are made once per message: msgspec structs are built in C (a
# frozen dataclass sets each field through object.__setattr__, ~3 us for a row), and
# gc=False keeps them out of the cyclic collector: nothing they hold refers back to them.


class Rejection(msgspec.Struct, frozen=True, gc=False):
    reason: RejectReason
    detail: str
    device_id: str | None = None


class TelemetryRow(msgspec.Struct, frozen=True, gc=False):
    """One row of the `telemetry` table; `data` is already JSON-encoded."""

    ts_ms: int
    received_ms: int
    topic: str  # kept for a dead letter, should the database refuse the row
    device_id: str
    elder_id: str
    seq: int
    data: bytes


class DeviceUpdate(msgspec.Struct, frozen=True, gc=False):
    """What one message tells about its device (merged per batch into `devices`)."""

    device_id: str
    received_ms: int
    online: bool
    seq: int | None = None
    battery: int | None = None


class Accepted(msgspec.Struct, frozen=True, gc=False):
    event: Event
    row: TelemetryRow | None  # None for status messages (no telemetry row)
    device_update: DeviceUpdate
    dedup_key: str | None  # None: not deduplicated (status without seq)


def message_id(device_id: str, seq: int, ts_ms: int) -> str:
    """The identity of one uplink: device, seq AND device time. A retransmission repeats
    the message byte for byte (same seq, same ts), so it has the same id and is dropped as
    a copy; a device whose counter was reset (reboot, battery swap, firmware update) reuses
    old seq values with later times, and those are new messages, with new event and alert
    ids (an alert id is derived from its event's id), never taken for an old one."""
    return f"{device_id}:{seq}:{ts_ms}"


def dedup_key(message_id: str) -> str:
    """The dedup key of the message with this id (`message_id`): the id the Event already
    carries, so it is built once per message."""
    return "dedup:" + message_id


def validate(
    topic_name: str,
    payload: bytes,
    registry: Mapping[str, DeviceInfo],
    *,
    received_ms: int,
    max_payload_bytes: int,
) -> Accepted | Rejection:
    """Decide what one uplink is. Never raises on any input."""
    parsed = topics.parse(topic_name)
    if parsed is None:
        return Rejection("bad_topic", f"not a carewatch device topic: {topic_name[:200]!r}")
    device_id, kind = parsed
    if kind == "cmd":
        return Rejection("bad_topic", "downlink topic published by a device", device_id)
    if len(payload) > max_payload_bytes:
        return Rejection(
            "oversized", f"{len(payload)} bytes > limit {max_payload_bytes}", device_id
        )
    try:
        message = _decoders[kind].decode(payload)
    except msgspec.ValidationError as exc:
        return Rejection("schema_invalid", str(exc), device_id)
    except msgspec.DecodeError as exc:
        return Rejection("malformed_json", str(exc), device_id)
    except UnicodeDecodeError as exc:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a JSON string.
        return Rejection("malformed_json", f"not UTF-8 at byte {exc.start} of a string", device_id)
    problem = _cross_field_problem(message)
    if problem is not None:
        return Rejection("schema_invalid", problem, device_id)
    device = registry.get(device_id)
    if device is None:
        return Rejection("unknown_device", f"device {device_id!r} is not registered", device_id)
    if isinstance(message, Telemetry):
        return _telemetry(topic_name, message, device, received_ms)
    if isinstance(message, DeviceEvent):
        return _device_event(topic_name, message, device, received_ms)
    assert isinstance(message, DeviceStatus)
    return _status(message, device, received_ms)


def _cross_field_problem(message: Telemetry | DeviceEvent | DeviceStatus) -> str | None:
    """Rules the struct types cannot express. Unequal accelerometer axes would pass
    ingest and fail in the fall detector on every attempt, so they are refused here."""
    if isinstance(message, Telemetry) and message.accel is not None:
        a = message.accel
        if not len(a.x) == len(a.y) == len(a.z):
            return f"accel axes have different lengths: x {len(a.x)}, y {len(a.y)}, z {len(a.z)}"
    return None


def _telemetry(topic_name: str, msg: Telemetry, device: DeviceInfo, received_ms: int) -> Accepted:
    # to_builtins honours omit_defaults, so unset (None) fields are already absent; the
    # envelope (v, seq, ts: columns and Event fields of their own) is required, so present.
    data: dict[str, object] = msgspec.to_builtins(msg)
    del data["v"], data["seq"], data["ts"]
    device_id, seq, ts = device.device_id, msg.seq, msg.ts
    event = Event(
        id=message_id(device_id, seq, ts),
        elder_id=device.elder_id,
        device_id=device_id,
        device_kind=device.kind,
        type="telemetry",
        device_time_ms=ts,
        received_ms=received_ms,
        seq=seq,
        data=data,
    )
    return Accepted(
        event,
        _row(topic_name, device, seq, ts, received_ms, data),
        DeviceUpdate(device_id, received_ms, True, seq, msg.battery),
        dedup_key(event.id),
    )


def _device_event(
    topic_name: str, msg: DeviceEvent, device: DeviceInfo, received_ms: int
) -> Accepted:
    data: dict[str, object] = {"event": msg.type}
    if msg.ref_seq is not None:
        data["ref_seq"] = msg.ref_seq
    event = Event(
        id=message_id(device.device_id, msg.seq, msg.ts),
        elder_id=device.elder_id,
        device_id=device.device_id,
        device_kind=device.kind,
        type="event",
        device_time_ms=msg.ts,
        received_ms=received_ms,
        seq=msg.seq,
        event=msg.type,
        ref_seq=msg.ref_seq,
    )
    return Accepted(
        event=event,
        row=_row(topic_name, device, msg.seq, msg.ts, received_ms, data),
        device_update=DeviceUpdate(device.device_id, received_ms, online=True, seq=msg.seq),
        dedup_key=dedup_key(event.id),
    )


def _status(msg: DeviceStatus, device: DeviceInfo, received_ms: int) -> Accepted:
    data: dict[str, object] = {}
    if msg.battery is not None:
        data["battery"] = msg.battery
    if msg.fw is not None:
        data["fw"] = msg.fw
    # The broker publishes the last-will "offline" without seq/ts: identify it by receipt.
    status_ts = msg.ts if msg.ts is not None else 0  # the same for every copy
    event_id = (
        message_id(device.device_id, msg.seq, status_ts)
        if msg.seq is not None
        else f"{device.device_id}:status:{received_ms}"
    )
    event = Event(
        id=event_id,
        elder_id=device.elder_id,
        device_id=device.device_id,
        device_kind=device.kind,
        type="status",
        device_time_ms=msg.ts if msg.ts is not None else received_ms,
        received_ms=received_ms,
        seq=msg.seq,
        state=msg.state,
        data=data,
    )
    return Accepted(
        event=event,
        row=None,
        device_update=DeviceUpdate(
            device.device_id,
            received_ms,
            online=msg.state == "online",
            seq=msg.seq,
            battery=msg.battery,
        ),
        dedup_key=(dedup_key(event_id) if msg.seq is not None else None),
    )


def _row(
    topic_name: str,
    device: DeviceInfo,
    seq: int,
    ts_ms: int,
    received_ms: int,
    data: dict[str, object],
) -> TelemetryRow:
    return TelemetryRow(
        ts_ms,
        received_ms,
        topic_name,
        device.device_id,
        device.elder_id,
        seq,
        msgspec.json.encode(data),
    )
