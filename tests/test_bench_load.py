"""bench.load's raw-socket publisher sends well-formed QoS 1 telemetry a real broker routes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import aiomqtt
import msgspec

from bench.load import Load
from carewatch.messages import Telemetry
from carewatch.topics import parse, uplink_filter
from harness.services import start_mosquitto, wait_until


async def test_load_publishes_valid_telemetry_in_order(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "mosquitto")
    devices = ["W1", "W2", "W3"]
    seqs: dict[str, list[int]] = defaultdict(list)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(uplink_filter(), qos=1)
            with Load(broker.port, devices, rate=2000) as load:

                async def collect() -> None:
                    async for message in client.messages:
                        found = parse(message.topic.value)
                        assert found is not None and found[1] == "telemetry"
                        assert isinstance(message.payload, bytes)
                        body = msgspec.json.decode(message.payload, type=Telemetry)
                        seqs[found[0]].append(body.seq)
                        if sum(map(len, seqs.values())) >= 600:
                            return

                await asyncio.wait_for(collect(), 20)
        assert load.proc.exitcode == 0  # it drained its PUBACKs and disconnected cleanly
        assert load.unrouted.value == 0 and load.acked.value > 0  # routed to the subscriber
    finally:
        broker.stop()
    assert set(seqs) == set(devices)  # round robin over the devices
    for received in seqs.values():
        assert received == sorted(received) and len(set(received)) == len(received)


def test_publishes_no_session_subscribed_to_are_counted_unrouted_not_owed(tmp_path: Path) -> None:
    # Mosquitto PUBACKs them with "no matching subscribers" and drops them: a bench that
    # counted them as owed waited for rows nobody would ever store (issue 16's "backlog")
    broker = start_mosquitto(tmp_path / "mosquitto")
    try:
        with Load(broker.port, ["W1", "W2"], rate=1000) as load:
            wait_until(lambda: load.sent.value >= 200, 20, "200 publishes sent")
        assert load.proc.exitcode == 0
        assert load.sent.value >= 200
        assert load.acked.value == 0  # nothing is owed
        assert load.unrouted.value == load.sent.value  # every one was acknowledged, unrouted
    finally:
        broker.stop()
