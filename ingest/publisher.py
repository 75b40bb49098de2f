"""Publish normalised Events on the bus: events.{shard(elder)}, one round trip per batch.

A batch goes out through carewatch.bus.Bus.publish_many (on Redis one command for the
whole batch; on NATS concurrent publishes, JetStream acknowledging each one), with the
event id as each message's id.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Sequence

from carewatch.bus import Bus, shard_of, stream_for
from carewatch.messages import Event, encode
from carewatch.metrics import BUS_PUBLISHED, STAGE_LATENCY, observe_many

_LATENCY = STAGE_LATENCY.labels("ingest")


# An elder's events always go to the same two streams: the hash and the name are worked
# out once per elder, not per message. Bounded, like the number of elders a worker sees.
@functools.lru_cache(maxsize=1 << 18)
def _stream(event_type: str, elder_id: str, shards: int) -> str:
    return stream_for(event_type, shard_of(elder_id, shards))


class BusPublisher:
    def __init__(self, bus: Bus, shards: int) -> None:
        self._bus = bus
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
        await self._bus.publish_many(entries)
        streams = collections.Counter(stream for stream, _, _ in entries)
        now = time.monotonic()
        observe_many(_LATENCY, (now - received_at for _, received_at in events))
        for stream, n in streams.items():
            BUS_PUBLISHED.labels(stream).inc(n)  # once per stream: inc() takes a lock
