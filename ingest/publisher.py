"""Publish normalised Events on the bus: events.{shard(elder)}, one round trip per batch.

carewatch.bus.publish sends one XADD per call; a batch of telemetry would then cost one
Redis round trip per message. On Redis the batch goes out as one command
(carewatch.bus.RedisAppender: a script of XADDs) framed exactly as FastStream frames
them (carewatch.bus.redis_frame; what carewatch.bus.subscribe consumers expect), with the
same stream length cap and the event id as correlation id. On NATS the publishes of a batch run
concurrently through carewatch.bus.publish (JetStream acknowledges each one).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Sequence

from faststream.redis import RedisBroker
from redis.asyncio import Redis

from carewatch.bus import Broker, RedisAppender, shard_of, stream_for
from carewatch.bus import publish as bus_publish
from carewatch.messages import Event, encode
from carewatch.metrics import BUS_PUBLISHED, STAGE_LATENCY, observe_many

_LATENCY = STAGE_LATENCY.labels("ingest")


# An elder's events always go to the same two streams: the hash and the name are worked
# out once per elder, not per message. Bounded, like the number of elders a worker sees.
@functools.lru_cache(maxsize=1 << 18)
def _stream(event_type: str, elder_id: str, shards: int) -> str:
    return stream_for(event_type, shard_of(elder_id, shards))


class BusPublisher:
    def __init__(self, broker: Broker, redis: Redis, shards: int) -> None:
        self._broker = broker
        self._appender = RedisAppender(redis)
        self._shards = shards

    async def publish(self, events: Sequence[tuple[Event, float]]) -> None:
        """Publish (event, received_at monotonic) pairs in one round trip, in order."""
        if not events:
            return
        shards = self._shards
        entries = [
            (_stream(event.type, event.elder_id, shards), encode(event), event.id)
            for event, _ in events
        ]
        if isinstance(self._broker, RedisBroker):
            await self._appender.append(entries)
        else:
            await asyncio.gather(
                *(bus_publish(self._broker, stream, body) for stream, body, _ in entries)
            )
        streams = collections.Counter(stream for stream, _, _ in entries)
        now = time.monotonic()
        observe_many(_LATENCY, (now - received_at for _, received_at in events))
        for stream, n in streams.items():
            BUS_PUBLISHED.labels(stream).inc(n)  # once per stream: inc() takes a lock
