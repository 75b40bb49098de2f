"""The home routine learned the way the worker learns it: rooms from devices.room and
signs of life from the telemetry store, through InactivityDetector.refresh (real
PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from carewatch.clock import ManualClock
from carewatch.db.pool import open_pool
from carewatch.settings import get_settings
from rules_engine.detectors.inactivity import InactivityDetector
from rules_engine.engine import Engine
from rules_engine.inputs import Inputs
from rules_engine.routine import RoutineBook
from rules_engine.timeconv import ms_to_dt
from tests.detector_sim import TZ, local_ms

MIN = 60_000
NOW = local_ms(28, 0)  # Saturday 28 Nov 2026, midnight: four days learned (24-27)
DEVICES = (
    ("P-BED", "pir", "卧室"),
    ("P-BATH", "pir", "卫生间"),
    ("P-LR", "pir", "客厅"),
    ("D1", "door", "门口"),
    ("W1", "wristband", None),
)


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES ('G1', '网格一', '渝中区', '解放碑街道')"
        )
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id, care_profile_id)"
            " VALUES ('E1', '张大爷', '渝中区', '解放碑街道', 29.56, 106.57, 'G1', 'alone')"
        )
        for device, kind, room in DEVICES:
            conn.execute(
                "INSERT INTO devices (id, elder_id, kind, room) VALUES (%s, 'E1', %s, %s)",
                (device, kind, room),
            )
    p = await open_pool(db_dsn, max_size=2)
    yield p
    await p.close()


def _day(day: int) -> list[tuple[int, str, dict[str, object]]]:
    """Bed until 07:00 (a toilet trip at 02:00), 10 min in the bathroom, the armchair
    13:00-15:30 with no motion, a walk 16:00-17:00, bed at 22:00."""
    at = lambda h, m=0: local_ms(day, h, m)  # noqa: E731
    motion: dict[str, object] = {"motion": True}
    rows = [(at(h), "P-BED", motion) for h in (0, 1)]
    rows += [(at(1, 45), "P-BED", motion), (at(2, 0), "P-BATH", motion)]
    rows += [(at(2, 5), "P-BATH", motion), (at(2, 12), "P-BED", motion), (at(7), "P-BED", motion)]
    rows += [(at(7, 5), "P-BATH", motion), (at(7, 15), "P-LR", motion)]
    rows += [(at(h), "P-LR", motion) for h in range(8, 14)]
    rows += [(at(15, 30), "P-LR", {"motion": False}), (at(15, 31), "P-LR", motion)]
    rows += [(at(16), "D1", {"event": "door_open"}), (at(17), "D1", {"event": "door_close"})]
    rows += [(at(h), "P-LR", motion) for h in range(17, 22)]
    rows += [(at(22), "P-BED", motion), (at(23), "P-BED", motion)]
    rows += [(at(12), "W1", {"steps": 100 * day})]  # no room: a sign, not a place
    return rows


async def test_the_worker_learns_the_home_routine_from_rooms_and_telemetry(
    pool: AsyncConnectionPool,
) -> None:
    rows = [r for day in (24, 25, 26, 27) for r in _day(day)]
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO telemetry (ts, device_id, elder_id, seq, data) VALUES (%s, %s, 'E1', %s, %s)",
            [(ms_to_dt(t), d, i, json.dumps(data)) for i, (t, d, data) in enumerate(rows)],
        )
    detector = InactivityDetector(RoutineBook(TZ), TZ)
    clock = ManualClock(NOW)
    assert detector.homes.get("E1", NOW) is None  # a miss queues the elder
    await Inputs(Engine([detector]), get_settings()).refresh(pool, clock)
    assert detector.rooms.room("P-BATH") == "卫生间" and detector.rooms.room("W1") is None
    home = detector.homes.get("E1", NOW)
    assert home is not None
    assert home.usual_still_s("客厅", 14) == pytest.approx(2.5 * 3600, rel=0.01)
    assert home.bathroom_stay_s == pytest.approx(12 * 60, rel=0.01)  # the night trip: 12 min
    assert home.night_exit_s == pytest.approx(12 * 60, rel=0.05)
    assert home.days >= 3
