"""Storage: raw psycopg COPY of telemetry rows vs ingest's telemetry writer.

    .venv/bin/python -m bench.storage --rows 100000

Both write the same N rows (ingest's own validation of realistic wristband payloads)
into the real `telemetry` table (its indexes and partitions included), in batches of
ingest_batch_size, one transaction per batch:

(a) raw limit: synchronous psycopg `cursor.copy()` + `write_row` of prepared tuples;
(b) `ingest.telemetry_writer.copy_rows` on an async connection, as the flusher uses it.

Each is run twice, alternating, on an emptied table; the best run of each counts (the
machine is shared, so the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.common import bench_env, table, write_results
from bench.traffic import fleet, messages_for, register_fleet
from carewatch.db.registry import DeviceInfo
from ingest.telemetry_writer import copy_rows
from ingest.validate import Accepted, TelemetryRow, validate

ROUNDS = 2


def make_rows(devices: int, count: int) -> list[TelemetryRow]:
    members = fleet(devices)
    registry = {d.device_id: DeviceInfo(d.device_id, d.elder_id, "wristband") for d in members}
    rows = []
    for m in messages_for(members, count):
        result = validate(
            m.topic, m.payload, registry, received_ms=m.ts_ms + 300, max_payload_bytes=65536
        )
        assert isinstance(result, Accepted) and result.row is not None
        rows.append(result.row)
    return rows


def _batches(rows: list[TelemetryRow], size: int) -> list[list[TelemetryRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# psycopg adapting prepared Python values, text format: the plain way to COPY
RAW_COPY = "COPY telemetry (ts, received_at, device_id, elder_id, seq, data) FROM STDIN"


def raw_copy(dsn: str, rows: list[TelemetryRow], batch: int) -> float:
    def t(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    # prepared beforehand: the limit is what COPY itself costs
    prepared = [
        [
            (t(r.ts_ms), t(r.received_ms), r.device_id, r.elder_id, r.seq, r.data.decode())
            for r in part
        ]
        for part in _batches(rows, batch)
    ]
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for part in prepared:
            with conn.transaction(), conn.cursor() as cur, cur.copy(RAW_COPY) as copy:
                for row in part:
                    copy.write_row(row)
        return len(rows) / (time.perf_counter() - started)


async def writer_copy(dsn: str, rows: list[TelemetryRow], batch: int) -> float:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        started = time.perf_counter()
        for part in _batches(rows, batch):
            async with conn.transaction():
                await copy_rows(conn, part)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


def _empty(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE telemetry")
        conn.execute("VACUUM ANALYZE telemetry")


def run(rows: int = 100_000, devices: int = 5_000) -> dict[str, Any]:
    data = make_rows(devices, rows)
    raw_runs: list[float] = []
    writer_runs: list[float] = []
    with bench_env(log_level="WARNING") as env:
        dsn = env.settings.database_url
        batch = env.settings.ingest_batch_size
        register_fleet(dsn, fleet(devices))
        for _ in range(ROUNDS):
            _empty(dsn)
            raw_runs.append(raw_copy(dsn, data, batch))
            _empty(dsn)
            writer_runs.append(asyncio.run(writer_copy(dsn, data, batch)))
    result = {
        "rows": rows,
        "batch": batch,
        "raw_runs_rows_s": raw_runs,
        "writer_runs_rows_s": writer_runs,
        "raw_rows_s": max(raw_runs),
        "writer_rows_s": max(writer_runs),
        "ratio": max(writer_runs) / max(raw_runs),
    }
    write_results("storage", result)
    return result


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            f"storage: telemetry_writer.copy_rows (batches of {r['batch']})",
            f"{r['writer_rows_s']:.0f} rows/s",
            f"{r['raw_rows_s']:.0f} rows/s (psycopg COPY)",
            f"{r['ratio']:.2f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=5_000)
    args = parser.parse_args()
    r = run(args.rows, args.devices)
    print(table([("what", "measured", "limit (same run)", "ratio"), *summary_rows(r)]))
    print(
        "runs: raw "
        + ", ".join(f"{x:.0f}" for x in r["raw_runs_rows_s"])
        + "; writer "
        + ", ".join(f"{x:.0f}" for x in r["writer_runs_rows_s"])
    )


if __name__ == "__main__":
    main()
