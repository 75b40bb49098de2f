"""Shared set-up of the notifier tests: a seeded registry, alerts, a running worker.

The registry: one grid with its grid worker, an elder with home coordinates and a
wristband, two family contacts, two stations (the nearer one unstaffed, the farther
one staffed round the clock) and the district duty officer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import redis.asyncio as aioredis

from carewatch.alerts import change_id
from carewatch.bus import ALERTS_STREAM, make_bus
from carewatch.messages import AlertChange, encode
from carewatch.settings import Settings
from harness.services import await_until
from notifier import worker
from notifier.worker import CONSUMER_GROUP

DISTRICT = "渝中区"
ELDER_ID = "E1"
ELDER_NAME = "王秀英"
ELDER_LAT, ELDER_LON = 29.5630, 106.5770
DEVICE_ID = "W1"
GRID_WORKER_ID = "GW1"
GRID_WORKER_PHONE = "13800000001"
FAMILY_1_PHONE = "13800000002"
FAMILY_2_PHONE = "13800000003"
NEAR_UNSTAFFED = "ST_NEAR"
FAR_STAFFED = "ST_FAR"
STATION_PHONE = "13800000004"
DUTY_OFFICER_ID = "DO1"

SEED_SQL = [
    (
        "INSERT INTO grids (id, name, district, street) VALUES ('G1', '民族路网格', %s, '解放碑街道')",
        (DISTRICT,),
    ),
    (
        "INSERT INTO grid_workers (id, name, phone, wecom_userid, grid_id)"
        " VALUES (%s, '张三', %s, 'zhangsan', 'G1')",
        (GRID_WORKER_ID, GRID_WORKER_PHONE),
    ),
    (
        "INSERT INTO elders (id, name, district, street, address, lat, lon, grid_id, lives_alone)"
        " VALUES (%s, %s, %s, '解放碑街道', '民族路1号3单元502', %s, %s, 'G1', true)",
        (ELDER_ID, ELDER_NAME, DISTRICT, ELDER_LAT, ELDER_LON),
    ),
    (
        "INSERT INTO contacts (elder_id, priority, name, relation, phone, wecom_userid)"
        " VALUES (%s, 1, '李四', '女儿', %s, 'lisi'), (%s, 2, '李五', '儿子', %s, NULL)",
        (ELDER_ID, FAMILY_1_PHONE, ELDER_ID, FAMILY_2_PHONE),
    ),
    # ~0.3 km away but unstaffed; ~2 km away, staffed 24 h (start == end).
    (
        "INSERT INTO stations (id, name, kind, district, lat, lon, phone, wecom_userid, staffed,"
        " duty_start, duty_end) VALUES"
        " (%s, '民族路互助点', 'village_point', %s, 29.5650, 106.5790, '13800000005', NULL,"
        "  false, '00:00', '00:00'),"
        " (%s, '解放碑养老服务站', 'community_station', %s, 29.5450, 106.5700, %s, 'station_far',"
        "  true, '00:00', '00:00')",
        (NEAR_UNSTAFFED, DISTRICT, FAR_STAFFED, DISTRICT, STATION_PHONE),
    ),
    (
        "INSERT INTO duty_officers (id, district, name, phone, wecom_userid)"
        " VALUES (%s, %s, '赵值班', '13800000009', 'zhaozhiban')",
        (DUTY_OFFICER_ID, DISTRICT),
    ),
    (
        "INSERT INTO devices (id, elder_id, kind) VALUES (%s, %s, 'wristband')",
        (DEVICE_ID, ELDER_ID),
    ),
]


def seed_registry(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for statement, params in SEED_SQL:
            conn.execute(statement, params)


def insert_alert(
    dsn: str, *, kind: str = "sos", severity: str = "critical", status: str = "open"
) -> str:
    alert_id = str(uuid.uuid4())
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO alerts (id, elder_id, device_id, kind, severity, status,"
            " source_event_id, device_time, rule) VALUES (%s, %s, %s, %s, %s, %s, %s, now(), %s)",
            (alert_id, ELDER_ID, DEVICE_ID, kind, severity, status, f"{alert_id}:1", kind),
        )
    return alert_id


def change(alert_id: str, status: str = "open", version: int = 1, **kw: Any) -> AlertChange:
    now = time.time_ns() // 1_000_000
    return AlertChange(
        id=change_id(alert_id, status, version),  # type: ignore[arg-type]
        alert_id=alert_id,
        elder_id=ELDER_ID,
        kind=kw.get("kind", "sos"),
        severity=kw.get("severity", "critical"),
        status=status,  # type: ignore[arg-type]
        device_time_ms=now,
        changed_ms=now,
        actor=kw.get("actor"),
    )


def query(dsn: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


async def publish_changes(settings: Settings, *changes: AlertChange) -> None:
    bus = make_bus(settings)
    await bus.start()
    try:
        for c in changes:
            await bus.publish(ALERTS_STREAM, encode(c))
    finally:
        await bus.stop()


async def group_state(settings: Settings) -> dict[str, Any] | None:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        groups = await client.xinfo_groups(ALERTS_STREAM)
    except aioredis.ResponseError:  # no stream yet
        return None
    finally:
        await client.aclose()
    found = [g for g in groups if g["name"] == CONSUMER_GROUP]
    return found[0] if found else None


async def wait_consumed(settings: Settings) -> None:
    """Until the notifier group has taken and acknowledged every alert change."""

    async def done() -> bool:
        g = await group_state(settings)
        return g is not None and g["pending"] == 0 and g["lag"] == 0

    await await_until(done, 10, "notifier to consume every alert change")


@contextlib.asynccontextmanager
async def running_notifier(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The notifier worker in this process, ready once its consumer group exists."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings, stop))

    async def ready() -> bool:
        if task.done():
            task.result()  # raise what made it stop
        return await group_state(settings) is not None

    try:
        await await_until(ready, 15, "notifier consumer group")
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def notifier_settings(settings: Settings, **overrides: Any) -> Settings:
    """Short waits so escalation and retries happen within a test."""
    values: dict[str, Any] = {
        "escalation_wait_s": 0.5,
        "outbox_poll_ms": 50,
        "outbox_backoff_base_s": 0.2,
        "outbox_lease_s": 1.0,
        "provider_timeout_s": 2.0,
    }
    return settings.model_copy(update={**values, **overrides})
