"""Hostile MQTT input: ingest.validate never raises, and every rejection is counted once.

Property tests feed arbitrary bytes, arbitrary JSON and near-valid payloads (a field
mutated to another type, a huge number, NaN/Infinity, deep nesting, odd unicode,
truncated or with a byte flipped) on right and wrong topics. The pure check runs
validate() alone; the counting check runs the real ingest Pipeline + Flusher on real
Redis and PostgreSQL, where carewatch_ingest_rejects_total is incremented and dead
letters are stored.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_args

import psycopg
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from carewatch import topics
from carewatch.bus import Bus, make_bus
from carewatch.db.pool import open_pool
from carewatch.db.registry import DeviceInfo
from carewatch.messages import decode_event, encode
from carewatch.settings import Settings
from ingest.acks import AckTracker, Ticket
from ingest.dedup import Deduplicator
from ingest.flusher import Flusher
from ingest.mqtt_source import Incoming
from ingest.pipeline import Pipeline
from ingest.publisher import BusPublisher
from ingest.registry_cache import DeviceRegistry
from ingest.validate import Accepted, Rejection, RejectReason, validate
from tests.support.hostile import RAW_VALUES, json_values
from tests.support.ingest import DOOR, TS, WRISTBAND, insert_registry

# "store_refused" comes from the flusher (PostgreSQL refused a valid row), never validate.
VALIDATE_REASONS = frozenset(get_args(RejectReason)) - {"store_refused"}
REGISTRY_VIEW = {
    WRISTBAND: DeviceInfo(WRISTBAND, "E1", "wristband"),
    DOOR: DeviceInfo(DOOR, "E1", "door"),
}
LIMIT = 2048
NOW = TS + 100_000

# Bounded and reproducible: CI must not flake on a newly drawn example.
PURE = hsettings(max_examples=200, deadline=None, derandomize=True)

# --- strategies ------------------------------------------------------------------------

raw_values = st.sampled_from(RAW_VALUES) | json_values.map(json.dumps)

KINDS = topics.UPLINK_KINDS
TELEMETRY_FIELDS = ("hr", "spo2", "temp", "steps", "battery", "worn", "lat", "lon", "accel")


def valid_body(kind: str, seq: int) -> dict[str, Any]:
    base: dict[str, Any] = {"v": 1, "seq": seq, "ts": TS + seq}
    if kind == "telemetry":
        return {
            **base,
            "hr": 72,
            "battery": 80,
            "accel": {"hz": 50, "x": [0.1], "y": [0.0], "z": [1.0]},
        }
    if kind == "event":
        return {**base, "type": "sos"}
    return {**base, "state": "online", "battery": 90, "fw": "1.0"}


def raw_object(fields: list[tuple[str, str]]) -> bytes:
    """A JSON object from raw value texts (keys may repeat, as a hostile sender may)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields) + "}").encode()


@st.composite
def near_valid(draw: st.DrawFn, kind: str) -> bytes:
    """A valid body of `kind` with one to three fields mutated, dropped or added."""
    fields = [(k, json.dumps(v)) for k, v in valid_body(kind, draw(st.integers(0, 2**20))).items()]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("replace", "drop", "add", "nest")))
        if op == "replace" and fields:
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = (fields[i][0], draw(raw_values))
        elif op == "drop" and fields:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif op == "add":
            key = draw(
                st.sampled_from((*TELEMETRY_FIELDS, "v", "seq", "ts", "type", "state"))
                | st.text(max_size=6)
            )
            fields.append((key, draw(raw_values)))
        else:  # a field of the accelerometer window, e.g. unequal axes or huge arrays
            accel = {"hz": draw(raw_values), "x": "[1,2]", "y": draw(raw_values), "z": "[1]"}
            fields.append(("accel", "{" + ",".join(f'"{k}":{v}' for k, v in accel.items()) + "}"))
    return raw_object(fields)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid payload truncated or with one byte changed."""
    body = json.dumps(valid_body(draw(st.sampled_from(KINDS)), draw(st.integers(0, 1000)))).encode()
    i = draw(st.integers(0, len(body) - 1))
    if draw(st.booleans()):
        return body[:i]
    return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(KINDS).flatmap(near_valid),
    damaged(),
    st.binary(min_size=LIMIT + 1, max_size=LIMIT + 64),
)

device_ids = st.sampled_from(
    (WRISTBAND, DOOR, "UNKNOWN-9", "a" * 64, "a" * 65, "bad.id", "", "+", "#")
)
topic_names = st.one_of(
    st.tuples(device_ids, st.sampled_from((*KINDS, "cmd", "other"))).map(
        lambda t: f"{topics.PREFIX}/{t[0]}/{t[1]}"
    ),
    st.text(max_size=80),
    st.sampled_from(("cw/v1/dev/W1/telemetry/x", "cw/v2/dev/W1/event", "$SYS/broker", "/", "")),
)


def well_formed(kind: topics.TopicKind) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.tuples(
        st.sampled_from((WRISTBAND, DOOR)).map(lambda d: topics.topic(d, kind)),
        st.integers(0, 2**20).map(lambda seq: json.dumps(valid_body(kind, seq)).encode()),
    )


uplinks = st.one_of(
    st.tuples(topic_names, payloads),
    st.sampled_from(KINDS).flatmap(
        lambda k: st.tuples(st.just(topics.topic(WRISTBAND, k)), near_valid(k))
    ),
    st.sampled_from(KINDS).flatmap(well_formed),
)


# --- the pure check --------------------------------------------------------------------


def _no_constant(name: str) -> object:
    raise AssertionError(f"stored JSON holds {name}, which PostgreSQL jsonb refuses")


def check_outcome(topic_name: str, payload: bytes, result: Accepted | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in VALIDATE_REASONS, result
        assert isinstance(result.detail, str) and result.detail
        return
    assert isinstance(result, Accepted)
    parsed = topics.parse(topic_name)
    assert parsed is not None and parsed[1] != "cmd"
    assert result.event.device_id == parsed[0]
    assert result.event.elder_id == REGISTRY_VIEW[parsed[0]].elder_id
    # What goes on the bus decodes as the same event; what is stored is strict JSON.
    assert decode_event(encode(result.event)) == result.event
    if result.row is not None:
        data = json.loads(result.row.data, parse_constant=_no_constant)
        assert all(math.isfinite(v) for v in _numbers(data))


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value) if abs(value) < 1e300 else 0.0
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


# Found by fuzz/ (fuzz.run validate): invalid UTF-8 inside a JSON string made msgspec
# raise UnicodeDecodeError out of validate, which stopped the ingest worker.
NOT_UTF8_IN_A_STRING = (
    (topics.topic(WRISTBAND, "telemetry"), b'{"v":1,"seq":1,"ts":1764000000000,"RP\x962":7}'),
    (topics.topic(WRISTBAND, "status"), b'{"v":1,"state":"online","fw":"a\xed\xa0\x80"}'),
)


@PURE
@given(uplinks)
@example(NOT_UTF8_IN_A_STRING[0])
@example(NOT_UTF8_IN_A_STRING[1])
def test_validate_never_raises_and_rejects_with_a_known_reason(uplink: tuple[str, bytes]) -> None:
    topic_name, payload = uplink
    result = validate(topic_name, payload, REGISTRY_VIEW, received_ms=NOW, max_payload_bytes=LIMIT)
    check_outcome(topic_name, payload, result)


@PURE
@given(st.sampled_from(KINDS).flatmap(near_valid))
def test_near_valid_payloads_on_a_good_topic(payload: bytes) -> None:
    topic_name = topics.topic(WRISTBAND, "telemetry")
    result = validate(topic_name, payload, REGISTRY_VIEW, received_ms=NOW, max_payload_bytes=10**6)
    check_outcome(topic_name, payload, result)


@PURE
@given(st.text(max_size=200))
def test_arbitrary_topics_never_raise(topic_name: str) -> None:
    payload = json.dumps(valid_body("event", 1)).encode()
    result = validate(topic_name, payload, REGISTRY_VIEW, received_ms=NOW, max_payload_bytes=LIMIT)
    check_outcome(topic_name, payload, result)
    if topics.parse(topic_name) is None:
        assert isinstance(result, Rejection) and result.reason == "bad_topic"


def test_mutated_fields_are_refused_not_coerced() -> None:
    """Values a lenient parser would coerce are schema errors, with the field named."""
    topic_name = topics.topic(WRISTBAND, "telemetry")
    for field, raw in (
        ("hr", '"72"'),
        ("hr", "72.5"),
        ("seq", str(2**64)),
        ("ts", "1e400"),
        ("temp", "1e400"),
        ("worn", "1"),
        ("accel", "[" * 3000 + "]" * 3000),
        ("accel", '{"hz":50,"x":[1,2],"y":[1],"z":[]}'),  # axes of different lengths
        ("steps", "-1"),
    ):
        fields = [(k, json.dumps(v)) for k, v in valid_body("telemetry", 1).items() if k != field]
        result = validate(
            topic_name,
            raw_object([*fields, (field, raw)]),
            REGISTRY_VIEW,
            received_ms=NOW,
            max_payload_bytes=10**6,
        )
        assert isinstance(result, Rejection) and result.reason == "schema_invalid", (
            field,
            raw[:20],
        )
        assert field in result.detail, result.detail
    for raw in ("NaN", "Infinity", "-Infinity"):
        result = validate(
            topic_name,
            raw_object([("hr", raw)]),
            REGISTRY_VIEW,
            received_ms=NOW,
            max_payload_bytes=10**6,
        )
        assert isinstance(result, Rejection) and result.reason == "malformed_json", raw


# One input per rejection reason, next to accepted ones, so every reason is counted
# whatever the drawn examples happen to cover.
ONE_OF_EACH_REASON = [
    *NOT_UTF8_IN_A_STRING,  # malformed_json
    ("cw/v1/dev/W1/cmd", b"{}"),  # bad_topic
    (topics.topic(WRISTBAND, "event"), b"x" * (LIMIT + 1)),  # oversized
    (topics.topic(WRISTBAND, "event"), b'{"v":1,'),  # malformed_json
    (topics.topic(WRISTBAND, "event"), b'{"v":2}'),  # schema_invalid
    (topics.topic("UNKNOWN-9", "event"), json.dumps(valid_body("event", 7)).encode()),
    (topics.topic(WRISTBAND, "event"), json.dumps(valid_body("event", 8)).encode()),
    (topics.topic(DOOR, "status"), json.dumps(valid_body("status", 9)).encode()),
]


# --- counting where the worker counts: the real pipeline on Redis and PostgreSQL --------


def rejects_by_reason() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("carewatch_ingest_rejects_total", {"reason": r}) or 0.0
        for r in VALIDATE_REASONS
    }


@dataclass
class Services:
    settings: Settings
    pool: AsyncConnectionPool[Any]
    redis: Redis
    bus: Bus
    registry: DeviceRegistry

    async def run_batch(self, messages: list[tuple[str, bytes]]) -> list[Incoming]:
        """Push the messages through a fresh Pipeline and Flusher; return those acked."""
        acked: list[Incoming] = []
        tracker: AckTracker[Incoming] = AckTracker(acked.extend)
        pending: dict[str, Ticket] = {}
        client_id = f"hostile-{uuid.uuid4().hex[:8]}"
        dedup = Deduplicator(self.redis, ttl_s=600, client_id=client_id, boot_id="b")
        flusher = Flusher(self.pool, dedup, pending, tracker, lambda: None)
        publisher = BusPublisher(
            self.bus, self.settings.bus_shards, self.settings.bus_telemetry_per_message
        )
        pipeline = Pipeline(
            self.settings, self.registry, dedup, publisher, tracker, pending, flusher, lambda: None
        )
        source: asyncio.Queue[Incoming | None] = asyncio.Queue()
        for mid, (topic_name, payload) in enumerate(messages, start=1):
            source.put_nowait(Incoming(topic_name, payload, NOW, 0.0, mid, 1, 0))
        source.put_nowait(None)
        await asyncio.gather(pipeline.run(source), flusher.run())
        return acked


@contextmanager
def running_services(settings: Settings) -> Iterator[tuple[asyncio.AbstractEventLoop, Services]]:
    loop = asyncio.new_event_loop()

    async def open_all() -> Services:
        pool = await open_pool(settings.database_url, min_size=1, max_size=2)
        bus = make_bus(settings)
        await bus.start()
        registry = DeviceRegistry(pool)
        assert await registry.refresh()
        return Services(settings, pool, Redis.from_url(settings.redis_url), bus, registry)

    services = loop.run_until_complete(open_all())
    try:
        yield loop, services
    finally:

        async def close_all() -> None:
            await services.bus.stop()
            await services.redis.aclose()
            await services.pool.close()

        loop.run_until_complete(close_all())
        loop.close()


def dead_letter_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert row is not None
    return int(row[0])


def test_each_rejected_input_moves_the_counter_by_one_and_is_kept(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_payload_bytes": LIMIT})
    insert_registry(settings.database_url)
    with running_services(settings) as (loop, services):

        @hsettings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(uplinks, min_size=1, max_size=6))
        @example(ONE_OF_EACH_REASON)
        def check(messages: list[tuple[str, bytes]]) -> None:
            expected = collections.Counter(
                r.reason
                for t, p in messages
                if isinstance(
                    r := validate(
                        t, p, services.registry.devices, received_ms=NOW, max_payload_bytes=LIMIT
                    ),
                    Rejection,
                )
            )
            before, letters_before = rejects_by_reason(), dead_letter_count(settings.database_url)
            acked = loop.run_until_complete(services.run_batch(messages))
            after = rejects_by_reason()
            assert {r: after[r] - before[r] for r in VALIDATE_REASONS} == {
                r: float(expected[r]) for r in VALIDATE_REASONS
            }
            # Kept for inspection, and nothing left unacknowledged: every message is durable.
            assert dead_letter_count(settings.database_url) - letters_before == sum(
                expected.values()
            )
            assert len(acked) == len(messages)
            seen.update(expected)

        seen: collections.Counter[str] = collections.Counter()
        check()
        # The generated inputs did reach every kind of rejection.
        assert set(seen) == VALIDATE_REASONS, seen
