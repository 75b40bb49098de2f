"""Telemetry travels on the bus in batches (docs/adr/0006-telemetry-batches-on-the-bus.md):
ingest's grouping is pure and tested here without a server; what the rules worker makes
of a batch is tested against the real store in tests/test_detector_contract.py."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carewatch.bus import shard_of, stream_for
from carewatch.messages import (
    Event,
    decode_events,
    encode,
    encode_events,
    is_event_batch,
    split_events,
)
from ingest.publisher import TELEMETRY_MESSAGE_BYTES, bus_messages
from tests.events import device_event, telemetry_event

T0 = 1_764_000_000_000


def _event(i: int, elder: int, kind: str) -> Event:
    if kind == "telemetry":
        ev = telemetry_event({"hr": 60 + i % 40}, T0 + i, seq=i)
    else:
        ev = device_event("sos", T0 + i, seq=i)
    return msgspec.structs.replace(ev, id=f"W{elder}:{i}:{T0 + i}", elder_id=f"E{elder}")


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["telemetry", "telemetry", "event"])),
        max_size=600,
    ),
    shards=st.integers(1, 4),
    per_message=st.sampled_from([1, 2, 100]),
)
def test_every_event_reaches_its_stream_once_in_order(
    plan: list[tuple[int, str]], shards: int, per_message: int
) -> None:
    events = [_event(i, elder, kind) for i, (elder, kind) in enumerate(plan)]
    messages = bus_messages(events, shards, per_message)
    got: dict[str, list[Event]] = {}
    for stream, body, message_id, n in messages:
        inside = decode_events(body)
        assert len(inside) == n
        assert message_id == (inside[0].id if n == 1 else f"{inside[0].id}+{n - 1}")
        if inside[0].type != "telemetry":
            assert n == 1 and not is_event_batch(body)  # an alarm is never batched
        assert n <= per_message
        if per_message == 1:
            assert not is_event_batch(body)  # as before batches: a rolling upgrade
        got.setdefault(stream, []).extend(inside)
    want: dict[str, list[Event]] = {}
    for ev in events:
        want.setdefault(stream_for(ev.type, shard_of(ev.elder_id, shards)), []).append(ev)
    assert got == want


def test_a_micro_batch_of_one_shard_is_one_message() -> None:
    events = [_event(i, 1, "telemetry") for i in range(50)]
    [(stream, body, _, n)] = bus_messages(events, 1, 100)
    assert (stream, n) == ("telemetry.0", 50)
    assert decode_events(body) == events


def test_a_batch_stops_growing_at_its_byte_limit() -> None:
    accel = {"hz": 50.0, "x": [0.123456] * 2000, "y": [0.5] * 2000, "z": [1.0] * 2000}
    events = [
        msgspec.structs.replace(_event(i, 1, "telemetry"), data={"accel": accel}) for i in range(40)
    ]
    messages = bus_messages(events, 1, 100)
    assert len(messages) > 1
    assert all(len(body) <= TELEMETRY_MESSAGE_BYTES for _, body, _, _ in messages)
    assert any(n > 1 for _, _, _, n in messages)  # two such events still share a message
    # an event over the limit by itself still travels, alone
    huge = msgspec.structs.replace(events[0], data={"accel": {**accel, "x": [0.123] * 40_000}})
    assert [n for _, _, _, n in bus_messages([events[1], huge, events[2]], 1, 100)] == [1, 1, 1]
    assert [e for _, body, _, _ in messages for e in decode_events(body)] == events


def test_a_batch_with_a_bad_event_splits_into_its_events() -> None:
    good = [encode(_event(i, 1, "telemetry")) for i in range(3)]
    body = encode_events([good[0], b'{"id": 5}', good[1], good[2]])
    with pytest.raises(msgspec.ValidationError):
        decode_events(body)
    assert split_events(body) == [good[0], b'{"id": 5}', good[1], good[2]]
    assert split_events(good[0]) == [good[0]]  # a body of one event is that event
    with pytest.raises(msgspec.DecodeError):
        split_events(b"[not json")
