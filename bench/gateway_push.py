"""CTWing push endpoint under load: sustained pushes/s and response times.

    .venv/bin/python -m bench.gateway_push --seconds 20 --concurrency 32

`carewatch gateway ctwing` and `carewatch ingest` run as their own processes on private
services; `--concurrency` HTTP clients push dataReports (distinct upPacketSN, devices
round-robin) as fast as they are answered for `--seconds`. Reports pushes/s, p50/p99/max
response time, and how many pushes ingest stored (each becomes one telemetry row) once
the gateway has worked through its queue.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import psycopg

from bench.common import bench_env, percentile, table, write_results
from bench.procstat import cpu_seconds
from bench.traffic import fleet, register_fleet
from harness.pipeline import Pipeline
from harness.services import free_port, wait_port, wait_until
from simulators.gateways import ctwing_data_report

DEVICES = 1000
PRODUCT = "bench-smoke"


async def push_for(url: str, seconds: float, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    counter = iter(range(1 << 30))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while loop.time() < end:
            n = next(counter)
            body = ctwing_data_report(
                f"86{n % DEVICES:013d}", PRODUCT, {"battery_value": 50 + n % 50}, packet_sn=n
            )
            t0 = time.perf_counter()
            response = await client.post(url, content=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors


def run(seconds: float, concurrency: int) -> dict[str, Any]:
    with bench_env(log_level="WARNING") as env:
        settings = env.settings.model_copy(
            update={"gateway_http_port": free_port(), "gateway_serve": "ctwing"}
        )
        devices = fleet(DEVICES, prefix="C")
        register_fleet(settings.database_url, devices)
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "UPDATE devices SET kind = 'smoke', protocol = 'ctwing', product = %s,"
                " imei = '86' || lpad(substr(id, 3), 13, '0') WHERE id LIKE 'CW%%'",
                (PRODUCT,),
            )
            conn.execute(
                "INSERT INTO gateway_product_fields (platform, product, field, meaning)"
                " VALUES ('ctwing', %s, 'battery_value', 'battery')",
                (PRODUCT,),
            )
        pipeline = Pipeline(settings, env.workdir)
        try:
            pipeline.start("ingest")
            pipeline.start("gateway")
            wait_port(settings.gateway_http_port, 30)
            url = f"http://127.0.0.1:{settings.gateway_http_port}/ctwing"
            # ingest subscribed: a first push stored
            first = ctwing_data_report(
                f"86{0:013d}", PRODUCT, {"battery_value": 1}, packet_sn=1 << 29
            )

            def stored() -> bool:
                httpx.post(url, content=first, timeout=5)
                with psycopg.connect(settings.database_url) as conn:
                    return bool(conn.execute("SELECT 1 FROM telemetry LIMIT 1").fetchone())

            wait_until(stored, 30, "ingest to store a first push")
            gateway_pid = pipeline.procs["gateway"].pid
            cpu0, t0 = cpu_seconds(gateway_pid), time.monotonic()
            client0 = time.process_time()
            latencies, errors = asyncio.run(push_for(url, seconds, concurrency))
            wall = time.monotonic() - t0
            gateway_cores = (cpu_seconds(gateway_pid) - cpu0) / wall
            # the pushing clients' own CPU: when near 1, they (not the gateway) set the pace
            client_cores = (time.process_time() - client0) / wall

            def count() -> int:
                with psycopg.connect(settings.database_url) as conn:
                    row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
                    return int(row[0]) if row else 0

            target = len(latencies) - errors + 1
            started = time.monotonic()
            wait_until(lambda: count() >= target, 120, f"{target} pushes stored")
            drain_s = time.monotonic() - started
        finally:
            pipeline.stop_all()
    return {
        "seconds": seconds,
        "concurrency": concurrency,
        "pushes": len(latencies),
        "non_200": errors,
        "pushes_per_s": round(len(latencies) / seconds, 1),
        "response_ms": {
            "p50": round(percentile(latencies, 0.5), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies, default=float("nan")), 2),
        },
        "gateway_cores": round(gateway_cores, 3),
        "client_cores": round(client_cores, 3),
        "stored_after_s": round(drain_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    result = run(args.seconds, args.concurrency)
    write_results("gateway_push", result)
    r = result["response_ms"]
    print(
        table(
            [
                ("pushes/s", "p50 ms", "p99 ms", "max ms", "non-200", "gateway cores"),
                (
                    str(result["pushes_per_s"]),
                    str(r["p50"]),
                    str(r["p99"]),
                    str(r["max"]),
                    str(result["non_200"]),
                    str(result["gateway_cores"]),
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
