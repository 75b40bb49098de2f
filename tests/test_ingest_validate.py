"""Table tests of ingest.validate: pure, no servers."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carewatch.db.registry import DeviceInfo
from ingest.validate import Accepted, Rejection, validate

REGISTRY = {
    "w1": DeviceInfo("w1", "E1", "wristband"),
    "door1": DeviceInfo("door1", "E1", "door"),
}
NOW = 1_764_000_100_000
TS = 1_764_000_000_000
LIMIT = 1024


def check(topic: str, payload: bytes | dict[str, object]) -> Accepted | Rejection:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return validate(topic, raw, REGISTRY, received_ms=NOW, max_payload_bytes=LIMIT)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("cw/v1/dev/w1/cmd", {"v": 1}, "bad_topic"),
        ("cw/v1/dev/w1/other", {"v": 1}, "bad_topic"),
        ("cw/v1/dev/bad.id/telemetry", {"v": 1}, "bad_topic"),
        ("cw/v2/dev/w1/telemetry", {"v": 1}, "bad_topic"),
        ("cw/v1/dev/w1/telemetry\n", {"v": 1}, "bad_topic"),  # "$" alone would allow it
        (f"cw/v1/dev/{'w' * 65}/telemetry", {"v": 1}, "bad_topic"),
        ("cw/v1/dev/w1/telemetry", b"x" * (LIMIT + 1), "oversized"),
        ("cw/v1/dev/w1/telemetry", b"{not json", "malformed_json"),
        ("cw/v1/dev/w1/telemetry", b"\xff\xfe", "malformed_json"),
        ("cw/v1/dev/w1/telemetry", b"", "malformed_json"),
        ("cw/v1/dev/w1/telemetry", {"v": 1, "ts": TS}, "schema_invalid"),
        ("cw/v1/dev/w1/telemetry", {"v": 2, "seq": 1, "ts": TS}, "schema_invalid"),
        ("cw/v1/dev/w1/telemetry", {"v": 1, "seq": 1, "ts": TS, "hr": 999}, "schema_invalid"),
        ("cw/v1/dev/w1/telemetry", {"v": 1, "seq": 1, "ts": TS, "extra": 1}, "schema_invalid"),
        ("cw/v1/dev/w1/telemetry", {"v": 1, "seq": -1, "ts": TS}, "schema_invalid"),
        ("cw/v1/dev/w1/telemetry", {"v": 1, "seq": 1, "ts": 5}, "schema_invalid"),
        ("cw/v1/dev/w1/telemetry", [1, 2], "schema_invalid"),
        ("cw/v1/dev/w1/event", {"v": 1, "seq": 1, "ts": TS, "type": "boom"}, "schema_invalid"),
        ("cw/v1/dev/w1/status", {"v": 1, "state": "sleepy"}, "schema_invalid"),
        ("cw/v1/dev/ghost/telemetry", {"v": 1, "seq": 1, "ts": TS}, "unknown_device"),
    ],
)
def test_rejections(topic: str, payload: bytes | dict[str, object], reason: str) -> None:
    result = check(topic, payload)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_schema_detail_is_msgspec_message() -> None:
    result = check("cw/v1/dev/w1/telemetry", {"v": 1, "ts": TS})
    assert isinstance(result, Rejection)
    assert result.detail == "Object missing required field `seq`"
    assert result.device_id == "w1"


def test_telemetry_accepted_with_non_null_fields_only() -> None:
    accel = {"hz": 50.0, "x": [0.1, 2.5], "y": [0.0, 0.1], "z": [1.0, 0.2]}
    result = check(
        "cw/v1/dev/w1/telemetry",
        {"v": 1, "seq": 7, "ts": TS, "hr": 72, "battery": 55, "spo2": None, "accel": accel},
    )
    assert isinstance(result, Accepted)
    event = result.event
    assert (event.id, event.type, event.elder_id, event.device_kind) == (
        f"w1:7:{TS}",
        "telemetry",
        "E1",
        "wristband",
    )
    assert (event.device_time_ms, event.received_ms, event.seq) == (TS, NOW, 7)
    assert event.data == {"hr": 72, "battery": 55, "accel": accel}
    assert result.row is not None
    assert (result.row.ts_ms, result.row.seq, result.row.elder_id) == (TS, 7, "E1")
    assert msgspec.json.decode(result.row.data) == {"hr": 72, "battery": 55, "accel": accel}
    assert result.dedup_key == f"dedup:w1:7:{TS}"
    assert result.device_update.battery == 55
    assert result.device_update.online is True


def test_device_event_is_event_with_row() -> None:
    result = check("cw/v1/dev/w1/event", {"v": 1, "seq": 9, "ts": TS, "type": "sos"})
    assert isinstance(result, Accepted)
    assert (result.event.type, result.event.event, result.event.id) == (
        "event",
        "sos",
        f"w1:9:{TS}",
    )
    assert result.row is not None
    assert msgspec.json.decode(result.row.data) == {"event": "sos"}


def test_a_reused_seq_after_a_counter_reset_is_a_new_message() -> None:
    """A band whose counter was reset sends seq 9 again, hours later: not the same
    message as the old seq 9 (so not a duplicate, and not the old alert's event), while
    a retransmission of a message (same seq, same device time) keeps its identity."""
    before = check("cw/v1/dev/w1/event", {"v": 1, "seq": 9, "ts": TS, "type": "sos"})
    copy = check("cw/v1/dev/w1/event", {"v": 1, "seq": 9, "ts": TS, "type": "sos"})
    after = check("cw/v1/dev/w1/event", {"v": 1, "seq": 9, "ts": TS + 3_600_000, "type": "sos"})
    assert isinstance(before, Accepted) and isinstance(copy, Accepted)
    assert isinstance(after, Accepted)
    assert (copy.event.id, copy.dedup_key) == (before.event.id, before.dedup_key)
    assert after.event.id != before.event.id
    assert after.dedup_key != before.dedup_key


def test_cancel_keeps_ref_seq() -> None:
    result = check(
        "cw/v1/dev/w1/event", {"v": 1, "seq": 10, "ts": TS, "type": "sos_cancel", "ref_seq": 9}
    )
    assert isinstance(result, Accepted)
    assert result.event.ref_seq == 9
    assert result.row is not None
    assert msgspec.json.decode(result.row.data) == {"event": "sos_cancel", "ref_seq": 9}


def test_last_will_status_without_seq_is_not_deduplicated() -> None:
    result = check("cw/v1/dev/door1/status", {"v": 1, "state": "offline"})
    assert isinstance(result, Accepted)
    assert result.event.type == "status"
    assert result.event.state == "offline"
    assert result.event.id == f"door1:status:{NOW}"
    assert result.event.device_time_ms == NOW
    assert result.row is None
    assert result.dedup_key is None
    assert result.device_update.online is False


def test_status_with_seq_is_deduplicated() -> None:
    result = check(
        "cw/v1/dev/w1/status", {"v": 1, "state": "online", "seq": 3, "ts": TS, "battery": 80}
    )
    assert isinstance(result, Accepted)
    assert result.event.id == f"w1:3:{TS}"
    assert result.event.data == {"battery": 80}
    assert result.dedup_key == f"dedup:w1:3:{TS}"
    assert (result.device_update.online, result.device_update.battery) == (True, 80)


@given(topic=st.text(max_size=80), payload=st.binary(max_size=2048))
def test_never_raises(topic: str, payload: bytes) -> None:
    assert isinstance(
        validate(topic, payload, REGISTRY, received_ms=NOW, max_payload_bytes=LIMIT),
        Accepted | Rejection,
    )


@given(payload=st.binary(max_size=300))
def test_never_raises_on_our_topics(payload: bytes) -> None:
    for kind in ("telemetry", "event", "status"):
        result = validate(
            f"cw/v1/dev/w1/{kind}", payload, REGISTRY, received_ms=NOW, max_payload_bytes=LIMIT
        )
        assert isinstance(result, Accepted | Rejection)
