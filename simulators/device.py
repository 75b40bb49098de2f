"""A simulated device: its topics, its sequence numbers and its payloads (schema v1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiomqtt
import msgspec

from carewatch.clock import Clock, SystemClock
from carewatch.messages import DeviceEvent, DeviceStatus, EventType, Telemetry
from carewatch.settings import Settings
from carewatch.topics import TopicKind, topic

FIRMWARE = "carewatch-sim/1"


@dataclass(frozen=True, slots=True)
class Publication:
    """One MQTT message a device sends, with its sequence number and device time."""

    topic: str
    payload: bytes
    seq: int
    ts_ms: int
    retain: bool = False
    qos: int = 1


class SimDevice:
    """One wristband or home sensor.

    The sequence number starts at the current epoch milliseconds and counts up by one,
    so a restarted simulator never reuses a sequence number the server has already seen
    (as long as a device sends fewer than 1000 messages a second): no state file needed.
    """

    def __init__(
        self,
        device_id: str,
        kind: str,
        elder_id: str,
        *,
        home: tuple[float, float] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.device_id = device_id
        self.kind = kind
        self.elder_id = elder_id
        self.home = home
        self.clock: Clock = clock or SystemClock()
        self._seq = self.clock.now_ms() - 1

    def __repr__(self) -> str:
        return f"SimDevice({self.device_id!r}, {self.kind!r}, elder={self.elder_id!r})"

    def topic(self, kind: TopicKind) -> str:
        return topic(self.device_id, kind)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _stamp(self) -> tuple[int, int]:
        return self.next_seq(), self.clock.now_ms()

    def telemetry(self, fields: Mapping[str, object]) -> Publication:
        """Telemetry with the given fields; msgspec checks them against the schema."""
        seq, ts = self._stamp()
        message = msgspec.convert({"v": 1, "seq": seq, "ts": ts, **fields}, Telemetry)
        return Publication(self.topic("telemetry"), msgspec.json.encode(message), seq, ts)

    def event(self, event_type: EventType, ref_seq: int | None = None) -> Publication:
        seq, ts = self._stamp()
        message = DeviceEvent(v=1, seq=seq, ts=ts, type=event_type, ref_seq=ref_seq)
        return Publication(self.topic("event"), msgspec.json.encode(message), seq, ts)

    def status(
        self, state: Literal["online", "offline"], battery: int | None = None
    ) -> Publication:
        """Retained, so whoever subscribes later learns the current state."""
        seq, ts = self._stamp()
        message = DeviceStatus(v=1, state=state, seq=seq, ts=ts, battery=battery, fw=FIRMWARE)
        payload = msgspec.json.encode(message)
        return Publication(self.topic("status"), payload, seq, ts, retain=True)

    def last_will(self) -> aiomqtt.Will:
        """What the broker publishes (retained) if the connection drops without a goodbye.

        Fixed when connecting, so it carries no seq/ts (the schema allows that)."""
        payload = msgspec.json.encode(DeviceStatus(v=1, state="offline"))
        return aiomqtt.Will(self.topic("status"), payload, qos=1, retain=True)


def mqtt_client(
    settings: Settings, identifier: str, will: aiomqtt.Will | None = None
) -> aiomqtt.Client:
    """A client for one device, or for many devices sharing a connection."""
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    return aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=password,
        identifier=identifier,
        will=will,
        keepalive=30,
        max_inflight_messages=1000,
    )


async def publish(client: aiomqtt.Client, publication: Publication) -> None:
    await client.publish(
        publication.topic, publication.payload, qos=publication.qos, retain=publication.retain
    )
