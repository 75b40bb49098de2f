"""Shared parts of the benchmarks: private services, machine facts, results output.

Benchmarks run against private Mosquitto/Redis instances and a fresh PostgreSQL
database, like the tests, so their figures are not disturbed by (and do not disturb)
anything else on the machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from carewatch.settings import Settings
from harness.services import TIME_OF_DAY_INDEPENDENT, Databases, Proc, start_mosquitto, start_redis

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class BenchEnv:
    settings: Settings
    mosquitto: Proc
    redis: Proc
    workdir: Path


@contextmanager
def bench_env(**overrides: Any) -> Iterator[BenchEnv]:
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-") as tmp:
        work = Path(tmp)
        mosquitto = start_mosquitto(work / "mosquitto")
        redis = start_redis(work / "redis")
        dbs = Databases()
        try:
            settings = Settings(
                _env_file=None,
                database_url=dbs.clone(),
                redis_url=f"redis://127.0.0.1:{redis.port}/0",
                mqtt_port=mosquitto.port,
                metrics_port=0,
                **{**TIME_OF_DAY_INDEPENDENT, **overrides},
            )
            yield BenchEnv(settings, mosquitto, redis, work)
        finally:
            mosquitto.stop()
            redis.stop()
            dbs.drop_all()


def seed_street(settings: Settings, elders: int, workdir: Path, seed: int = 7) -> None:
    from registry.importer import import_files
    from simulators.street import generate_street, write_ledger

    plan = Path(str(resources.files("simulators") / "data" / "chongqing_facility_plan.csv"))
    street = generate_street(plan, "渝中区", elders, seed)
    report = import_files(settings.database_url, write_ledger(street, workdir / "ledger"))
    if report.errors:
        raise SystemExit(f"bench: generated ledger did not import: {report.errors[:5]}")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mosquitto": mosq[0] if mosq else "?",
    }


def counter_total(metrics_url: str, name: str) -> float:
    """The sum over every label set of counter `name` in a worker's /metrics."""
    text = httpx.get(metrics_url, timeout=5).text
    prefix = name + "{"
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, ensure_ascii=False))
    return path


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
