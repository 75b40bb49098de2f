"""Ingest's per-batch device update (one JSON parameter) against real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from ingest.device_state import apply_updates, merge
from ingest.validate import DeviceUpdate
from tests.support.ingest import insert_registry

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = 1_764_000_000_123


async def apply(dsn: str, updates: list[DeviceUpdate]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        await apply_updates(conn, merge(updates))


def device(dsn: str, device_id: str) -> tuple[object, ...]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT last_seen, last_seq, battery, online FROM devices WHERE id = %s", (device_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


async def test_latest_message_wins_and_unset_fields_keep_older_values(db_dsn: str) -> None:
    insert_registry(db_dsn)
    await apply(
        db_dsn,
        [
            DeviceUpdate("W1", MS, online=True, seq=7, battery=64),
            DeviceUpdate("W1", MS + 999, online=True, seq=8),  # no battery in this one
            DeviceUpdate("D1", MS, online=False),
            DeviceUpdate("NOT-REGISTERED", MS, online=True, seq=1),
        ],
    )
    assert device(db_dsn, "W1") == (EPOCH + timedelta(milliseconds=MS + 999), 8, 64, True)
    assert device(db_dsn, "D1") == (EPOCH + timedelta(milliseconds=MS), None, None, False)

    # a batch carrying an older reception time never moves last_seen back
    await apply(db_dsn, [DeviceUpdate("W1", MS - 60_000, online=False, battery=63)])
    assert device(db_dsn, "W1") == (EPOCH + timedelta(milliseconds=MS + 999), 8, 63, False)


async def test_updates_touch_no_index(db_dsn: str) -> None:
    """Every device is updated about once a minute: each update must be a HOT update
    (no indexed column changed, room on the page), or it rewrites every index."""
    insert_registry(db_dsn)
    async with await psycopg.AsyncConnection.connect(db_dsn) as conn, conn.transaction():
        updates = [DeviceUpdate("W1", MS, True, 9, 50), DeviceUpdate("D1", MS, True, 3)]
        for round_ in range(3):
            shifted = [DeviceUpdate(u.device_id, u.received_ms + round_, True) for u in updates]
            await apply_updates(conn, merge(shifted))
        cur = await conn.execute(
            "SELECT pg_stat_get_xact_tuples_updated('devices'::regclass),"
            " pg_stat_get_xact_tuples_hot_updated('devices'::regclass)"
        )
        assert await cur.fetchone() == (6, 6)
