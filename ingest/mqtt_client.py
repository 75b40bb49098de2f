"""One MQTT v5 subscriber connection on asyncio.Protocol (codec: ingest.mqtt_wire).

The connection does only what ingest needs: CONNECT (checking CONNACK's reason code),
SUBSCRIBE (returning SUBACK's reason codes), receiving PUBLISH at QoS 0/1, sending
PUBACKs when told, keepalive, and a clean DISCONNECT. Reconnecting is the caller's job
(ingest.mqtt_source).

Why a Protocol and not streams: `data_received` gets whatever the socket read (up to
256 KiB) and decodes every complete packet in it in one loop, handing them over as one
list; there is no per-packet await. PUBACKs asked for during one event-loop turn go out
in one `transport.write`.

Keepalive (3.1.2.10): a timer runs every keepalive/2 seconds and sends PINGREQ when
nothing was written for keepalive/2, so the broker hears from us at least once per
keepalive. If a PINGREQ gets nothing at all back (not even a PUBLISH) within a
keepalive, the connection is taken for dead and aborted: without that a half-open TCP
connection (broker host gone, network cut) would leave the worker waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from ingest.mqtt_wire import (
    PINGREQ_PACKET,
    REASON_STRING,
    SERVER_KEEP_ALIVE,
    ConnAck,
    Decoder,
    Disconnect,
    Packet,
    PingResp,
    ProtocolError,
    Publish,
    SubAck,
    UnsubAck,
    encode_connect,
    encode_disconnect,
    encode_pubacks,
    encode_subscribe,
    encode_unsubscribe,
    reason_name,
)

log = logging.getLogger(__name__)

Deliver = Callable[[list[Publish]], None]


class MqttError(Exception):
    """The connection could not be made or was lost; reconnecting may help."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a failure reason code (e.g. bad credentials)."""

    def __init__(self, reason_code: int, reason: str | None) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"broker refused the connection ({reason_name(reason_code)}){detail}")
        self.reason_code = reason_code


class ConnectionLost(MqttError):
    pass


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    host: str
    port: int
    client_id: str
    keepalive_s: int
    clean_start: bool
    username: str | None = None
    password: str | None = None
    session_expiry_s: int | None = None
    receive_maximum: int | None = None
    ssl: ssl.SSLContext | None = None  # TLS to the broker (carewatch.mqtt_tls)


class MqttConnection(asyncio.Protocol):
    """Use `MqttConnection.open`; `closed` completes when the socket is gone, with the
    reason in `error` (None after our own clean close)."""

    def __init__(self, deliver: Deliver, keepalive_s: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._deliver = deliver
        self.keepalive_s = keepalive_s
        self._decoder = Decoder()
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        # SUBACK/UNSUBACK awaited, by packet id, with the type expected
        self._awaited_acks: dict[int, tuple[type, asyncio.Future[SubAck | UnsubAck]]] = {}
        self._next_packet_id = 1
        self._acks: list[int] = []
        self._last_rx = self._last_tx = time.monotonic()
        self._ping_sent_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[bool] = self._loop.create_future()
        self.error: MqttError | None = None
        self._closing = False  # we sent DISCONNECT: the socket closing is not a loss

    # --- opening ---

    @classmethod
    async def open(
        cls, options: ConnectOptions, deliver: Deliver, timeout: float
    ) -> tuple[MqttConnection, ConnAck]:
        """Connect and wait for a successful CONNACK; raises MqttError (or OSError)."""
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: cls(deliver, options.keepalive_s),
                options.host,
                options.port,
                ssl=options.ssl,
            ),
            timeout,
        )
        try:
            conn._write(
                encode_connect(
                    options.client_id,
                    clean_start=options.clean_start,
                    keepalive_s=options.keepalive_s,
                    username=options.username,
                    password=options.password,
                    session_expiry_s=options.session_expiry_s,
                    receive_maximum=options.receive_maximum,
                )
            )
            try:
                connack = await asyncio.wait_for(asyncio.shield(conn._connack), timeout)
            except TimeoutError:
                raise MqttError(f"no CONNACK within {timeout} s") from None
            if connack.reason_code >= 0x80:
                reason = connack.properties.get(REASON_STRING)
                raise ConnectRefused(
                    connack.reason_code, reason if isinstance(reason, str) else None
                )
            server_keepalive = connack.properties.get(SERVER_KEEP_ALIVE)
            if isinstance(server_keepalive, int):
                conn.keepalive_s = server_keepalive  # the server's value wins (3.2.2.3.14)
            conn._schedule_tick()
            return conn, connack
        except BaseException:
            conn.abort()
            raise

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float) -> list[int]:
        """SUBSCRIBE and return SUBACK's reason codes, one per filter (>= 0x80: refused)."""
        packet_id = self._take_packet_id()
        return await self._request(
            packet_id, SubAck, encode_subscribe(packet_id, filters), len(filters), timeout
        )

    async def unsubscribe(self, filters: list[str], timeout: float) -> list[int]:
        """UNSUBSCRIBE and return UNSUBACK's reason codes, one per filter (0x11: there
        was no such subscription)."""
        packet_id = self._take_packet_id()
        return await self._request(
            packet_id, UnsubAck, encode_unsubscribe(packet_id, filters), len(filters), timeout
        )

    async def _request(
        self, packet_id: int, reply: type, packet: bytes, filters: int, timeout: float
    ) -> list[int]:
        name = reply.__name__.upper()
        future: asyncio.Future[SubAck | UnsubAck] = self._loop.create_future()
        self._awaited_acks[packet_id] = (reply, future)
        self._write(packet)
        try:
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise MqttError(f"no {name} within {timeout} s") from None
        finally:
            self._awaited_acks.pop(packet_id, None)
        if len(answer.reason_codes) != filters:
            self._fail(ProtocolError(f"{name} has {len(answer.reason_codes)} codes for {filters}"))
            raise self.error or ConnectionLost(f"{name} does not match the request")
        return answer.reason_codes

    def _take_packet_id(self) -> int:
        packet_id = self._next_packet_id
        self._next_packet_id = packet_id % 0xFFFF + 1
        return packet_id

    # --- sending ---

    def ack(self, packet_id: int) -> None:
        """PUBACK `packet_id`, coalesced with the other PUBACKs of this loop iteration."""
        if not self._acks:
            self._loop.call_soon(self.flush_acks)
        self._acks.append(packet_id)

    def flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            self._write(encode_pubacks(acks))

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self._last_tx = time.monotonic()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    async def close(self, timeout: float = 5.0) -> None:
        """Send the pending PUBACKs and a normal DISCONNECT, then close the socket."""
        if self._transport is None or self._transport.is_closing():
            return
        self.flush_acks()
        self._closing = True
        self._write(encode_disconnect())
        self._transport.close()  # after the write buffer is flushed
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.error is None and exc is not None:
            self.error = ConnectionLost(f"socket error: {exc}")
        elif self.error is None and not self._closing:
            self.error = ConnectionLost("the broker closed the connection")
        failure = self.error or ConnectionLost("connection closed")
        if not self._connack.done():
            self._connack.set_exception(failure)
            self._connack.exception()  # retrieved here: open() may already have given up
        for _, future in self._awaited_acks.values():
            if not future.done():
                future.set_exception(failure)
        if not self.closed.done():
            self.closed.set_result(True)

    def data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        try:
            packets = self._decoder.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        publishes: list[Publish] | None = None
        for packet in packets:
            if type(packet) is Publish:
                if publishes is None:
                    publishes = [packet]
                else:
                    publishes.append(packet)
            else:
                self._control(packet)
        if publishes is not None:
            self._deliver(publishes)

    def eof_received(self) -> bool | None:
        if self.error is None and not self._closing:
            self.error = ConnectionLost("the broker closed the connection")
        return None

    def _control(self, packet: Packet) -> None:
        if isinstance(packet, PingResp):
            self._ping_sent_at = None
        elif isinstance(packet, SubAck | UnsubAck):
            awaited = self._awaited_acks.get(packet.packet_id)
            if awaited is None or not isinstance(packet, awaited[0]):
                name = type(packet).__name__.upper()
                self._fail(ProtocolError(f"{name} for unknown packet id {packet.packet_id}"))
            elif not awaited[1].done():
                awaited[1].set_result(packet)
        elif isinstance(packet, ConnAck):
            if self._connack.done():
                self._fail(ProtocolError("second CONNACK"))
            else:
                self._connack.set_result(packet)
        elif isinstance(packet, Disconnect):
            reason = packet.properties.get(REASON_STRING)
            self.error = ConnectionLost(
                f"broker sent DISCONNECT ({reason_name(packet.reason_code)})"
                + (f": {reason}" if isinstance(reason, str) else "")
            )
            if self._transport is not None:
                self._transport.close()
        else:  # PUBACK: we never publish on this connection
            self._fail(ProtocolError(f"unexpected {type(packet).__name__} from the broker"))

    def _fail(self, exc: ProtocolError) -> None:
        """Close on a protocol violation, telling the broker why (4.13)."""
        if self.error is None:
            log.error(
                "mqtt protocol error from the broker, closing the connection",
                extra={"error": str(exc), "reason": reason_name(exc.reason_code)},
            )
            self.error = ConnectionLost(f"protocol error: {exc}")
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_disconnect(exc.reason_code))
            transport.close()

    # --- keepalive ---

    def _schedule_tick(self) -> None:
        if self.keepalive_s > 0:
            self._timer = self._loop.call_later(self.keepalive_s / 2, self._tick)

    def _tick(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        now = time.monotonic()
        sent_at = self._ping_sent_at
        if sent_at is not None and self._last_rx < sent_at and now - sent_at >= self.keepalive_s:
            log.warning(
                "mqtt broker silent after PINGREQ, dropping the connection",
                extra={"silent_s": round(now - self._last_rx, 1)},
            )
            self.error = ConnectionLost(f"no reply from the broker for {now - self._last_rx:.0f} s")
            transport.abort()
            return
        if sent_at is None and now - self._last_tx >= self.keepalive_s / 2:
            self._write(PINGREQ_PACKET)
            self._ping_sent_at = now
        elif sent_at is not None and self._last_rx >= sent_at:
            self._ping_sent_at = None  # something came back: the connection is alive
        self._schedule_tick()
