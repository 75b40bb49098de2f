"""Devices' last_seen / last_seq / battery / online, merged per batch, one UPDATE."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from psycopg import AsyncConnection

from ingest.validate import DeviceUpdate

_UPDATE = """
UPDATE devices AS d SET
    last_seen = GREATEST(d.last_seen, u.last_seen),
    last_seq = COALESCE(u.last_seq, d.last_seq),
    battery = COALESCE(u.battery, d.battery),
    online = u.online
FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[], %s::int[], %s::bool[])
    AS u(id, last_seen, last_seq, battery, online)
WHERE d.id = u.id
"""


def merge(updates: Iterable[DeviceUpdate]) -> dict[str, DeviceUpdate]:
    """Fold updates in arrival order: the latest message wins, unset fields keep older values."""
    merged: dict[str, DeviceUpdate] = {}
    for new in updates:
        old = merged.get(new.device_id)
        if old is None:
            merged[new.device_id] = new
            continue
        merged[new.device_id] = DeviceUpdate(
            device_id=new.device_id,
            received_ms=max(old.received_ms, new.received_ms),
            online=new.online,
            seq=new.seq if new.seq is not None else old.seq,
            battery=new.battery if new.battery is not None else old.battery,
        )
    return merged


async def apply_updates(conn: AsyncConnection[object], updates: dict[str, DeviceUpdate]) -> None:
    if not updates:
        return
    rows = list(updates.values())
    await conn.execute(
        _UPDATE,
        (
            [u.device_id for u in rows],
            [datetime.fromtimestamp(u.received_ms / 1000, tz=UTC) for u in rows],
            [u.seq for u in rows],
            [u.battery for u in rows],
            [u.online for u in rows],
        ),
    )
