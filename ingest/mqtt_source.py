"""MQTT v5 source: persistent session, plain subscription, manual QoS 1 acknowledgement.

The session belongs to an ingest lane, not to a process: its client id is the lane's
and a lease in Redis (ingest.lease) says which instance may connect with it. The
subscription is a plain one, which Mosquitto restores with the session after a restart
(it does not restore `$share/...` ones). With CAREWATCH_MQTT_SHARE_GROUP set (for a
broker that keeps shared subscriptions, e.g. an EMQX cluster) every instance has its
own session in that share group instead and there is no lease.

Ingest has its own small MQTT client (ingest.mqtt_wire: codec, ingest.mqtt_client: one
connection on asyncio.Protocol) instead of aiomqtt/paho, which the devices' side and the
simulators still use. Measured on 2 cores (bench.ingest_throughput, 50k queued QoS 1
messages): `mosquitto_sub` drains a persistent session at ~295k msg/s; aiomqtt over paho,
even with manual PUBACKs, read bursts and paho's property tables shared (two
monkey-patches of paho internals), drained ~12.7k msg/s on its own and capped the whole
worker at ~9.5k msg/s. paho spends ~80 us of Python per packet (a Properties object, a
message object, callbacks, one packet per read). Here one `data_received` decodes every
packet of a socket read in one loop and PUBACKs of one loop iteration go out in one
write; docs/adr/0001-ingest-mqtt-codec.md has the figures before and after the change.

Why manual acks: a QoS 1 PUBLISH is acknowledged only once the message is durable (see
ingest.acks), so ingest is at-least-once: a crash between receiving and the COPY leaves
the message unacknowledged and the broker redelivers it to this session. A PUBACK is
sent only on the connection that delivered the message (`Incoming.connection`); after a
reconnect the broker redelivers what was not acknowledged on the old one.

Flow control: the broker may have at most RECEIVE_MAXIMUM unacknowledged messages in
flight to us (MQTT v5 Receive Maximum, which Mosquitto honours over its own
max_inflight_messages default of 20). That bounds the worker's memory when PostgreSQL
is down: unacknowledged messages stay with the broker. The telemetry lane's maximum is a
few batches (receive_maximum): beyond it the broker holds telemetry back. The events
lane gets the protocol's maximum: its messages are few, and every one held back by the
broker could be an SOS waiting behind a database outage (ingest.flusher).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from carewatch import topics
from carewatch.mqtt_tls import client_context
from carewatch.settings import Settings
from ingest.lease import SessionLease
from ingest.mqtt_client import ConnectOptions, ConnectRefused, MqttConnection, MqttError
from ingest.mqtt_wire import Publish, reason_name

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM_CAP = 65535  # protocol maximum
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 15.0
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
SUBSCRIBE_TIMEOUT_S = 10.0


def receive_maximum(batch_size: int) -> int:
    """Enough in-flight messages for several batches being filled and flushed at once."""
    return min(RECEIVE_MAXIMUM_CAP, max(1000, batch_size * 8))


class SubscriptionRefused(MqttError):
    pass


class LeaseLost(MqttError):
    """Another instance took the lane's session lease: let it have the session."""


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
        *,
        kinds: tuple[topics.TopicKind, ...] = topics.UPLINK_KINDS,
        keepalive_s: int = KEEPALIVE_S,
        lease: SessionLease | None = None,
        receive_max: int | None = None,
    ) -> None:
        # in flight to us at most (default: receive_maximum(ingest_batch_size))
        self._receive_max = receive_max or receive_maximum(settings.ingest_batch_size)
        self._lease = lease  # None: this session is ours alone (shared-subscription mode)
        self._settings = settings
        self.kinds = kinds  # the uplink topics this session reads
        self._ready = ready  # set once the first subscription is in place
        self.client_id = client_id
        self._out = out
        self._keepalive_s = keepalive_s
        self._conn: MqttConnection | None = None
        self._connection = 0
        self._reading = False  # whether received messages may still go into `out`
        self.connected = asyncio.Event()
        self.not_reading = asyncio.Event()  # set while nothing can be added to `out`
        self.not_reading.set()

    def _options(self) -> ConnectOptions:
        s = self._settings
        return ConnectOptions(
            host=s.mqtt_host,
            port=s.mqtt_port,
            client_id=self.client_id,
            keepalive_s=self._keepalive_s,
            clean_start=False,  # resume the session: get what arrived while we were away
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
            session_expiry_s=s.mqtt_session_expiry_s,
            receive_maximum=self._receive_max,
            ssl=client_context(s),
        )

    def ack(self, message: Incoming) -> None:
        """PUBACK one message (see ack_all)."""
        self.ack_all([message])

    def ack_all(self, messages: list[Incoming]) -> None:
        """PUBACK each message, in order, if the connection that delivered it is still the
        current one.

        After a reconnect the broker redelivers unacknowledged messages itself (persistent
        session), so acks for an older connection are simply dropped.
        """
        conn = self._conn
        if conn is None:
            return
        current = self._connection
        for message in messages:
            if message.connection == current and message.qos:
                conn.ack(message.mid)

    def _deliver(self, connection: int, publishes: list[Publish]) -> None:
        """Called by the connection with every PUBLISH of one socket read."""
        if not self._reading:
            return  # stopping: left unacknowledged, the broker redelivers them later
        # One socket read, one reception time: the clock is read once per chunk.
        received_ms = time.time_ns() // 1_000_000
        received_at = time.monotonic()
        put = self._out.put_nowait  # the broker's Receive Maximum bounds this queue
        mount = self._settings.mqtt_mount_point
        for p in publishes:
            name = p.topic
            if mount and name.startswith(mount):
                name = name[len(mount) :]
            put(Incoming(name, p.payload, received_ms, received_at, p.packet_id, p.qos, connection))

    async def run(self, stop_reading: asyncio.Event, disconnect: asyncio.Event) -> None:
        """Connect (and reconnect with backoff) and feed the queue until `stop_reading`;
        then stay connected, so that the last PUBACKs go out, until `disconnect`."""
        backoff = BACKOFF_MIN_S
        while not stop_reading.is_set():
            if not await self._hold_lease(stop_reading):
                break
            conn: MqttConnection | None = None
            try:
                self._connection += 1
                self._reading = True
                self.not_reading.clear()
                conn, connack = await MqttConnection.open(
                    self._options(),
                    functools.partial(self._deliver, self._connection),
                    CONNECT_TIMEOUT_S,
                )
                self._conn = conn
                if not connack.session_present:
                    # Normal on first start; otherwise what arrived while away is lost.
                    log.info(
                        "mqtt broker had no session for this client id, starting a new one",
                        extra={"client_id": self.client_id},
                    )
                await self._subscribe(conn)
                if connack.session_present:
                    await self._unsubscribe_others(conn)
                log.info(
                    "mqtt connected",
                    extra={"client_id": self.client_id, "connection": self._connection},
                )
                self.connected.set()
                if self._ready is not None:
                    self._ready.set()
                backoff = BACKOFF_MIN_S
                await self._wait(conn, stop_reading, self._lease)
                # Stop taking messages; stay connected for the PUBACKs of those taken.
                self._stop_reading(conn)
                await self._wait(conn, disconnect)
                await conn.close()
            except (MqttError, OSError, TimeoutError) as exc:
                extra = {"error": str(exc) or type(exc).__name__, "backoff_s": backoff}
                # Refused credentials or subscriptions need an operator, not patience.
                if isinstance(exc, ConnectRefused):
                    log.error(
                        "mqtt broker refused ingest's connection (check mqtt_username,"
                        " mqtt_password and the broker's ACL), retrying",
                        extra=extra,
                    )
                elif isinstance(exc, LeaseLost):
                    log.warning("mqtt session handed over to another instance", extra=extra)
                elif isinstance(exc, SubscriptionRefused):
                    log.error("mqtt broker refused every subscription, retrying", extra=extra)
                else:
                    log.warning("mqtt connection failed or lost, reconnecting", extra=extra)
            finally:
                self._stop_reading(conn)
                self._conn = None
                self.connected.clear()
                if conn is not None:
                    conn.abort()  # no-op once closed
            if not stop_reading.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_reading.wait(), timeout=backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _hold_lease(self, stop_reading: asyncio.Event) -> bool:
        """Wait until this process holds the lane's session lease (confirmed with Redis
        right before connecting, so a stale holder does not take the session back from
        its successor); False if `stop_reading` comes first."""
        lease = self._lease
        if lease is None:
            return True
        while not stop_reading.is_set():
            if await lease.check():
                return True
            if not lease.held.is_set():
                log.info("standing by for the mqtt session", extra={"lease": lease.key})
            held = asyncio.ensure_future(lease.held.wait())
            stopped = asyncio.ensure_future(stop_reading.wait())
            try:
                await asyncio.wait({held, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                held.cancel()
                stopped.cancel()
        return False

    def _stop_reading(self, conn: MqttConnection | None) -> None:
        self._reading = False
        if conn is not None:
            conn.pause_reading()
        self.not_reading.set()

    async def _subscribe(self, conn: MqttConnection) -> None:
        # uplinks only: the notifier's .../cmd downlinks are not ours to ingest
        filters = topics.uplink_filters(self._settings.mqtt_share_group or None, self.kinds)
        codes = await conn.subscribe([(f, 1) for f in filters], SUBSCRIBE_TIMEOUT_S)
        refused = [(f, c) for f, c in zip(filters, codes, strict=True) if c >= 0x80]
        for topic_filter, code in refused:
            # Usually the broker's ACL: these devices' messages will not reach ingest.
            log.error(
                "mqtt subscription REFUSED by the broker: messages on this filter will not"
                " be ingested",
                extra={"filter": topic_filter, "reason": reason_name(code)},
            )
        for topic_filter, code in zip(filters, codes, strict=True):
            if code == 0:
                log.warning(
                    "mqtt subscription granted at QoS 0 only: its messages are at-most-once",
                    extra={"filter": topic_filter},
                )
        if len(refused) == len(filters):
            raise SubscriptionRefused("every subscription was refused")

    async def _unsubscribe_others(self, conn: MqttConnection) -> None:
        """A resumed session keeps the subscriptions of an earlier run, which may have read
        other uplinks on this client id (before ingest split events from telemetry): drop
        them, or this session would go on receiving the other session's messages too."""
        others = tuple(k for k in topics.UPLINK_KINDS if k not in self.kinds)
        if others:
            filters = topics.uplink_filters(self._settings.mqtt_share_group or None, others)
            codes = await conn.unsubscribe(filters, SUBSCRIBE_TIMEOUT_S)
            for topic_filter, code in zip(filters, codes, strict=True):
                if code >= 0x80:
                    log.warning(
                        "mqtt broker refused to drop an old subscription of this session",
                        extra={"filter": topic_filter, "reason": reason_name(code)},
                    )

    async def _wait(
        self, conn: MqttConnection, event: asyncio.Event, lease: SessionLease | None = None
    ) -> None:
        """Until `event` is set; raises ConnectionLost if the connection goes first, and
        LeaseLost if `lease` is lost first."""
        waiter: asyncio.Future[bool] = asyncio.ensure_future(event.wait())
        waiters: set[asyncio.Future[Any]] = {waiter, conn.closed}
        lost: asyncio.Future[Literal[True]] | None = None
        if lease is not None:
            lost = asyncio.ensure_future(lease.not_held.wait())
            waiters.add(lost)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if lost is not None:
                lost.cancel()
        if event.is_set():
            return
        if lease is not None and lease.not_held.is_set():
            raise LeaseLost(f"lease {lease.key} is held by another instance")
        if conn.closed.done():
            raise conn.error or MqttError("connection closed")
