"""The console's live feed: committed alert changes, as PostgreSQL announces them.

Migration 055 makes every committed change to an alert, its timeline, escalation or
notifications NOTIFY 'carewatch_alert_changed' with the alert id. One LISTEN connection
per operator API process receives them and hands each id to every open console stream
(operator_api.console), which looks the alert up under its own caller's scope before it
sends anything. Whoever wrote the change (rules engine, notifier, ack app, this API),
the console hears of it as soon as it commits, whatever the bus backend.

A stream that falls behind (its queue full) or a listener that lost its connection gets
RESYNC instead of ids: the console then reloads its whole queue, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "carewatch_alert_changed"
RESYNC = ""  # not an alert id: "reload everything"
QUEUE_SIZE = 1000
RECONNECT_S = 1.0


class AlertFeed:
    """Fan-out of alert ids from one LISTEN connection to any number of subscribers."""

    def __init__(self, dsn: str, stopping: asyncio.Event) -> None:
        self._dsn = dsn
        self._stopping = stopping  # set when the server stops: the listener ends too
        self._queues: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def subscribe(self) -> asyncio.Queue[str]:
        """A new queue of alert ids; returns once the listener is listening, so every
        change committed after this returns reaches the queue."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="console-alert-feed")
        try:
            await self._listening.wait()
        except asyncio.CancelledError:  # the caller gave up waiting (database down)
            self._queues.discard(queue)
            raise
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _deliver(self, alert_id: str) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(alert_id)
            except asyncio.QueueFull:
                # too far behind to catch up id by id: drop the backlog, reload instead
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)

    async def _listen(self) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True
                ) as conn:
                    await conn.execute("LISTEN " + CHANNEL)
                    self._listening.set()
                    if not first:  # changes during the outage were not heard
                        self._deliver(RESYNC)
                    first = False
                    await self._pump(conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("console alert feed lost its connection", exc_info=True)
            self._listening.clear()
            if not self._stopping.is_set():
                await asyncio.sleep(RECONNECT_S)  # back-off before reconnecting, not a wait

    async def _pump(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Deliver notifications until the server stops (returns) or the connection
        fails (raises)."""

        async def deliver_all() -> None:
            async for notify in conn.notifies():
                self._deliver(notify.payload)

        pumping = asyncio.create_task(deliver_all())
        stopped = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({pumping, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopped, pumping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # a failed pump raises its error here
