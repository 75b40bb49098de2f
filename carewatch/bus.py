"""The internal bus: FastStream over Redis Streams (default) or NATS JetStream.

Logical streams: `events.{shard}` and `telemetry.{shard}` (shard = crc32(elder_id) mod
N; device events and telemetry travel apart so an SOS never queues behind telemetry),
`alerts`. Bodies are msgspec-encoded JSON bytes. A consumer group (Redis) or a
durable pull consumer (JetStream) shares a stream between the workers of one kind;
consumers acknowledge after their side effects are durable, and what a crashed consumer
left unacknowledged is delivered again (Redis: reclaimed with XAUTOCLAIM after
`reclaim_idle_ms`; JetStream: after the ack wait). Handlers must therefore be idempotent
by message id, and all of ours are. Which backend runs is configuration only
(`CAREWATCH_BUS_BACKEND=redis|nats`); nothing above this module knows.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from faststream import AckPolicy
from faststream._internal.context import Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.message import NatsBatchMessage as _NatsBatch
from faststream.redis import RedisBroker
from faststream.redis.parser import BinaryMessageFormatV1

from carewatch.bus_batch_reader import DATA_KEY, RedisBatchReader
from carewatch.metrics import BUS_LAG
from carewatch.settings import Settings

ALERTS_STREAM = "alerts"
STREAM_MAXLEN = 1_000_000
MAX_BATCH = 100  # entries per read of a batch subscriber
NATS_STREAM = JStream("CAREWATCH", subjects=["cw.>"], max_msgs=STREAM_MAXLEN * 10)

Broker = RedisBroker | NatsBroker
# FastStream 0.7 exports no annotation for a JetStream batch; same form as its others
NatsBatchMessage = Annotated[_NatsBatch, Context("message")]
Handler = Callable[[bytes], Awaitable[None]]
BatchHandler = Callable[[list[bytes]], Awaitable[None]]
# FastStream's own "faststream" logger prints coloured lines to stdout; ours goes through
# the structured handlers, and only FastStream's warnings and errors are worth keeping
_log = logging.getLogger("carewatch.bus.faststream")
_log.setLevel(logging.WARNING)
# URL, (stream, group) pairs and stream readers of each Redis broker; see start()
_redis_urls: dict[int, str] = {}
_redis_groups: dict[int, set[tuple[str, str]]] = {}
_lag_tasks: set[asyncio.Task[None]] = set()
_readers: dict[int, list[RedisBatchReader]] = {}


def shard_of(elder_id: str, shards: int) -> int:
    return zlib.crc32(elder_id.encode()) % shards


def events_stream(shard: int) -> str:
    """Device events and statuses of one shard: the fast lane (SOS, falls, cancels)."""
    return f"events.{shard}"


def telemetry_stream(shard: int) -> str:
    """Periodic telemetry of one shard. Kept apart from events so that an SOS never
    waits behind a telemetry backlog; both are consumed by the shard's one owner."""
    return f"telemetry.{shard}"


def stream_for(event_type: str, shard: int) -> str:
    return telemetry_stream(shard) if event_type == "telemetry" else events_stream(shard)


def shard_streams(shard: int) -> tuple[str, str]:
    return events_stream(shard), telemetry_stream(shard)


def make_broker(settings: Settings) -> Broker:
    if settings.bus_backend == "nats":
        return NatsBroker(settings.nats_url, logger=_log, log_level=logging.DEBUG)
    broker = RedisBroker(settings.redis_url, logger=_log, log_level=logging.DEBUG)
    _redis_urls[id(broker)] = settings.redis_url
    return broker


def _subject(stream: str) -> str:
    return f"cw.{stream}"


async def publish(broker: Broker, stream: str, body: bytes) -> None:
    if isinstance(broker, NatsBroker):
        await broker.publish(body, _subject(stream), stream=NATS_STREAM.name)
    else:
        await broker.publish(body, stream=stream, maxlen=STREAM_MAXLEN)


def subscribe(
    broker: Broker,
    stream: str,
    *,
    group: str,
    consumer: str,
    handler: Handler,
    reclaim_idle_ms: int = 10_000,
    polling_ms: int = 100,
) -> None:
    """Consume `stream` as a member of `group`, one message at a time: each is
    acknowledged, or left pending to be delivered again, on its own; what a dead member
    left is redelivered too. Runs between bus.start(broker) and bus.stop(broker)."""

    async def one(bodies: list[bytes]) -> None:
        await handler(bodies[0])

    _subscribe(broker, stream, group, consumer, one, reclaim_idle_ms, polling_ms, batch=False)


def subscribe_batch(
    broker: Broker,
    stream: str,
    *,
    group: str,
    consumer: str,
    handler: BatchHandler,
    reclaim_idle_ms: int = 10_000,
    polling_ms: int = 100,
    linger_ms: int = 0,
    urgent: bool = False,
) -> None:
    """Like subscribe(), but hand over up to MAX_BATCH bodies per call, acknowledged
    together once the handler returns (a failure redelivers the whole batch). For
    high-volume streams, where a call and an acknowledgement per message would cost more
    than most handlers.

    `linger_ms`: after a batch shorter than MAX_BATCH, wait this long before reading
    again. A lane that trickles would otherwise be read a few entries at a time, and the
    bus's fixed cost per read then dominates; lingering trades that for latency.

    `urgent`: a lane whose every message is urgent (device events: SOS); give no
    `linger_ms`. Through FastStream's per-message machinery an SOS spent up to 26 ms
    (p99) between its XADD and its handler in a rules worker busy with telemetry, against
    10 ms read directly (bench.sos_latency at 10,000 msg/s). On NATS a pull batch waits
    for more messages, so there an urgent lane is consumed one message at a time."""
    _subscribe(
        broker,
        stream,
        group,
        consumer,
        handler,
        reclaim_idle_ms,
        polling_ms,
        batch=not (urgent and isinstance(broker, NatsBroker)),
        linger_s=linger_ms / 1000,
    )


def _lingering(handler: BatchHandler, linger_s: float) -> BatchHandler:
    if linger_s <= 0:
        return handler

    async def handle_then_linger(bodies: list[bytes]) -> None:
        await handler(bodies)
        if len(bodies) < MAX_BATCH:
            await asyncio.sleep(linger_s)  # pacing the next read, not waiting for anything

    return handle_then_linger


def _subscribe(
    broker: Broker,
    stream: str,
    group: str,
    consumer: str,
    handler: BatchHandler,
    reclaim_idle_ms: int,
    polling_ms: int,
    *,
    batch: bool,
    linger_s: float = 0.0,
) -> None:
    if isinstance(broker, NatsBroker):
        _subscribe_nats(
            broker, stream, group, _lingering(handler, linger_s), reclaim_idle_ms, batch
        )
    else:
        _subscribe_redis(
            broker, stream, group, consumer, handler, reclaim_idle_ms, polling_ms, batch, linger_s
        )


async def start(broker: Broker) -> None:
    """Start consuming. Use this, not broker.start(): on Redis it first creates each
    consumer group at the beginning of its stream, so events published before a group
    ever existed (first deployment, a flushed Redis) are consumed rather than skipped.
    FastStream on its own would create the group at `$`, i.e. after them."""
    if isinstance(broker, RedisBroker):
        from redis.asyncio import Redis
        from redis.exceptions import ResponseError

        client = Redis.from_url(_redis_urls[id(broker)])
        try:
            for stream, group in sorted(_redis_groups.get(id(broker), ())):
                try:
                    await client.xgroup_create(stream, group, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
        finally:
            await client.aclose()
    await broker.start()
    for reader in _readers.get(id(broker), ()):
        reader.start()
    if isinstance(broker, RedisBroker) and _redis_groups.get(id(broker)):
        task = asyncio.create_task(_report_lag(broker), name="bus-lag")
        _lag_tasks.add(task)
        task.add_done_callback(_lag_tasks.discard)


async def stop(broker: Broker) -> None:
    """Stop consuming and disconnect; a batch being handled finishes first. Use this,
    not broker.stop(), for a broker started with start()."""
    for reader in _readers.pop(id(broker), ()):
        await reader.stop()
    await broker.stop()


async def _report_lag(broker: RedisBroker, interval_s: float = 5.0) -> None:
    """Keep carewatch_bus_lag_messages (entries not yet processed: undelivered plus
    unacknowledged) current for every group this broker consumes in, while it runs.
    Redis >= 7 reports a group's lag in XINFO GROUPS."""
    from redis.asyncio import Redis

    client = Redis.from_url(_redis_urls[id(broker)])
    try:
        while broker.running:
            for stream, group in sorted(_redis_groups.get(id(broker), ())):
                try:
                    groups = await client.xinfo_groups(stream)
                except Exception:
                    _log.debug("bus lag unavailable for %s", stream, exc_info=True)
                    continue
                for info in groups:
                    name = info.get("name")
                    if name in (group, group.encode()) and info.get("lag") is not None:
                        # not yet delivered + delivered but not yet acknowledged
                        backlog = float(info["lag"]) + float(info.get("pending") or 0)
                        BUS_LAG.labels(stream, group).set(backlog)
            await asyncio.sleep(interval_s)
    finally:
        await client.aclose()


# FastStream's binary message format (BinaryMessageFormatV1): magic, version, offsets of
# the headers and the data, the header pairs, the body. Built by hand for a batch of
# publishes because FastStream's publish path (codec, message build, writer objects)
# cost ingest ~40 % of its CPU; a test keeps the two byte-identical.
_FRAME_HEAD = BinaryMessageFormatV1.IDENTITY_HEADER + struct.pack(">HI", 1, 18)
_CORRELATION_KEY = struct.pack(">H", len(b"correlation_id")) + b"correlation_id"


def redis_frame(body: bytes, correlation_id: str) -> bytes:
    """`body` framed as FastStream frames it, with only the correlation id header."""
    cid = correlation_id.encode()
    headers = _CORRELATION_KEY + struct.pack(">H", len(cid)) + cid
    return _FRAME_HEAD + struct.pack(">IH", 20 + len(headers), 1) + headers + body


# Every XADD of a batch in one command. With a pipeline of XADDs redis-py spent more
# time packing N commands and parsing N entry ids than Redis spent appending (~22 % of
# ingest's CPU); one script call packs once and returns a count. The entries go as one
# argument, each a (stream number, frame length) head and the frame, streams in KEYS:
# redis-py packs every argument in Python (~0.4 us each). Lua's struct reads the heads
# ('c0' takes the length just read); its cmsgpack cannot, it has no binary type.
_XADD_ALL = """
local blob, pos, count = ARGV[3], 1, 0
while pos <= #blob do
    local number, frame
    number, frame, pos = struct.unpack('>HI4c0', blob, pos)
    redis.call('XADD', KEYS[number], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], frame)
    count = count + 1
end
return count
"""
_ENTRY_HEAD = struct.Struct(">HI")


def large_arg(value: bytes) -> memoryview:
    """A big argument for redis-py, as a memoryview: redis-py then writes it as is, where
    hiredis' packer would copy it at ~1.6 ms per MB (0.5 ms for a batch of 1000 events)."""
    return memoryview(value)


class RedisAppender:
    """Appends batches of events as FastStream's publish would (same field, same framing,
    same approximate length cap), in one round trip and one command per batch."""

    def __init__(self, redis: Any) -> None:
        self._script = redis.register_script(_XADD_ALL)

    async def append(self, entries: list[tuple[str, bytes, str]]) -> None:
        """(stream, body, correlation id) per entry, appended in order."""
        if not entries:
            return
        numbers: dict[str, int] = {}  # stream -> its 1-based place in KEYS
        parts: list[bytes] = []
        for stream, body, cid in entries:
            frame = redis_frame(body, cid)
            parts += (
                _ENTRY_HEAD.pack(numbers.setdefault(stream, len(numbers) + 1), len(frame)),
                frame,
            )
        blob = large_arg(b"".join(parts))
        await self._script(keys=list(numbers), args=[STREAM_MAXLEN, DATA_KEY, blob])


def _subscribe_redis(
    broker: RedisBroker,
    stream: str,
    group: str,
    consumer: str,
    handler: BatchHandler,
    reclaim_idle_ms: int,
    polling_ms: int,
    batch: bool,
    linger_s: float,
) -> None:
    _redis_groups.setdefault(id(broker), set()).add((stream, group))
    # read directly, not through FastStream's subscriber (carewatch.bus_batch_reader
    # says why); a single-message subscription gets each message on its own
    reader = RedisBatchReader(
        _redis_urls[id(broker)],
        stream,
        group=group,
        consumer=consumer,
        handler=handler,
        batch=MAX_BATCH,
        reclaim_idle_ms=reclaim_idle_ms,
        polling_ms=polling_ms,
        linger_s=linger_s,
        one_by_one=not batch,
    )
    _readers.setdefault(id(broker), []).append(reader)


def _subscribe_nats(
    broker: NatsBroker,
    stream: str,
    group: str,
    handler: BatchHandler,
    reclaim_idle_ms: int,
    batch: bool,
) -> None:
    from nats.js.api import ConsumerConfig

    on_message: Callable[..., Awaitable[None]]
    if batch:

        async def on_batch(msg: NatsBatchMessage) -> None:
            await handler([m.data for m in msg.raw_message])

        on_message = on_batch
    else:

        async def on_one(msg: NatsMessage) -> None:
            await handler([msg.body])

        on_message = on_one

    durable = re.sub(r"[^A-Za-z0-9_-]", "_", f"{group}-{stream}")
    broker.subscriber(
        _subject(stream),
        stream=NATS_STREAM,
        durable=durable,
        config=ConsumerConfig(ack_wait=reclaim_idle_ms / 1000),
        pull_sub=PullSub(batch_size=MAX_BATCH, timeout=0.1, batch=batch),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )(on_message)
