"""Scripted emergencies a wristband sends: SOS, fall, and the elder cancelling them.

Each scenario publishes over an already connected client (QoS 1) and returns what it
sent, with sequence numbers and device times, so tests and the demo can follow the
alert through the pipeline and measure its latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt

from carewatch.messages import EventType
from simulators.device import SimDevice, publish

SOS_CANCEL_DELAY_S = 2.0  # the elder presses cancel well inside the grace window
FALL_OK_DELAY_S = 5.0  # "I'm OK" a few seconds after the fall


@dataclass(frozen=True, slots=True)
class Sent:
    event: EventType
    topic: str
    seq: int
    device_time_ms: int


async def send_event(
    client: aiomqtt.Client, device: SimDevice, event: EventType, ref_seq: int | None = None
) -> Sent:
    publication = device.event(event, ref_seq)
    await publish(client, publication)
    return Sent(event, publication.topic, publication.seq, publication.ts_ms)


async def sos(client: aiomqtt.Client, device: SimDevice) -> list[Sent]:
    return [await send_event(client, device, "sos")]


async def sos_cancel(
    client: aiomqtt.Client, device: SimDevice, delay_s: float = SOS_CANCEL_DELAY_S
) -> list[Sent]:
    pressed = await send_event(client, device, "sos")
    await asyncio.sleep(delay_s)  # the elder's reaction time, part of the scenario
    return [pressed, await send_event(client, device, "sos_cancel", ref_seq=pressed.seq)]


async def fall(client: aiomqtt.Client, device: SimDevice) -> list[Sent]:
    return [await send_event(client, device, "fall")]


async def fall_cancel(
    client: aiomqtt.Client, device: SimDevice, delay_s: float = FALL_OK_DELAY_S
) -> list[Sent]:
    fallen = await send_event(client, device, "fall")
    await asyncio.sleep(delay_s)
    return [fallen, await send_event(client, device, "fall_cancel", ref_seq=fallen.seq)]


Scenario = Callable[[aiomqtt.Client, SimDevice], Awaitable[list[Sent]]]
SCENARIOS: dict[str, Scenario] = {
    "sos": sos,
    "sos-cancel": sos_cancel,
    "fall": fall,
    "fall-cancel": fall_cancel,
}
