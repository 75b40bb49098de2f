"""Publish normalised Events on the bus, one round trip per micro-batch.

Device events and statuses go to events.{shard(elder)}, one bus message each: the alarm
lane, read as soon as each arrives. Telemetry goes to telemetry.{shard(elder)} in
batches: the micro-batch's telemetry of one shard travels as one bus message (a JSON
array, carewatch.messages.encode_events; docs/adr/0006-telemetry-batches-on-the-bus.md),
so the bus's fixed cost per message (append, read, acknowledge) is paid per batch, not
per reading. The micro-batch goes out through carewatch.bus.Bus.publish_many (on Redis
one command for all of it; on NATS pipelined publishes, JetStream acknowledging each).
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Sequence

from carewatch.bus import Bus, shard_of, stream_for
from carewatch.messages import Event, encode, encode_events
from carewatch.metrics import BUS_PUBLISHED, STAGE_LATENCY, observe_many

_LATENCY = STAGE_LATENCY.labels("ingest")

# A telemetry batch message holds at most CAREWATCH_BUS_TELEMETRY_PER_MESSAGE events
# (default 10) and, past the first event, no more than this many bytes (one event may
# carry a 4096-sample accelerometer window, ~100 kB): a bus message stays well under any
# backend's limit (JetStream's default is 1 MB), and a read of a backlog (up to 800
# messages on Redis) or its redelivery after a failed handler holds a bounded number of
# events (8,000 by default, fewer than the rules engine remembers observing).
TELEMETRY_MESSAGE_BYTES = 128 * 1024


# An elder's events always go to the same two streams: the hash and the name are worked
# out once per elder, not per message. Bounded, like the number of elders a worker sees.
@functools.lru_cache(maxsize=1 << 18)
def _stream(event_type: str, elder_id: str, shards: int) -> str:
    return stream_for(event_type, shard_of(elder_id, shards))


def bus_messages(
    events: Sequence[Event], shards: int, per_message: int
) -> list[tuple[str, bytes, str, int]]:
    """(stream, body, message id, events in it) for `events`, in order within each
    stream: a device event or status alone, telemetry in batches of up to `per_message`
    per stream. A batch's message id is its first event's id and how many follow
    ("{id}+{n}"); a batch of one is that event's body, as a single event's is."""
    out: list[tuple[str, bytes, str, int]] = []
    # stream -> (encoded events, first id, bytes) of its open batch
    open_batches: dict[str, tuple[list[bytes], str, int]] = {}

    def close(stream: str) -> None:
        parts, first_id, _ = open_batches.pop(stream)
        body = parts[0] if len(parts) == 1 else encode_events(parts)
        message_id = first_id if len(parts) == 1 else f"{first_id}+{len(parts) - 1}"
        out.append((stream, body, message_id, len(parts)))

    for event in events:
        stream = _stream(event.type, event.elder_id, shards)
        body = encode(event)
        if event.type != "telemetry":
            out.append((stream, body, event.id, 1))
            continue
        batch = open_batches.get(stream)
        if batch is not None and batch[2] + len(body) + 3 > TELEMETRY_MESSAGE_BYTES:  # ",", "[]"
            close(stream)  # this event would take the batch past its byte limit
            batch = None
        if batch is None:
            batch = open_batches[stream] = ([], event.id, -1)  # -1: no comma before the first
        parts, first_id, size = batch
        parts.append(body)
        open_batches[stream] = (parts, first_id, size + 1 + len(body))
        if len(parts) >= per_message:
            close(stream)
    for stream in list(open_batches):
        close(stream)
    return out


class BusPublisher:
    def __init__(self, bus: Bus, shards: int, telemetry_per_message: int) -> None:
        self._bus = bus
        self._shards = shards
        self._per_message = telemetry_per_message

    async def publish(self, events: Sequence[tuple[Event, float]]) -> None:
        """Publish (event, received_at monotonic) pairs in one round trip, in order within
        each stream (a device event may go out before telemetry that came before it: the
        two lanes are read apart anyway)."""
        if not events:
            return
        messages = bus_messages([event for event, _ in events], self._shards, self._per_message)
        await self._bus.publish_many([(stream, body, mid) for stream, body, mid, _ in messages])
        published: collections.Counter[str] = collections.Counter()
        for stream, _, _, n in messages:
            published[stream] += n
        now = time.monotonic()
        observe_many(_LATENCY, (now - received_at for _, received_at in events))
        for stream, n in published.items():
            BUS_PUBLISHED.labels(stream).inc(n)  # once per stream: inc() takes a lock
