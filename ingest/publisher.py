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
import time
from collections.abc import Sequence

from faststream.redis import RedisBroker
from redis.asyncio import Redis

from carewatch.bus import Broker, RedisAppender, shard_of, stream_for
from carewatch.bus import publish as bus_publish
from carewatch.messages import Event, encode
from carewatch.metrics import BUS_PUBLISHED, STAGE_LATENCY, observe_many

_LATENCY = STAGE_LATENCY.labels("ingest")


class BusPublisher:
    def __init__(self, broker: Broker, redis: Redis, shards: int) -> None:
        self._broker = broker
        self._appender = RedisAppender(redis)
        self._shards = shards

    def stream_of(self, event: Event) -> str:
        return stream_for(event.type, shard_of(event.elder_id, self._shards))

    async def publish(self, events: Sequence[tuple[Event, float]]) -> None:
        """Publish (event, received_at monotonic) pairs in one round trip, in order."""
        if not events:
            return
        streams = [self.stream_of(event) for event, _ in events]
        bodies = [encode(event) for event, _ in events]
        if isinstance(self._broker, RedisBroker):
            await self._appender.append(
                [
                    (stream, body, event.id)
                    for (event, _), body, stream in zip(events, bodies, streams, strict=True)
                ]
            )
        else:
            await asyncio.gather(
                *(
                    bus_publish(self._broker, stream, body)
                    for body, stream in zip(bodies, streams, strict=True)
                )
            )
        now = time.monotonic()
        observe_many(_LATENCY, (now - received_at for _, received_at in events))
        for stream, n in collections.Counter(streams).items():
            BUS_PUBLISHED.labels(stream).inc(n)  # once per stream: inc() takes a lock
