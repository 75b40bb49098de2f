"""Make sealed batches durable in order, then let their messages be acknowledged.

One transaction per batch: COPY telemetry, insert dead letters, update devices. If
PostgreSQL is unavailable the batch is held and retried with backoff; meanwhile the
pipeline keeps validating and publishing (SOS still reaches the bus).

The telemetry lane's queue of sealed batches is bounded (MAX_SEALED_BATCHES): when
flushing falls behind, its pipeline waits, its unacknowledged messages reach the
broker's Receive Maximum and the broker holds the rest: telemetry is pushed back. The
events lane's queue is not bounded in batches: an event lane's batch is sealed every
ingest_batch_ms with a few events in it, so a bound of a few batches stopped the lane
(and every SOS behind it) within about a second of a database outage, with the presses
still unpublished. Its messages in flight are bounded by its Receive Maximum instead
(ingest.mqtt_source), so memory stays bounded and an SOS reaches the bus for as long as
the outage lasts, up to that many device events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import redis
from psycopg_pool import AsyncConnectionPool

from carewatch.metrics import REJECTS, TELEMETRY_ROWS
from ingest.acks import AckTracker, Ticket
from ingest.batch import Batch
from ingest.dead_letters import DeadLetter, insert_dead_letters
from ingest.dedup import Deduplicator
from ingest.device_state import apply_updates, merge
from ingest.mqtt_source import Incoming
from ingest.retry import GaveUp, with_retry
from ingest.telemetry_writer import copy_rows
from ingest.validate import Rejection

log = logging.getLogger(__name__)

# Errors caused by the data itself: retrying the same rows cannot help.
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)

# Bounds on one attempt, so an unreachable or wedged database turns into a retry (and a
# shutdown that cannot hang) instead of a wait without end.
CONNECT_TIMEOUT_S = 5.0
STORE_TIMEOUT_S = 60.0
MAX_SEALED_BATCHES = 4  # the telemetry lane's; the events lane's is not bounded in batches


async def store(pool: AsyncConnectionPool[Any], batch: Batch) -> None:
    async def write() -> None:
        async with pool.connection(timeout=CONNECT_TIMEOUT_S) as conn, conn.transaction():
            await copy_rows(conn, batch.rows)
            await insert_dead_letters(conn, batch.dead_letters)
            await apply_updates(conn, merge(batch.device_updates))

    await asyncio.wait_for(write(), timeout=STORE_TIMEOUT_S)


class Flusher:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        dedup: Deduplicator,
        pending: dict[str, Ticket],
        tracker: AckTracker[Incoming],
        deadline: Callable[[], float | None],
        max_batches: int = MAX_SEALED_BATCHES,
    ) -> None:
        self._pool = pool
        self._dedup = dedup
        self._pending = pending
        self._tracker = tracker
        self._deadline = deadline
        # 0: unbounded (the events lane: see the module docstring)
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=max_batches)

    async def run(self) -> None:
        """Flush batches until the None sentinel."""
        gave_up = False
        while (batch := await self.queue.get()) is not None:
            # Once one batch is left behind at shutdown, later ones could not be
            # acknowledged anyway (PUBACKs go in order): leave them to redelivery too.
            if not gave_up:
                gave_up = not await self.flush(batch)

    async def flush(self, batch: Batch) -> bool:
        """Store the batch and acknowledge its messages; False if given up at shutdown."""
        try:
            try:
                await self._store(batch)
                stored = len(batch.rows)
            except DATA_ERRORS as exc:
                log.error(
                    "the database refused a batch, storing it row by row",
                    extra={"items": len(batch), "error": repr(exc)},
                )
                stored = await self._store_row_by_row(batch)
        except GaveUp:
            log.error(
                "shutting down with an unstored batch: its messages stay unacknowledged"
                " and the broker redelivers them to this session",
                extra={"items": len(batch)},
            )
            return False
        TELEMETRY_ROWS.inc(stored)
        try:
            await self._dedup.mark_done(batch.dedup_keys)
        except (redis.RedisError, OSError) as exc:
            # Only costs a possible duplicate row if the broker redelivers one of these
            # after a restart; the data is durable, so acknowledge anyway.
            log.warning("could not mark dedup keys done", extra={"error": repr(exc)})
        for key in batch.dedup_keys:
            self._pending.pop(key, None)
        for ticket in batch.tickets:
            ticket.complete()
        self._tracker.release()
        return True

    async def _store(self, batch: Batch) -> None:
        await with_retry(
            "telemetry batch store",
            lambda: store(self._pool, batch),
            deadline=self._deadline,
            items=len(batch),
        )

    async def _store_row_by_row(self, batch: Batch) -> int:
        """Isolate the rows the database refuses (a poison message must not wedge ingest
        or crash it in a loop on every redelivery): they become dead letters."""
        letters = list(batch.dead_letters)
        stored = 0
        for row in batch.rows:
            try:
                await self._store(Batch(rows=[row]))
                stored += 1
            except DATA_ERRORS as exc:
                REJECTS.labels("store_refused").inc()
                rejection = Rejection("store_refused", str(exc), row.device_id)
                letters.append(DeadLetter(row.received_ms, row.topic, rejection, row.data))
        await self._store(Batch(dead_letters=letters, device_updates=batch.device_updates))
        return stored
