"""The silence sweep and the learned routine against a real PostgreSQL (private DB)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from carewatch.db.pool import open_pool
from rules_engine.device_sweep import sweep
from rules_engine.localtime import hour_of_week
from rules_engine.routine import RoutineBook, learn_routine, load_slot_gaps
from rules_engine.timeconv import ms_to_dt
from tests.detector_sim import TZ, local_ms

NOW = local_ms(30, 12)  # Monday 30 Nov 2026, noon
MIN = 60_000


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES ('G1', '网格一', '渝中区', '解放碑街道')"
        )
        for elder, profile in (("E1", "standard"), ("E2", "alone")):
            conn.execute(
                "INSERT INTO elders (id, name, district, street, lat, lon, grid_id, care_profile_id)"
                " VALUES (%s, '张大爷', '渝中区', '解放碑街道', 29.56, 106.57, 'G1', %s)",
                (elder, profile),
            )
    p = await open_pool(db_dsn, max_size=2)
    yield p
    await p.close()


async def add_band(
    pool: AsyncConnectionPool, device: str, elder: str, silent_min: float | None
) -> None:
    last_seen = None if silent_min is None else ms_to_dt(NOW - round(silent_min * MIN))
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO devices (id, elder_id, kind, last_seen) VALUES (%s, %s, 'wristband', %s)",
            (device, elder, last_seen),
        )


async def timers(pool: AsyncConnectionPool) -> dict[str, dict[str, Any]]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT id, kind, elder_id, due_at, payload FROM rule_timers")
        return {r["id"]: r for r in await cur.fetchall()}


async def test_sweep_arms_one_due_timer_per_silence_by_the_profile_threshold(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:  # elders living alone: offline after 10 min
        await conn.execute(
            "UPDATE care_profiles SET thresholds = %s WHERE id = 'alone'",
            (json.dumps({"device_offline_s": 600}),),
        )
    await add_band(pool, "W1", "E1", silent_min=31)  # standard: 30 min -> silent
    await add_band(pool, "W2", "E1", silent_min=20)  # standard: still fine
    await add_band(pool, "W3", "E2", silent_min=11)  # alone: silent
    await add_band(pool, "W4", "E2", silent_min=None)  # never seen: not judged

    swept = await sweep(pool, NOW, 1800.0, shards=4)

    assert (swept.silent, swept.back) == (2, 0)
    armed = await timers(pool)
    assert {t["payload"]["device_id"] for t in armed.values()} == {"W1", "W3"}
    w1 = next(t for t in armed.values() if t["payload"]["device_id"] == "W1")
    assert (w1["kind"], w1["elder_id"], w1["due_at"]) == ("device-offline", "E1", ms_to_dt(NOW))
    assert w1["payload"]["last_seen_ms"] == NOW - 31 * MIN
    # the next sweep finds the same silences already armed
    assert (await sweep(pool, NOW + MIN, 1800.0, shards=4)).silent == 0
    assert len(await timers(pool)) == 2


async def test_sweep_arms_a_back_timer_for_an_offline_alert_whose_band_was_heard(
    pool: AsyncConnectionPool,
) -> None:
    await add_band(pool, "W1", "E1", silent_min=1)
    async with pool.connection() as conn:
        for alert_id, status in (
            ("00000000-0000-0000-0000-000000000001", "resolved"),  # closed: not swept
            ("00000000-0000-0000-0000-000000000002", "open"),
        ):
            await conn.execute(
                "INSERT INTO alerts (id, elder_id, device_id, kind, severity, status,"
                " source_event_id, device_time, rule)"
                " VALUES (%s, 'E1', 'W1', 'device_offline', 'warning', %s, %s, %s,"
                " 'device.silent')",
                (alert_id, status, f"src-{alert_id}", ms_to_dt(NOW)),
            )
    swept = await sweep(pool, NOW, 1800.0, shards=4)
    assert swept.back == 0  # not heard from since it opened
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE devices SET last_seen = %s WHERE id = 'W1'", (ms_to_dt(NOW + MIN),)
        )
    assert (await sweep(pool, NOW + 2 * MIN, 1800.0, shards=4)).back == 1
    [back] = [t for t in (await timers(pool)).values() if t["kind"] == "device-back"]
    assert back["id"] == "device-back:00000000-0000-0000-0000-000000000002"


async def test_routine_is_learned_from_the_telemetry_store(pool: AsyncConnectionPool) -> None:
    """Four weeks of an elder who moves every 20 min by day and naps 13:00-16:00."""
    rows = []
    seq = 0
    for week in range(4):
        for day in range(7):
            start = local_ms(2, 8) + (week * 7 + day) * 86_400_000  # from Mon 2 Nov 2026
            t = start
            while t < start + 14 * 3_600_000:  # 08:00-22:00
                if not (local_ms(2, 13) <= t - (week * 7 + day) * 86_400_000 < local_ms(2, 16)):
                    seq += 1
                    rows.append((ms_to_dt(t), "P1", "E1", seq, json.dumps({"motion": True})))
                t += 20 * MIN
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO telemetry (ts, device_id, elder_id, seq, data) VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    gaps = await load_slot_gaps(pool, "E1", NOW, weeks=4, tz=TZ)
    routine = learn_routine(gaps, min_weeks=3)
    monday_nap = hour_of_week(local_ms(30, 12, 40), TZ)  # the last motion before the nap
    assert routine.usual_gap_s(monday_nap) == pytest.approx(3 * 3600 + 20 * 60)
    assert routine.usual_gap_s(hour_of_week(local_ms(30, 10), TZ)) == pytest.approx(20 * 60)
    # the book learns it through refresh(), as the timer loop runs it
    book = RoutineBook(TZ)
    assert book.get("E1", NOW) is None

    class Now:
        def now_ms(self) -> int:
            return NOW

    await book.refresh(pool, Now())
    learned = book.get("E1", NOW)
    assert learned is not None and learned.usual_gap_s(monday_nap) == routine.usual_gap_s(
        monday_nap
    )
    assert timedelta(seconds=routine.usual_gap_s(monday_nap) or 0) > timedelta(hours=3)
