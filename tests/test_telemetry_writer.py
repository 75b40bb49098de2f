"""ingest.telemetry_writer packs COPY's binary format by hand: real PostgreSQL reads back
exactly what was written, and refuses a bad value instead of storing something else."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.telemetry_writer import copy_rows
from ingest.validate import TelemetryRow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def row(
    seq: int, data: object, *, ts_ms: int = 1_764_000_000_123, elder: str = "E1"
) -> TelemetryRow:
    return TelemetryRow(
        ts_ms=ts_ms,
        received_ms=ts_ms + 450,
        topic="cw/v1/dev/W1/telemetry",
        device_id="W1",
        elder_id=elder,
        seq=seq,
        data=json.dumps(data, ensure_ascii=False).encode(),
    )


async def write(dsn: str, rows: list[TelemetryRow]) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            await copy_rows(conn, rows)
        cur = await conn.execute(
            "SELECT ts, received_at, device_id, elder_id, seq, data FROM telemetry ORDER BY seq"
        )
        return await cur.fetchall()


async def test_rows_read_back_exactly(db_dsn: str) -> None:
    rows = [
        row(1, {"hr": 72, "battery": 64}),
        row(2, {"note": 'tab\there "quoted" \\ back\nslash', "名字": "张桂英"}, elder="老人-七号"),
        row(2**53, {}, ts_ms=9_999_999_999_999),  # the largest seq and device time accepted
        row(4, {"accel": {"hz": 50.0, "x": [0.0, -2.5e-3], "y": [-9.81], "z": [0.1]}}),
    ]
    stored = await write(db_dsn, rows)
    assert len(stored) == len(rows)
    for written, (ts, received_at, device_id, elder_id, seq, data) in zip(
        sorted(rows, key=lambda r: r.seq), stored, strict=True
    ):
        assert ts == at(written.ts_ms)
        assert received_at == at(written.received_ms)
        assert (device_id, elder_id, seq) == (written.device_id, written.elder_id, written.seq)
        assert data == json.loads(written.data)


async def test_a_value_the_server_refuses_fails_the_copy(db_dsn: str) -> None:
    bad = TelemetryRow(1_764_000_000_000, 1_764_000_000_000, "t", "W1", "E1", 1, b"{not json")
    with pytest.raises(psycopg.DataError):
        await write(db_dsn, [row(1, {"hr": 70}), bad])


# the database is the test's own; emptied for each example
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.dictionaries(
        st.text(max_size=12),
        st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=40), st.booleans(), st.none()),
        max_size=6,
    ),
    seq=st.integers(0, 2**53),
    ts_ms=st.integers(1_000_000_000_000, 10_000_000_000_000),
)
def test_any_accepted_row_round_trips(
    db_dsn: str, data: dict[str, object], seq: int, ts_ms: int
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE telemetry")
    # NUL cannot be stored in jsonb text; msgspec escapes it as \u0000, which jsonb refuses too
    data = {
        k: v
        for k, v in data.items()
        if "\x00" not in k and not (isinstance(v, str) and "\x00" in v)
    }
    stored = asyncio.run(write(db_dsn, [row(seq, data, ts_ms=ts_ms)]))
    assert stored[0][4] == seq and stored[0][5] == data
    assert stored[0][0] == at(ts_ms)
