"""Registry look-ups shared by workers (device -> elder, elder profile)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    elder_id: str
    kind: str


async def load_devices(pool: AsyncConnectionPool) -> dict[str, DeviceInfo]:
    """All registered devices by id (ingest keeps this in memory and refreshes it)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id, elder_id, kind FROM devices")
        rows = await cur.fetchall()
    return {
        r["id"]: DeviceInfo(r["id"], r["elder_id"], r["kind"])  # type: ignore[call-overload]
        for r in rows
    }
