"""The rules worker against real Redis Streams and PostgreSQL (private test services).

Events go in on events.{shard} exactly as ingest publishes them; what comes out is read
back from the database (alerts, alert_events, rule_timers) and from the `alerts` stream
through a consumer group, as the notifier reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from carewatch import bus
from carewatch.alert_outbox import AlertPublisher
from carewatch.clock import Clock, SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import AlertChange, Event, EventType, decode_alert_change, encode
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.decisions import Decision
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.device_fall import DeviceFallDetector
from rules_engine.engine import Engine, default_engine
from rules_engine.timers import fire_due
from rules_engine.worker import GROUP, run
from tests.services import await_until

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
        self.broker = bus.make_broker(settings)
        self.feed = Feed()

        async def collect(body: bytes) -> None:
            self.feed.deliveries.append(decode_alert_change(body))

        bus.subscribe(
            self.broker, bus.ALERTS_STREAM, group="test-feed", consumer="feed", handler=collect
        )

    async def send(self, *events: Event | bytes) -> None:
        for e in events:
            body = e if isinstance(e, bytes) else encode(e)
            await bus.publish(
                self.broker, bus.events_stream(bus.shard_of(ELDER, self.settings.bus_shards)), body
            )


@pytest.fixture
async def bus_io(rules_settings: Settings) -> AsyncIterator[Bus]:
    b = Bus(rules_settings)
    await bus.start(b.broker)  # the feed's group exists before any change is published
    yield b
    await bus.stop(b.broker)


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


async def test_sos_press_opens_critical_alert_and_publishes_it(
    rules_settings: Settings, bus_io: Bus
) -> None:
    opened_before = metric("carewatch_alerts_total", kind="sos", status="open")
    press = event("sos")
    async with worker(rules_settings):
        await bus_io.send(press)
        alert = await one_alert(rules_settings, status="open")
        await until(sync(lambda: bus_io.feed.of(alert["id"])), "the open AlertChange")

    assert (alert["kind"], alert["severity"], alert["rule"]) == ("sos", "critical", "sos.press")
    assert (alert["elder_id"], alert["device_id"], alert["source_event_id"]) == (
        ELDER,
        "W1",
        press.id,
    )
    assert alert["threshold"] == {"sos_cancel_window_s": 10.0}
    assert round(alert["device_time"].timestamp() * 1000) == press.device_time_ms
    assert alert["confirmed_at"] is None
    assert await timeline(rules_settings, alert["id"]) == ["opened"]
    [change] = bus_io.feed.of(alert["id"])
    assert change.id == f"{alert['id']}:open:1"
    assert (change.kind, change.severity, change.elder_id, change.actor) == (
        "sos",
        "critical",
        ELDER,
        "rules",
    )
    assert change.device_time_ms == press.device_time_ms
    assert metric("carewatch_alerts_total", kind="sos", status="open") == opened_before + 1
    [sent] = await rows(
        rules_settings, "SELECT published_at FROM rules_outbox WHERE source = %s", press.id
    )
    assert sent["published_at"] is not None


async def test_redelivered_event_makes_one_alert_and_republishes_its_change(
    rules_settings: Settings, bus_io: Bus
) -> None:
    press = event("sos")
    async with worker(rules_settings):
        await bus_io.send(press, press)  # at-least-once: the same Event twice
        await until(sync(lambda: len(bus_io.feed.deliveries) >= 2), "two deliveries")

    [alert] = await alerts(rules_settings)
    assert await timeline(rules_settings, alert["id"]) == ["opened"]
    assert {c.id for c in bus_io.feed.deliveries} == {f"{alert['id']}:open:1"}


@pytest.mark.parametrize(
    ("cancel_after_ms", "status"), [(3_000, "cancelled"), (10_000, "cancelled"), (11_000, "open")]
)
async def test_sos_cancel_from_the_device_within_the_window(
    rules_settings: Settings, bus_io: Bus, cancel_after_ms: int, status: str
) -> None:
    press = event("sos")
    cancel = event("sos_cancel", after=press, dt_ms=cancel_after_ms)
    async with worker(rules_settings):
        await bus_io.send(press, cancel)
        alert = await one_alert(rules_settings)
        await until(
            lambda: rows(
                rules_settings, "SELECT 1 FROM rules_seen_events WHERE event_id = %s", cancel.id
            ),
            "the cancel to be applied",
        )
        alert = await one_alert(rules_settings, status=status)
        expected_changes = ["open", "cancelled"] if status == "cancelled" else ["open"]
        await bus_io.feed.wait_statuses(alert["id"], expected_changes)

    if status == "cancelled":
        assert alert["closed_at"] is not None
        assert await timeline(rules_settings, alert["id"]) == ["opened", "cancelled"]
        assert bus_io.feed.of(alert["id"])[1].id == f"{alert['id']}:cancelled:2"
    else:  # after the window the cancel is only recorded
        assert await timeline(rules_settings, alert["id"]) == ["opened", "cancel_ignored"]


async def test_repeat_sos_folds_into_the_open_alert(rules_settings: Settings, bus_io: Bus) -> None:
    async with worker(rules_settings):
        await bus_io.send(event("sos"), event("sos", dt_ms=20_000))
        alert = await one_alert(rules_settings, updates=1)

    assert alert["status"] == "open"
    assert await timeline(rules_settings, alert["id"]) == ["opened", "repeated"]


async def test_care_profile_change_applies_without_restart(
    rules_settings: Settings, bus_io: Bus
) -> None:
    async with worker(rules_settings):
        async with await psycopg.AsyncConnection.connect(
            rules_settings.database_url, autocommit=True
        ) as conn:
            await conn.execute(
                "UPDATE care_profiles SET thresholds = '{\"sos_cancel_window_s\": 2}' WHERE id = 'standard'"
            )
        press = event("sos")
        cancel = event("sos_cancel", after=press, dt_ms=3_000)
        await bus_io.send(press, cancel)
        await until(
            lambda: rows(
                rules_settings, "SELECT 1 FROM rules_seen_events WHERE event_id = %s", cancel.id
            ),
            "the cancel to be applied",
        )
        alert = await one_alert(rules_settings, status="open")

    assert alert["threshold"] == {"sos_cancel_window_s": 2.0}
    assert await timeline(rules_settings, alert["id"]) == ["opened", "cancel_ignored"]


async def test_telemetry_is_counted_and_ignored_without_touching_the_database(
    rules_settings: Settings, bus_io: Bus
) -> None:
    before = metric("carewatch_rules_events_total", type="telemetry")
    sample = msgspec.structs.replace(event("sos"), type="telemetry", event=None, data={"hr": 72})
    press = event("sos")
    async with worker(rules_settings):
        # one shard is consumed in order: once the SOS is applied, the samples were handled
        await bus_io.send(sample, sample, press)
        await one_alert(rules_settings, status="open")

    assert metric("carewatch_rules_events_total", type="telemetry") == before + 2
    seen = await rows(rules_settings, "SELECT event_id FROM rules_seen_events")
    assert seen == [{"event_id": press.id}]


# --- device fall ----------------------------------------------------------------------


async def test_fall_cancelled_before_confirmation_is_never_opened(
    rules_settings: Settings, bus_io: Bus
) -> None:
    async with worker(rules_settings):
        await bus_io.send(
            event("fall", "R1", device_kind="radar"), event("fall_cancel", "W1", dt_ms=4_000)
        )
        alert = await one_alert(rules_settings, status="cancelled")
        await bus_io.feed.wait_statuses(alert["id"], ["pending", "cancelled"])

    # the confirmation timer went with the cancel, so nothing can open it later
    assert await rows(rules_settings, "SELECT id FROM rule_timers") == []
    assert await timeline(rules_settings, alert["id"]) == ["opened", "cancelled"]
    assert alert["confirmed_at"] is None
    assert "open" not in bus_io.feed.statuses(alert["id"])


async def test_fall_without_cancel_opens_after_the_window(
    rules_settings: Settings, bus_io: Bus
) -> None:
    short = rules_settings.model_copy(update={"fall_confirm_window_s": 0.5})
    fall = event("fall")
    async with worker(short):
        await bus_io.send(fall)
        alert = await one_alert(short, status="open")
        await bus_io.feed.wait_statuses(alert["id"], ["pending", "open"])

    assert alert["confirmed_at"] is not None
    assert (alert["rule"], alert["threshold"]) == (
        "fall.device_flag",
        {"fall_confirm_window_s": 0.5},
    )
    assert await timeline(short, alert["id"]) == ["opened", "confirmed"]
    [timer] = await rows(short, "SELECT id, fired_at FROM rule_timers")
    assert timer["id"] == f"fall-confirm:{alert['id']}"
    assert timer["fired_at"] is not None


async def test_due_timer_fires_exactly_once_after_a_restart(
    rules_settings: Settings, bus_io: Bus
) -> None:
    async with worker(rules_settings) as first:
        await bus_io.send(event("fall"))
        alert = await one_alert(rules_settings, status="pending")
        first.cancel()  # the worker dies before the 30 s confirmation window ends
        with pytest.raises(asyncio.CancelledError):
            await first
    [timer] = await rows(rules_settings, "SELECT due_at, fired_at FROM rule_timers")
    assert timer["fired_at"] is None

    # two new workers start after the due time (their clocks say so) and race for it
    later = OffsetClock(31_000)
    async with worker(rules_settings, later), worker(rules_settings, later):
        await one_alert(rules_settings, status="open")
        await until(
            sync(lambda: "open" in bus_io.feed.statuses(alert["id"])),
            "the open change",
        )

    assert await timeline(rules_settings, alert["id"]) == ["opened", "confirmed"]
    assert bus_io.feed.statuses(alert["id"]) == ["pending", "open"]
    opened = {c.id for c in bus_io.feed.deliveries if c.status == "open"}
    assert opened == {f"{alert['id']}:open:2"}  # one confirmation, however often delivered


# --- crash safety and bad input ---------------------------------------------------------


async def commit_without_publishing(settings: Settings, e: Event) -> None:
    """What a worker that died between commit and publish leaves behind."""
    pool = await open_pool(settings.database_url, max_size=1)
    try:
        engine = default_engine()
        clock = SystemClock()
        outcome = await store.apply_event(
            pool, e, lambda v: engine.on_event(e, v, clock), settings, clock
        )
        assert outcome.result == "applied"
    finally:
        await pool.close()


async def test_change_committed_but_not_published_is_published_on_redelivery(
    rules_settings: Settings, bus_io: Bus
) -> None:
    press = event("sos")
    async with worker(rules_settings):
        await commit_without_publishing(rules_settings, press)
        await bus_io.send(press)  # the bus redelivers what the dead worker never acked
        await until(sync(lambda: bus_io.feed.changes), "the republished change")

    [alert] = await alerts(rules_settings)
    assert [c.id for c in bus_io.feed.changes] == [f"{alert['id']}:open:1"]
    assert await timeline(rules_settings, alert["id"]) == ["opened"]


async def test_change_committed_but_not_published_is_published_at_startup(
    rules_settings: Settings, bus_io: Bus
) -> None:
    await commit_without_publishing(rules_settings, event("sos"))
    async with worker(rules_settings):
        await until(sync(lambda: bus_io.feed.changes), "the swept change")
        await until(
            lambda: rows(
                rules_settings, "SELECT 1 FROM rules_outbox WHERE published_at IS NOT NULL"
            ),
            "the outbox row marked published",
        )

    [alert] = await alerts(rules_settings)
    assert [c.id for c in bus_io.feed.changes] == [f"{alert['id']}:open:1"]


async def test_bad_events_are_dead_lettered_and_the_worker_goes_on(
    rules_settings: Settings, bus_io: Bus
) -> None:
    stranger = event("sos")
    stranger.elder_id = "NOBODY"
    poison = event("sos")
    poison.id = "W1:\x00"  # PostgreSQL text refuses NUL: fails on every delivery
    async with worker(rules_settings) as task:
        await bus_io.send(b"{not json", stranger, poison, event("sos"))
        await one_alert(rules_settings, status="open")
        await until(
            lambda: rows(rules_settings, "SELECT 1 FROM dead_letters HAVING count(*) = 3"),
            "three dead letters",
        )
        assert not task.done()

    found = await rows(
        rules_settings, "SELECT reason, device_id, payload FROM dead_letters ORDER BY id"
    )
    assert [(r["reason"], r["device_id"]) for r in found] == [
        ("rules_invalid_event", None),
        ("rules_unknown_elder", "W1"),
        ("rules_failed", "W1"),
    ]
    assert bytes(found[0]["payload"]) == b"{not json"


class BrokenTimerDetector(Detector):
    """A plug-in whose timer effect fails every time (a bug shipped in a detector)."""

    timer_kinds = frozenset({"broken"})

    def on_timer(self, timer: DueTimer, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        raise RuntimeError("detector bug")


async def test_failing_timer_is_dead_lettered_and_does_not_starve_the_others(
    rules_settings: Settings, bus_io: Bus
) -> None:
    short = rules_settings.model_copy(update={"fall_confirm_window_s": 0.01})
    fall = event("fall")
    await commit_without_publishing(short, fall)  # a pending fall, its timer due at once
    async with await psycopg.AsyncConnection.connect(short.database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO rule_timers (id, shard, elder_id, kind, due_at)"
            " VALUES ('broken:1', 0, %s, 'broken', now() - interval '1 minute')",
            (ELDER,),
        )
    engine = Engine([BrokenTimerDetector(), DeviceFallDetector()])
    pool = await open_pool(short.database_url, max_size=2)
    try:
        clock = OffsetClock(1_000)
        fired = await fire_due(pool, engine, AlertPublisher(bus_io.broker, pool), short, clock)
    finally:
        await pool.close()

    assert fired == 1
    alert = await one_alert(short, status="open")
    assert await timeline(short, alert["id"]) == ["opened", "confirmed"]
    timers = await rows(short, "SELECT id, fired_at FROM rule_timers ORDER BY id")
    assert [t["id"] for t in timers] == ["broken:1", f"fall-confirm:{alert['id']}"]
    assert all(t["fired_at"] is not None for t in timers)
    [dead] = await rows(short, "SELECT topic, reason, detail FROM dead_letters")
    assert (dead["topic"], dead["reason"]) == ("rule_timers", "rules_timer_failed")
    assert "detector bug" in dead["detail"]
