"""The internal bus: `Bus`, with one class per backend, Redis Streams (default) or NATS
JetStream, built from Settings by `make_bus`.

Logical streams: `events.{shard}` and `telemetry.{shard}` (shard = crc32(elder_id) mod
N; device events and telemetry travel apart so an SOS never queues behind telemetry),
`alerts`. Bodies are msgspec-encoded JSON bytes: on the telemetry lanes a body may be a
batch of events (carewatch.messages.encode_events, docs/adr/0006); the bus does not
look inside. A consumer group (Redis) or a
durable pull consumer (JetStream) shares a stream between the workers of one kind;
consumers acknowledge after their side effects are durable, and what a crashed consumer
left unacknowledged is delivered again after `reclaim_idle_ms` (Redis: reclaimed with
XAUTOCLAIM; JetStream: its ack wait, or the delay of a negative acknowledgement after a
handler failed). Handlers must therefore be idempotent, and all of ours are: by event
id (each event of a telemetry batch by its own) or alert change id. Which backend runs
is configuration only (`CAREWATCH_BUS_BACKEND=redis|nats`);
nothing above this module knows.

Each Bus instance owns everything it consumes and publishes with (connections,
consumer groups, readers, its lag reporter); nothing is kept at module level.
docs/adr/0005-bus-interface.md says where FastStream is used and why.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import struct
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage as _NatsBatch
from faststream.nats.message import NatsMessage as _NatsMessage
from faststream.redis.parser import BinaryMessageFormatV1
from nats.js import JetStreamContext
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from carewatch.bus_batch_reader import DATA_KEY, RedisBatchReader
from carewatch.metrics import BUS_LAG
from carewatch.settings import Settings

ALERTS_STREAM = "alerts"
STREAM_MAXLEN = 1_000_000  # entries per stream; a telemetry stream's are batches (below)
MAX_BATCH = 100  # entries per read of a batch subscriber
NATS_STREAM = JStream("CAREWATCH", subjects=["cw.>"], max_msgs=STREAM_MAXLEN * 10)
LAG_INTERVAL_S = 5.0

Handler = Callable[[bytes], Awaitable[None]]
BatchHandler = Callable[[list[bytes]], Awaitable[None]]
# FastStream's own "faststream" logger prints coloured lines to stdout; ours goes through
# the structured handlers, and only FastStream's warnings and errors are worth keeping
_log = logging.getLogger("carewatch.bus.faststream")
_log.setLevel(logging.WARNING)
log = logging.getLogger(__name__)


def shard_of(elder_id: str, shards: int) -> int:
    return zlib.crc32(elder_id.encode()) % shards


def events_stream(shard: int) -> str:
    """Device events and statuses of one shard: the fast lane (SOS, falls, cancels)."""
    return f"events.{shard}"


_TELEMETRY_PREFIX = "telemetry."


def telemetry_stream(shard: int) -> str:
    """Periodic telemetry of one shard. Kept apart from events so that an SOS never
    waits behind a telemetry backlog; both are consumed by the shard's one owner."""
    return f"{_TELEMETRY_PREFIX}{shard}"


def stream_maxlen(stream: str, telemetry_per_message: int) -> int:
    """The length (entries) a stream is trimmed to. A telemetry entry holds up to
    `telemetry_per_message` readings (docs/adr/0006), so its streams keep that many
    times fewer entries: at most about STREAM_MAXLEN readings, the memory bound they
    always had (Redis runs with noeviction: a full Redis would refuse an SOS too)."""
    if stream.startswith(_TELEMETRY_PREFIX):
        return max(1, STREAM_MAXLEN // telemetry_per_message)
    return STREAM_MAXLEN


def stream_for(event_type: str, shard: int) -> str:
    return telemetry_stream(shard) if event_type == "telemetry" else events_stream(shard)


def shard_streams(shard: int) -> tuple[str, str]:
    return events_stream(shard), telemetry_stream(shard)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a group has not finished with on one stream."""

    undelivered: int  # not yet handed to any member
    unacked: int  # handed to a member, not yet acknowledged

    @property
    def total(self) -> int:
        return self.undelivered + self.unacked


@dataclass(frozen=True, slots=True)
class _Subscription:
    stream: str
    group: str
    consumer: str
    handler: BatchHandler
    reclaim_idle_ms: int
    polling_ms: int
    linger_s: float
    # one message per handler call, each acknowledged or redelivered on its own
    one_by_one: bool
    urgent: bool


class Bus(abc.ABC):
    """Publish to and consume from the bus's streams.

    Subscribe first, then start(); stop() when done. A bus that subscribes to nothing
    only publishes (start() connects it). While it runs, a bus that consumes keeps
    carewatch_bus_lag_messages current for each (stream, group) it consumes in.
    """

    def __init__(self) -> None:
        self._subscriptions: list[_Subscription] = []
        self._lag_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = asyncio.Event()

    # -- publishing ----------------------------------------------------------------------

    @abc.abstractmethod
    async def publish(self, stream: str, body: bytes, *, message_id: str | None = None) -> None:
        """Append one message; `message_id` travels as its correlation id."""

    @abc.abstractmethod
    async def publish_many(self, entries: Sequence[tuple[str, bytes, str]]) -> None:
        """Append (stream, body, message id) entries, in order, as cheaply as the
        backend allows (Redis: one round trip for all of them)."""

    # -- consuming -----------------------------------------------------------------------

    def subscribe(
        self,
        stream: str,
        *,
        group: str,
        consumer: str,
        handler: Handler,
        reclaim_idle_ms: int = 10_000,
        polling_ms: int = 100,
    ) -> None:
        """Consume `stream` as a member of `group`, one message at a time: each is
        acknowledged, or left to be delivered again, on its own; what a dead member
        left is redelivered too."""

        async def one(bodies: list[bytes]) -> None:
            await handler(bodies[0])

        self._add(
            _Subscription(
                stream, group, consumer, one, reclaim_idle_ms, polling_ms, 0.0, True, False
            )
        )

    def subscribe_batch(
        self,
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
        high-volume streams, where a call and an acknowledgement per message would cost
        more than most handlers. On Redis a read that comes back full is followed by a
        larger one, up to carewatch.bus_batch_reader.GROWTH times MAX_BATCH, while a
        backlog lasts.

        `linger_ms`: after a batch shorter than MAX_BATCH, wait this long before reading
        again. A lane that trickles would otherwise be read a few entries at a time, and
        the bus's fixed cost per read then dominates; lingering trades that for latency.

        `urgent`: a lane whose every message is urgent (device events: SOS); give no
        `linger_ms`. Each backend delivers such a lane without waiting for more
        messages: on Redis a read returns what is there; on NATS, where a pull batch
        waits for more, the lane is consumed one message at a time."""
        if urgent and linger_ms:
            raise ValueError("an urgent lane does not linger")
        self._add(
            _Subscription(
                stream,
                group,
                consumer,
                handler,
                reclaim_idle_ms,
                polling_ms,
                linger_ms / 1000,
                False,
                urgent,
            )
        )

    def _add(self, sub: _Subscription) -> None:
        if self._started:
            raise RuntimeError("subscribe before start()")
        self._subscriptions.append(sub)
        self._subscribed(sub)

    @abc.abstractmethod
    def _subscribed(self, sub: _Subscription) -> None:
        """Prepare the backend's consumer for `sub` (started by start())."""

    @abc.abstractmethod
    async def backlog(self, stream: str, group: str) -> Backlog | None:
        """What `group` has not finished on `stream`; None if it is not known (no such
        group yet). Needs a started bus."""

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; then, for a bus that subscribed, start consuming (on Redis each
        consumer group is first created at the beginning of its stream, so messages
        published before a group ever existed are consumed, not skipped)."""
        self._started = True
        await self._start()
        if self._subscriptions:
            self._lag_task = asyncio.create_task(self._report_lag(), name="bus-lag")

    async def stop(self) -> None:
        """Stop consuming and disconnect; a batch being handled finishes and is
        acknowledged first."""
        self._stopping.set()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        await self._stop()

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _stop(self) -> None: ...

    async def _report_lag(self) -> None:
        """Keep carewatch_bus_lag_messages (entries not yet processed: undelivered plus
        unacknowledged) current for every group this bus consumes in, while it runs."""
        pairs = sorted({(s.stream, s.group) for s in self._subscriptions})
        while not self._stopping.is_set():
            for stream, group in pairs:
                try:
                    backlog = await self.backlog(stream, group)
                except Exception:
                    log.debug("bus lag unavailable for %s", stream, exc_info=True)
                    continue
                if backlog is not None:
                    BUS_LAG.labels(stream, group).set(backlog.total)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LAG_INTERVAL_S)


def make_bus(settings: Settings) -> Bus:
    """The bus the settings name: the one place that knows which backends exist."""
    if settings.bus_backend == "nats":
        return NatsBus(settings.nats_url)
    return RedisBus(settings.redis_url, settings.bus_telemetry_per_message)


# -- Redis Streams -------------------------------------------------------------------------

# FastStream's binary message format (BinaryMessageFormatV1): magic, version, offsets of
# the headers and the data, the header pairs, the body. Every entry on a Redis stream is
# such a frame, in the field DATA_KEY, as FastStream's RedisBroker.publish wrote them
# before ADR 0005: workers of either version read each other's entries. Built here
# because FastStream's publish path (codec, message build, writer objects) cost ingest
# ~40 % of its CPU; a test keeps the two byte-identical.
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
# argument, each a (stream number, frame length) head and the frame, streams in KEYS
# and each stream's length cap in ARGV after the field name and the entries:
# redis-py packs every argument in Python (~0.4 us each). Lua's struct reads the heads
# ('c0' takes the length just read); its cmsgpack cannot, it has no binary type.
_XADD_ALL = """
local blob, pos, count = ARGV[2], 1, 0
while pos <= #blob do
    local number, frame
    number, frame, pos = struct.unpack('>HI4c0', blob, pos)
    redis.call('XADD', KEYS[number], 'MAXLEN', '~', ARGV[2 + number], '*', ARGV[1], frame)
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
    """Appends batches of entries (same field, same framing, same approximate length cap
    as a single publish), in one round trip and one command per batch."""

    def __init__(self, redis: Any, telemetry_per_message: int = 1) -> None:
        self._script = redis.register_script(_XADD_ALL)
        self._per_message = telemetry_per_message

    async def append(self, entries: Sequence[tuple[str, bytes, str]]) -> None:
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
        caps = [stream_maxlen(stream, self._per_message) for stream in numbers]
        await self._script(keys=list(numbers), args=[DATA_KEY, blob, *caps])


class RedisBus(Bus):
    """Redis Streams through redis-py: publishes are XADDs of FastStream-framed entries
    (one script call per publish_many), consumers are carewatch.bus_batch_reader's
    consumer-group readers (docs/adr/0002), one per subscription."""

    def __init__(self, url: str, telemetry_per_message: int = 1) -> None:
        super().__init__()
        self._url = url
        self._client: Redis = Redis.from_url(url)
        self._per_message = telemetry_per_message
        self._appender = RedisAppender(self._client, telemetry_per_message)
        self._readers: list[RedisBatchReader] = []

    async def publish(self, stream: str, body: bytes, *, message_id: str | None = None) -> None:
        frame = redis_frame(body, message_id or str(uuid.uuid4()))
        maxlen = stream_maxlen(stream, self._per_message)
        await self._client.xadd(stream, {DATA_KEY: frame}, maxlen=maxlen)

    async def publish_many(self, entries: Sequence[tuple[str, bytes, str]]) -> None:
        await self._appender.append(entries)

    def _subscribed(self, sub: _Subscription) -> None:
        self._readers.append(
            RedisBatchReader(
                self._url,
                sub.stream,
                group=sub.group,
                consumer=sub.consumer,
                handler=sub.handler,
                batch=MAX_BATCH,
                reclaim_idle_ms=sub.reclaim_idle_ms,
                polling_ms=sub.polling_ms,
                linger_s=sub.linger_s,
                one_by_one=sub.one_by_one,
            )
        )

    async def _start(self) -> None:
        await self._client.ping()
        for stream, group in sorted({(s.stream, s.group) for s in self._subscriptions}):
            try:  # at the beginning: what was published before the group existed counts
                await self._client.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        for reader in self._readers:
            reader.start()

    async def _stop(self) -> None:
        for reader in self._readers:
            await reader.stop()
        await self._client.aclose()

    async def backlog(self, stream: str, group: str) -> Backlog | None:
        # Redis >= 7 reports a group's lag in XINFO GROUPS
        try:
            groups: Any = await self._client.xinfo_groups(stream)
        except ResponseError:  # no such stream
            return None
        for info in groups:
            if info.get("name") in (group, group.encode()) and info.get("lag") is not None:
                return Backlog(int(info["lag"]), int(info.get("pending") or 0))
        return None


# -- NATS JetStream ------------------------------------------------------------------------

# FastStream 0.7 exports no annotation for a JetStream batch; same form as its others
NatsBatchMessage = Annotated[_NatsBatch, Context("message")]
NatsMessage = Annotated[_NatsMessage, Context("message")]


def _subject(stream: str) -> str:
    return f"cw.{stream}"


def _durable(group: str, stream: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{group}-{stream}")


class NatsBus(Bus):
    """NATS JetStream. FastStream's NatsBroker runs the connection, the stream
    declaration and the durable pull consumers (with their graceful stop); publishes go
    through nats-py's JetStream client on that connection (publish_many pipelined, in
    order). One stream, NATS_STREAM, holds every logical stream as the subject
    cw.{stream}; a group is a durable consumer of it."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._broker = NatsBroker(url, logger=_log, log_level=logging.DEBUG)
        self._jetstream: JetStreamContext | None = None

    def _js(self) -> JetStreamContext:
        if self._jetstream is None:
            raise RuntimeError("publish after start()")
        return self._jetstream

    async def publish(self, stream: str, body: bytes, *, message_id: str | None = None) -> None:
        await self._js().publish(
            _subject(stream),
            body,
            stream=NATS_STREAM.name,
            headers={"correlation_id": message_id or str(uuid.uuid4())},
        )

    async def publish_many(self, entries: Sequence[tuple[str, bytes, str]]) -> None:
        # sent one after the other, so in order, without waiting for each one's
        # acknowledgement; then every acknowledgement is awaited
        js = self._js()
        acks = [
            await js.publish_async(
                _subject(stream), body, stream=NATS_STREAM.name, headers={"correlation_id": cid}
            )
            for stream, body, cid in entries
        ]
        await asyncio.gather(*acks)

    def _subscribed(self, sub: _Subscription) -> None:
        from nats.js.api import ConsumerConfig

        handler, linger_s = sub.handler, sub.linger_s
        retry_s = sub.reclaim_idle_ms / 1000

        async def settle(message: _NatsMessage | _NatsBatch, bodies: list[bytes]) -> None:
            try:
                await handler(bodies)
            except Exception:
                # as on Redis: delivered again after reclaim_idle_ms, not at once
                log.exception("bus batch failed, left for redelivery", extra={"stream": sub.stream})
                await message.nack(delay=retry_s)
                return
            await message.ack()
            if linger_s > 0 and len(bodies) < MAX_BATCH:
                await asyncio.sleep(linger_s)  # pacing the next read, not waiting for anything

        on_message: Callable[..., Awaitable[None]]
        # A pull batch waits (up to its timeout) for more messages: an urgent lane goes one
        # message at a time. FastStream handles the messages of one non-batch fetch
        # concurrently, so such a fetch takes one message: handled in order, as on Redis.
        batch = not (sub.one_by_one or sub.urgent)
        if batch:

            async def on_batch(msg: NatsBatchMessage) -> None:
                await settle(msg, [m.data for m in msg.raw_message])

            on_message = on_batch
        else:

            async def on_one(msg: NatsMessage) -> None:
                await settle(msg, [msg.body])

            on_message = on_one

        self._broker.subscriber(
            _subject(sub.stream),
            stream=NATS_STREAM,
            durable=_durable(sub.group, sub.stream),
            config=ConsumerConfig(ack_wait=sub.reclaim_idle_ms / 1000),
            pull_sub=PullSub(batch_size=MAX_BATCH if batch else 1, timeout=0.1, batch=batch),
            ack_policy=AckPolicy.MANUAL,
        )(on_message)

    async def _start(self) -> None:
        await self._broker.start()
        # a publishing bus needs the stream too: the first deployment's ingest may
        # publish before any consumer declared it
        from nats.js.errors import NotFoundError

        js = self._jetstream = self._broker.connection.jetstream()
        try:
            await js.stream_info(NATS_STREAM.name)
        except NotFoundError:
            await js.add_stream(
                name=NATS_STREAM.name,
                subjects=list(NATS_STREAM.subjects),
                max_msgs=STREAM_MAXLEN * 10,
            )

    async def _stop(self) -> None:
        await self._broker.stop()

    async def backlog(self, stream: str, group: str) -> Backlog | None:
        from nats.js.errors import NotFoundError

        try:
            info = await self._js().consumer_info(NATS_STREAM.name, _durable(group, stream))
        except NotFoundError:
            return None
        return Backlog(int(info.num_pending or 0), int(info.num_ack_pending or 0))
