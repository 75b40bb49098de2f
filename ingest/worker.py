"""The ingest worker: MQTT uplinks -> validate -> dedup -> bus + telemetry store.

    source (ingest.mqtt_source) -> queue -> Pipeline (validate, dedup, publish) -> Batch
                                                  Flusher (COPY, dead letters, devices)
    PUBACKs go out in arrival order once each message is durable (ingest.acks).

Shutdown (stop set): stop reading MQTT, process what was already received, flush every
batch, send the last PUBACKs, then disconnect. Whatever could not be made durable in
SHUTDOWN_GRACE_S stays unacknowledged and the broker redelivers it to this session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from redis.asyncio import Redis

from carewatch.bus import make_broker
from carewatch.db.pool import open_pool
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from ingest.acks import AckTracker, Ticket
from ingest.dedup import Deduplicator
from ingest.flusher import Flusher
from ingest.mqtt_source import Incoming, MqttSource
from ingest.pipeline import Pipeline
from ingest.publisher import BusPublisher
from ingest.registry_cache import DeviceRegistry

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
CLIENT_ID_ENV = "CAREWATCH_INGEST_CLIENT_ID"
INSTANCE_ENV = "CAREWATCH_INGEST_INSTANCE"


def default_client_id() -> str:
    """Stable across restarts (the broker keeps our session under it): one per process.

    Two workers on one host need different CAREWATCH_INGEST_INSTANCE numbers (or explicit
    CAREWATCH_INGEST_CLIENT_ID values), otherwise the broker keeps kicking one of them off.
    """
    explicit = os.environ.get(CLIENT_ID_ENV)
    if explicit:
        return explicit
    return f"ingest-{socket.gethostname()}-{os.environ.get(INSTANCE_ENV, '0')}"


async def _load_registry(registry: DeviceRegistry, stop: asyncio.Event) -> bool:
    """Without the registry every message would look like an unknown device: wait for it."""
    backoff = 0.5
    while not await registry.refresh():
        log.error("cannot load the device registry, retrying", extra={"backoff_s": backoff})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        if stop.is_set():
            return False
        backoff = min(backoff * 2, 10.0)
    return True


class _ShutdownDeadline:
    """None while running; once shutting down, the monotonic time to give up retrying."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float | None:
        return self.at


async def run(
    settings: Settings,
    stop: asyncio.Event,
    *,
    client_id: str | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set, then flush and exit. `ready` is set once subscribed (for
    callers that start publishing right away: tests, the demo)."""
    serve_metrics(settings.metrics_port)
    client_id = client_id or default_client_id()
    deadline = _ShutdownDeadline()
    pool = await open_pool(settings.database_url, min_size=1, max_size=4)
    redis = Redis.from_url(settings.redis_url)
    broker = make_broker(settings)
    tasks: list[asyncio.Task[None]] = []
    try:
        await broker.connect()
        registry = DeviceRegistry(pool)
        if not await _load_registry(registry, stop):
            return
        queue: asyncio.Queue[Incoming | None] = asyncio.Queue()
        source = MqttSource(settings, client_id, queue, ready)
        tracker: AckTracker[Incoming] = AckTracker(source.ack)
        pending: dict[str, Ticket] = {}
        dedup = Deduplicator(
            redis, ttl_s=settings.dedup_ttl_s, client_id=client_id, boot_id=uuid.uuid4().hex[:12]
        )
        flusher = Flusher(pool, dedup, pending, tracker, deadline)
        publisher = BusPublisher(broker, redis, settings.bus_shards)
        pipeline = Pipeline(
            settings, registry, dedup, publisher, tracker, pending, flusher, deadline
        )
        stop_reading, disconnect = asyncio.Event(), asyncio.Event()
        source_task = asyncio.create_task(source.run(stop_reading, disconnect), name="mqtt")
        pipeline_task = asyncio.create_task(pipeline.run(queue), name="pipeline")
        flusher_task = asyncio.create_task(flusher.run(), name="flusher")
        tasks = [
            source_task,
            pipeline_task,
            flusher_task,
            asyncio.create_task(registry.keep_fresh(stop), name="registry"),
        ]
        log.info("ingest worker started", extra={"client_id": client_id})
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in tasks:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                log.error("ingest task failed", extra={"task": task.get_name()}, exc_info=failure)
                raise failure

        deadline.at = time.monotonic() + SHUTDOWN_GRACE_S
        stop_reading.set()
        await source.not_reading.wait()
        queue.put_nowait(None)  # after everything already received
        await pipeline_task
        await flusher_task
        disconnect.set()
        await source_task
        log.info("ingest worker stopped", extra={"unacknowledged": len(tracker)})
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await broker.stop()
        await redis.aclose()
        await pool.close()
