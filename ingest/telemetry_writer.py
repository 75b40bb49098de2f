"""Batched COPY of accepted device messages into the `telemetry` table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from psycopg import AsyncConnection

from ingest.validate import TelemetryRow

_COPY = "COPY telemetry (ts, received_at, device_id, elder_id, seq, data) FROM STDIN"


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def copy_rows(conn: AsyncConnection[object], rows: Sequence[TelemetryRow]) -> None:
    """One COPY for the whole batch (no per-row round trips)."""
    if not rows:
        return
    async with conn.cursor() as cur, cur.copy(_COPY) as copy:
        for row in rows:
            # data goes as text: the server parses it into jsonb.
            await copy.write_row(
                (
                    _time(row.ts_ms),
                    _time(row.received_ms),
                    row.device_id,
                    row.elder_id,
                    row.seq,
                    row.data.decode(),
                )
            )
