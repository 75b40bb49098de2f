"""Every benchmark, one after the other, and one summary table (`./run bench`).

    .venv/bin/python -m bench.all            # full sizes, ~10 min on 2 cores
    .venv/bin/python -m bench.all --quick    # small sizes, a smoke run of every benchmark

Each benchmark also runs on its own (`python -m bench.<name> --help`) and writes its
figures to bench/results/<name>.json; this writes bench/results/summary.json too.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import bus_throughput, ingest_throughput, memory, sos_latency, storage
from bench.common import machine, table, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    q = args.quick
    started = time.monotonic()
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, Any] = {}

    def step(name: str) -> None:
        print(f"[bench] {name} ... ({time.monotonic() - started:.0f} s so far)", flush=True)

    step("ingest throughput")
    figures["ingest"] = ingest_throughput.run(*((5_000, 500) if q else (50_000, 5_000)))
    rows += ingest_throughput.summary_rows(figures["ingest"])
    step("bus throughput")
    figures["bus"] = bus_throughput.run(*((5_000, 500) if q else (20_000, 5_000)))
    rows += bus_throughput.summary_rows(figures["bus"])
    step("storage")
    figures["storage"] = storage.run(*((10_000, 500) if q else (100_000, 5_000)))
    rows += storage.summary_rows(figures["storage"])
    step("memory")
    figures["memory"] = memory.run([500, 2_000] if q else [1_000, 10_000, 100_000])
    rows += memory.summary_rows(figures["memory"])
    step("SOS latency")
    levels = [0.0, 1000.0] if q else [0.0, 1000.0, 5000.0, 10000.0]
    figures["sos"] = sos_latency.run(20 if q else 100, levels, 0.05)
    rows += sos_latency.summary_rows(figures["sos"])

    print()
    print(table([("benchmark", "measured", "limit (same run)", "ratio"), *rows]))
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['mosquitto']}")
    print(f"total {time.monotonic() - started:.0f} s")
    write_results("summary", {"rows": rows, "seconds": time.monotonic() - started})


if __name__ == "__main__":
    main()
