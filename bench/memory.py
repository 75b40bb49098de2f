"""Memory per device: RSS of the ingest and rules workers for 1k, 10k and 100k devices.

    .venv/bin/python -m bench.memory --fleets 1000,10000,100000

For each fleet size, on fresh private services: register the fleet (one elder and one
wristband per device), start `carewatch ingest` and `carewatch rules`, then send one
simulated minute of traffic at one message per device per minute (every device's
telemetry once, published as fast as the broker takes it). Once every row is stored and
the rules worker has consumed every event, read both workers' RSS (registry loaded,
per-device state populated) and Redis' used memory (ingest's dedup keys live there).
A least-squares line over the fleet sizes gives MB per 10k devices and the fixed base.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
import numpy as np
import psycopg
import redis

from bench.bus_throughput import group_drained
from bench.common import bench_env, counter_total, table, write_results
from bench.procstat import rss_mb
from bench.traffic import Message, fleet, publish_all, register_fleet, wristband_minutes
from carewatch import topics
from harness.pipeline import Pipeline
from harness.services import free_port

TIMEOUT_S = 480.0
_FITTED = ("ingest_idle_mb", "ingest_mb", "rules_idle_mb", "rules_mb", "redis_mb")


def _consumed(url: str) -> float:
    try:
        return counter_total(url, "carewatch_rules_events_total")
    except httpx.TransportError:
        return 0.0


def measure(devices: int) -> dict[str, float]:
    with bench_env(log_level="WARNING") as env:
        members = fleet(devices)
        register_fleet(env.settings.database_url, members)
        minute = list(wristband_minutes(members, 1))
        first = members[0]
        probe = Message(
            topics.topic(first.device_id, "telemetry"),
            b'{"v":1,"seq":0,"ts":1764032340000,"hr":70}',
            first.device_id,
            first.elder_id,
            0,
            1_764_032_340_000,
        )
        rules_port = free_port()
        pipeline = Pipeline(env.settings, env.workdir)
        db = psycopg.connect(env.settings.database_url, autocommit=True)
        r = redis.Redis.from_url(env.settings.redis_url)
        url = f"http://127.0.0.1:{rules_port}/metrics"

        def stored() -> int:
            return int(db.execute("SELECT count(*) FROM telemetry").fetchone()[0])  # type: ignore[index]

        def wait(cond: Any, what: str) -> None:
            deadline = time.monotonic() + TIMEOUT_S
            while not cond():
                pipeline.assert_running()
                if time.monotonic() > deadline:
                    raise TimeoutError(what)
                time.sleep(0.1)

        try:
            ingest = pipeline.start("ingest")
            rules = pipeline.start("rules", metrics_port=rules_port)
            redis_base = int(r.info("memory")["used_memory"])

            def probed() -> bool:
                publish_all(env.settings.mqtt_port, [probe], client_id="bench-probe")
                return stored() >= 1 and _consumed(url) >= 1

            wait(probed, "workers ready")
            idle = {"ingest": rss_mb(ingest.pid), "rules": rss_mb(rules.pid)}
            publish_all(env.settings.mqtt_port, minute)
            wait(lambda: stored() >= devices + 1, "all rows stored")
            drained = True
            try:
                wait(
                    lambda: (
                        _consumed(url) >= devices + 1 and group_drained(r, env.settings.bus_shards)
                    ),
                    "all events consumed by rules",
                )
            except TimeoutError:
                drained = False  # measured anyway, and said so: the rules worker fell behind
            return {
                "devices": devices,
                "ingest_idle_mb": idle["ingest"],
                "rules_idle_mb": idle["rules"],
                "ingest_mb": rss_mb(ingest.pid),
                "rules_mb": rss_mb(rules.pid),
                "rules_drained": drained,
                "rules_deliveries": _consumed(url),
                "redis_mb": (int(r.info("memory")["used_memory"]) - redis_base) / 2**20,
            }
        finally:
            pipeline.stop_all()
            db.close()
            r.close()


def fit(points: list[dict[str, float]], key: str) -> dict[str, float]:
    x = np.array([p["devices"] for p in points], dtype=float)
    y = np.array([p[key] for p in points], dtype=float)
    slope, base = np.polyfit(x, y, 1)
    return {"mb_per_10k": float(slope * 10_000), "base_mb": float(base)}


def run(fleets: list[int] | None = None) -> dict[str, Any]:
    sizes = fleets or [1_000, 10_000, 100_000]
    points = [measure(n) for n in sizes]
    result: dict[str, Any] = {"points": points}
    if len(points) >= 2:
        result["fit"] = {k: fit(points, k) for k in _FITTED}
    write_results("memory", result)
    return result


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for key, name in (
        ("ingest_idle_mb", "ingest RSS, registry loaded"),
        ("ingest_mb", "ingest RSS after the minute"),
        ("rules_idle_mb", "rules RSS, started"),
        ("rules_mb", "rules RSS after the minute"),
        ("redis_mb", "Redis (dedup keys, streams)"),
    ):
        f = r["fit"][key]
        out.append(
            (
                f"memory: {name}",
                f"{f['mb_per_10k']:.1f} MB per 10k devices",
                f"base {f['base_mb']:.0f} MB (linear fit)",
                "-",
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleets", default="1000,10000,100000")
    args = parser.parse_args()
    r = run([int(x) for x in args.fleets.split(",")])
    print(
        table(
            [("devices", "ingest idle MB", "ingest MB", "rules idle MB", "rules MB", "Redis +MB")]
            + [
                (
                    str(p["devices"]),
                    f"{p['ingest_idle_mb']:.0f}",
                    f"{p['ingest_mb']:.0f}",
                    f"{p['rules_idle_mb']:.0f}",
                    f"{p['rules_mb']:.0f}",
                    f"{p['redis_mb']:.0f}",
                )
                for p in r["points"]
            ]
        )
    )
    if "fit" in r:
        print(table([("what", "growth", "fixed part", "-"), *summary_rows(r)]))


if __name__ == "__main__":
    main()
