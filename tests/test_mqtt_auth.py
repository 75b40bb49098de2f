"""Each device is limited to its own MQTT topics and its own session, on a real Mosquitto
running the shipped config (infra/mosquitto/mosquitto.conf) and our credentials."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import msgspec
import pytest
from pydantic import SecretStr

from carewatch.messages import DeviceEvent
from carewatch.mqtt_auth import device_password, write_broker_files
from carewatch.settings import Settings
from carewatch.topics import topic, uplink_filter
from harness.pipeline import Pipeline
from harness.services import await_until, start_shipped_mosquitto, wait_until
from ingest.mqtt_client import ConnectOptions, MqttConnection
from ingest.worker import default_client_id, lane_client_ids
from registry.importer import import_files
from tests.chaos_support import band_id, query, write_many_elders

SECRET = "provisioning-secret-for-tests"


@dataclass
class Broker:
    device_port: int  # where devices log in
    service_port: int  # where ingest and the notifier log in


def start_broker(tmp_path: Path, devices: list[str]) -> tuple[Broker, object]:
    write_broker_files(
        tmp_path / "auth",
        SECRET,
        devices,
        {"ingest": "test-ingest-pw", "notifier": "test-notifier-pw"},
    )
    proc, service_port = start_shipped_mosquitto(tmp_path / "broker", tmp_path / "auth")
    return Broker(proc.port, service_port), proc


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Broker]:
    broker, proc = start_broker(tmp_path, ["DEV-A", "DEV-B"])
    yield broker
    proc.stop()  # type: ignore[attr-defined]


def _client(
    port: int, user: str, password: str, identifier: str | None = None, **extra: object
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=password,
        identifier=identifier or f"t-{user}",
        protocol=aiomqtt.ProtocolVersion.V5,
        **extra,  # type: ignore[arg-type]
    )


def _device(port: int, device_id: str, identifier: str | None = None) -> aiomqtt.Client:
    return _client(port, device_id, device_password(SECRET, device_id), identifier)


async def _collect_until(client: aiomqtt.Client, marker: bytes, timeout: float = 10) -> list[str]:
    got: list[str] = []

    async def collect() -> None:
        async for message in client.messages:
            got.append(f"{message.topic.value}={message.payload!r}")
            if message.payload == marker:
                return

    await asyncio.wait_for(collect(), timeout)
    return got


async def test_device_cannot_publish_as_another_device(secured_broker: Broker) -> None:
    b = secured_broker
    async with _client(b.service_port, "ingest", "test-ingest-pw") as ingest:
        await ingest.subscribe(uplink_filter(), qos=1)
        async with _device(b.device_port, "DEV-A") as dev_a:
            await dev_a.publish(topic("DEV-B", "event"), b"forged", qos=1)
            await dev_a.publish(topic("DEV-A", "event"), b"own", qos=1)
        received = await _collect_until(ingest, b"own")
    # one publisher's messages arrive in order: had the forged one passed, it would be first
    assert received == ["cw/v1/dev/DEV-A/event=b'own'"]


async def test_wrong_password_is_refused(secured_broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with _client(secured_broker.device_port, "DEV-A", device_password(SECRET, "DEV-B")):
            pass


async def test_devices_and_services_cannot_log_in_on_each_others_listener(
    secured_broker: Broker,
) -> None:
    b = secured_broker
    with pytest.raises(aiomqtt.MqttError):
        async with _device(b.service_port, "DEV-A", identifier="cw.ingest.events"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with _client(b.device_port, "ingest", "test-ingest-pw"):
            pass


async def test_device_cannot_read_other_devices_uplinks(secured_broker: Broker) -> None:
    b = secured_broker
    async with _device(b.device_port, "DEV-A") as dev_a:
        await dev_a.subscribe(topic("DEV-B", "telemetry"), qos=1)
        await dev_a.subscribe(topic("DEV-A", "cmd"), qos=1)
        async with _device(b.device_port, "DEV-B") as dev_b:
            await dev_b.publish(topic("DEV-B", "telemetry"), b"private", qos=1)
        async with _client(b.service_port, "ingest", "test-ingest-pw") as ingest:
            # ingest may not send downlinks: only the notifier account can
            await ingest.publish(topic("DEV-A", "cmd"), b"not-from-ingest", qos=1)
        async with _client(b.service_port, "notifier", "test-notifier-pw") as notifier:
            await notifier.publish(topic("DEV-A", "cmd"), b"marker", qos=1)
        got = await _collect_until(dev_a, b"marker")
    # the broker routed both earlier publishes before acknowledging them, so had
    # either been allowed it would have arrived before the marker
    assert got == ["cw/v1/dev/DEV-A/cmd=b'marker'"]


async def test_a_device_cannot_take_over_ingests_session(secured_broker: Broker) -> None:
    """A device asking for ingest's client id gets its own (the broker uses the
    username): ingest's connection stays up and loses nothing."""
    b = secured_broker
    received: list[bytes] = []
    options = ConnectOptions(
        "127.0.0.1", b.service_port, "cw.ingest.events", 30, True, "ingest", "test-ingest-pw", 600
    )
    conn, _ = await MqttConnection.open(
        options, lambda publishes: received.extend(p.payload for p in publishes), 5
    )
    try:
        assert await conn.subscribe([("cw/v1/dev/+/event", 1)], 5) == [1]
        for n in range(5):
            async with _device(b.device_port, "DEV-A", identifier="cw.ingest.events") as dev:
                await dev.publish(topic("DEV-A", "event"), f"attack-{n}".encode(), qos=1)

        async def all_received() -> bool:
            return len(received) >= 5

        await await_until(all_received, 10, "the device's messages")
        assert not conn.closed.done(), conn.error
        assert received == [f"attack-{n}".encode() for n in range(5)]
    finally:
        await conn.close()


async def test_a_device_cannot_kick_another_device_off(secured_broker: Broker) -> None:
    """DEV-A asking for DEV-B's client id does not disconnect DEV-B, so DEV-B's last will
    ("offline", which would raise a false device_offline alert) is never published."""
    b = secured_broker
    will = aiomqtt.Will(topic("DEV-B", "status"), b'{"v":1,"state":"offline"}', qos=1)
    async with _client(b.service_port, "ingest", "test-ingest-pw") as ingest:
        await ingest.subscribe(uplink_filter(), qos=1)
        async with _client(
            b.device_port, "DEV-B", device_password(SECRET, "DEV-B"), "DEV-B", will=will
        ) as dev_b:
            for _ in range(3):
                async with _device(b.device_port, "DEV-A", identifier="DEV-B") as dev_a:
                    await dev_a.publish(topic("DEV-A", "event"), b"from-a", qos=1)
            await dev_b.publish(topic("DEV-B", "event"), b"still-here", qos=1)
            got = await _collect_until(ingest, b"still-here")
    assert got == ["cw/v1/dev/DEV-A/event=b'from-a'"] * 3 + ["cw/v1/dev/DEV-B/event=b'still-here'"]


async def test_a_packet_above_the_brokers_limit_is_refused(secured_broker: Broker) -> None:
    b = secured_broker
    async with _client(b.service_port, "ingest", "test-ingest-pw") as ingest:
        await ingest.subscribe(uplink_filter(), qos=1)
        with contextlib.suppress(aiomqtt.MqttError):
            async with _device(b.device_port, "DEV-A") as dev_a:
                await dev_a.publish(topic("DEV-A", "telemetry"), b"x" * 1_000_000, qos=1)
        async with _device(b.device_port, "DEV-A") as dev_a:
            await dev_a.publish(topic("DEV-A", "event"), b"next", qos=1)
        got = await _collect_until(ingest, b"next")
    assert got == ["cw/v1/dev/DEV-A/event=b'next'"]


def test_credential_files_are_readable_by_the_brokers_group_only(tmp_path: Path) -> None:
    try:
        gid = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        pytest.skip("no mosquitto group on this host")
    paths = write_broker_files(tmp_path, SECRET, ["DEV-A"], {"ingest": "pw"})
    for path in paths:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o640, path
        if os.geteuid() == 0:
            assert st.st_gid == gid, path
    passwd, services, _ = paths
    assert passwd.read_text().startswith("DEV-A:")
    assert services.read_text().startswith("ingest:")


@pytest.mark.slow
def test_every_press_becomes_an_alert_while_a_device_hammers_ingests_client_ids(
    settings: Settings, tmp_path: Path
) -> None:
    """The issue's attack, on the shipped config: a wristband with valid credentials
    reconnects as ingest's client ids (both lanes) every 0.1 s while 18 other elders
    press SOS. Every press becomes an alert."""
    elders = 19  # 18 pressing, the 19th is the attacker
    devices = [band_id(n) for n in range(1, elders + 1)]
    broker, proc = start_broker(tmp_path, devices)
    s = settings.model_copy(
        update={
            "mqtt_port": broker.service_port,
            "mqtt_username": "ingest",
            "mqtt_password": SecretStr("test-ingest-pw"),
        }
    )
    assert not import_files(s.database_url, write_many_elders(tmp_path / "ledger", elders)).errors
    p = Pipeline(s, tmp_path)
    attacker = band_id(elders)
    targets = list(lane_client_ids(default_client_id(s)).values())

    rounds = 0  # attack rounds completed (each tries every one of ingest's client ids)

    async def attack(stop: asyncio.Event) -> int:
        nonlocal rounds
        attempts = 0
        while not stop.is_set():
            for client_id in targets:
                with contextlib.suppress(aiomqtt.MqttError):
                    async with _device(broker.device_port, attacker, identifier=client_id):
                        attempts += 1
            rounds += 1
            await asyncio.sleep(0.1)  # the attack's pace: a reconnection every 0.1 s
        return attempts

    async def rounds_done(n: int) -> None:
        async def done() -> bool:
            return rounds >= n

        await await_until(done, 30, f"{n} attack rounds")

    async def press(n: int) -> None:
        body = DeviceEvent(v=1, seq=1, ts=time.time_ns() // 1_000_000, type="sos")
        async with _device(broker.device_port, band_id(n)) as band:
            await band.publish(topic(band_id(n), "event"), msgspec.json.encode(body), qos=1)

    async def presses_under_attack() -> int:
        stop = asyncio.Event()
        attacking = asyncio.create_task(attack(stop))
        await rounds_done(1)  # the attack is under way before the first press
        for n in range(1, elders):
            await press(n)
            await asyncio.sleep(0.2)  # the presses' pace, spread over the attack
        await rounds_done(rounds + 2)  # and goes on after the last press
        stop.set()
        return await attacking

    try:
        p.start("rules")
        p.start("ingest")
        wait_until(lambda: "mqtt connected" in p.tail("ingest", 200), 30, "ingest connected")
        attempts = asyncio.run(presses_under_attack())
        assert attempts > 20

        def alerts() -> int:
            p.assert_running()
            return int(str(query(s, "SELECT count(*) FROM alerts WHERE kind = 'sos'")[0][0]))

        wait_until(lambda: alerts() >= elders - 1, 60, f"{elders - 1} SOS alerts")
        assert alerts() == elders - 1
        # and ingest's sessions were never taken: each lane connected exactly once
        assert p.tail("ingest", 1000).count("mqtt connected") == len(targets)
    finally:
        p.stop_all()
        proc.stop()  # type: ignore[attr-defined]
