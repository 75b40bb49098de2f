"""The notifier worker: alerts stream -> escalation -> outbox -> SMS / WeCom / downlink.

Five loops on one event loop: the bus consumer (alert changes), the escalation timer
loop, the watch on people handling acknowledged alerts (notifier.handler_watch), the
watch on critical alert SMS not reported delivered in time (notifier.receipts) and the
outbox sender. Any number of workers can run side by side: bus messages are shared by
the consumer group, escalations and outbox rows by SKIP LOCKED claims.

Alert changes first (docs/reliability.md, "Alarms first under overload"): the bus
consumer and the escalation timer have a database pool of their own (ALARM_POOL_SIZE
connections) that nothing else takes, so an SOS never waits for a connection a send's
record or a watcher holds (a record waits on the row lock of a delivery report the
provider callbacks app is writing); and the watchers wait for the bus consumer to have
no change in hand before each poll, and so does the record of each send, once the
request is made (carewatch.alarm_priority, as the rules worker's telemetry lanes do).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from psycopg_pool import AsyncConnectionPool

from carewatch.alarm_priority import AlarmPriority
from carewatch.bus import ALERTS_STREAM, Handler, make_bus
from carewatch.clock import Clock, SystemClock
from carewatch.db.pool import open_pool
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from notifier.channels.base import Channel
from notifier.channels.downlink import DownlinkChannel
from notifier.channels.registry import build_channels
from notifier.escalation import Escalator
from notifier.handler_watch import HandlerWatcher
from notifier.loop import notifier_priority
from notifier.outbox import OutboxSender
from notifier.receipts import ReceiptWatcher

log = logging.getLogger(__name__)

CONSUMER_GROUP = "notifier"
# The alarm path's own connections: one for the alert change in hand (changes are handled
# one at a time), one for the escalation timer's poll; a spare for a reconnect.
ALARM_POOL_SIZE = 3


@dataclass
class NotifierParts:
    pool: AsyncConnectionPool
    channels: dict[str, Channel]
    sender: OutboxSender


@asynccontextmanager
async def notifier_parts(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[NotifierParts]:
    """Pool, every channel (providers + downlink) and an outbox sender; closed on exit.

    Shared with the ack app, which sends the notifications an acknowledgement causes.
    """
    clock = clock or SystemClock()
    pool = await open_pool(settings.database_url)
    client = httpx.AsyncClient(timeout=settings.provider_timeout_s)
    channels: dict[str, Channel] = {
        **build_channels(settings, client),
        "downlink": DownlinkChannel(settings, clock),
    }
    sender = OutboxSender(pool, channels, settings, clock)
    try:
        yield NotifierParts(pool, channels, sender)
    finally:
        await sender.drain()
        for channel in channels.values():
            await channel.aclose()
        await client.aclose()
        await pool.close()


def gated(priority: AlarmPriority, handler: Handler) -> Handler:
    """`handler`, marked as alarm work while it runs: background loops pause meanwhile."""

    async def handle(raw: bytes) -> None:
        with priority.alarm():
            await handler(raw)

    return handle


async def run(settings: Settings, stop: asyncio.Event, clock: Clock | None = None) -> None:
    serve_metrics(settings.metrics_port)
    async with notifier_parts(settings, clock) as parts:
        alarm_pool = await open_pool(
            settings.database_url, min_size=ALARM_POOL_SIZE, max_size=ALARM_POOL_SIZE
        )
        try:
            await _run(settings, stop, clock, parts, alarm_pool)
        finally:
            await alarm_pool.close()


async def _run(
    settings: Settings,
    stop: asyncio.Event,
    clock: Clock | None,
    parts: NotifierParts,
    alarm_pool: AsyncConnectionPool,
) -> None:
    priority = notifier_priority()
    parts.sender.before_record = priority.pause  # a send's record after the change in hand
    escalator = Escalator(alarm_pool, settings, parts.sender, clock, priority=priority)
    event_bus = make_bus(settings)
    event_bus.subscribe(
        ALERTS_STREAM,
        group=CONSUMER_GROUP,
        consumer=f"notifier-{socket.gethostname()}-{os.getpid()}",
        handler=gated(priority, escalator.handle),
    )
    await event_bus.start()
    log.info("notifier started")
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(escalator.run(stop))
            tasks.create_task(
                HandlerWatcher(parts.pool, settings, parts.sender, clock, priority=priority).run(
                    stop
                )
            )
            tasks.create_task(parts.sender.run(stop))
            tasks.create_task(
                ReceiptWatcher(parts.pool, settings, parts.sender, clock, priority=priority).run(
                    stop
                )
            )
    finally:
        await event_bus.stop()  # the change in hand finishes and is acknowledged
        log.info("notifier stopped")
