"""One bus consumer per owned shard (its event and telemetry lanes), started and stopped as ownership changes.

Each shard gets its own bus (its own connections), so taking or handing back one shard never
interrupts the others. Stopping a consumer waits for the batch in flight before the lease is given back (see rules_engine.shards.ShardOwner).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from carewatch import bus
from carewatch.alarm_priority import AlarmPriority
from carewatch.settings import Settings

log = logging.getLogger(__name__)


class ShardConsumers:
    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        consumer: str,
        # a stream's batch handler; given an AlarmPriority, it pauses for alarms
        handler_for: Callable[[str, AlarmPriority | None], bus.BatchHandler],
        reclaim_idle_ms: int,
        start_timeout_s: float,
    ) -> None:
        self._settings = settings
        # the event lanes' work goes first; the telemetry lanes stand aside for it
        self._priority = AlarmPriority()
        self._group = group
        self._consumer = consumer
        self._handler_for = handler_for
        # a shard taken over from a dead owner has its unacknowledged entries idle for
        # about a lease already, so reclaiming after that delivers them at once
        self._reclaim_idle_ms = reclaim_idle_ms
        # a start that hangs (bus unreachable) must not hold up the renewal of the leases
        # of the shards already consumed: it fails and is tried again next round
        self._start_timeout_s = start_timeout_s
        self._buses: dict[int, bus.Bus] = {}

    @property
    def shards(self) -> set[int]:
        return set(self._buses)

    async def start(self, shard: int) -> None:
        if shard in self._buses:
            return
        shard_bus = bus.make_bus(self._settings)
        # the shard's event lane and telemetry lane get their own subscribers, so an SOS
        # is handled while a telemetry backlog is still being worked through
        events, telemetry = streams = bus.shard_streams(shard)
        shard_bus.subscribe_batch(
            events,
            group=self._group,
            consumer=self._consumer,
            handler=self._alarm(self._handler_for(events, None)),
            reclaim_idle_ms=self._reclaim_idle_ms,
            urgent=True,
        )
        # telemetry is most of the traffic and mostly a no-op: taken in batches
        shard_bus.subscribe_batch(
            telemetry,
            group=self._group,
            consumer=self._consumer,
            handler=self._handler_for(telemetry, self._priority),
            reclaim_idle_ms=self._reclaim_idle_ms,
            linger_ms=self._settings.rules_telemetry_linger_ms,
        )
        try:
            await asyncio.wait_for(shard_bus.start(), self._start_timeout_s)
        except BaseException:
            await shard_bus.stop()
            raise
        self._buses[shard] = shard_bus
        log.info("consuming shard", extra={"shard": shard, "streams": list(streams)})

    def _alarm(self, handler: bus.BatchHandler) -> bus.BatchHandler:
        """The event lane's handler, telemetry standing aside while it runs."""

        async def handle(bodies: list[bytes]) -> None:
            with self._priority.alarm():
                await handler(bodies)

        return handle

    async def stop(self, shard: int) -> None:
        shard_bus = self._buses.pop(shard, None)
        if shard_bus is not None:
            await shard_bus.stop()
            log.info("stopped consuming shard", extra={"shard": shard})

    async def stop_all(self) -> None:
        for shard in sorted(self._buses):
            await self.stop(shard)
