"""The rules worker: events.{shard} -> detectors -> alerts (PostgreSQL + alerts stream).

Consumes the events shards it owns (rules_engine.shards: one owner per shard, leases in
Redis, fair share among the live workers) in consumer group "rules", fires durable
timers (any worker; claimed per timer), and publishes each committed AlertChange on the
alerts stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from carewatch import bus
from carewatch.clock import Clock, SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import Event, decode_event
from carewatch.metrics import ALERTS, EVENTS_CONSUMED, STAGE_LATENCY, serve_metrics
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.engine import Engine, default_engine
from rules_engine.outbox import AlertPublisher
from rules_engine.shard_consumers import ShardConsumers
from rules_engine.shards import LeaseStore, ShardOwner
from rules_engine.timers import run_timer_loop

log = logging.getLogger(__name__)
# metric children resolved once: labels() is a locked dict lookup, and this is per message
_LATENCY = STAGE_LATENCY.labels("rules")
_CONSUMED = {kind: EVENTS_CONSUMED.labels(kind) for kind in ("telemetry", "event", "status")}

GROUP = "rules"


def consumer_name() -> str:
    """Stable across restarts, so a restarted worker picks up its own pending entries."""
    return f"rules-{socket.gethostname()}"


def worker_id() -> str:
    """Unique per process: the owner recorded in the shard leases."""
    return f"rules-{socket.gethostname()}-{os.getpid()}"


class EventHandler:
    """Handles one bus message; bad input is dead-lettered, DB errors are retried."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        engine: Engine,
        publisher: AlertPublisher,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._engine = engine
        self._publisher = publisher
        self._clock = clock

    def for_stream(self, stream: str) -> bus.Handler:
        async def handle(body: bytes) -> None:
            await self.handle(stream, body)

        return handle

    async def handle(self, stream: str, body: bytes) -> None:
        try:
            event = decode_event(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            EVENTS_CONSUMED.labels("invalid").inc()
            log.warning("undecodable event dead-lettered", extra={"stream": stream})
            await store.dead_letter(
                self._pool,
                topic=stream,
                device_id=None,
                reason="rules_invalid_event",
                detail=str(exc),
                payload=body,
            )
            return
        _CONSUMED[event.type].inc()
        if self._engine.wants(event):
            await self._apply(stream, event, body)
        latency_ms = max(self._clock.now_ms() - event.received_ms, 0)
        _LATENCY.observe(latency_ms / 1000)

    async def _apply(self, stream: str, event: Event, body: bytes) -> None:
        try:
            outcome = await store.apply_event(
                self._pool,
                event,
                lambda view: self._engine.on_event(event, view, self._clock),
                self._settings,
                self._clock,
            )
        except psycopg.OperationalError:
            raise  # database unreachable: the entry stays pending and is delivered again
        except Exception as exc:
            # anything else fails the same way on every delivery: keep it, move on
            log.exception("event failed, dead-lettered", extra={"event_id": event.id})
            EVENTS_CONSUMED.labels("failed").inc()
            await self._dead_letter(stream, event, body, "rules_failed", repr(exc))
            return
        if outcome.result == "unknown_elder":
            log.warning(
                "event for an unknown elder dead-lettered",
                extra={"event_id": event.id, "elder_id": event.elder_id},
            )
            detail = f"elder {event.elder_id!r} is not in the registry"
            await self._dead_letter(stream, event, body, "rules_unknown_elder", detail)
            return
        if outcome.result == "duplicate":
            log.info("redelivered event, republishing its changes", extra={"event_id": event.id})
        else:
            for change in outcome.changes:
                ALERTS.labels(change.kind, change.status).inc()
                log.info(
                    "alert changed",
                    extra={
                        "alert_id": change.alert_id,
                        "kind": change.kind,
                        "status": change.status,
                        "event_id": event.id,
                    },
                )
        await self._publisher.publish(outcome.changes)

    async def _dead_letter(
        self, stream: str, event: Event, body: bytes, reason: str, detail: str
    ) -> None:
        await store.dead_letter(
            self._pool,
            topic=stream,
            device_id=event.device_id,
            reason=reason,
            detail=detail,
            payload=body,
        )


async def run(settings: Settings, stop: asyncio.Event, clock: Clock | None = None) -> None:
    serve_metrics(settings.metrics_port)
    clock = clock or SystemClock()
    engine = default_engine()
    pool = await open_pool(settings.database_url)
    broker = bus.make_broker(settings)  # publishes alert changes; consumes nothing
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    timer_task: asyncio.Task[None] | None = None
    owner_task: asyncio.Task[None] | None = None
    try:
        publisher = AlertPublisher(broker, pool)
        handler = EventHandler(settings, pool, engine, publisher, clock)
        lease_ms = settings.rules_shard_lease_ms
        consumers = ShardConsumers(
            settings,
            group=GROUP,
            consumer=consumer_name(),
            handler_for=handler.for_stream,
            reclaim_idle_ms=lease_ms,
            start_timeout_s=lease_ms / 3000,
        )
        owner = ShardOwner(
            LeaseStore(redis, settings.bus_shards, lease_ms),
            worker_id(),
            lease_ms=lease_ms,
            on_take=consumers.start,
            on_release=consumers.stop,
        )
        await bus.start(broker)
        # changes a previous run committed but never published (it died in between)
        await publisher.sweep(older_than_ms=0)
        timer_task = asyncio.create_task(
            run_timer_loop(pool, engine, publisher, settings, clock, stop), name="rules-timers"
        )
        owner_task = asyncio.create_task(owner.run(stop), name="rules-shard-owner")
        log.info(
            "rules worker started",
            extra={"shards": settings.bus_shards, "worker": owner.me},
        )
        await stop.wait()
    finally:
        if owner_task is not None:
            if not stop.is_set():
                owner_task.cancel()
            # on `stop` it stops consuming and hands its shards back before it returns
            with contextlib.suppress(asyncio.CancelledError):
                await owner_task
        if timer_task is not None:
            timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer_task
        await broker.stop()
        await redis.aclose()
        await pool.close()
        log.info("rules worker stopped")
