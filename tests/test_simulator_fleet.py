"""The device fleet against a real (private) Mosquitto: telemetry, statuses, last will."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from carewatch.messages import DeviceStatus, Telemetry
from carewatch.settings import Settings
from harness.services import Proc, await_until
from registry.importer import import_files
from simulators.device import SimDevice
from simulators.fleet import run_fleet
from simulators.street import generate_street, write_ledger


class Watcher:
    """Subscribes to every device topic and keeps what arrives, per device."""

    def __init__(self) -> None:
        self.telemetry: dict[str, list[Telemetry]] = defaultdict(list)
        self.status: dict[str, str] = {}

    def take(self, message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        _, _, _, device_id, kind = message.topic.value.split("/")
        if kind == "telemetry":
            self.telemetry[device_id].append(msgspec.json.decode(message.payload, type=Telemetry))
        elif kind == "status":
            self.status[device_id] = msgspec.json.decode(message.payload, type=DeviceStatus).state

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        async def check() -> bool:
            return cond()

        await await_until(check, timeout=20, what=what)


async def _watch(port: int, watcher: Watcher, ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"w-{uuid.uuid4().hex}") as client:
        await client.subscribe("cw/v1/dev/+/+", qos=1)
        ready.set()
        async for message in client.messages:
            watcher.take(message)


async def _start_watcher(port: int) -> tuple[Watcher, asyncio.Task[None]]:
    watcher, ready = Watcher(), asyncio.Event()
    task = asyncio.create_task(_watch(port, watcher, ready))
    await asyncio.wait_for(ready.wait(), timeout=10)
    return watcher, task


def _devices(tag: str) -> list[SimDevice]:
    home = (29.55, 106.57)
    return [
        SimDevice(f"{tag}-WB", "wristband", f"{tag}-E", home=home),
        SimDevice(f"{tag}-PIR", "pir", f"{tag}-E", home=home),
        SimDevice(f"{tag}-WM", "water_meter", f"{tag}-E", home=home),
        SimDevice(f"{tag}-DOOR", "door", f"{tag}-E", home=home),
    ]


@pytest.mark.parametrize("per_device", [True, False], ids=["per-device", "shared"])
async def test_fleet_publishes_valid_telemetry_and_retained_statuses(
    mosquitto: Proc, per_device: bool
) -> None:
    devices = _devices(uuid.uuid4().hex[:8])
    ids = [d.device_id for d in devices]
    watcher, watch_task = await _start_watcher(mosquitto.port)
    settings = Settings(mqtt_port=mosquitto.port, _env_file=None)
    stop = asyncio.Event()
    fleet = asyncio.create_task(
        run_fleet(
            settings, devices, 20.0, 0, stop, per_device_connections=per_device, connections=2
        )
    )

    await watcher.until(
        lambda: all(len(watcher.telemetry[i]) >= 5 for i in ids), "5 telemetry per device"
    )
    assert all(watcher.status[i] == "online" for i in ids)
    stop.set()
    stats = await asyncio.wait_for(fleet, timeout=20)
    await watcher.until(lambda: all(watcher.status[i] == "offline" for i in ids), "offline")
    watch_task.cancel()

    assert stats.connections == (4 if per_device else 2)
    assert stats.errors == 0 and stats.telemetry >= 20
    for device_id, readings in watcher.telemetry.items():
        seqs = [t.seq for t in readings]
        assert seqs == sorted(set(seqs)), device_id
    wrist = watcher.telemetry[ids[0]]
    assert all(t.hr is not None and 55 <= t.hr <= 100 for t in wrist)
    assert all(t.spo2 is not None and 94 <= t.spo2 <= 99 for t in wrist)
    assert all(t.lat is not None and abs(t.lat - 29.55) < 0.004 for t in wrist)
    assert all(t.motion is not None for t in watcher.telemetry[ids[1]])
    assert all(t.water_flow is not None for t in watcher.telemetry[ids[2]])
    # a late subscriber learns each device's state from the retained status
    late, late_task = await _start_watcher(mosquitto.port)
    await late.until(lambda: all(late.status.get(i) == "offline" for i in ids), "retained")
    late_task.cancel()


async def test_cli_fleet_killed_hard_leaves_offline_last_wills(
    settings: Settings, mosquitto: Proc, tmp_path: Path
) -> None:
    street = generate_street(None, "渝中区", 3, seed=31)
    assert import_files(settings.database_url, write_ledger(street, tmp_path)).ok
    ids = [d.device_id for e in street.elders for d in e.devices()]
    watcher, watch_task = await _start_watcher(mosquitto.port)
    env = os.environ | {
        "CAREWATCH_DATABASE_URL": settings.database_url,
        "CAREWATCH_MQTT_HOST": "127.0.0.1",
        "CAREWATCH_MQTT_PORT": str(mosquitto.port),
    }
    cli = [
        sys.executable,
        "-m",
        "carewatch.cli",
        "simulate",
        "fleet",
        "--rate",
        "5",
        "--duration",
        "0",
    ]
    log = (tmp_path / "fleet.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*cli, env=env, stdout=log, stderr=log)
    try:
        await watcher.until(
            lambda: all(watcher.telemetry[i] and watcher.status.get(i) == "online" for i in ids),
            "every registered device online and publishing",
        )
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean disconnect: the broker sends the wills
        await asyncio.wait_for(proc.wait(), timeout=10)
        log.close()

    await watcher.until(
        lambda: all(watcher.status.get(i) == "offline" for i in ids), "last wills published"
    )
    watch_task.cancel()
    wristbands = [e.wristband_id for e in street.elders]
    assert all(watcher.telemetry[w][0].hr is not None for w in wristbands if w)
