"""Ingest's own MQTT subscriber (ingest.mqtt_source) against a real, private Mosquitto.

Connection loss is made real with a plain TCP relay between the source and the broker
(`Relay`): it can cut every relayed connection, or stall them (bytes held, sockets left
open) like a network that silently stopped delivering.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from pydantic import SecretStr

from carewatch.settings import Settings
from carewatch.topics import topic, uplink_filters
from harness.services import Proc, await_until, free_port, start_mosquitto
from ingest.mqtt_source import Incoming, MqttSource


class Relay:
    """TCP relay 127.0.0.1:port -> upstream, for cutting and stalling connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._client_writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        self._client_writers.append(writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        dst.close()

    def to_clients(self, data: bytes) -> None:
        """Send `data` to every relayed client as if the broker had sent it."""
        for writer in self._client_writers:
            writer.write(data)

    def cut(self) -> None:
        """Drop every relayed connection (both sides see the socket close)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self._client_writers.clear()

    async def close(self) -> None:
        self.flowing.set()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


class Running:
    """An MqttSource running in the test's loop, with what it received."""

    def __init__(self, settings: Settings, client_id: str, keepalive_s: int = 30) -> None:
        self.queue: asyncio.Queue[Incoming | None] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.source = MqttSource(
            settings, client_id, self.queue, self.ready, keepalive_s=keepalive_s
        )
        self.stop_reading, self.disconnect = asyncio.Event(), asyncio.Event()
        self.task = asyncio.create_task(self.source.run(self.stop_reading, self.disconnect))

    async def take(self, n: int, timeout: float = 10.0) -> list[Incoming]:
        got = []
        for _ in range(n):
            message = await asyncio.wait_for(self.queue.get(), timeout)
            assert message is not None
            got.append(message)
        return got

    async def stop(self) -> None:
        """As the worker stops: stop reading, then disconnect cleanly (pending PUBACKs sent)."""
        self.stop_reading.set()
        await self.source.not_reading.wait()
        self.disconnect.set()
        await asyncio.wait_for(self.task, 10)


def source_settings(port: int, **extra: object) -> Settings:
    settings = Settings(_env_file=None, mqtt_port=port, mqtt_share_group=f"g{uuid.uuid4().hex[:8]}")
    return settings.model_copy(update=extra)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for mqtt_topic, payload in messages:
            await client.publish(mqtt_topic, payload, qos=1)


def telemetry(n: int) -> tuple[str, bytes]:
    return topic(f"W{n % 3}", "telemetry"), f'{{"seq":{n}}}'.encode()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Proc]:
    proc = start_mosquitto(tmp_path / "mosquitto")
    yield proc
    proc.stop()


@pytest.fixture
async def relay(broker: Proc) -> AsyncIterator[Relay]:
    r = Relay(broker.port)
    await r.start()
    yield r
    await r.close()


async def test_messages_queued_while_offline_arrive_after_reconnect(broker: Proc) -> None:
    settings, client_id = source_settings(broker.port), f"src-{uuid.uuid4().hex[:6]}"
    first = Running(settings, client_id)
    await asyncio.wait_for(first.ready.wait(), 10)
    await first.stop()

    sent = [telemetry(n) for n in range(200)]
    await publish(broker.port, sent)  # the subscriber is offline: the session keeps them

    again = Running(settings, client_id)
    got = await again.take(len(sent))
    assert [(m.topic, m.payload) for m in got] == sent
    assert {m.qos for m in got} == {1}
    for message in got:
        again.source.ack(message)
    await again.stop()


async def test_unacknowledged_messages_are_redelivered_after_a_reconnect(
    broker: Proc, relay: Relay
) -> None:
    settings, client_id = source_settings(relay.port), f"src-{uuid.uuid4().hex[:6]}"
    running = Running(settings, client_id)
    await asyncio.wait_for(running.ready.wait(), 10)
    sent = [telemetry(n) for n in range(5)]
    await publish(broker.port, sent)
    before = await running.take(len(sent))
    assert {m.connection for m in before} == {1}

    relay.cut()  # socket lost before any PUBACK: the source reconnects on its own
    again = await running.take(len(sent))
    assert [(m.topic, m.payload) for m in again] == sent
    assert {m.connection for m in again} == {2}
    assert relay.accepted == 2
    for message in before:
        running.source.ack(message)  # for the lost connection: must be dropped, not sent
    for message in again:
        running.source.ack(message)
    await running.stop()  # sends the PUBACKs, then DISCONNECT

    # Acknowledged on the second connection: a new session start gets only what follows.
    marker = (topic("W9", "telemetry"), b"marker")
    await publish(broker.port, [marker])
    last = Running(settings, client_id)
    (first,) = await last.take(1)
    assert (first.topic, first.payload) == marker
    last.source.ack(first)
    await last.stop()


async def test_silent_broker_is_detected_by_keepalive_and_reconnected(
    broker: Proc, relay: Relay
) -> None:
    settings, client_id = source_settings(relay.port), f"src-{uuid.uuid4().hex[:6]}"
    running = Running(settings, client_id, keepalive_s=1)
    await asyncio.wait_for(running.ready.wait(), 10)
    relay.flowing.clear()  # sockets stay open, nothing gets through: a half-open link

    async def reconnected() -> bool:
        return relay.accepted >= 2

    await await_until(reconnected, timeout=20, what="a new connection after the stall")
    relay.cut()  # the stalled connection
    relay.flowing.set()

    async def connected() -> bool:
        return running.source.connected.is_set()

    await await_until(connected, timeout=20, what="connected again")
    await publish(broker.port, [telemetry(1)])
    (message,) = await running.take(1)
    assert message.connection >= 2
    running.source.ack(message)
    await running.stop()


def dynsec_client(username: str, password: str, role: str) -> dict[str, object]:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return {
        "username": username,
        "roles": [{"rolename": role}],
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": 101,
    }


def acl(kind: str, topic_filter: str) -> dict[str, object]:
    return {"acltype": kind, "topic": topic_filter, "priority": 0, "allow": True}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Proc]:
    """A broker whose ACL lets `ingest` subscribe to telemetry only, and `writer` publish it.

    Mosquitto 2.0's acl_file does not refuse subscriptions (it filters at delivery); its
    dynamic-security plugin does, with SUBACK reason 0x87, as a stricter broker would.
    """
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    if not plugin.exists():
        pytest.skip("Mosquitto's dynamic security plugin is not installed")
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "dynsec.json"
    config.write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": False,
                    "publishClientReceive": True,
                    "subscribe": False,
                    "unsubscribe": True,
                },
                "clients": [
                    dynsec_client("ingest", "test-ingest-pw", "reader"),
                    dynsec_client("writer", "test-writer-pw", "writer"),
                ],
                "groups": [],
                "roles": [
                    {
                        "rolename": "reader",
                        "acls": [acl("subscribePattern", "$share/+/cw/v1/dev/+/telemetry")],
                    },
                    {
                        "rolename": "writer",
                        "acls": [acl("publishClientSend", "cw/v1/dev/+/telemetry")],
                    },
                ],
            }
        )
    )
    port = free_port()
    conf = (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"plugin {plugin}\n"
        f"plugin_opt_config_file {config}\n"
    )
    proc = start_mosquitto(tmp_path / "broker", conf, port=port)
    yield proc
    proc.stop()


async def test_refused_subscription_is_reported(
    secured: Proc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.mqtt_source")
    settings = source_settings(
        secured.port, mqtt_username="ingest", mqtt_password=SecretStr("test-ingest-pw")
    )
    running = Running(settings, f"src-{uuid.uuid4().hex[:6]}")
    await asyncio.wait_for(running.ready.wait(), 10)  # telemetry was granted
    refused = {
        getattr(r, "filter", None)
        for r in caplog.records
        if r.levelno == logging.ERROR and "REFUSED" in r.getMessage()
    }
    share = settings.mqtt_share_group
    assert refused == set(uplink_filters(share)[1:])  # event and status
    assert all(
        getattr(r, "reason", None) == "not authorized"
        for r in caplog.records
        if "REFUSED" in r.getMessage()
    )
    await publish_as(secured.port, "writer", "test-writer-pw", [telemetry(1)])
    (message,) = await running.take(1)
    running.source.ack(message)
    await running.stop()


async def publish_as(
    port: int, user: str, password: str, messages: list[tuple[str, bytes]]
) -> None:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        for mqtt_topic, payload in messages:
            await client.publish(mqtt_topic, payload, qos=1)


async def test_bad_credentials_are_reported_and_retried(
    secured: Proc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.mqtt_source")
    settings = source_settings(
        secured.port, mqtt_username="ingest", mqtt_password=SecretStr("wrong")
    )
    running = Running(settings, f"src-{uuid.uuid4().hex[:6]}")

    def refusals() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno == logging.ERROR
            and "refused the connection" in str(getattr(r, "error", ""))
        ]

    async def retried() -> bool:
        return len(refusals()) >= 2

    await await_until(retried, timeout=10, what="two refused attempts")
    # Mosquitto's plugin answers "not authorized" rather than "bad user name or password"
    assert str(getattr(refusals()[0], "error", "")).endswith(
        ("(bad user name or password)", "(not authorized)")
    )
    assert "mqtt_password" in refusals()[0].getMessage()
    assert not running.source.connected.is_set()
    await running.stop()


async def test_server_disconnect_is_logged_and_reconnected(
    broker: Proc, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.mqtt_source")
    settings, client_id = source_settings(relay.port), f"src-{uuid.uuid4().hex[:6]}"
    running = Running(settings, client_id)
    await asyncio.wait_for(running.ready.wait(), 10)

    # Mosquitto 2.0.11 just closes sockets (takeover, shutdown); other brokers send a
    # DISCONNECT with a reason first, so the relay delivers one as the broker's next bytes.
    reason = b"\x1f" + len(b"maintenance").to_bytes(2, "big") + b"maintenance"
    relay.to_clients(bytes((0xE0, 2 + len(reason), 0x8B, len(reason))) + reason)

    def lost() -> list[str]:
        return [
            str(getattr(r, "error", "")) for r in caplog.records if "reconnecting" in r.getMessage()
        ]

    async def reconnected() -> bool:
        return bool(lost()) and running.source.connected.is_set()

    await await_until(reconnected, timeout=10, what="reconnected after the DISCONNECT")
    assert lost()[0] == "broker sent DISCONNECT (server shutting down): maintenance"
    await publish(broker.port, [telemetry(1)])
    (message,) = await running.take(1)
    assert message.connection == 2
    running.source.ack(message)
    await running.stop()
