"""Scenarios publish to a real (private) Mosquitto; a subscriber checks what arrives."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from carewatch.messages import DeviceEvent
from carewatch.settings import Settings
from harness.services import Proc, await_until
from registry.importer import import_files
from simulators.device import SimDevice, mqtt_client
from simulators.scenarios import fall, fall_cancel, sos, sos_cancel
from simulators.street import generate_street, write_ledger


class Received:
    def __init__(self) -> None:
        self.messages: list[aiomqtt.Message] = []

    def on(self, topic: str) -> list[bytes]:
        return [
            m.payload
            for m in self.messages
            if m.topic.value == topic and isinstance(m.payload, bytes)
        ]

    async def count_at_least(self, n: int, topic: str) -> None:
        async def enough() -> bool:
            return len(self.on(topic)) >= n

        await await_until(enough, timeout=10, what=f"{n} message(s) on {topic}")


async def _collect(client: aiomqtt.Client, received: Received) -> None:
    async for message in client.messages:
        received.messages.append(message)


@pytest.fixture
async def received(mosquitto: Proc) -> AsyncIterator[Received]:
    """Everything devices publish from now on, as a subscriber sees it."""
    out = Received()
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, identifier=f"t-{uuid.uuid4().hex}"
    ) as sub:
        await sub.subscribe("cw/v1/dev/+/+", qos=1)
        task = asyncio.create_task(_collect(sub, out))
        yield out
        task.cancel()


def _mqtt_settings(mosquitto: Proc) -> Settings:
    return Settings(mqtt_port=mosquitto.port, _env_file=None)


def _events(payloads: list[bytes]) -> list[DeviceEvent]:
    return [msgspec.json.decode(p, type=DeviceEvent) for p in payloads]


async def test_sos_then_cancel_arrive_in_order_referring_to_the_sos(
    mosquitto: Proc, received: Received
) -> None:
    device = SimDevice(f"WB-{uuid.uuid4().hex[:8]}", "wristband", "E-1")
    async with mqtt_client(_mqtt_settings(mosquitto), "t-scenario") as client:
        sent = await sos_cancel(client, device, delay_s=0.05)

    topic = f"cw/v1/dev/{device.device_id}/event"
    await received.count_at_least(2, topic)
    events = _events(received.on(topic))
    assert [e.type for e in events] == ["sos", "sos_cancel"]
    assert [e.seq for e in events] == [s.seq for s in sent]
    assert [e.ts for e in events] == [s.device_time_ms for s in sent]
    assert events[1].seq > events[0].seq
    assert events[1].ref_seq == events[0].seq
    assert all(s.topic == topic for s in sent)


async def test_every_scenario_publishes_with_increasing_seq(
    mosquitto: Proc, received: Received
) -> None:
    device = SimDevice(f"WB-{uuid.uuid4().hex[:8]}", "wristband", "E-2")
    async with mqtt_client(_mqtt_settings(mosquitto), "t-scenarios") as client:
        sent = [
            *await sos(client, device),
            *await fall(client, device),
            *await fall_cancel(client, device, delay_s=0.05),
        ]

    topic = f"cw/v1/dev/{device.device_id}/event"
    await received.count_at_least(4, topic)
    events = _events(received.on(topic))
    assert [e.type for e in events] == ["sos", "fall", "fall", "fall_cancel"]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)) == [s.seq for s in sent]
    assert events[3].ref_seq == events[2].seq


async def test_cli_scenario_uses_the_elders_wristband_and_prints_what_it_sent(
    settings: Settings, mosquitto: Proc, received: Received, tmp_path: Path
) -> None:
    street = generate_street(None, "渝中区", 3, seed=21)
    assert import_files(settings.database_url, write_ledger(street, tmp_path)).ok
    elder = street.elders[1]
    env = os.environ | {
        "CAREWATCH_DATABASE_URL": settings.database_url,
        "CAREWATCH_MQTT_HOST": "127.0.0.1",
        "CAREWATCH_MQTT_PORT": str(mosquitto.port),
        "CAREWATCH_SOS_CANCEL_WINDOW_S": "0.2",
    }
    cli = ("-m", "carewatch.cli", "simulate", "scenario", "sos-cancel", "--elder", elder.elder_id)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *cli,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)

    assert proc.returncode == 0, stderr.decode()
    topic = f"cw/v1/dev/{elder.wristband_id}/event"
    await received.count_at_least(2, topic)
    events = _events(received.on(topic))
    lines = stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == ["sos", "sos_cancel"]
    for line, event in zip(lines, events, strict=True):
        assert f"device {elder.wristband_id} seq {event.seq} device_time_ms {event.ts}" in line
