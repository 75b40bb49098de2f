"""Background telemetry load at a fixed rate, from a separate process (raw socket, QoS 1).

The load must cost little CPU, or on a 2-core machine it takes the CPU the workers under
test need: paho took a full core for a few thousand msg/s. This process builds QoS 1
PUBLISH packets with ingest's codec (ingest.mqtt_wire) in batches, one batch every few
milliseconds, writes each batch with one `sendall` on a plain socket, and reads and
discards the PUBACKs. At most WINDOW publishes are unacknowledged (never more than the
broker's Receive Maximum from CONNACK, which it would take as a protocol error), so a
broker that falls behind slows the load down instead of queueing without bound.
"""

from __future__ import annotations

import multiprocessing as mp
import select
import socket
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent

import msgspec

from carewatch.messages import Telemetry
from carewatch.topics import topic
from ingest.mqtt_wire import (
    RECEIVE_MAXIMUM,
    ConnAck,
    Decoder,
    Disconnect,
    PubAck,
    encode_connect,
    encode_disconnect,
    encode_publish,
)

WINDOW = 1000  # unacknowledged publishes at most
# MQTT 5 PUBACK reason "No matching subscribers": the broker took the message and dropped
# it, because no session (not even an offline one) subscribed to its topic yet. A success
# code to the publisher, but nothing is owed to the store.
NO_MATCHING_SUBSCRIBERS = 0x10
TICK_S = 0.005  # one batch per tick: 50 packets per write at 10k msg/s
DRAIN_S = 2.0  # on stop, how long to wait for the last PUBACKs


class _Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder()
        self.acked = 0  # PUBACKs of every kind: the window's accounting
        self.unrouted = 0  # of those, "no matching subscribers"
        self.refused = 0  # of those, a failure code (0x80 or more)
        self.sock.sendall(
            encode_connect(f"bench-load-{time.time_ns()}", clean_start=True, keepalive_s=0)
        )
        connack: ConnAck | None = None
        while connack is None:
            for packet in self._read():
                if isinstance(packet, ConnAck):
                    connack = packet
        if connack.reason_code >= 0x80:
            raise ConnectionError(f"broker refused the load's connection: {connack}")
        receive_maximum = connack.properties.get(RECEIVE_MAXIMUM, 65535)
        self.window = min(WINDOW, receive_maximum if isinstance(receive_maximum, int) else WINDOW)

    def _read(self) -> list[object]:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the broker closed the load's connection")
        return list(self.decoder.feed(data))

    def read_acks(self, timeout: float) -> None:
        """Wait up to `timeout` for the socket to be readable; count the PUBACKs in it."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if readable:
            for packet in self._read():
                if isinstance(packet, PubAck):
                    self.acked += 1
                    if packet.reason_code == NO_MATCHING_SUBSCRIBERS:
                        self.unrouted += 1
                    elif packet.reason_code >= 0x80:
                        self.refused += 1
                elif isinstance(packet, Disconnect):
                    raise ConnectionError(f"the broker disconnected the load: {packet}")

    def close(self) -> None:
        try:
            self.sock.sendall(encode_disconnect())
        finally:
            self.sock.close()


def _publish_loop(
    port: int,
    devices: list[str],
    rate: float,
    stop: MpEvent,
    sent: Synchronized[int],
    acked: Synchronized[int],
    unrouted: Synchronized[int],
) -> None:
    conn = _Connection(port)
    topics = [topic(device, "telemetry") for device in devices]
    # Microsecond-based, so never the millisecond-based seqs of presses injected for the
    # same devices by another publisher (bench.sos_latency): a shared (device, seq) made
    # ingest drop whichever came second as a redelivery, and at 5000 msg/s the load's
    # counters reached the presses' values within seconds and swallowed the presses.
    seqs = [time.time_ns() // 1_000] * len(devices)
    encoder = msgspec.json.Encoder()
    started = time.perf_counter()
    base = 0  # messages already due when `started` was last reset
    i = 0
    packet_id = 0
    while not stop.is_set():
        elapsed = time.perf_counter() - started
        due = base + int(elapsed * rate)
        if due - i > rate:  # a second behind: do not burst to catch up, report the real rate
            started, base, due = time.perf_counter(), i, i
        n = min(due - i, conn.window - (i - conn.acked))
        if n > 0:
            now_ms = time.time_ns() // 1_000_000
            packets = []
            for k in range(i, i + n):
                d = k % len(devices)
                seqs[d] += 1
                body = encoder.encode(
                    Telemetry(
                        v=1,
                        seq=seqs[d],
                        ts=now_ms,
                        hr=70 + k % 20,
                        spo2=97,
                        steps=k,
                        battery=80,
                        worn=True,
                    )
                )
                packet_id = packet_id % 0xFFFF + 1
                packets.append(encode_publish(topics[d], body, 1, packet_id))
            conn.sock.sendall(b"".join(packets))
            i += n
            sent.value = i
        next_due = (i - base + 1) / rate - (time.perf_counter() - started)
        conn.read_acks(max(TICK_S, next_due))
    deadline = time.monotonic() + DRAIN_S
    while conn.acked < i and time.monotonic() < deadline:
        conn.read_acks(deadline - time.monotonic())
    sent.value = i
    # owed to the store: what a subscribed session got (not the unrouted, not the refused)
    acked.value = conn.acked - conn.unrouted - conn.refused
    unrouted.value = conn.unrouted + conn.refused
    conn.close()


class Load:
    """Start/stop a load process; `rate_achieved` is what it really managed."""

    def __init__(self, port: int, devices: list[str], rate: float) -> None:
        self.stop = mp.Event()
        self.sent: Synchronized[int] = mp.Value("q", 0)
        # what the broker acknowledged before the load stopped: a publish still
        # unacknowledged when the load closes its socket may be lost with the connection
        # (as a device's would be, which then sends it again), so only these are owed
        self.acked: Synchronized[int] = mp.Value("q", 0)
        # acknowledged but not routed to any session (no subscription yet) or refused:
        # the broker dropped them, so nothing is owed; a bench reports them, and waits
        # for ingest's telemetry session before it starts a load, so they stay 0
        self.unrouted: Synchronized[int] = mp.Value("q", 0)
        self.rate = rate
        self.proc = mp.Process(
            target=_publish_loop,
            args=(port, devices, rate, self.stop, self.sent, self.acked, self.unrouted),
            daemon=True,
        )
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Load:
        if self.rate > 0:
            self.proc.start()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.elapsed = time.perf_counter() - self.started
        self.stop.set()
        if self.rate > 0:
            self.proc.join(10)

    @property
    def rate_achieved(self) -> float:
        return float(self.sent.value) / self.elapsed if self.elapsed else 0.0
