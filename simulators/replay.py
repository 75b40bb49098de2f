"""Publish a simulated stream (simulators.days) over MQTT, faster than real time.

Simulated time runs `speed` times faster than the wall clock from the stream's start:
a message of device time t goes out (t - start) / speed seconds after the replay began.
Each payload keeps the device time it was generated with, so the server sees a day
pass in minutes, in order and with every device's own sequence numbers. The stream is
consumed lazily, so a long period for many elders never sits in memory.

One shared connection publishes for every device (QoS 1, statuses retained), like the
large fleet; a lost connection is counted and re-established, and the replay goes on
from the next message. On a clean end every device that spoke says "offline".
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Iterable, Iterator

import aiomqtt
import msgspec

from carewatch.messages import DeviceStatus
from carewatch.settings import Settings
from carewatch.topics import TopicKind, topic
from simulators.days import SimMessage
from simulators.device import mqtt_client
from simulators.fleet import MAX_IN_FLIGHT, FleetStats, sleep_or_stop

log = logging.getLogger(__name__)

GOODBYE = msgspec.json.encode(DeviceStatus(v=1, state="offline"))


class _Replayer:
    def __init__(self, messages: Iterable[SimMessage], start_ms: int, speed: float) -> None:
        self.pending: Iterator[SimMessage] = iter(messages)
        self.start_ms = start_ms
        self.speed = speed
        self.stats = FleetStats(connections=1)
        self.devices: set[str] = set()
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: aiomqtt.MqttError | None = None

    def due_in(self, message: SimMessage, began: float) -> float:
        """Wall seconds from now until the message is due."""
        if not math.isfinite(self.speed) or self.speed <= 0:
            return 0.0
        offset_s = (message.device_time_ms - self.start_ms) / 1000 / self.speed
        return began + offset_s - asyncio.get_running_loop().time()

    async def send(
        self, client: aiomqtt.Client, device_id: str, kind: TopicKind, payload: bytes
    ) -> None:
        await self._in_flight.acquire()
        task = asyncio.create_task(self._publish(client, device_id, kind, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._lost is not None:
            raise self._lost

    async def _publish(
        self, client: aiomqtt.Client, device_id: str, kind: TopicKind, payload: bytes
    ) -> None:
        try:
            await client.publish(
                topic(device_id, kind),
                payload,
                qos=1,
                retain=kind == "status",
            )
        except aiomqtt.MqttError as exc:
            self.stats.errors += 1
            self._lost = exc
            return
        finally:
            self._in_flight.release()
        if kind == "telemetry":
            self.stats.telemetry += 1
        elif kind == "event":
            self.stats.events += 1
        else:
            self.stats.statuses += 1

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise lost


async def replay(
    settings: Settings,
    messages: Iterable[SimMessage],
    start_ms: int,
    speed: float,
    stop: asyncio.Event,
    *,
    max_wall_s: float = 0.0,
) -> FleetStats:
    """Publish `messages` (device time order, from `start_ms`) at `speed` x real time
    (inf or 0: as fast as the broker takes them) until they end, `stop` is set or
    `max_wall_s` (0 = no limit) passes."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + max_wall_s if max_wall_s > 0 else math.inf
    r = _Replayer(messages, start_ms, speed)
    identifier = f"carewatch-sim-replay-{os.getpid()}"
    backoff = 0.5
    finished = False
    while not finished:
        try:
            async with mqtt_client(settings, identifier) as client:
                client.pending_calls_threshold = MAX_IN_FLIGHT  # in flight on purpose
                for message in r.pending:
                    wait = min(r.due_in(message, began), deadline - loop.time())
                    if await sleep_or_stop(stop, wait) or loop.time() >= deadline:
                        break
                    r.devices.add(message.device_id)
                    await r.send(client, message.device_id, message.kind, message.payload)
                await r.drain()
                # a clean end does not fire a last will: say goodbye for every device
                for device_id in sorted(r.devices):
                    await r.send(client, device_id, "status", GOODBYE)
                await r.drain()
                finished = True
        except aiomqtt.MqttError as exc:
            r.stats.reconnects += 1
            log.warning("replay connection lost", extra={"error": str(exc)})
            if await sleep_or_stop(stop, backoff):
                break
            backoff = min(backoff * 2, 10.0)
    r.stats.devices = len(r.devices)
    r.stats.duration_s = loop.time() - began
    log.info(
        "replay stopped",
        extra={"published": r.stats.published, "errors": r.stats.errors, "speed": speed},
    )
    return r.stats
