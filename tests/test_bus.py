"""The bus contract on both backends: delivery, consumer groups, redelivery after a crash."""

from __future__ import annotations

import asyncio

import pytest

from carewatch.bus import make_broker, publish, shard_of, start, stop, subscribe
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


def test_shard_is_stable_and_in_range() -> None:
    assert shard_of("E0001", 8) == shard_of("E0001", 8)
    assert {shard_of(f"E{i:04d}", 8) for i in range(200)} == set(range(8))


async def test_delivered_once_to_a_group(bus_settings: Settings) -> None:
    stream = f"t.{bus_settings.bus_backend}.once"
    got: list[bytes] = []

    async def handler(body: bytes) -> None:
        got.append(body)

    broker = make_broker(bus_settings)
    subscribe(broker, stream, group="g", consumer="c1", handler=handler)
    await start(broker)
    try:
        for i in range(20):
            await publish(broker, stream, f'{{"n":{i}}}'.encode())

        async def all_in() -> bool:
            return len(got) >= 20

        await await_until(all_in, 10, "20 messages")
        assert sorted(got) == sorted(f'{{"n":{i}}}'.encode() for i in range(20))
    finally:
        await stop(broker)


async def test_unacknowledged_message_is_redelivered(bus_settings: Settings) -> None:
    """A handler that fails (as a crash would) leaves the message to be delivered again."""
    stream = f"t.{bus_settings.bus_backend}.redeliver"
    attempts: list[bytes] = []

    async def flaky(body: bytes) -> None:
        attempts.append(body)
        if len(attempts) == 1:
            raise RuntimeError("simulated crash before the side effect was durable")

    broker = make_broker(bus_settings)
    subscribe(broker, stream, group="g", consumer="c1", handler=flaky, reclaim_idle_ms=300)
    await start(broker)
    try:
        await publish(broker, stream, b'{"sos":1}')

        async def retried() -> bool:
            return len(attempts) >= 2

        await await_until(retried, 15, "redelivery")
        assert attempts[0] == attempts[1] == b'{"sos":1}'
    finally:
        await stop(broker)


async def test_events_published_before_the_group_existed_are_consumed(
    bus_settings: Settings,
) -> None:
    """First deployment: ingest may publish before any rules worker ever started."""
    stream = f"t.{bus_settings.bus_backend}.early"
    early = make_broker(bus_settings)
    await early.connect()
    await publish(early, stream, b'{"early":1}')
    await early.stop()

    got: list[bytes] = []

    async def handler(body: bytes) -> None:
        got.append(body)

    broker = make_broker(bus_settings)
    subscribe(broker, stream, group="late", consumer="c1", handler=handler)
    await start(broker)
    try:

        async def arrived() -> bool:
            return got == [b'{"early":1}']

        await await_until(arrived, 10, "the early message")
    finally:
        await stop(broker)


async def test_consumer_group_lag_is_reported(settings: Settings) -> None:
    from prometheus_client import REGISTRY

    stream = "t.redis.lag"
    early = make_broker(settings)
    await early.connect()
    for i in range(3):
        await publish(early, stream, f'{{"n":{i}}}'.encode())
    await early.stop()

    gate = asyncio.Event()

    async def blocked(body: bytes) -> None:
        await gate.wait()  # hold the first message so the rest stay unconsumed

    broker = make_broker(settings)
    subscribe(broker, stream, group="lagging", consumer="c1", handler=blocked)
    await start(broker)
    try:

        async def lag_seen() -> bool:
            value = REGISTRY.get_sample_value(
                "carewatch_bus_lag_messages", {"stream": stream, "group": "lagging"}
            )
            return value is not None and value >= 1

        await await_until(lag_seen, 15, "a lag figure for the group")
    finally:
        gate.set()
        await stop(broker)


async def test_batches_deliver_every_message_once_in_order(bus_settings: Settings) -> None:
    from carewatch.bus import subscribe_batch

    stream = f"t.{bus_settings.bus_backend}.batch"
    calls: list[list[bytes]] = []

    async def handler(bodies: list[bytes]) -> None:
        calls.append(bodies)

    broker = make_broker(bus_settings)
    subscribe_batch(broker, stream, group="g", consumer="c1", handler=handler)
    await start(broker)
    try:
        sent = [f'{{"n":{i}}}'.encode() for i in range(250)]
        for body in sent:
            await publish(broker, stream, body)

        async def all_in() -> bool:
            return sum(len(c) for c in calls) >= len(sent)

        await await_until(all_in, 15, "250 messages in batches")
        assert [b for c in calls for b in c] == sent
        assert all(len(c) <= 100 for c in calls)
    finally:
        await stop(broker)


async def test_failed_batch_and_a_dead_members_batch_are_redelivered(settings: Settings) -> None:
    """The direct Redis reader keeps FastStream's NACK_ON_ERROR semantics: a batch
    whose handler fails stays pending and is handled again, as is what a dead member read
    and never acknowledged."""
    import redis.asyncio as aioredis

    from carewatch.bus import subscribe_batch

    stream = "t.redis.batch.redelivery"
    client = aioredis.Redis.from_url(settings.redis_url)
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    publisher = make_broker(settings)
    await publisher.connect()
    for i in range(3):
        await publish(publisher, stream, f"dead-{i}".encode())
    # a member that reads and dies before acknowledging
    taken = await client.xreadgroup("g", "dead", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 3

    seen: list[bytes] = []
    failures = [1]

    async def handler(bodies: list[bytes]) -> None:
        if b"fail-once" in bodies and failures:
            failures.pop()
            raise RuntimeError("handler failed once")
        seen.extend(bodies)

    broker = make_broker(settings)
    subscribe_batch(broker, stream, group="g", consumer="c1", handler=handler, reclaim_idle_ms=200)
    await start(broker)
    try:
        await publish(publisher, stream, b"fail-once")

        async def all_handled() -> bool:
            return sorted(seen) == [b"dead-0", b"dead-1", b"dead-2", b"fail-once"]

        await await_until(all_handled, 15, "the dead member's and the failed batch")

        async def nothing_pending() -> bool:
            return int((await client.xpending(stream, "g"))["pending"]) == 0

        await await_until(nothing_pending, 10, "every entry acknowledged")
        assert not failures  # the failure did happen
    finally:
        await stop(broker)
        await publisher.stop()
        await client.aclose()


async def test_a_failing_message_does_not_hold_up_those_read_with_it(settings: Settings) -> None:
    """subscribe() on Redis: the entries of one read are handled and acknowledged one by
    one, so the others go on at once and only the failed one is delivered again."""
    import redis.asyncio as aioredis

    stream = "t.redis.one-by-one"
    publisher = make_broker(settings)
    await publisher.connect()
    bodies = [f'{{"n":{i}}}'.encode() for i in range(5)]
    for body in bodies:  # all on the stream before the first read: one read takes them
        await publish(publisher, stream, body)
    handled: list[bytes] = []
    failed: list[bytes] = []

    async def handler(body: bytes) -> None:
        if body == bodies[2] and not failed:
            failed.append(body)
            raise RuntimeError("this message fails once")
        handled.append(body)

    broker = make_broker(settings)
    subscribe(broker, stream, group="g", consumer="c1", handler=handler, reclaim_idle_ms=300)
    client = aioredis.Redis.from_url(settings.redis_url)
    await start(broker)
    try:

        async def all_handled() -> bool:
            return len(handled) == 5

        await await_until(all_handled, 15, "every message, the failed one again")
        assert failed == [bodies[2]]
        assert handled == [bodies[0], bodies[1], bodies[3], bodies[4], bodies[2]]

        async def nothing_pending() -> bool:
            return int((await client.xpending(stream, "g"))["pending"]) == 0

        await await_until(nothing_pending, 10, "every entry acknowledged")
    finally:
        await stop(broker)
        await publisher.stop()
        await client.aclose()


async def test_hand_built_frame_is_byte_identical_to_faststreams() -> None:
    """ingest frames its batches itself (carewatch.bus.redis_frame); FastStream consumers
    must read them exactly as if FastStream had published them."""
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
