"""Background telemetry load at a fixed rate, from a separate process (paho, QoS 1)."""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.synchronize import Event as MpEvent

import msgspec
import paho.mqtt.client as mqtt

from carewatch.messages import Telemetry
from carewatch.topics import topic


def _publish_loop(
    port: int, devices: list[str], rate: float, stop: MpEvent, sent: mp.Value
) -> None:  # type: ignore[type-arg]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-load-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    seqs = dict.fromkeys(devices, time.time_ns() // 1_000_000)
    interval = 1.0 / rate
    next_at = time.perf_counter()
    i = 0
    encoder = msgspec.json.Encoder()
    while not stop.is_set():
        device = devices[i % len(devices)]
        seqs[device] += 1
        body = encoder.encode(
            Telemetry(
                v=1,
                seq=seqs[device],
                ts=time.time_ns() // 1_000_000,
                hr=70 + i % 20,
                spo2=97,
                steps=i,
                battery=80,
                worn=True,
            )
        )
        client.publish(topic(device, "telemetry"), body, qos=1)
        i += 1
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:  # cannot keep up: do not burst to catch up, report the real rate
            next_at = time.perf_counter()
        if i % 1000 == 0:
            sent.value = i
    sent.value = i
    client.loop_stop()
    client.disconnect()


class Load:
    """Start/stop a load process; `rate_achieved` is what it really managed."""

    def __init__(self, port: int, devices: list[str], rate: float) -> None:
        self.stop = mp.Event()
        self.sent = mp.Value("q", 0)
        self.rate = rate
        self.proc = mp.Process(
            target=_publish_loop, args=(port, devices, rate, self.stop, self.sent), daemon=True
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
