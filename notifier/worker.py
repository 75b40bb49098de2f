"""The notifier worker: alerts stream -> escalation -> outbox -> SMS / WeCom / downlink.

Five loops share one pool: the bus consumer (alert changes), the escalation timer loop,
the watch on people handling acknowledged alerts (notifier.handler_watch), the watch on
critical alert SMS not reported delivered in time (notifier.receipts) and the outbox
sender. Any number of workers can run side by side: bus messages are
shared by the consumer group, escalations and outbox rows by SKIP LOCKED claims.
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

from carewatch.bus import ALERTS_STREAM, make_bus
from carewatch.clock import Clock, SystemClock
from carewatch.db.pool import open_pool
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from notifier.channels.base import Channel
from notifier.channels.downlink import DownlinkChannel
from notifier.channels.registry import build_channels
from notifier.escalation import Escalator
from notifier.handler_watch import HandlerWatcher
from notifier.outbox import OutboxSender
from notifier.receipts import ReceiptWatcher

log = logging.getLogger(__name__)

CONSUMER_GROUP = "notifier"


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


async def run(settings: Settings, stop: asyncio.Event, clock: Clock | None = None) -> None:
    serve_metrics(settings.metrics_port)
    async with notifier_parts(settings, clock) as parts:
        escalator = Escalator(parts.pool, settings, parts.sender, clock)
        bus = make_bus(settings)
        bus.subscribe(
            ALERTS_STREAM,
            group=CONSUMER_GROUP,
            consumer=f"notifier-{socket.gethostname()}-{os.getpid()}",
            handler=escalator.handle,
        )
        await bus.start()
        log.info("notifier started")
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(escalator.run(stop))
                tasks.create_task(
                    HandlerWatcher(parts.pool, settings, parts.sender, clock).run(stop)
                )
                tasks.create_task(parts.sender.run(stop))
                tasks.create_task(
                    ReceiptWatcher(parts.pool, settings, parts.sender, clock).run(stop)
                )
        finally:
            await bus.stop()  # the change in hand finishes and is acknowledged
            log.info("notifier stopped")
