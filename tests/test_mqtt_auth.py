"""Each device is limited to its own MQTT topics, on a real Mosquitto with our ACL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from carewatch.mqtt_auth import broker_conf, device_password, write_broker_files
from carewatch.topics import topic, uplink_filter
from harness.services import free_port, start_mosquitto

SECRET = "provisioning-secret-for-tests"


@pytest.fixture
def secured_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    passwd, acl = write_broker_files(
        tmp_path / "auth", SECRET, ["DEV-A", "DEV-B"], {"ingest": "ingest-pw"}
    )
    port = free_port()
    proc = start_mosquitto(tmp_path / "broker", broker_conf(port, passwd, acl), port=port)
    yield port
    proc.stop()


def _client(port: int, user: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=password,
        identifier=f"t-{user}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )


async def test_device_cannot_publish_as_another_device(secured_broker: int) -> None:
    port = secured_broker
    received: list[str] = []
    async with _client(port, "ingest", "ingest-pw") as ingest:
        await ingest.subscribe(uplink_filter(), qos=1)
        async with _client(port, "DEV-A", device_password(SECRET, "DEV-A")) as dev_a:
            await dev_a.publish(topic("DEV-B", "event"), b"forged", qos=1)
            await dev_a.publish(topic("DEV-A", "event"), b"own", qos=1)

        async def collect() -> None:
            async for message in ingest.messages:
                received.append(f"{message.topic.value}={message.payload!r}")
                if message.payload == b"own":
                    return

        await asyncio.wait_for(collect(), 10)
    # one publisher's messages arrive in order: had the forged one passed, it would be first
    assert received == ["cw/v1/dev/DEV-A/event=b'own'"]


async def test_wrong_password_is_refused(secured_broker: int) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with _client(secured_broker, "DEV-A", device_password(SECRET, "DEV-B")):
            pass


async def test_device_cannot_read_other_devices_uplinks(tmp_path: Path) -> None:
    passwd, acl = write_broker_files(
        tmp_path / "auth",
        SECRET,
        ["DEV-A", "DEV-B"],
        {"ingest": "ingest-pw", "notifier": "notifier-pw"},
    )
    port = free_port()
    proc = start_mosquitto(tmp_path / "broker", broker_conf(port, passwd, acl), port=port)
    try:
        async with _client(port, "DEV-A", device_password(SECRET, "DEV-A")) as dev_a:
            await dev_a.subscribe(topic("DEV-B", "telemetry"), qos=1)
            await dev_a.subscribe(topic("DEV-A", "cmd"), qos=1)
            async with _client(port, "DEV-B", device_password(SECRET, "DEV-B")) as dev_b:
                await dev_b.publish(topic("DEV-B", "telemetry"), b"private", qos=1)
            async with _client(port, "ingest", "ingest-pw") as ingest:
                # ingest may not send downlinks: only the notifier account can
                await ingest.publish(topic("DEV-A", "cmd"), b"not-from-ingest", qos=1)
            async with _client(port, "notifier", "notifier-pw") as notifier:
                await notifier.publish(topic("DEV-A", "cmd"), b"marker", qos=1)

            got: list[bytes] = []

            async def until_marker() -> None:
                async for message in dev_a.messages:
                    got.append(bytes(message.payload))  # type: ignore[arg-type]
                    if message.payload == b"marker":
                        return

            await asyncio.wait_for(until_marker(), 10)
        # the broker routed both earlier publishes before acknowledging them, so had
        # either been allowed it would have arrived before the marker
        assert got == [b"marker"]
    finally:
        proc.stop()
