"""The rules worker: events.{shard} -> detectors -> alerts (PostgreSQL + alerts stream).

Consumes the events shards it owns (rules_engine.shards: one owner per shard, leases in
Redis, fair share among the live workers) in consumer group "rules", fires durable
timers (any worker; claimed per timer), and publishes each committed AlertChange on the
alerts stream.

Each event goes through the detector contract (rules_engine.engine): the detectors that
want it observe it once (their state changes there; most telemetry ends here, with
nothing to decide, and needs no database at all). What they observed is decided on a
cached view of the elder first (rules_engine.view_cache) when it is telemetry: a
decision that provably changes nothing needs no transaction either. Only what decides
something takes the transactional path (store.apply_event), which decides again on a
fresh, locked view.
Device events and statuses always take it: they are rare, and whether one is a no-op can
hinge on an alert another worker's timer opened since the view was cached (a band's
"online" resolves the device_offline alert a silence timer opened).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
from collections.abc import Sequence

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from carewatch import bus
from carewatch.alarm_priority import AlarmPriority
from carewatch.alert_outbox import AlertPublisher
from carewatch.clock import Clock, SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import (
    Event,
    decode_batch,
    decode_event,
    encode,
    is_event_batch,
    split_events,
)
from carewatch.metrics import (
    ALERTS,
    EVENTS_CONSUMED,
    RULES_DECIDED,
    RULES_VIEW_CACHE,
    STAGE_LATENCY,
    observe_many,
    serve_metrics,
)
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.decisions import timers_deciding_effect, without_effect
from rules_engine.detectors.base import ElderView
from rules_engine.engine import NOTHING, AnyDetector, Engine, Observed, Seen, default_engine
from rules_engine.inputs import Inputs
from rules_engine.shard_consumers import ShardConsumers
from rules_engine.shards import LeaseStore, ShardOwner
from rules_engine.timers import run_timer_loop
from rules_engine.view_cache import ViewCache

log = logging.getLogger(__name__)
# metric children resolved once: labels() is a locked dict lookup
_LATENCY = STAGE_LATENCY.labels("rules")
_BY_CACHE = RULES_DECIDED.labels("cache")
_BY_DB = RULES_DECIDED.labels("db")
_HIT = RULES_VIEW_CACHE.labels("hit")
_MISS = RULES_VIEW_CACHE.labels("miss")

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
        views: ViewCache | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._engine = engine
        self._publisher = publisher
        self._clock = clock
        self._views = views if views is not None and views.enabled else None

    def for_stream(self, stream: str, priority: AlarmPriority | None = None) -> bus.BatchHandler:
        """The handler of one stream's batches; with `priority` (a bulk lane) it stands
        aside for alarms between messages (carewatch.alarm_priority)."""

        async def handle(bodies: list[bytes]) -> None:
            await self.handle_batch(stream, bodies, priority)

        return handle

    async def handle_batch(
        self, stream: str, bodies: list[bytes], priority: AlarmPriority | None = None
    ) -> None:
        """Each event in order: a body is one event or, on the telemetry lanes, a batch of
        them (carewatch.messages.encode_events). Telemetry that no detector wants, or
        that they observe with nothing to decide (most of it), costs no coroutine, and
        the metrics are updated once per batch: per message they were ~5 % of the
        worker's CPU at 10,000 msg/s (two locks for a latency, one for a count)."""
        consumed: collections.Counter[str] = collections.Counter()
        latencies: list[float] = []
        engine = self._engine
        now_ms = self._clock.now_ms
        # the clock is read after every await and every 32 events, not per event: the
        # latency histogram's buckets are coarser than what 32 events take
        now = now_ms()
        i = 0
        try:
            for body in bodies:
                if is_event_batch(body):
                    items = await self._unbatch(stream, body, consumed)
                    now = now_ms()
                else:
                    try:
                        items = [(decode_event(body), body)]
                    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                        consumed["invalid"] += 1
                        await self._reject(stream, body, exc)
                        continue
                for event, event_body in items:
                    i += 1
                    if not i & 31:
                        now = now_ms()
                    if priority is not None and priority.due():
                        await priority.pause()
                        now = now_ms()
                    consumed[event.type] += 1
                    wanting = engine.wanting(event)
                    if wanting:
                        try:
                            seen = engine.observe_known(event, wanting)
                        except Exception as exc:
                            await self._observe_failed(stream, event, event_body, exc)
                            seen = NOTHING
                        if seen is None or seen:
                            await self._handle(stream, event, event_body, wanting, seen)
                            now = now_ms()
                    latencies.append(max(now - event.received_ms, 0) / 1000)
        finally:
            for kind, n in consumed.items():
                EVENTS_CONSUMED.labels(kind).inc(n)
            observe_many(_LATENCY, latencies)

    async def _unbatch(
        self, stream: str, body: bytes, consumed: collections.Counter[str]
    ) -> list[tuple[Event, bytes | None]]:
        """The events of a batch body, each with its own body where it had to be split
        (None: encode(event) is its body). An event that is JSON but not a valid event is
        dead-lettered on its own, and the others in its batch are handled as usual; a body
        that is not a JSON array (broken JSON) or an empty one is dead-lettered whole."""
        try:
            events = decode_batch(body)  # handle_batch saw it is one
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        else:
            if events:
                return [(event, None) for event in events]
            consumed["invalid"] += 1  # no publisher sends an empty batch: keep it, say so
            await self._reject(stream, body, ValueError("an empty batch of events"))
            return []
        try:
            parts = split_events(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            consumed["invalid"] += 1
            await self._reject(stream, body, exc)  # not even an array: kept whole
            return []
        items: list[tuple[Event, bytes | None]] = []
        for part in parts:
            try:
                items.append((decode_event(part), part))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                consumed["invalid"] += 1
                await self._reject(stream, part, exc)
        return items

    async def _reject(self, stream: str, body: bytes, exc: Exception) -> None:
        log.warning("undecodable event dead-lettered", extra={"stream": stream})
        await store.dead_letter(
            self._pool,
            topic=stream,
            device_id=None,
            reason="rules_invalid_event",
            detail=str(exc),
            payload=body,
        )

    async def _observe_failed(
        self, stream: str, event: Event, body: bytes | None, exc: Exception
    ) -> None:
        # a detector failing on this event fails on every delivery: keep it, move on
        log.exception("observing an event failed, dead-lettered", extra={"event_id": event.id})
        EVENTS_CONSUMED.labels("failed").inc()
        await self._dead_letter(stream, event, body, "rules_failed", repr(exc))

    async def _handle(
        self,
        stream: str,
        event: Event,
        body: bytes | None,
        wanting: Sequence[AnyDetector],
        seen: Seen | None,
    ) -> None:
        """An event the detectors observed with something to decide (`seen`), or that
        needs the elder's profile before they can (None)."""
        observed: Observed | None
        if seen is not None:
            observed = Observed(event, seen)
        else:
            try:
                observed = await self._observe(event, wanting)
            except psycopg.OperationalError:
                raise  # database unreachable: the entry stays pending and is delivered again
            except Exception as exc:
                await self._observe_failed(stream, event, body, exc)
                return
        if observed is None:  # not in the registry: the full path dead-letters it
            await self._apply(stream, body, Observed(event, NOTHING))
        elif observed and not await self._settled_by_cache(observed):
            await self._apply(stream, body, observed)

    async def _observe(self, event: Event, wanting: Sequence[AnyDetector]) -> Observed | None:
        """The detectors observe `event` once, with the elder's profile learned first,
        from the cached view or a read (at most every 10 min of device time per elder).
        Called only where `Engine.observe_known` returned None: the event is not
        remembered, no profile is known, and a wanting detector uses one (nothing is
        awaited in between, so that still holds). None: the elder is missing from the
        registry."""
        if self._views is not None:
            view = await self._cached_view(event.elder_id)
        else:
            view = await store.load_view(self._pool, event.elder_id, self._settings)
        if view is None:
            return None
        self._engine.learn(view, event.device_time_ms)
        return self._engine.observe(event, wanting)

    async def _settled_by_cache(self, observed: Observed) -> bool:
        """True if the event provably changes nothing: its decisions on the cached view
        are none at all, or only timer moves the timers' current state makes no-ops."""
        event = observed.event
        if self._views is None or event.type != "telemetry":
            return False
        try:
            view = await self._cached_view(event.elder_id)
            if view is None:
                return False  # unknown elder: the full path dead-letters it
            decisions = self._engine.decide(observed, view, self._clock.now_ms())
            timer_ids = timers_deciding_effect(decisions)
            if timer_ids is None:
                return False
            if timer_ids:
                timers = await store.timer_states(self._pool, timer_ids)
                if not without_effect(decisions, timers):
                    return False
        except psycopg.OperationalError:
            raise  # database unreachable: the entry stays pending and is delivered again
        except Exception:
            # whatever failed here fails on the full path too, which dead-letters it
            log.debug("cached decision failed", extra={"event_id": event.id}, exc_info=True)
            return False
        _BY_CACHE.inc()
        return True

    async def _cached_view(self, elder_id: str) -> ElderView | None:
        assert self._views is not None
        view = self._views.get(elder_id)
        if view is not None:
            _HIT.inc()
            return view
        _MISS.inc()
        loaded_ms = self._clock.now_ms()
        ticket = self._views.begin(elder_id)
        try:
            view = await store.load_view(self._pool, elder_id, self._settings)
        finally:
            self._views.put(ticket, view, loaded_ms)
        return view

    async def _apply(self, stream: str, body: bytes | None, observed: Observed) -> None:
        _BY_DB.inc()
        try:
            await self._apply_locked(stream, body, observed)
        finally:
            if self._views is not None:
                # whatever it wrote must not be decided on from a view read before
                self._views.invalidate(observed.event.elder_id)

    async def _apply_locked(self, stream: str, body: bytes | None, observed: Observed) -> None:
        event = observed.event
        try:
            outcome = await store.apply_event(
                self._pool,
                event,
                lambda view: self._engine.decide(observed, view, self._clock.now_ms()),
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
        self, stream: str, event: Event, body: bytes | None, reason: str, detail: str
    ) -> None:
        await store.dead_letter(
            self._pool,
            topic=stream,
            device_id=event.device_id,
            reason=reason,
            detail=detail,
            payload=encode(event) if body is None else body,  # one event, not its batch
        )


async def run(settings: Settings, stop: asyncio.Event, clock: Clock | None = None) -> None:
    serve_metrics(settings.metrics_port)
    clock = clock or SystemClock()
    engine = default_engine(settings)
    pool = await open_pool(settings.database_url)
    alerts_bus = bus.make_bus(settings)  # publishes alert changes; consumes nothing
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    timer_task: asyncio.Task[None] | None = None
    owner_task: asyncio.Task[None] | None = None
    try:
        publisher = AlertPublisher(alerts_bus, pool)
        views = ViewCache(
            clock,
            round(settings.rules_view_cache_s * 1000),
            lambda elder_id: bus.shard_of(elder_id, settings.bus_shards),
        )
        handler = EventHandler(settings, pool, engine, publisher, clock, views)
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
            on_take=lambda shard: _take(shard, views, consumers),
            on_release=lambda shard: _release(shard, views, consumers),
        )
        await alerts_bus.start()
        # changes a previous run committed but never published (it died in between)
        await publisher.sweep(older_than_ms=0)
        timer_task = asyncio.create_task(
            run_timer_loop(
                pool,
                engine,
                publisher,
                settings,
                clock,
                stop,
                inputs=Inputs(engine, settings),
                on_fired=views.invalidate,
            ),
            name="rules-timers",
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
        await alerts_bus.stop()
        await redis.aclose()
        await pool.close()
        log.info("rules worker stopped")


async def _take(shard: int, views: ViewCache, consumers: ShardConsumers) -> None:
    # views of a shard another worker consumed meanwhile may miss what it wrote
    views.clear_shard(shard)
    await consumers.start(shard)


async def _release(shard: int, views: ViewCache, consumers: ShardConsumers) -> None:
    await consumers.stop(shard)  # the message in flight is done: nothing fills it again
    views.clear_shard(shard)
