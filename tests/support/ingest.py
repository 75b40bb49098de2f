"""The smallest registry the ingest tests need."""

from __future__ import annotations

import psycopg

TS = 1_764_000_000_000
ELDER = "E1"
WRISTBAND = "W1"
DOOR = "D1"


def insert_registry(dsn: str) -> None:
    """The smallest registry: one grid, one elder, a wristband and a door sensor."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES (%s, %s, %s, %s)",
            ("G1", "解放碑网格一", "渝中区", "解放碑街道"),
        )
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (ELDER, "张桂英", "渝中区", "解放碑街道", 29.557, 106.577, "G1"),
        )
        for device_id, kind in ((WRISTBAND, "wristband"), (DOOR, "door")):
            conn.execute(
                "INSERT INTO devices (id, elder_id, kind) VALUES (%s, %s, %s)",
                (device_id, ELDER, kind),
            )
