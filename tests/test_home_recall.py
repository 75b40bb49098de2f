"""After a restart the rules worker rebuilds what it knew of a home from the telemetry
store (real PostgreSQL): the elder's whereabouts (a bathroom stay or a night bed exit that
began before the restart) and each home sensor's last report (a sensor that never
reports again is still found)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from carewatch.db.pool import open_pool
from carewatch.settings import get_settings
from rules_engine.detectors.home_sensors import SILENT_RULE, STUCK_RULE, HomeSensorHealthDetector
from rules_engine.detectors.inactivity import BATHROOM_RULE, NIGHT_EXIT_RULE, InactivityDetector
from rules_engine.engine import Engine
from rules_engine.home_routine import HomeRoutine, HomeRoutineBook, RoomBook
from rules_engine.inputs import Inputs
from rules_engine.routine import RoutineBook
from rules_engine.timeconv import ms_to_dt
from tests.detector_sim import ELDER, TZ, Sim, local_ms, thresholds

DEVICES = (
    ("P-BED", "pir", "卧室"),
    ("P-BATH", "pir", "卫生间"),
    ("P-LR", "pir", "客厅"),
    ("D1", "door", "门口"),
)
HOME = HomeRoutine(
    still_s={("客厅", h): 3 * 3600.0 for h in range(24)},
    bathroom_stay_s=10 * 60.0,
    night_exit_s=10 * 60.0,
    rise_h=18.5,
    days=14,
)


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES ('G1', '网格一', '渝中区', '解放碑街道')"
        )
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id, care_profile_id)"
            " VALUES (%s, '张大爷', '渝中区', '解放碑街道', 29.56, 106.57, 'G1', 'alone')",
            (ELDER,),
        )
        for device, kind, room in DEVICES:
            conn.execute(
                "INSERT INTO devices (id, elder_id, kind, room) VALUES (%s, %s, %s, %s)",
                (device, ELDER, kind, room),
            )
    p = await open_pool(db_dsn, max_size=2)
    yield p
    await p.close()


async def _store(pool: AsyncConnectionPool, rows: list[tuple[int, str, dict[str, object]]]) -> None:
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO telemetry (ts, device_id, elder_id, seq, data) VALUES (%s, %s, %s, %s, %s)",
            [(ms_to_dt(t), d, ELDER, i, json.dumps(data)) for i, (t, d, data) in enumerate(rows)],
        )


def _restarted() -> Sim:
    """A worker started afresh: rooms from the ledger, the learned routine, no memory."""
    rooms = RoomBook()
    for device, _kind, room in DEVICES:
        rooms.put(device, room, "door" if device == "D1" else "pir")
    homes = HomeRoutineBook(TZ, refresh_every_s=30 * 86_400.0)  # not relearned here
    homes.put(ELDER, HOME, local_ms(24, 0))
    engine = Engine(
        [InactivityDetector(RoutineBook(TZ), TZ, rooms, homes), HomeSensorHealthDetector(rooms)]
    )
    sim = Sim(engine, thresholds())
    sim.clock._now = local_ms(24, 0)
    return sim


async def test_a_night_bed_exit_before_the_restart_is_known_after_it(
    pool: AsyncConnectionPool,
) -> None:
    motion: dict[str, object] = {"motion": True}
    await _store(
        pool,
        [
            (local_ms(24, 22, 0), "P-BED", motion),  # in bed from 22:00
            (local_ms(25, 1, 0), "P-BED", motion),
            (local_ms(25, 1, 59), "P-BED", motion),  # gets up
            (local_ms(25, 2, 0), "P-BATH", motion),  # the bathroom; the worker restarts
        ],
    )
    s = _restarted()
    s.at(local_ms(25, 2, 3), "P-BATH", "pir", motion=True)  # the first sign it sees
    # without the store it would count the stay and the exit from 02:03
    await Inputs(s.engine, get_settings()).refresh(pool, s.clock)
    s.at(local_ms(25, 2, 4), "P-BATH", "pir", motion=True)  # then nothing: fell
    s.run_until(local_ms(25, 3, 0))
    [alert] = [a for a in s.opened.values() if a.kind == "inactivity"]
    assert alert.rule in (BATHROOM_RULE, NIGHT_EXIT_RULE)
    assert alert.device_time_ms == local_ms(25, 2, 30)  # 30 min from 02:00, not from 02:03
    assert alert.details["bed_exit_ms"] == local_ms(25, 2, 0)


async def test_a_sensor_silent_since_before_the_restart_is_found_after_it(
    pool: AsyncConnectionPool,
) -> None:
    await _store(
        pool,
        [
            (local_ms(20, 9, 0), "D1", {"event": "door_close"}),  # its last report: 4 days
            (local_ms(24, 6, 0), "P-LR", {"motion": True}),  # motion on, then nothing (stuck)
            (local_ms(24, 11, 0), "P-BED", {"motion": True}),
        ],
    )
    s = _restarted()
    s.at(local_ms(24, 11, 30), "P-BED", "pir", motion=True)
    assert [a for a in s.opened.values() if a.kind == "device_offline"] == []  # not known yet
    await Inputs(s.engine, get_settings()).refresh(pool, s.clock)
    s.at(local_ms(24, 11, 40), "P-BED", "pir", motion=True)
    [alert] = [a for a in s.opened.values() if a.kind == "device_offline"]
    assert alert.rule == SILENT_RULE
    assert alert.device_id == "D1"
    assert alert.details["last_seen_ms"] == local_ms(20, 9, 0)
    assert alert.details["others"] == ["P-LR"]  # stuck too, folded into the one alert
    detector = s.detector.detectors[1]  # type: ignore[attr-defined]
    assert isinstance(detector, HomeSensorHealthDetector)
    assert detector._reports[ELDER]["P-LR"][1].active  # the stored state: motion on
    assert STUCK_RULE != SILENT_RULE


async def test_a_sensor_never_in_telemetry_falls_back_to_last_seen(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE devices SET last_seen = %s WHERE id = 'D1'", (ms_to_dt(local_ms(10, 9, 0)),)
        )
    s = _restarted()
    s.at(local_ms(24, 11, 30), "P-BED", "pir", motion=True)
    await Inputs(s.engine, get_settings()).refresh(pool, s.clock)
    s.at(local_ms(24, 11, 40), "P-BED", "pir", motion=True)
    [alert] = [a for a in s.opened.values() if a.kind == "device_offline"]
    assert (alert.device_id, alert.details["last_seen_ms"]) == ("D1", local_ms(10, 9, 0))
