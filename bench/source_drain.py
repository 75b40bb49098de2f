"""Drain a persistent session with ingest's own MQTT source and nothing else (one process).

Run by bench.ingest_throughput as a subprocess: the same MQTT client (ingest.mqtt_source,
ingest.mqtt_client, ingest.mqtt_wire), Receive Maximum and manual PUBACKs as the worker,
without validation, Redis or PostgreSQL. It tells how much of the worker's time is the
MQTT client itself. Messages are taken off the queue the way the worker's pipeline takes
them (one await, then whatever else is already there) and acknowledged at once. Prints
one JSON line: seconds from the first message received to the last acknowledged, CPU
seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from bench.procstat import cpu_seconds
from carewatch.settings import Settings
from ingest.mqtt_source import Incoming, MqttSource


async def drain(settings: Settings, client_id: str, count: int, connect_only: bool) -> None:
    queue: asyncio.Queue[Incoming | None] = asyncio.Queue()
    ready = asyncio.Event()
    source = MqttSource(settings, client_id, queue, ready)
    stop_reading, disconnect = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(source.run(stop_reading, disconnect))
    await asyncio.wait_for(ready.wait(), 10)
    got, first, cpu0 = 0, 0.0, 0.0
    while not connect_only and got < count:
        message = await queue.get()
        if got == 0:
            first, cpu0 = time.perf_counter(), cpu_seconds(os.getpid())
        while True:
            assert message is not None
            source.ack(message)
            got += 1
            if queue.empty():
                break
            message = queue.get_nowait()
    elapsed = time.perf_counter() - first
    cpu = cpu_seconds(os.getpid()) - cpu0
    stop_reading.set()
    disconnect.set()
    await task
    print(json.dumps({"seconds": elapsed, "cpu_s": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--connect-only", action="store_true", help="just create the session")
    args = parser.parse_args()
    settings = Settings(_env_file=None, mqtt_port=args.port, mqtt_share_group=args.group)
    asyncio.run(drain(settings, args.client_id, args.count, args.connect_only))


if __name__ == "__main__":
    main()
