"""A fleet of simulated devices publishing realistic telemetry over MQTT (QoS 1).

Small fleets give every device its own connection, with a retained "offline" last will,
exactly like real devices. Large fleets share a few connections (one per device would
exhaust sockets long before the broker), publishing on each device's own topics; there
the "offline" statuses are published on a clean stop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

import aiomqtt

from carewatch.settings import Settings
from simulators.days import SITE_TZ
from simulators.device import Publication, SimDevice, mqtt_client, publish
from simulators.readings import DeviceModel, model_for

log = logging.getLogger(__name__)

PER_DEVICE_CONNECTIONS_MAX = 50  # up to this many devices, one connection each
SHARED_CONNECTIONS = 4
MAX_IN_FLIGHT = 500  # QoS 1 publishes awaiting PUBACK, per connection
NO_HOME = (29.56, 106.55)


@dataclass
class FleetStats:
    devices: int = 0
    connections: int = 0
    telemetry: int = 0
    events: int = 0
    statuses: int = 0
    errors: int = 0
    reconnects: int = 0
    duration_s: float = 0.0

    @property
    def published(self) -> int:
        return self.telemetry + self.events + self.statuses


@dataclass
class _Member:
    device: SimDevice
    model: DeviceModel

    def publications(self, tz: tzinfo, dt_s: float) -> list[Publication]:
        reading = self.model.step(datetime.fromtimestamp(time.time(), tz), dt_s)
        telemetry = [self.device.telemetry(reading.telemetry)] if reading.telemetry else []
        return telemetry + [self.device.event(e) for e in reading.events]


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early if `stop` is set; True if it was."""
    if math.isinf(seconds):
        await stop.wait()
    elif seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


class _Connection:
    """One MQTT connection publishing for a group of devices, reconnecting on loss."""

    def __init__(
        self,
        settings: Settings,
        identifier: str,
        members: list[_Member],
        will: aiomqtt.Will | None,
        interval_s: float,
        deadline: float,
        stop: asyncio.Event,
        stats: FleetStats,
        tz: tzinfo,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.identifier = identifier
        self.members = members
        self.will = will
        self.interval_s = interval_s
        self.deadline = deadline
        self.stop = stop
        self.stats = stats
        self.tz = tz
        self.rng = rng
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: aiomqtt.MqttError | None = None
        loop_now = asyncio.get_running_loop().time()
        # spread the devices' first readings over one interval, so they do not burst
        self._due = [
            (loop_now + rng.uniform(0, min(interval_s, 60.0)), i)
            for i in range(len(members) if math.isfinite(interval_s) else 0)
        ]
        heapq.heapify(self._due)

    def _over(self) -> bool:
        return self.stop.is_set() or asyncio.get_running_loop().time() >= self.deadline

    async def run(self) -> None:
        backoff = 0.5
        while not self._over():
            try:
                async with mqtt_client(self.settings, self.identifier, self.will) as client:
                    client.pending_calls_threshold = MAX_IN_FLIGHT  # in flight on purpose
                    self._lost = None
                    await self._send_all(client, [m.device.status("online") for m in self.members])
                    await self._publish_until_over(client)
                    # a clean disconnect does not fire the last will: say goodbye ourselves
                    await self._send_all(client, [m.device.status("offline") for m in self.members])
                    return
            except aiomqtt.MqttError as exc:
                self.stats.reconnects += 1
                log.warning(
                    "simulator connection lost",
                    extra={"client": self.identifier, "error": str(exc)},
                )
                if await sleep_or_stop(self.stop, backoff):
                    return
                backoff = min(backoff * 2, 10.0)

    async def _send(self, client: aiomqtt.Client, publication: Publication) -> None:
        try:
            await publish(client, publication)
        except aiomqtt.MqttError as exc:
            self.stats.errors += 1
            self._lost = exc
            return
        finally:
            self._in_flight.release()
        kind = publication.topic.rsplit("/", 1)[-1]
        if kind == "telemetry":
            self.stats.telemetry += 1
        elif kind == "event":
            self.stats.events += 1
        else:
            self.stats.statuses += 1

    async def _start_send(self, client: aiomqtt.Client, publication: Publication) -> None:
        await self._in_flight.acquire()
        task = asyncio.create_task(self._send(client, publication))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)
        if self._lost is not None:
            raise self._lost

    async def _send_all(self, client: aiomqtt.Client, publications: list[Publication]) -> None:
        for publication in publications:
            await self._start_send(client, publication)
        await self._drain()

    async def _publish_until_over(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        while not self._over():
            if self._lost is not None:
                raise self._lost
            due, i = self._due[0] if self._due else (math.inf, -1)
            wait = min(due, self.deadline) - loop.time()
            if wait > 0:
                await sleep_or_stop(self.stop, wait)
                continue
            heapq.heappop(self._due)
            for publication in self.members[i].publications(self.tz, self.interval_s):
                await self._start_send(client, publication)
            # when the loop falls behind, skip ahead rather than bursting to catch up
            heapq.heappush(self._due, (max(due + self.interval_s, loop.time()), i))
        await self._drain()


async def run_fleet(
    settings: Settings,
    devices: Sequence[SimDevice],
    rate_per_device: float,
    duration_s: float,
    stop: asyncio.Event,
    *,
    per_device_connections: bool | None = None,
    connections: int = SHARED_CONNECTIONS,
    seed: int = 0,
    tz: tzinfo = SITE_TZ,
) -> FleetStats:
    """Publish telemetry for every device until `stop` is set or `duration_s` passes
    (0 = until stopped). `per_device_connections` None picks by fleet size."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + duration_s if duration_s > 0 else math.inf
    interval = 1 / rate_per_device if rate_per_device > 0 else math.inf
    members = [
        _Member(d, model_for(d.kind, random.Random(f"{seed}:{d.device_id}"), d.home or NO_HOME))
        for d in devices
    ]
    if per_device_connections is None:
        per_device_connections = len(members) <= PER_DEVICE_CONNECTIONS_MAX
    groups: list[tuple[str, list[_Member], aiomqtt.Will | None]]
    if per_device_connections:
        groups = [(m.device.device_id, [m], m.device.last_will()) for m in members]
    else:
        n = max(1, min(connections, len(members)))
        groups = [(f"carewatch-sim-{os.getpid()}-{k}", members[k::n], None) for k in range(n)]
    stats = FleetStats(devices=len(members), connections=len(groups))
    rng = random.Random(seed)
    log.info(
        "fleet starting",
        extra={"devices": stats.devices, "connections": stats.connections, "rate": rate_per_device},
    )
    async with asyncio.TaskGroup() as tasks:
        for identifier, group, will in groups:
            connection = _Connection(
                settings, identifier, group, will, interval, deadline, stop, stats, tz, rng
            )
            tasks.create_task(connection.run())
    stats.duration_s = loop.time() - started
    log.info("fleet stopped", extra={"published": stats.published, "errors": stats.errors})
    return stats
