"""The internal bus: FastStream over Redis Streams (default) or NATS JetStream.

Streams: `events.{shard}` (shard = crc32(elder_id) mod N), `alerts`, `notifications`.
Bodies are msgspec-encoded JSON bytes. Consumers acknowledge after their side effects
are durable; messages a crashed consumer left unacknowledged are reclaimed after
`reclaim_idle_ms` by a second subscriber on the same group, so handlers must be
idempotent by message id (all of ours are).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage

from carewatch.settings import Settings

ALERTS_STREAM = "alerts"
NOTIFICATIONS_STREAM = "notifications"
STREAM_MAXLEN = 1_000_000

Handler = Callable[[bytes], Awaitable[None]]


def shard_of(elder_id: str, shards: int) -> int:
    return zlib.crc32(elder_id.encode()) % shards


def events_stream(shard: int) -> str:
    return f"events.{shard}"


def make_broker(settings: Settings) -> RedisBroker:
    if settings.bus_backend != "redis":
        raise NotImplementedError(f"bus backend {settings.bus_backend!r} is not available yet")
    return RedisBroker(settings.redis_url, logger=logging.getLogger("faststream"))


async def publish(broker: RedisBroker, stream: str, body: bytes) -> None:
    await broker.publish(body, stream=stream, maxlen=STREAM_MAXLEN)


def subscribe(
    broker: RedisBroker,
    stream: str,
    *,
    group: str,
    consumer: str,
    handler: Handler,
    reclaim_idle_ms: int = 10_000,
    polling_ms: int = 100,
) -> None:
    """Consume `stream` in consumer group `group`; also reclaim stale pending entries."""

    for min_idle in (None, reclaim_idle_ms):

        async def on_message(msg: RedisStreamMessage) -> None:
            await handler(msg.body)

        sub: Any = StreamSub(
            stream,
            group=group,
            consumer=consumer,
            min_idle_time=min_idle,
            polling_interval=polling_ms,
        )
        broker.subscriber(stream=sub, ack_policy=AckPolicy.NACK_ON_ERROR)(on_message)
