"""The ingest worker: MQTT uplinks -> validate -> dedup -> bus + telemetry store.

Two lanes, each its own MQTT session (client id) and everything behind it:

    source (ingest.mqtt_source) -> queue -> Pipeline (validate, dedup, publish) -> Batch
                                                  Flusher (COPY, dead letters, devices)
    PUBACKs go out in arrival order once each message is durable (ingest.acks).

- "events" reads `.../event` and `.../status` (SOS, falls, last wills): few messages;
- "telemetry" reads `.../telemetry`: nearly all of the volume.

Each lane's session belongs to the deployment, not to this process: its client id is
`{namespace}.ingest.{lane}` and a lease in Redis (ingest.lease) lets one instance at a
time connect with it; other instances stand by and take the session over, with every
uplink the broker queued for it, when the holder stops or dies. A retired, renamed or
replaced instance so leaves no session of its own behind to swallow presses, and the
plain subscription survives a broker restart. Two instances on one host are fine.

The broker delivers each session's messages in order, so with one session an SOS press
queued behind every telemetry message the broker held for this worker: when ingest fell
behind a load, a press waited for the backlog. With two sessions a press waits only
behind other events. The bus keeps the two apart too (events.{shard} and
telemetry.{shard}), so an alarm never queues behind telemetry on its way.

A process runs one lane (`carewatch ingest --lane events|telemetry`, CAREWATCH_INGEST_LANES)
or both (the default of a hand-started `carewatch ingest`). Deployments run the lanes as
two processes (the systemd units, the compose file, run-all and the demo), so the alarm
lane gets the CPU from the operating system first: the telemetry process lowers its own
priority at start (CAREWATCH_BULK_LANE_NICE) and the systemd units give the events lane a
higher CPUWeight (infra/deploy/systemd, docs/reliability.md "Alarms first under
overload"). Within one process the events lane's work goes first in the loop
(carewatch.alarm_priority).

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
from typing import Any, NamedTuple

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from carewatch.alarm_priority import AlarmPriority, run_as_bulk
from carewatch.bus import make_bus
from carewatch.db.pool import open_pool
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from carewatch.topics import TopicKind
from ingest.acks import AckTracker, Ticket
from ingest.dead_letters import keep_trimmed
from ingest.dedup import Deduplicator
from ingest.flusher import MAX_SEALED_BATCHES, Flusher
from ingest.lease import SessionLease, claim_redis_for, holder_id, lease_key
from ingest.mqtt_source import RECEIVE_MAXIMUM_CAP, Incoming, MqttSource
from ingest.pipeline import Pipeline
from ingest.publisher import BusPublisher
from ingest.registry_cache import DeviceRegistry

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
CLIENT_ID_ENV = "CAREWATCH_INGEST_CLIENT_ID"
INSTANCE_ENV = "CAREWATCH_INGEST_INSTANCE"


def default_client_id(settings: Settings) -> str:
    """The base of the lanes' client ids. By default one per deployment (the lanes'
    sessions are shared by every instance through a lease). In shared-subscription mode
    (CAREWATCH_MQTT_SHARE_GROUP set) one per instance, stable across restarts: two workers
    on one host then need different CAREWATCH_INGEST_INSTANCE values (or explicit
    CAREWATCH_INGEST_CLIENT_ID values), or the broker keeps kicking one of them off.

    The '.' cannot occur in a device id, and devices connect with their username as
    client id (infra/mosquitto/mosquitto.conf), so no device can take these sessions.
    """
    explicit = os.environ.get(CLIENT_ID_ENV)
    if explicit:
        return explicit
    if not settings.mqtt_share_group:
        return f"{settings.namespace}.ingest"
    instance = os.environ.get(INSTANCE_ENV, "0")
    return f"{settings.namespace}.ingest.{socket.gethostname()}-{instance}"


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


# lane name -> the uplink topics its session reads
LANES: dict[str, tuple[TopicKind, ...]] = {
    "telemetry": ("telemetry",),
    "events": ("event", "status"),
}


ALARM_LANE = "events"  # its work goes first in the worker's loop (carewatch.alarm_priority)
# how long a bulk lane in the same process waits for the alarm lane to subscribe before it
# connects anyway (the alarm lane may be a standby while another instance holds its lease)
ALARM_LANE_HEAD_START_S = 5.0


def lane_client_ids(client_id: str) -> dict[str, str]:
    """One session per lane: `{client_id}.{lane}`."""
    return {lane: f"{client_id}.{lane}" for lane in LANES}


def lanes_of(setting: str) -> tuple[str, ...]:
    """The lanes `CAREWATCH_INGEST_LANES` (`carewatch ingest --lane`) selects."""
    return tuple(LANES) if setting == "all" else (setting,)


class _Shared(NamedTuple):
    """What both lanes of a worker use."""

    pool: AsyncConnectionPool[Any]
    redis: Redis
    registry: DeviceRegistry
    publisher: BusPublisher
    priority: AlarmPriority


class _Lane:
    """One MQTT session, and the pipeline and flusher behind it."""

    def __init__(
        self,
        name: str,
        client_id: str,
        settings: Settings,
        shared: _Shared,
        deadline: _ShutdownDeadline,
        after: asyncio.Event | None = None,
    ) -> None:
        """`after`: the lane connects once it is set (or ALARM_LANE_HEAD_START_S passed)."""
        pool, redis, registry, publisher, priority = shared
        self.name = name
        self.ready = asyncio.Event()
        self.queue: asyncio.Queue[Incoming | None] = asyncio.Queue()
        self.lease = (
            None
            if settings.mqtt_share_group
            else SessionLease(
                redis,
                lease_key(settings.namespace, client_id),
                holder_id(),
                settings.ingest_lease_ms,
            )
        )
        alarm_lane = name == ALARM_LANE
        # push back on telemetry, never on alarms (ingest.flusher, ingest.mqtt_source)
        self.source = MqttSource(
            settings,
            client_id,
            self.queue,
            self.ready,
            kinds=LANES[name],
            lease=self.lease,
            receive_max=RECEIVE_MAXIMUM_CAP if alarm_lane else None,
        )
        self.tracker: AckTracker[Incoming] = AckTracker(self.source.ack_all)
        # A copy of a message always comes back on the same topic, so on the same lane:
        # in-flight claims and the dedup owner are the lane's own.
        pending: dict[str, Ticket] = {}
        dedup = Deduplicator(
            redis,
            ttl_s=settings.dedup_ttl_s,
            client_id=client_id,
            boot_id=uuid.uuid4().hex[:12],
            namespace=settings.namespace,
        )
        self.flusher = Flusher(
            pool,
            dedup,
            pending,
            self.tracker,
            deadline,
            max_batches=0 if alarm_lane else MAX_SEALED_BATCHES,
        )
        self.pipeline = Pipeline(
            settings,
            registry,
            dedup,
            publisher,
            self.tracker,
            pending,
            self.flusher,
            deadline,
            priority,
            alarm_lane=alarm_lane,
        )
        self._stop_reading, self._disconnect = asyncio.Event(), asyncio.Event()
        self._stop_lease = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._read(after), name=f"mqtt-{name}"),
            asyncio.create_task(self.pipeline.run(self.queue), name=f"pipeline-{name}"),
            asyncio.create_task(self.flusher.run(), name=f"flusher-{name}"),
        ]
        if self.lease is not None:
            self.tasks.append(
                asyncio.create_task(self.lease.run(self._stop_lease), name=f"lease-{name}")
            )

    async def _read(self, after: asyncio.Event | None) -> None:
        if after is not None:
            # the alarm lane subscribes first: after a restart, presses the broker queued
            # go out before the telemetry backlog queued beside them starts to flow
            waits = [
                asyncio.ensure_future(after.wait()),
                asyncio.ensure_future(self._stop_reading.wait()),
            ]
            try:
                await asyncio.wait(
                    waits, timeout=ALARM_LANE_HEAD_START_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
            if self._stop_reading.is_set():
                return
        await self.source.run(self._stop_reading, self._disconnect)

    async def drain(self) -> None:
        """Stop reading, make what was received durable, acknowledge it, disconnect."""
        source_task, pipeline_task, flusher_task = self.tasks[:3]
        self._stop_reading.set()
        await self.source.not_reading.wait()
        self.queue.put_nowait(None)  # after everything already received
        await pipeline_task
        await flusher_task
        self._disconnect.set()
        await source_task
        self._stop_lease.set()
        if self.lease is not None:
            await self.tasks[3]
            await self.lease.release()  # the session is drained: a standby may take it now
        log.info(
            "ingest lane stopped", extra={"lane": self.name, "unacknowledged": len(self.tracker)}
        )


async def _all_ready(lanes: list[_Lane], ready: asyncio.Event) -> None:
    for lane in lanes:
        await lane.ready.wait()
    ready.set()


async def run(
    settings: Settings,
    stop: asyncio.Event,
    *,
    client_id: str | None = None,
    ready: asyncio.Event | None = None,
    lanes: tuple[str, ...] | None = None,
) -> None:
    """Run until `stop` is set, then flush and exit. `ready` is set once every lane is
    subscribed (for callers that start publishing right away: tests, the demo).

    `lanes` (default: settings.ingest_lanes) are the lanes this process runs. A process
    with the telemetry lane only is bulk work: it lowers its own CPU priority
    (settings.bulk_lane_nice, carewatch.alarm_priority.run_as_bulk) before anything else,
    so that the events lane's process, the rules worker and the notifier run first."""
    lanes = lanes or lanes_of(settings.ingest_lanes)
    if ALARM_LANE not in lanes:
        run_as_bulk(settings.bulk_lane_nice)  # before serve_metrics starts a thread
    serve_metrics(settings.metrics_port)
    client_id = client_id or default_client_id(settings)
    deadline = _ShutdownDeadline()
    pool = await open_pool(settings.database_url, min_size=1, max_size=4)
    redis = Redis.from_url(settings.redis_url)
    bus = make_bus(settings)
    tasks: list[asyncio.Task[None]] = []  # each runs until shutdown: one ending early is a failure
    readiness: asyncio.Task[None] | None = None
    try:
        await claim_redis_for(redis, settings.namespace)
        await bus.start()
        registry = DeviceRegistry(pool)
        if not await _load_registry(registry, stop):
            return
        publisher = BusPublisher(bus, settings.bus_shards, settings.bus_telemetry_per_message)
        shared = _Shared(pool, redis, registry, publisher, AlarmPriority())
        running: list[_Lane] = []
        alarm_first = sorted(lane_client_ids(client_id).items(), key=lambda i: i[0] != ALARM_LANE)
        for name, lane_client_id in alarm_first:
            if name in lanes:
                # a bulk lane beside the alarm lane waits for it to subscribe first
                alarm = next((lane for lane in running if lane.name == ALARM_LANE), None)
                after = alarm.ready if alarm is not None and name != ALARM_LANE else None
                running.append(_Lane(name, lane_client_id, settings, shared, deadline, after))
        tasks = [task for lane in running for task in lane.tasks]
        tasks.append(asyncio.create_task(registry.keep_fresh(stop), name="registry"))
        tasks.append(
            asyncio.create_task(
                keep_trimmed(pool, settings.dead_letter_retention_days, stop), name="dead-letters"
            )
        )
        if ready is not None:
            readiness = asyncio.create_task(_all_ready(running, ready), name="ready")
        log.info("ingest worker started", extra={"client_id": client_id, "lanes": lanes})
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in tasks:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                log.error("ingest task failed", extra={"task": task.get_name()}, exc_info=failure)
                raise failure

        deadline.at = time.monotonic() + SHUTDOWN_GRACE_S
        await asyncio.gather(*(lane.drain() for lane in running))
        log.info("ingest worker stopped")
    finally:
        if readiness is not None:
            tasks.append(readiness)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await bus.stop()
        await redis.aclose()
        await pool.close()
