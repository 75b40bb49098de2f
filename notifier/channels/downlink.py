"""Downlink channel: a short command to the elder's wristband over MQTT (QoS 1).

It goes through the outbox like SMS and WeCom, so "help is coming" is retried and
recorded the same way. The address is the device id; the purpose picks the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt

from carewatch.clock import Clock, SystemClock
from carewatch.messages import DeviceCommand, encode
from carewatch.metrics import NOTIFICATIONS
from carewatch.settings import Settings
from carewatch.topics import DEVICE_ID_RE, topic
from notifier.channels.base import Message, Purpose, SendResult
from notifier.content import ALERT_CLOSED_TEXT, HELP_COMING_TEXT

log = logging.getLogger(__name__)

_COMMANDS: dict[Purpose, tuple[str, str]] = {
    "handled": ("help_coming", HELP_COMING_TEXT),
    "closed": ("alert_closed", ALERT_CLOSED_TEXT),
}


def command_for(message: Message, now_ms: int) -> DeviceCommand | None:
    """The wristband command of a message; None when the purpose has no downlink.

    `ts` is when the command was issued (the `issued_ms` parameter written with the
    notification), not when this attempt publishes it: a resend after an attempt whose
    outcome is unknown is byte-identical, so the band can show it once."""
    found = _COMMANDS.get(message.purpose)
    if found is None:
        return None
    kind, text = found
    issued = message.params.get("issued_ms", "")
    return DeviceCommand(
        v=1,
        type=kind,  # type: ignore[arg-type]
        alert_id=message.params.get("alert_id", ""),
        text=text,
        ts=int(issued) if issued.isdigit() else now_ms,
    )


class DownlinkChannel:
    name = "downlink"

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is None:
                s = self._settings
                client = aiomqtt.Client(
                    s.mqtt_host,
                    s.mqtt_port,
                    username=s.mqtt_username,
                    password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
                    timeout=s.provider_timeout_s,
                )
                await client.__aenter__()
                self._client = client
            return self._client

    async def _drop(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            # Already gone: a new connection is made on the next send.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def send(self, message: Message) -> SendResult:
        command = command_for(message, self._clock.now_ms())
        if command is None or not DEVICE_ID_RE.match(message.address):
            result = SendResult(
                ok=False, retryable=False, error=f"no downlink for {message.purpose!r}"
            )
        else:
            try:
                client = await self._connected()
                await client.publish(topic(message.address, "cmd"), encode(command), qos=1)
                result = SendResult(ok=True, provider_message_id=f"mqtt:{command.ts}")
            except aiomqtt.MqttError as exc:
                await self._drop()
                result = SendResult(ok=False, retryable=True, error=f"mqtt: {exc}")
        outcome = "ok" if result.ok else ("retryable" if result.retryable else "permanent")
        NOTIFICATIONS.labels(channel=self.name, outcome=outcome).inc()
        log.info(
            "downlink %s",
            outcome,
            extra={"device_id": message.address, "purpose": message.purpose, "error": result.error},
        )
        return result

    async def aclose(self) -> None:
        await self._drop()
