"""MQTT v5 source: shared subscription, persistent session, manual QoS 1 acknowledgement.

Why manual acks: paho-mqtt 2 acknowledges a QoS 1 PUBLISH as soon as its on_message
callback returns, which would make ingest at-most-once (a crash between PUBACK and the
COPY loses the message). paho has `manual_ack`; aiomqtt does not expose it, but it keeps
the paho client as `Client._client`, so we switch it on and send PUBACKs ourselves once
the message is durable (see ingest.acks). aiomqtt runs paho's socket I/O on the event
loop, so calling `ack()` from a coroutine is the same thread as every other paho call.

Flow control: the broker may have at most RECEIVE_MAXIMUM unacknowledged messages in
flight to us (MQTT v5 Receive Maximum, which Mosquitto honours over its own
max_inflight_messages default of 20). That bounds the worker's memory when PostgreSQL
is down: unacknowledged messages stay with the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from carewatch import topics
from carewatch.settings import Settings

log = logging.getLogger(__name__)

READ_BURST_PACKETS = 64
SESSION_EXPIRY_S = 3600  # the broker keeps our subscription and unacked messages this long
RECEIVE_MAXIMUM_CAP = 65535  # protocol maximum
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 15.0


def receive_maximum(batch_size: int) -> int:
    """Enough in-flight messages for several batches being filled and flushed at once."""
    return min(RECEIVE_MAXIMUM_CAP, max(1000, batch_size * 8))


def _as_bytes(payload: object) -> bytes:
    # paho always hands us bytes for received messages; be defensive anyway.
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


def _read_in_bursts(paho_client: mqtt.Client) -> None:
    """Let one socket-readable callback decode up to READ_BURST_PACKETS packets.

    aiomqtt calls paho's `loop_read()` once per readable event, and paho then reads a
    single packet, so every message costs a full event-loop turn: draining a backlog
    ran ~35% slower that way. This reads until the socket has no complete packet left
    (MQTT_ERR_AGAIN) or the burst is used up. It relies on paho 2.x internals, so it is
    applied only when they are there; otherwise paho's own loop_read stays in place.
    """
    packet_read = getattr(paho_client, "_packet_read", None)
    rc_handle = getattr(paho_client, "_loop_rc_handle", None)
    if packet_read is None or rc_handle is None or not hasattr(paho_client, "_sock"):
        return

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        for _ in range(READ_BURST_PACKETS):
            if paho_client._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
            if rc > 0:
                result: MQTTErrorCode = rc_handle(rc)
                return result
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    paho_client.loop_read = loop_read  # type: ignore[method-assign]


class _SharedTableProperties(Properties):
    """paho's Properties with its lookup tables shared instead of rebuilt per packet.

    paho builds two ~27-entry tables in Properties.__init__ for every MQTT v5 packet it
    decodes: a quarter of ingest's CPU in a py-spy profile (bench/benchmarks.md). The
    tables never change, so incoming PUBLISH properties read them from the class.
    """

    _template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    types = _template.types
    names = _template.names
    properties = _template.properties

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)


def _share_property_tables() -> None:
    """Install _SharedTableProperties for decoding PUBLISH packets (paho 2.x only)."""
    from paho.mqtt import _packet

    if getattr(_packet, "Properties", None) is Properties:
        _packet.Properties = _SharedTableProperties  # type: ignore[attr-defined]


_share_property_tables()


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    received_ms: int  # wall clock, for Event.received_ms
    received_at: float  # monotonic, for stage latency
    mid: int
    qos: int
    connection: int  # which connection delivered it: a PUBACK is valid only on that one


class MqttSource:
    def __init__(
        self,
        settings: Settings,
        client_id: str,
        out: asyncio.Queue[Incoming | None],
        ready: asyncio.Event | None = None,
    ) -> None:
        self._settings = settings
        self._ready = ready  # set once the first subscription is in place
        self.client_id = client_id
        self._out = out
        self._client: aiomqtt.Client | None = None
        self._connection = 0
        self.connected = asyncio.Event()
        self.not_reading = asyncio.Event()  # set while nothing can be added to `out`
        self.not_reading.set()

    def _make_client(self) -> aiomqtt.Client:
        s = self._settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = receive_maximum(s.ingest_batch_size)
        client = aiomqtt.Client(
            s.mqtt_host,
            s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # resume the session: get what arrived while we were away
            properties=props,
            logger=logging.getLogger("aiomqtt"),
        )
        client._client.manual_ack_set(True)  # see module docstring
        _read_in_bursts(client._client)
        return client

    def ack(self, message: Incoming) -> None:
        """PUBACK one message, if the connection that delivered it is still the current one.

        After a reconnect the broker redelivers unacknowledged messages itself (persistent
        session), so acks for an older connection are simply dropped.
        """
        client = self._client
        if client is not None and message.connection == self._connection and message.qos:
            client._client.ack(message.mid, message.qos)

    async def run(self, stop_reading: asyncio.Event, disconnect: asyncio.Event) -> None:
        """Connect (and reconnect with backoff) and feed the queue until `stop_reading`;
        then stay connected, so that the last PUBACKs go out, until `disconnect`."""
        backoff = BACKOFF_MIN_S
        while not stop_reading.is_set():
            client = self._make_client()
            try:
                async with client:
                    self._connection += 1
                    self._client = client
                    # uplinks only: the notifier's .../cmd downlinks are not ours to ingest
                    await client.subscribe(
                        [(f, 1) for f in topics.uplink_filters(self._settings.mqtt_share_group)]
                    )
                    log.info(
                        "mqtt connected",
                        extra={"client_id": self.client_id, "connection": self._connection},
                    )
                    self.connected.set()
                    if self._ready is not None:
                        self._ready.set()
                    backoff = BACKOFF_MIN_S
                    await self._read_until(client, stop_reading)
                    await disconnect.wait()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt connection lost, reconnecting",
                    extra={"error": str(exc), "backoff_s": backoff},
                )
            finally:
                self._client = None
                self.connected.clear()
            if not stop_reading.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_reading.wait(), timeout=backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _read_until(self, client: aiomqtt.Client, stop_reading: asyncio.Event) -> None:
        self.not_reading.clear()
        reader = asyncio.create_task(self._read(client))
        stopper = asyncio.create_task(stop_reading.wait())
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # A message still in aiomqtt's queue is simply not acknowledged: the broker
            # redelivers it to this session later.
            reader.cancel()
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
            try:
                await reader
            except asyncio.CancelledError:
                pass
            finally:
                self.not_reading.set()

    async def _read(self, client: aiomqtt.Client) -> None:
        connection = self._connection
        put = self._out.put_nowait  # the broker's Receive Maximum bounds this queue
        async for message in client.messages:
            payload = message.payload
            put(
                Incoming(
                    topic=message.topic.value,
                    payload=_as_bytes(payload),
                    received_ms=time.time_ns() // 1_000_000,
                    received_at=time.monotonic(),
                    mid=message.mid,
                    qos=message.qos,
                    connection=connection,
                )
            )
