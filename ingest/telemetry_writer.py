"""Batched COPY of accepted device messages into the `telemetry` table.

The rows go as COPY's binary format, packed here: psycopg's `write_row` adapts every
value through its dumpers (two datetimes per row built first), which made the COPY the
largest single cost of a flush. Packing is a few `struct` calls per row; the server
still checks every value (timestamps in range, jsonb parsed), so a bad row fails the
batch as before and the flusher isolates it.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

from psycopg import AsyncConnection

from ingest.validate import TelemetryRow

_COPY = (
    "COPY telemetry (ts, received_at, device_id, elder_id, seq, data) FROM STDIN (FORMAT BINARY)"
)

# PostgreSQL COPY binary format: signature, flags, header extension length ... tuples ...
# trailer (-1). timestamptz is int64 microseconds since 2000-01-01 UTC; jsonb is a version
# byte (1) followed by the JSON text.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_PG_EPOCH_MS = 946_684_800_000
_FIELDS = 6
_TIMES = struct.Struct(">hiqiq")  # field count, ts, received_at (each with its length)
_LENGTH = struct.Struct(">i")
_SEQ_AND_DATA = struct.Struct(">iqib")  # seq, length of data, jsonb version
_JSONB_VERSION = 1


@functools.lru_cache(maxsize=1 << 18)
def _ids(device_id: str, elder_id: str) -> bytes:
    """The device_id and elder_id fields: the same for every row of a device."""
    device, elder = device_id.encode(), elder_id.encode()
    return _LENGTH.pack(len(device)) + device + _LENGTH.pack(len(elder)) + elder


def encode_rows(rows: Sequence[TelemetryRow]) -> bytearray:
    """The whole COPY stream for `rows`, signature to trailer."""
    out = bytearray(_SIGNATURE)
    times, seq_and_data = _TIMES.pack, _SEQ_AND_DATA.pack
    for row in rows:
        out += times(
            _FIELDS,
            8,
            (row.ts_ms - _PG_EPOCH_MS) * 1000,
            8,
            (row.received_ms - _PG_EPOCH_MS) * 1000,
        )
        out += _ids(row.device_id, row.elder_id)
        out += seq_and_data(8, row.seq, len(row.data) + 1, _JSONB_VERSION)
        out += row.data
    out += _TRAILER
    return out  # not bytes(out): psycopg takes the buffer as it is, a copy would cost


async def copy_rows(conn: AsyncConnection[object], rows: Sequence[TelemetryRow]) -> None:
    """One COPY for the whole batch (no per-row round trips)."""
    if not rows:
        return
    async with conn.cursor() as cur, cur.copy(_COPY) as copy:
        await copy.write(encode_rows(rows))
