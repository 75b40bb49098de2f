"""The gateways' one MQTT connection: publish as each device, receive their downlinks.

Uplinks are published at QoS 1 on cw/v1/dev/{device}/event|telemetry|status, exactly
as the device would, and `publish` returns once the broker acknowledged them (PUBACK):
a watch's alarm is answered only then, so a watch whose alarm did not reach the broker
sends it again. Downlinks: the connection subscribes to cw/v1/dev/+/cmd and hands each
command to the handler registered for that device on this process (a watch connected
here); commands for devices connected elsewhere are ignored.

Reconnects with backoff; a publish made while disconnected waits for the connection,
up to `PUBLISH_DEADLINE_S`, then raises PublishFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import aiomqtt
import msgspec

from carewatch.messages import DeviceCommand, encode
from carewatch.mqtt_tls import client_context
from carewatch.settings import Settings
from carewatch.topics import PREFIX, parse, topic
from gateways.metrics import PUBLISHED
from gateways.translate import Uplink

log = logging.getLogger(__name__)

PUBLISH_DEADLINE_S = 10.0
CLIENT_ID_ENV = "CAREWATCH_GATEWAY_CLIENT_ID"

CommandHandler = Callable[[DeviceCommand], Awaitable[None]]
_command_decoder = msgspec.json.Decoder(DeviceCommand)


class PublishFailed(Exception):
    """The broker could not be reached in time: the caller must not answer the device."""


def default_client_id() -> str:
    return os.environ.get(CLIENT_ID_ENV) or f"gateway-{socket.gethostname()}-{os.getpid()}"


class MqttLink:
    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self._settings = settings
        self._client_id = client_id or default_client_id()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self.handlers: dict[str, CommandHandler] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop`; dispatch downlinks."""
        s = self._settings
        backoff = 0.2
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    s.mqtt_host,
                    s.mqtt_port,
                    identifier=self._client_id,
                    username=s.mqtt_username,
                    password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
                    keepalive=30,
                    timeout=5,
                    tls_context=client_context(s),
                ) as client:
                    await client.subscribe(f"{PREFIX}/+/cmd", qos=1)
                    self._client = client
                    self._connected.set()
                    backoff = 0.2
                    log.info("gateway connected to MQTT", extra={"client_id": self._client_id})
                    reading = asyncio.create_task(self._read(client))
                    stopping = asyncio.create_task(stop.wait())
                    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if reading.done():
                        reading.result()  # raises the MqttError that ended it
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading
            except aiomqtt.MqttError as exc:
                log.warning("gateway MQTT connection lost", extra={"error": str(exc)})
            finally:
                self._connected.clear()
                self._client = None
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 5.0)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parsed = parse(str(message.topic))
            if parsed is None:
                continue
            handler = self.handlers.get(parsed[0])
            if handler is None:
                continue
            try:
                command = _command_decoder.decode(bytes(message.payload))
            except (msgspec.DecodeError, TypeError) as exc:
                log.warning("bad downlink command", extra={"error": str(exc)})
                continue
            try:
                await handler(command)
            except Exception:  # one device's failure must not stop the others' downlinks
                log.exception("downlink handler failed", extra={"device_id": parsed[0]})

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(self, protocol: str, device_id: str, uplinks: list[Uplink]) -> None:
        """Publish every uplink (QoS 1, in order) as `device_id`; raises PublishFailed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_DEADLINE_S
        for uplink in uplinks:
            payload = encode(uplink.payload)
            while True:
                left = deadline - loop.time()
                if left <= 0 or not await self.wait_connected(left):
                    raise PublishFailed(f"no MQTT connection within {PUBLISH_DEADLINE_S}s")
                client = self._client
                if client is None:
                    continue
                try:
                    await client.publish(topic(device_id, uplink.kind), payload, qos=1)
                    break
                except aiomqtt.MqttError as exc:
                    log.warning("gateway publish failed, retrying", extra={"error": str(exc)})
                    await asyncio.sleep(0.05)  # backoff before the next attempt
            PUBLISHED.labels(protocol, uplink.kind).inc()
