"""A Redis Streams consumer-group reader for every stream carewatch consumes, without
FastStream's per-message machinery.

Why: with FastStream consuming the telemetry lanes, a profile of the rules worker under
2000 msg/s (bench._diag-style run, py-spy) put ~85 % of its busy time in FastStream and
its redis-py calls (per-entry body decoding, dependency injection, middlewares, a deep
copy of the subscription per read) and ~10 % in the rules themselves. This reader does
what that subscription did, and nothing else:

- XREADGROUP `>` COUNT `batch` BLOCK `polling_ms` for new entries; the handler gets the
  FastStream-framed bodies of one read; on success the read is acknowledged with one
  XACK; on failure nothing is acknowledged, so the entries stay pending (the same
  NACK_ON_ERROR semantics as the FastStream subscribers);
- a read that comes back full is followed by one of twice the COUNT, up to GROWTH times
  `batch` (a backlog, or a load the reads at `batch` only just keep up with), and a
  short one goes back to `batch`: the reads and acknowledgements, and the handler's cost
  per call, are paid per batch, so under load they are paid for more messages at once;
- the read's reply is taken as Redis sends it (one field per entry, kept in a list)
  instead of through redis-py's parser, which built a dict per entry;
- every `reclaim_every_s`, XAUTOCLAIM takes entries some member (a dead worker, or this
  one after a failed batch) left pending for `reclaim_idle_ms`, and handles them first;
- after a short read it lingers before reading again (bigger batches, see
  carewatch.bus.Bus.subscribe_batch);
- stop() lets the batch in hand finish and be acknowledged (graceful, like FastStream's).

With `one_by_one` (carewatch.bus.Bus.subscribe: the alerts stream), the handler gets one
body at a time instead, and each entry is acknowledged or left pending on its own, so
one that fails never holds up the others read with it. FastStream's subscriber did that
too, but slept a fixed 5 s after a Redis error (most of the notifier's recovery from a
Redis restart) against ERROR_BACKOFF_S here.

Entries are framed by carewatch.bus.redis_frame (RedisBus) or, by workers from before
docs/adr/0005, FastStream's RedisBroker: the two are byte-identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.redis.parser import BinaryMessageFormatV1
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[bytes]], Awaitable[None]]
ERROR_BACKOFF_S = 1.0
GROWTH = 8  # a batch lane reads at most this many times `batch` entries at once
DATA_KEY = "__data__"  # the stream entry field a FastStream-framed message sits in
_DATA_FIELD = DATA_KEY.encode()  # as redis-py returns it


# A FastStream V1 frame: magic, version 1, then the offsets of its headers and its body.
_V1_HEAD = BinaryMessageFormatV1.IDENTITY_HEADER + struct.pack(">H", 1)
_OFFSETS = struct.Struct(">II")


def frame_body(frame: bytes) -> bytes:
    """The body of a FastStream-framed message, as BinaryMessageFormatV1.parse reads it.

    A V1 frame's body is everything from the offset in its head: reading that offset is
    all it takes. parse() also decodes the headers into a dict, ~1.5 us an entry, which
    was ~5 % of the rules worker's CPU; nothing here reads them. Anything that is not a
    whole V1 frame (a legacy JSON envelope, raw bytes) goes to parse() as before."""
    if frame.startswith(_V1_HEAD) and len(frame) >= len(_V1_HEAD) + _OFFSETS.size:
        headers_start, body_start = _OFFSETS.unpack_from(frame, len(_V1_HEAD))
        if len(_V1_HEAD) + _OFFSETS.size <= headers_start <= body_start <= len(frame):
            return frame[body_start:]
    return BinaryMessageFormatV1.parse(frame)[0]


def entry_body(fields: dict[bytes, bytes]) -> bytes:
    """The message body of one stream entry (its fields as redis-py returns them)."""
    # an entry without the field (not ours) becomes an empty body: the handler rejects
    # it like any undecodable message instead of the reader failing on it forever
    return frame_body(fields.get(_DATA_FIELD, b""))


def _field_list_body(fields: Sequence[bytes] | None) -> bytes:
    """entry_body() of an entry's fields as Redis sends them: [name, value, name, ...]."""
    if fields:
        if len(fields) == 2 and fields[0] == _DATA_FIELD:
            return frame_body(fields[1])  # ours: the one field
        for i in range(len(fields) - 2, -1, -2):  # the last of a repeated name, as a dict
            if fields[i] == _DATA_FIELD:
                return frame_body(fields[i + 1])
    return frame_body(b"")


def read_reply(reply: Any) -> tuple[list[bytes], list[bytes]]:
    """Entry ids and bodies of an XREADGROUP reply as Redis sends it: a map of stream to
    entries (RESP3) or a list of [stream, entries] (RESP2); None when nothing came."""
    ids: list[bytes] = []
    bodies: list[bytes] = []
    if not reply:
        return ids, bodies
    streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    for entries in streams:
        for entry_id, fields in entries or ():
            ids.append(entry_id)
            bodies.append(_field_list_body(fields))
    return ids, bodies


def _raw(response: Any, **options: Any) -> Any:
    return response


class RedisBatchReader:
    def __init__(
        self,
        redis_url: str,
        stream: str,
        *,
        group: str,
        consumer: str,
        handler: BatchHandler,
        batch: int,
        reclaim_idle_ms: int,
        polling_ms: int,
        linger_s: float,
        one_by_one: bool = False,
    ) -> None:
        self.stream = stream
        self._url = redis_url
        self._group = group
        self._consumer = consumer
        self._handler = handler
        self._batch = batch
        self._max_batch = batch if one_by_one else batch * GROWTH
        self._count = batch  # the next read's COUNT
        self._reclaim_idle_ms = reclaim_idle_ms
        self._polling_ms = polling_ms
        self._linger_s = linger_s
        self._one_by_one = one_by_one
        # reclaiming more often than entries can become idle enough is wasted work
        self._reclaim_every_s = max(0.1, min(1.0, reclaim_idle_ms / 4000))
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bus-batch-{self.stream}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        client: Redis = Redis.from_url(self._url)
        client.set_response_callback("XREADGROUP", _raw)  # read_reply() takes it as sent
        next_reclaim = 0.0
        try:
            while not self._stopping.is_set():
                try:
                    if time.monotonic() >= next_reclaim:
                        await self._reclaim(client)
                        next_reclaim = time.monotonic() + self._reclaim_every_s
                    full = await self._read_new(client)
                except RedisError as exc:
                    log.warning(
                        "bus read failed, retrying",
                        extra={"stream": self.stream, "error": str(exc)},
                    )
                    await self._pause(ERROR_BACKOFF_S)
                    continue
                if not full and self._linger_s > 0:
                    await self._pause(self._linger_s)
        finally:
            await client.aclose()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _read_new(self, client: Redis) -> bool:
        """Read and handle new entries; True if the read was full (more may be waiting)."""
        count = self._count
        reply: Any = await client.xreadgroup(
            self._group,
            self._consumer,
            {self.stream: ">"},
            count=count,
            block=self._polling_ms,
        )
        ids, bodies = read_reply(reply)
        await self._handle(client, ids, bodies)
        full = len(ids) >= count
        self._count = min(2 * count, self._max_batch) if full else self._batch
        return full

    async def _reclaim(self, client: Redis) -> None:
        start = "0-0"
        while not self._stopping.is_set():
            reply: Any = await client.xautoclaim(
                self.stream,
                self._group,
                self._consumer,
                min_idle_time=self._reclaim_idle_ms,
                start_id=start,
                count=self._batch,
            )
            start, entries = reply[0], [e for e in reply[1] if e[1]]  # trimmed: no fields
            if entries:
                log.info(
                    "reclaimed pending bus entries",
                    extra={"stream": self.stream, "count": len(entries)},
                )
                ids = [entry_id for entry_id, _ in entries]
                await self._handle(client, ids, [entry_body(fields) for _, fields in entries])
            if start in (b"0-0", "0-0") or not reply[1]:
                return

    async def _handle(self, client: Redis, ids: list[bytes], bodies: list[bytes]) -> None:
        if not ids:
            return
        if self._one_by_one:
            await self._handle_each(client, ids, bodies)
            return
        try:
            await self._handler(bodies)
        except Exception:
            # left pending: reclaimed after reclaim_idle_ms, by this or another member
            log.exception("bus batch failed, left for redelivery", extra={"stream": self.stream})
            await self._pause(ERROR_BACKOFF_S)
            return
        await client.xack(self.stream, self._group, *ids)

    async def _handle_each(self, client: Redis, ids: list[bytes], bodies: list[bytes]) -> None:
        done: list[bytes] = []
        failed = 0
        for entry_id, body in zip(ids, bodies, strict=True):
            try:
                await self._handler([body])
            except Exception:
                # left pending: reclaimed after reclaim_idle_ms, by this or another member
                log.exception(
                    "bus message failed, left for redelivery",
                    extra={"stream": self.stream, "entry_id": entry_id},
                )
                failed += 1
            else:
                done.append(entry_id)
        if done:
            await client.xack(self.stream, self._group, *done)
        if failed:
            await self._pause(ERROR_BACKOFF_S)
