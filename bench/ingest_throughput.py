"""Ingest throughput: drain of a persistent MQTT session by mosquitto_sub vs the ingest worker.

    .venv/bin/python -m bench.ingest_throughput --messages 50000 --devices 5000

N realistic wristband telemetry messages of registered devices are queued in a persistent
session (QoS 1) on a private Mosquitto while its subscriber is offline, then drained:

(a) raw limit: `mosquitto_sub` (C client, QoS 1, same shared-subscription filter form
    and the same Receive Maximum as the worker) reconnects with `-C N`; timed from its
    start to its exit.
(b) the ingest worker doing its whole job (validate, dedup in Redis, COPY to PostgreSQL,
    publish every event on the bus, PUBACK once durable) as the `carewatch ingest`
    process; timed from the first message it received (its own receive stamp, so its
    ~1 s of Python start-up is not counted) until all N rows are in `telemetry` and the
    worker has published all N events (its carewatch_bus_published_total: the
    telemetry streams hold them in batches, docs/adr/0006).

Mosquitto (2.0) queues QoS 1 messages for an offline session with only a shared
subscription, so (b) is a real backlog drain; the benchmark checks this first.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import RESULTS, BenchEnv, bench_env, counter_total, table, write_results
from bench.procstat import CpuTrace, cpu_seconds
from bench.profile import start_profiler, stop_profiler, summarise
from bench.traffic import Message, fleet, messages_for, publish_all, register_fleet
from carewatch import topics
from harness.pipeline import Pipeline
from harness.services import free_port
from ingest.mqtt_source import receive_maximum
from ingest.worker import default_client_id, lane_client_ids

RAW_GROUP = "rawdrain"
DRAIN_TIMEOUT_S = 300.0


def _sub(env: BenchEnv, client_id: str, group: str) -> list[str]:
    return [
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        str(env.settings.mqtt_port),
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-i",
        client_id,
        "-t",
        topics.uplink_filter(group),
    ]


def _create_session(env: BenchEnv, client_id: str, group: str) -> None:
    """Subscribe once with a persistent session, then go offline."""
    cmd = [*_sub(env, client_id, group), "-c", "-x", str(env.settings.mqtt_session_expiry_s), "-E"]
    subprocess.run(cmd, check=True, timeout=10)


def _end_session(env: BenchEnv, client_id: str, group: str) -> None:
    """Connect with a clean start and no expiry: the broker forgets the session."""
    subprocess.run([*_sub(env, client_id, group), "-E"], check=True, timeout=10)


def offline_shared_session_queues(env: BenchEnv, sample: list[Message]) -> bool:
    """Does the broker keep QoS 1 messages for an offline shared-subscription session?"""
    client_id, group = "bench-queue-check", "queuecheck"
    _create_session(env, client_id, group)
    publish_all(env.settings.mqtt_port, sample, client_id="bench-pub-check")
    cmd = [*_sub(env, client_id, group), "-c", "-x", "0", "-C", str(len(sample)), "-W", "5"]
    got = subprocess.run(cmd, capture_output=True, timeout=15)
    return got.returncode == 0 and len(got.stdout.splitlines()) == len(sample)


def raw_drain(env: BenchEnv, messages: list[Message]) -> dict[str, float]:
    client_id = "bench-raw-drain"
    _create_session(env, client_id, RAW_GROUP)
    publish_rate = publish_all(env.settings.mqtt_port, messages)
    broker_cpu0 = cpu_seconds(env.mosquitto.popen.pid)
    cmd = [
        *_sub(env, client_id, RAW_GROUP),
        "-c",
        "-x",
        str(env.settings.mqtt_session_expiry_s),
        "-C",
        str(len(messages)),
        "-W",
        str(int(DRAIN_TIMEOUT_S)),
        "-D",
        "connect",
        "receive-maximum",
        str(receive_maximum(env.settings.ingest_batch_size)),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=DRAIN_TIMEOUT_S + 10)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_cpu = cpu_seconds(env.mosquitto.popen.pid) - broker_cpu0
    _end_session(env, client_id, RAW_GROUP)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "publish_msg_s": publish_rate,
        "seconds": elapsed,
        "msg_s": len(messages) / elapsed,
        "subscriber_cpu_s": client_cpu,
        "broker_cpu_s": broker_cpu,
    }


def source_drain(env: BenchEnv, messages: list[Message]) -> dict[str, float]:
    """The worker's MQTT stack alone (bench.source_drain), same session and flow control."""
    client_id, group = "bench-source-drain", "sourcedrain"
    cmd = [
        sys.executable,
        "-m",
        "bench.source_drain",
        "--port",
        str(env.settings.mqtt_port),
        "--client-id",
        client_id,
        "--group",
        group,
    ]
    subprocess.run([*cmd, "--connect-only"], check=True, capture_output=True, timeout=30)
    publish_all(env.settings.mqtt_port, messages)
    out = subprocess.run(
        [*cmd, "--count", str(len(messages))],
        check=True,
        capture_output=True,
        timeout=DRAIN_TIMEOUT_S,
    )
    _end_session(env, client_id, group)
    figures = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return {
        "seconds": figures["seconds"],
        "msg_s": len(messages) / figures["seconds"],
        "cpu_s": figures["cpu_s"],
        "msg_per_cpu_s": len(messages) / figures["cpu_s"] if figures["cpu_s"] else float("nan"),
    }


class _Progress:
    """What the worker has made durable so far: rows in telemetry, events on the bus."""

    def __init__(self, env: BenchEnv) -> None:
        self.db = psycopg.connect(env.settings.database_url, autocommit=True)

    def rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM telemetry").fetchone()[0])  # type: ignore[index]

    def published(self, metrics_url: str) -> int:
        """Events the worker behind `metrics_url` published since it started (telemetry
        travels in batches, several events per bus entry, so the entries do not count
        them). Asked only once its rows are stored: a scrape costs the worker CPU."""
        return round(counter_total(metrics_url, "carewatch_bus_published_total"))

    def first_received(self, min_seq: int) -> float:
        row = self.db.execute(
            "SELECT extract(epoch FROM min(received_at)) FROM telemetry WHERE seq >= %s",
            (min_seq,),
        ).fetchone()
        assert row is not None and row[0] is not None
        return float(row[0])

    def close(self) -> None:
        self.db.close()


def ingest_drain(
    env: BenchEnv, messages: list[Message], probe: Message, profile: Path | None = None
) -> dict[str, float]:
    pipeline = Pipeline(env.settings, env.workdir)
    progress = _Progress(env)
    try:
        # First run: create the worker's persistent session (and prove it stores a row).
        pipeline.start("ingest")
        deadline = time.monotonic() + 60
        while progress.rows() < 1:
            pipeline.assert_running()
            publish_all(env.settings.mqtt_port, [probe], client_id="bench-probe")
            if time.monotonic() > deadline:
                raise TimeoutError("the ingest worker never stored the probe")
            time.sleep(0.2)
        pipeline.kill("ingest", signal.SIGTERM)
        base_rows = progress.rows()

        publish_all(env.settings.mqtt_port, messages)
        target_rows = base_rows + len(messages)
        port = free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        spawned = time.time()
        proc = pipeline.start("ingest", metrics_port=port)
        trace = CpuTrace(proc.pid)
        spy = start_profiler(proc.pid, profile) if profile else None
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            trace.sample()
            if progress.rows() >= target_rows and progress.published(metrics_url) >= len(messages):
                break
            pipeline.assert_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest drained {progress.rows() - base_rows} rows in time")
            time.sleep(0.05)
        finished = trace.walls[-1]
        if spy is not None:
            stop_profiler(spy)
        first = progress.first_received(min_seq=1)  # the probe has seq 0
        cpu = trace.cpus[-1] - trace.at(first)
        wall = finished - first
        return {
            "startup_s": first - spawned,
            "seconds": wall,
            "msg_s": len(messages) / wall,
            "worker_cpu_s": cpu,
            "worker_cores": cpu / wall,
            "msg_per_cpu_s": len(messages) / cpu if cpu else float("nan"),
        }
    finally:
        pipeline.stop_all()
        progress.close()
        # so that the next raw drain's messages are not also queued for this session
        for client_id in lane_client_ids(default_client_id(env.settings)).values():
            _end_session(env, client_id, env.settings.mqtt_share_group)


def run(messages: int = 50_000, devices: int = 5_000, profile: bool = False) -> dict[str, Any]:
    profile_path = RESULTS / "ingest_profile.txt" if profile else None
    with bench_env(log_level="WARNING") as env:
        members = fleet(devices)
        register_fleet(env.settings.database_url, members)
        traffic = messages_for(members, messages)
        probe = Message(
            topics.topic(members[0].device_id, "telemetry"),
            b'{"v":1,"seq":0,"ts":1764032340000,"hr":70}',
            members[0].device_id,
            members[0].elder_id,
            0,
            1_764_032_340_000,
        )
        queues = offline_shared_session_queues(env, traffic[:100])
        if not queues:
            raise SystemExit(
                "this Mosquitto does not queue messages for an offline shared-subscription"
                " session: measure a live drain instead (see docs/benchmarks.md)"
            )
        raw_before = raw_drain(env, traffic)
        source = source_drain(env, traffic)
        ingest = ingest_drain(env, traffic, probe, profile_path)
        raw_after = raw_drain(env, traffic)
    raw = max(raw_before, raw_after, key=lambda r: r["msg_s"])
    result = {
        "messages": messages,
        "devices": devices,
        "payload_bytes_mean": sum(len(m.payload) for m in traffic) / len(traffic),
        "offline_shared_session_queues": queues,
        "raw_runs": [raw_before, raw_after],
        "raw": raw,
        "source_only": source,
        "ingest": ingest,
        "ratio": ingest["msg_s"] / raw["msg_s"],
        # the worker's rate per core it keeps busy, against the raw drain rate
        "ratio_per_core": ingest["msg_per_cpu_s"] / raw["msg_s"],
        "ratio_to_source_only": ingest["msg_s"] / source["msg_s"],
        "target_ratio": 0.6,  # issue 16: per core of ingest, against the raw drain
    }
    if profile_path is not None:
        result["profile_top"] = summarise(profile_path)
    write_results("ingest_throughput", result)
    return result


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    ing, src = r["ingest"], r["source_only"]
    return [
        (
            f"ingest drain, {r['messages']} msgs (validate+dedup+COPY+publish)",
            f"{ing['msg_s']:.0f} msg/s",
            f"{r['raw']['msg_s']:.0f} msg/s (mosquitto_sub drain)",
            f"{r['ratio']:.2f}",
        ),
        (
            "  per core: ingest msg per CPU-second vs the raw drain",
            f"{ing['msg_per_cpu_s']:.0f} msg/CPU-s",
            f"{r['raw']['msg_s']:.0f} msg/s (mosquitto_sub drain)",
            f"{r['ratio_per_core']:.2f}",
        ),
        (
            "  per core: ingest msg per CPU-second vs its MQTT source",
            f"{ing['msg_per_cpu_s']:.0f} msg/CPU-s",
            f"{src['msg_per_cpu_s']:.0f} msg/CPU-s (its MQTT source alone)",
            f"{ing['msg_per_cpu_s'] / src['msg_per_cpu_s']:.2f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=5_000)
    parser.add_argument(
        "--profile", action="store_true", help="record the worker's drain with py-spy"
    )
    args = parser.parse_args()
    r = run(args.messages, args.devices, args.profile)
    raw, ing = r["raw"], r["ingest"]
    print(
        table(
            [
                ("drain", "msg/s", "seconds", "consumer CPU-s", "notes"),
                (
                    "raw: mosquitto_sub",
                    f"{raw['msg_s']:.0f}",
                    f"{raw['seconds']:.2f}",
                    f"{raw['subscriber_cpu_s']:.2f}",
                    f"broker CPU {raw['broker_cpu_s']:.2f} s; runs "
                    + ", ".join(f"{x['msg_s']:.0f}" for x in r["raw_runs"]),
                ),
                (
                    "ingest's MQTT source alone",
                    f"{r['source_only']['msg_s']:.0f}",
                    f"{r['source_only']['seconds']:.2f}",
                    f"{r['source_only']['cpu_s']:.2f}",
                    f"{r['source_only']['msg_per_cpu_s']:.0f} msg/CPU-s (ingest.mqtt_client, manual PUBACK)",
                ),
                (
                    "ingest worker",
                    f"{ing['msg_s']:.0f}",
                    f"{ing['seconds']:.2f}",
                    f"{ing['worker_cpu_s']:.2f}",
                    f"{ing['worker_cores']:.2f} cores busy, {ing['msg_per_cpu_s']:.0f} msg/CPU-s,"
                    f" start-up {ing['startup_s']:.1f} s",
                ),
            ]
        )
    )
    for line in r.get("profile_top", []):
        print("  profile:", line)
    print(
        f"ratio ingest/raw: {r['ratio']:.2f}, per core of ingest {r['ratio_per_core']:.2f}"
        f" (target >= {r['target_ratio']:.2f});"
        f" ingest/source-alone: {r['ratio_to_source_only']:.2f};"
        f" {r['messages']} messages of {r['devices']} devices,"
        f" {r['payload_bytes_mean']:.0f} B each; publish {raw['publish_msg_s']:.0f} msg/s"
    )


if __name__ == "__main__":
    main()
