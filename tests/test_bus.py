"""The bus contract, every semantic test on both backends (Redis Streams and NATS
JetStream): delivery, consumer groups, redelivery after a failure or a hung member,
batches, lag, and no state shared between two Bus instances."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
from prometheus_client import REGISTRY

from carewatch import bus as bus_module
from carewatch.bus import MAX_BATCH, Bus, make_bus, shard_of
from carewatch.bus_batch_reader import GROWTH
from carewatch.settings import Settings
from harness.services import Proc, await_until


@pytest.fixture(params=["redis", "nats"])
def bus_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "nats":
        nats: Proc = request.getfixturevalue("nats_server")
        return settings.model_copy(
            update={"bus_backend": "nats", "nats_url": f"nats://127.0.0.1:{nats.port}"}
        )
    return settings


@pytest.fixture
async def publisher(bus_settings: Settings) -> AsyncIterator[Bus]:
    """A bus that only publishes, started."""
    bus = make_bus(bus_settings)
    await bus.start()
    yield bus
    await bus.stop()


def name(settings: Settings, what: str) -> str:
    # the NATS server lives for the session: a stream name per test keeps tests apart
    return f"t.{settings.bus_backend}.{what}.{uuid.uuid4().hex[:8]}"


async def nothing_left(bus: Bus, stream: str, group: str) -> None:
    async def done() -> bool:
        backlog = await bus.backlog(stream, group)
        return backlog is not None and backlog.total == 0

    await await_until(done, 10, f"every message of {stream} acknowledged by {group}")


def test_shard_is_stable_and_in_range() -> None:
    assert shard_of("E0001", 8) == shard_of("E0001", 8)
    assert {shard_of(f"E{i:04d}", 8) for i in range(200)} == set(range(8))


async def test_delivered_once_to_a_group(bus_settings: Settings) -> None:
    stream = name(bus_settings, "once")
    got: list[bytes] = []

    async def handler(body: bytes) -> None:
        got.append(body)

    bus = make_bus(bus_settings)
    bus.subscribe(stream, group="g", consumer="c1", handler=handler)
    await bus.start()
    try:
        for i in range(20):
            await bus.publish(stream, f'{{"n":{i}}}'.encode())

        async def all_in() -> bool:
            return len(got) >= 20

        await await_until(all_in, 10, "20 messages")
        assert sorted(got) == sorted(f'{{"n":{i}}}'.encode() for i in range(20))
        await nothing_left(bus, stream, "g")
        assert len(got) == 20
    finally:
        await bus.stop()


async def test_unacknowledged_message_is_redelivered(bus_settings: Settings) -> None:
    """A handler that fails (as a crash would) leaves the message to be delivered again."""
    stream = name(bus_settings, "redeliver")
    attempts: list[bytes] = []

    async def flaky(body: bytes) -> None:
        attempts.append(body)
        if len(attempts) == 1:
            raise RuntimeError("simulated crash before the side effect was durable")

    bus = make_bus(bus_settings)
    bus.subscribe(stream, group="g", consumer="c1", handler=flaky, reclaim_idle_ms=300)
    await bus.start()
    try:
        await bus.publish(stream, b'{"sos":1}')

        async def retried() -> bool:
            return len(attempts) >= 2

        await await_until(retried, 15, "redelivery")
        assert attempts[0] == attempts[1] == b'{"sos":1}'
        await nothing_left(bus, stream, "g")
    finally:
        await bus.stop()


async def test_events_published_before_the_group_existed_are_consumed(
    bus_settings: Settings, publisher: Bus
) -> None:
    """First deployment: ingest may publish before any rules worker ever started."""
    stream = name(bus_settings, "early")
    await publisher.publish(stream, b'{"early":1}')

    got: list[bytes] = []

    async def handler(body: bytes) -> None:
        got.append(body)

    bus = make_bus(bus_settings)
    bus.subscribe(stream, group="late", consumer="c1", handler=handler)
    await bus.start()
    try:

        async def arrived() -> bool:
            return got == [b'{"early":1}']

        await await_until(arrived, 10, "the early message")
    finally:
        await bus.stop()


async def test_consumer_group_lag_is_reported(bus_settings: Settings, publisher: Bus) -> None:
    stream = name(bus_settings, "lag")
    for i in range(3):
        await publisher.publish(stream, f'{{"n":{i}}}'.encode())

    gate = asyncio.Event()

    async def blocked(body: bytes) -> None:
        await gate.wait()  # hold the first message so the rest stay unfinished

    bus = make_bus(bus_settings)
    bus.subscribe(stream, group="lagging", consumer="c1", handler=blocked)
    await bus.start()
    try:

        async def lag_seen() -> bool:
            value = REGISTRY.get_sample_value(
                "carewatch_bus_lag_messages", {"stream": stream, "group": "lagging"}
            )
            return value is not None and value >= 1

        await await_until(lag_seen, 15, "a lag figure for the group")
        backlog = await bus.backlog(stream, "lagging")
        assert backlog is not None and backlog.total == 3
    finally:
        gate.set()
        await bus.stop()


@contextlib.asynccontextmanager
async def batch_consumer(
    settings: Settings, stream: str
) -> AsyncIterator[tuple[Bus, list[list[bytes]]]]:
    """A started bus consuming `stream` in batches as group "g"; each handler call's
    bodies are kept, in order."""
    calls: list[list[bytes]] = []

    async def handler(bodies: list[bytes]) -> None:
        calls.append(bodies)

    bus = make_bus(settings)
    bus.subscribe_batch(stream, group="g", consumer="c1", handler=handler)
    await bus.start()
    try:
        yield bus, calls
    finally:
        await bus.stop()


async def all_received(calls: list[list[bytes]], count: int, what: str) -> None:
    async def all_in() -> bool:
        return sum(len(c) for c in calls) >= count

    await await_until(all_in, 15, what)


async def test_batches_deliver_every_message_once_in_order(bus_settings: Settings) -> None:
    stream = name(bus_settings, "batch")
    async with batch_consumer(bus_settings, stream) as (bus, calls):
        sent = [f'{{"n":{i}}}'.encode() for i in range(250)]
        for body in sent:
            await bus.publish(stream, body)
        await all_received(calls, len(sent), "250 messages in batches")
        assert [b for c in calls for b in c] == sent
        assert all(len(c) <= MAX_BATCH * GROWTH for c in calls)


async def test_a_backlog_is_read_in_growing_batches(settings: Settings) -> None:
    """Redis: each full read is followed by one twice as large, up to GROWTH times
    MAX_BATCH; the backlog arrives whole, in order, each entry once."""
    stream = name(settings, "grow")
    sent = [f'{{"n":{i}}}'.encode() for i in range(2000)]
    publisher = make_bus(settings)
    await publisher.start()
    try:
        await publisher.publish_many([(stream, body, str(i)) for i, body in enumerate(sent)])
    finally:
        await publisher.stop()
    async with batch_consumer(settings, stream) as (bus, calls):
        await all_received(calls, len(sent), "the backlog in batches")
        await nothing_left(bus, stream, "g")
        assert [b for c in calls for b in c] == sent
        expected, count, left = [], MAX_BATCH, len(sent)  # 100, 200, 400, 800, 500
        while left:
            expected.append(min(count, left))
            left -= expected[-1]
            count = min(2 * count, MAX_BATCH * GROWTH)
        assert [len(c) for c in calls] == expected


async def test_publish_many_appends_in_order_across_streams(
    bus_settings: Settings, publisher: Bus
) -> None:
    """ingest's path: a batch of (stream, body, id) entries for several streams."""
    streams = [name(bus_settings, "many-a"), name(bus_settings, "many-b")]
    entries = [(streams[i % 2], f"m{i}".encode(), f"id{i}") for i in range(30)]
    got: dict[str, list[bytes]] = {s: [] for s in streams}

    bus = make_bus(bus_settings)
    for stream in streams:

        async def handler(bodies: list[bytes], stream: str = stream) -> None:
            got[stream].extend(bodies)

        bus.subscribe_batch(stream, group="g", consumer="c1", handler=handler, urgent=True)
    await bus.start()
    try:
        await publisher.publish_many(entries)

        async def all_in() -> bool:
            return sum(map(len, got.values())) >= len(entries)

        await await_until(all_in, 15, "every entry of the batch")
        for stream in streams:
            assert got[stream] == [body for s, body, _ in entries if s == stream], got
    finally:
        await bus.stop()


async def test_failed_batch_is_redelivered(bus_settings: Settings) -> None:
    """A batch whose handler fails is not acknowledged: it is handled again."""
    stream = name(bus_settings, "batch-fail")
    seen: list[bytes] = []
    failures = [1]

    async def handler(bodies: list[bytes]) -> None:
        if b"fail-once" in bodies and failures:
            failures.pop()
            raise RuntimeError("handler failed once")
        seen.extend(bodies)

    bus = make_bus(bus_settings)
    bus.subscribe_batch(stream, group="g", consumer="c1", handler=handler, reclaim_idle_ms=200)
    await bus.start()
    try:
        await bus.publish(stream, b"fail-once")

        async def handled() -> bool:
            return seen == [b"fail-once"]

        await await_until(handled, 15, "the failed batch again")
        assert not failures  # the failure did happen
        await nothing_left(bus, stream, "g")
    finally:
        await bus.stop()


async def test_a_hung_members_batch_goes_to_another_member(
    bus_settings: Settings, publisher: Bus
) -> None:
    """What a member took and never acknowledged (it hangs, or died) is delivered to
    another member of the group after reclaim_idle_ms."""
    stream = name(bus_settings, "hung")
    gate = asyncio.Event()
    held: list[bytes] = []
    seen: list[bytes] = []

    async def hang(bodies: list[bytes]) -> None:
        held.extend(bodies)
        await gate.wait()

    async def handle(bodies: list[bytes]) -> None:
        seen.extend(bodies)

    hung = make_bus(bus_settings)
    hung.subscribe_batch(stream, group="g", consumer="hung", handler=hang, reclaim_idle_ms=300)
    await hung.start()
    other = make_bus(bus_settings)
    other.subscribe_batch(stream, group="g", consumer="c2", handler=handle, reclaim_idle_ms=300)
    try:
        sent = [f"dead-{i}".encode() for i in range(3)]
        for body in sent:
            await publisher.publish(stream, body)

        async def taken() -> bool:
            return bool(held)

        await await_until(taken, 10, "the hung member to take a batch")
        await other.start()

        async def all_handled() -> bool:
            return set(sent) <= set(seen)

        await await_until(all_handled, 15, "the hung member's batch at the other member")
        assert set(held) <= set(sent)
        gate.set()
        await nothing_left(other, stream, "g")
    finally:
        gate.set()
        await hung.stop()
        await other.stop()


async def test_a_failing_message_does_not_hold_up_those_read_with_it(
    bus_settings: Settings, publisher: Bus
) -> None:
    """subscribe(): the messages of one read are handled and acknowledged one by one, so
    the others go on at once and only the failed one is delivered again."""
    stream = name(bus_settings, "one-by-one")
    bodies = [f'{{"n":{i}}}'.encode() for i in range(5)]
    for body in bodies:  # all on the stream before the first read: one read takes them
        await publisher.publish(stream, body)
    handled: list[bytes] = []
    failed: list[bytes] = []

    async def handler(body: bytes) -> None:
        if body == bodies[2] and not failed:
            failed.append(body)
            raise RuntimeError("this message fails once")
        handled.append(body)

    bus = make_bus(bus_settings)
    bus.subscribe(stream, group="g", consumer="c1", handler=handler, reclaim_idle_ms=300)
    await bus.start()
    try:

        async def all_handled() -> bool:
            return len(handled) == 5

        await await_until(all_handled, 15, "every message, the failed one again")
        assert failed == [bodies[2]]
        assert handled == [bodies[0], bodies[1], bodies[3], bodies[4], bodies[2]]
        await nothing_left(bus, stream, "g")
    finally:
        await bus.stop()


async def test_a_new_bus_inherits_nothing_from_one_gone_before(bus_settings: Settings) -> None:
    """Each Bus owns its subscriptions. When the bus kept them in module-level dicts keyed
    by id(broker), a new broker at a recycled address inherited another shard's consumer
    groups (created at start) and reported lag for a shard it no longer owned."""
    old_stream, new_stream = name(bus_settings, "old"), name(bus_settings, "new")

    async def ignore(body: bytes) -> None:
        return None

    def abandoned() -> int:
        gone = make_bus(bus_settings)
        gone.subscribe(old_stream, group="old-owner", consumer="c1", handler=ignore)
        return id(gone)

    old_id = abandoned()
    gc.collect()
    bus = make_bus(bus_settings)  # at old_id or not: nothing may depend on that
    got: list[bytes] = []

    async def handler(body: bytes) -> None:
        got.append(body)

    bus.subscribe(new_stream, group="new-owner", consumer="c1", handler=handler)
    await bus.start()
    try:
        await bus.publish(new_stream, b"x")

        async def arrived() -> bool:
            return got == [b"x"]

        await await_until(arrived, 10, "the new bus's own message")
        assert await bus.backlog(old_stream, "old-owner") is None, (old_id, id(bus))
        assert (
            REGISTRY.get_sample_value(
                "carewatch_bus_lag_messages", {"stream": old_stream, "group": "old-owner"}
            )
            is None
        )
    finally:
        await bus.stop()


async def test_hand_built_frame_is_byte_identical_to_faststreams() -> None:
    """Redis entries are framed by carewatch.bus.redis_frame; workers of the version
    before ADR 0005 (FastStream's publisher and parser) must read them as their own."""
    from faststream.redis.parser import BinaryMessageFormatV1

    from carewatch.bus import redis_frame

    for body, cid in [(b'{"v":1}', "E1:42"), (b"", ""), ("紧急".encode() * 300, "x" * 64)]:
        theirs = await BinaryMessageFormatV1.encode(
            message=body, reply_to=None, headers=None, correlation_id=cid
        )
        assert redis_frame(body, cid) == theirs
        assert BinaryMessageFormatV1.parse(redis_frame(body, cid)) == (
            body,
            {"correlation_id": cid},
        )


async def test_telemetry_streams_keep_as_many_readings_not_entries(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis: a telemetry entry holds up to bus_telemetry_per_message readings, so its
    streams are trimmed to that many times fewer entries (about STREAM_MAXLEN readings,
    the memory bound Redis had before batches); other streams keep STREAM_MAXLEN."""
    monkeypatch.setattr(bus_module, "STREAM_MAXLEN", 500)
    suffix = uuid.uuid4().hex[:8]
    telemetry, events = f"telemetry.t{suffix}", f"events.t{suffix}"
    publisher = make_bus(settings.model_copy(update={"bus_telemetry_per_message": 10}))
    client = redis.Redis.from_url(settings.redis_url)
    await publisher.start()
    try:
        entries = [(s, b'{"n":1}', f"{s}:{i}") for i in range(1000) for s in (telemetry, events)]
        await publisher.publish_many(entries)
        for i in range(300):
            await publisher.publish(telemetry, b'{"n":2}', message_id=f"one:{i}")
        # approximate trimming (MAXLEN ~) removes whole nodes of 100 entries
        assert int(client.xlen(telemetry)) < 50 + 2 * 100
        assert 500 <= int(client.xlen(events)) < 500 + 2 * 100
    finally:
        await publisher.stop()
        client.delete(telemetry, events)
        client.close()
