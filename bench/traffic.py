"""Benchmark traffic: a bulk-registered fleet, realistic wristband payloads, a fast publisher.

The street generator builds a full ledger (contacts, stations, grid workers), which is
right for the end-to-end latency run but far too slow for 100k devices. Throughput and
memory only need devices that validate and elders they belong to, so `register_fleet`
COPYs one elder and one wristband per device straight into the registry tables.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.messages import Telemetry
from carewatch.topics import topic
from simulators.readings import WristbandModel

SITE_TZ = ZoneInfo("Asia/Shanghai")
# A fixed simulated morning (09:00 local), so the payloads are the same on every run.
SIM_START_MS = 1_764_032_400_000
MINUTE_MS = 60_000
GRID = "BENCH-G1"
WINDOW = 1000  # QoS 1 publishes in flight
STALL_S = 60.0


@dataclass(frozen=True, slots=True)
class FleetDevice:
    device_id: str
    elder_id: str


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    device_id: str
    elder_id: str
    seq: int
    ts_ms: int


def fleet(devices: int, prefix: str = "B") -> list[FleetDevice]:
    return [FleetDevice(f"{prefix}W{i:06d}", f"{prefix}E{i:06d}") for i in range(devices)]


def register_fleet(dsn: str, devices: Sequence[FleetDevice]) -> None:
    """One grid, and one elder with one wristband per device, by COPY (100k in seconds)."""
    rng = random.Random(11)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (GRID, "压测网格", "渝中区", "解放碑街道"),
        )
        with conn.cursor() as cur:
            with cur.copy(
                "COPY elders (id, name, district, street, lat, lon, grid_id) FROM STDIN"
            ) as copy:
                for d in devices:
                    lat, lon = 29.55 + rng.uniform(0, 0.02), 106.57 + rng.uniform(0, 0.02)
                    copy.write_row((d.elder_id, "压测老人", "渝中区", "解放碑街道", lat, lon, GRID))
            with cur.copy("COPY devices (id, elder_id, kind) FROM STDIN") as copy:
                for d in devices:
                    copy.write_row((d.device_id, d.elder_id, "wristband"))


def wristband_minutes(
    devices: Sequence[FleetDevice], minutes: int, *, seed: int = 3, first_seq: int = 1
) -> Iterator[Message]:
    """Every device's telemetry, one message a simulated minute, minute by minute
    (the order a fleet at one message a minute produces them). Payloads come from the
    simulator's wristband model: heart rate, SpO2, steps, battery, worn, GPS."""
    rng = random.Random(seed)
    models = [WristbandModel(rng, 29.56 + rng.uniform(0, 0.02), 106.57) for _ in devices]
    encoder = msgspec.json.Encoder()
    for minute in range(minutes):
        ts = SIM_START_MS + minute * MINUTE_MS
        local = datetime.fromtimestamp(ts / 1000, SITE_TZ)
        for device, model in zip(devices, models, strict=True):
            fields = model.step(local, 60.0).telemetry
            seq = first_seq + minute
            body = msgspec.convert({"v": 1, "seq": seq, "ts": ts, **fields}, Telemetry)
            yield Message(
                topic(device.device_id, "telemetry"),
                encoder.encode(body),
                device.device_id,
                device.elder_id,
                seq,
                ts,
            )


def messages_for(devices: Sequence[FleetDevice], count: int) -> list[Message]:
    """`count` messages over as many simulated minutes as the fleet needs."""
    minutes = -(-count // len(devices))
    out: list[Message] = []
    for message in wristband_minutes(devices, minutes):
        out.append(message)
        if len(out) == count:
            break
    return out


def publish_all(port: int, messages: Sequence[Message], client_id: str = "bench-pub") -> float:
    """Publish at QoS 1 as fast as the broker takes them; return once every PUBACK is in.

    Returns the publish rate (msg/s). At most WINDOW publishes are outstanding: paho's
    own queue behind max_inflight, fed from this thread while its network thread drains
    it, stalled for good once in a 100k run, so paho is never asked to queue.
    """
    window = threading.Semaphore(WINDOW)
    done = threading.Event()
    acked = 0
    total = len(messages)

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == total:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    try:
        for m in messages:
            if not window.acquire(timeout=STALL_S):
                raise TimeoutError(f"no PUBACK for {STALL_S} s ({acked} of {total} acknowledged)")
            client.publish(m.topic, m.payload, qos=1)
        if total and not done.wait(STALL_S):
            raise TimeoutError(f"only {acked} of {total} publishes acknowledged")
        return total / (time.perf_counter() - started)
    finally:
        client.disconnect()
        client.loop_stop()
