"""The rules worker for the tests: settings, the bus in and out, a running worker, and
what the tests read back (alerts, timelines, metrics)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from carewatch import bus
from carewatch.clock import Clock, SystemClock
from carewatch.messages import AlertChange, Event, EventType, decode_alert_change, encode
from carewatch.settings import Settings
from harness.services import await_until
from rules_engine.worker import GROUP, run

ELDER = "E1"


@pytest.fixture
def rules_settings(settings: Settings) -> Iterator[Settings]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES ('G1', '网格一', '渝中区', '解放碑街道')"
        )
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id, care_profile_id)"
            " VALUES (%s, '张大爷', '渝中区', '解放碑街道', 29.56, 106.57, 'G1', 'standard')",
            (ELDER,),
        )
        conn.execute(
            "INSERT INTO devices (id, elder_id, kind) VALUES"
            " ('W1', %s, 'wristband'), ('W2', %s, 'wristband'), ('R1', %s, 'radar')",
            (ELDER, ELDER, ELDER),
        )
    yield settings.model_copy(
        update={
            "bus_shards": 2,
            "timer_poll_ms": 50,
            "sos_cancel_window_s": 10.0,
            "fall_confirm_window_s": 30.0,
        }
    )


# --- helpers --------------------------------------------------------------------------

_seq = iter(range(1, 1_000_000))


def event(
    kind: EventType,
    device: str = "W1",
    *,
    after: Event | None = None,
    dt_ms: int = 0,
    device_kind: str = "wristband",
) -> Event:
    """An event at device time `dt_ms` after `after` (or after now)."""
    now = time.time_ns() // 1_000_000
    base = after.device_time_ms if after is not None else now
    seq = next(_seq)
    return Event(
        id=f"{device}:{seq}",
        elder_id=ELDER,
        device_id=device,
        device_kind=device_kind,
        type="event",
        device_time_ms=base + dt_ms,
        received_ms=now,
        seq=seq,
        event=kind,
    )


@dataclass
class Feed:
    """AlertChanges as a consumer of the alerts stream sees them.

    `deliveries` is every message; `changes` drops repeated ids, as real consumers do
    (at-least-once: a slow worker's entry may be reclaimed and its changes republished).
    """

    deliveries: list[AlertChange] = field(default_factory=list)

    @property
    def changes(self) -> list[AlertChange]:
        unique = {c.id: c for c in reversed(self.deliveries)}
        return sorted(unique.values(), key=self.deliveries.index)

    def of(self, alert_id: str) -> list[AlertChange]:
        return [c for c in self.changes if c.alert_id == alert_id]

    def statuses(self, alert_id: str) -> list[str]:
        return [c.status for c in self.of(alert_id)]

    async def wait_statuses(self, alert_id: str, expected: list[str]) -> None:
        try:
            await until(sync(lambda: self.statuses(alert_id) == expected), f"changes {expected}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; got {self.statuses(alert_id)}") from None


class Bus:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = bus.make_bus(settings)
        self.feed = Feed()

        async def collect(body: bytes) -> None:
            self.feed.deliveries.append(decode_alert_change(body))

        self.bus.subscribe(bus.ALERTS_STREAM, group="test-feed", consumer="feed", handler=collect)

    async def send(self, *events: Event | bytes) -> None:
        for e in events:
            body = e if isinstance(e, bytes) else encode(e)
            await self.bus.publish(
                bus.events_stream(bus.shard_of(ELDER, self.settings.bus_shards)), body
            )


@pytest.fixture
async def bus_io(rules_settings: Settings) -> AsyncIterator[Bus]:
    b = Bus(rules_settings)
    await b.bus.start()  # the feed's group exists before any change is published
    yield b
    await b.bus.stop()


class OffsetClock:
    """System time moved forward: a worker that starts 'later' without the test waiting."""

    def __init__(self, offset_ms: int) -> None:
        self._offset = offset_ms
        self._system = SystemClock()

    def now_ms(self) -> int:
        return self._system.now_ms() + self._offset


@asynccontextmanager
async def worker(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """A running rules worker; ready once its consumer group exists on every shard."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, clock))
    client = aioredis.Redis.from_url(settings.redis_url)

    async def groups_ready() -> bool:
        assert not task.done(), task
        for shard in range(settings.bus_shards):
            stream = bus.events_stream(shard)
            if not await client.exists(stream):
                return False
            groups = await client.xinfo_groups(stream)
            if not any(g["name"] == GROUP.encode() for g in groups):
                return False
        return True

    try:
        await await_until(groups_ready, 30, "the rules worker's consumer groups")
        yield task
    finally:
        await client.aclose()
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=30)
        assert done, "the rules worker did not stop"
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def rows(settings: Settings, query: str, *args: object) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, args)
        return await cur.fetchall()


async def alerts(settings: Settings) -> list[dict[str, Any]]:
    return await rows(settings, "SELECT *, id::text AS id FROM alerts ORDER BY opened_at")


async def timeline(settings: Settings, alert_id: str) -> list[str]:
    found = await rows(
        settings, "SELECT action, actor FROM alert_events WHERE alert_id = %s ORDER BY id", alert_id
    )
    assert {r["actor"] for r in found} <= {"rules"}
    return [r["action"] for r in found]


def sync(cond: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return cond()

    return check


def until(cond: Callable[[], Awaitable[object]], what: str, timeout: float = 30) -> Awaitable[None]:
    return await_until(cond, timeout, what)


async def one_alert(settings: Settings, **expected: object) -> dict[str, Any]:
    async def matches() -> bool:
        found = await alerts(settings)
        return len(found) == 1 and all(found[0][k] == v for k, v in expected.items())

    await until(matches, f"one alert with {expected}")
    return (await alerts(settings))[0]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- SOS ------------------------------------------------------------------------------
