"""Durable timers of the absence rules across a killed rules worker (real Redis and
PostgreSQL; private services).

Inactivity deadlines are armed by one worker, which is then killed; workers started
"later" (their injected clocks are ahead, nobody sleeps) fire each due deadline
exactly once, escalate the unanswered alerts to critical, and the changes reach the
alerts stream as the notifier reads it. Device-health reminders take the same path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from carewatch import bus
from carewatch.clock import SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import Event, decode_alert_change, encode
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.decisions import Decision
from rules_engine.detectors.base import DueTimer, ElderView
from rules_engine.engine import default_engine
from rules_engine.timeconv import ms_to_dt
from tests.support.rules import Feed, OffsetClock, rows, sync, until, worker

ELDERS = ("A1", "A2", "A3")
THRESHOLD_S = 60  # the care profile's inactivity floor and ceiling, day and night


@pytest.fixture
def absence_settings(settings: Settings) -> Iterator[Settings]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street)"
            " VALUES ('G1', '网格一', '渝中区', '解放碑街道')"
        )
        conn.execute(
            "UPDATE care_profiles SET thresholds = %s WHERE id = 'standard'",
            (
                Jsonb(
                    {
                        "inactivity_floor_day_s": THRESHOLD_S,
                        "inactivity_floor_night_s": THRESHOLD_S,
                        "inactivity_ceiling_s": THRESHOLD_S,
                        "device_reminder_s": THRESHOLD_S,
                    }
                ),
            ),
        )
        for elder in ELDERS:
            conn.execute(
                "INSERT INTO elders (id, name, district, street, lat, lon, grid_id,"
                " care_profile_id) VALUES (%s, '李奶奶', '渝中区', '解放碑街道', 29.56, 106.57,"
                " 'G1', 'standard')",
                (elder,),
            )
            conn.execute(
                "INSERT INTO devices (id, elder_id, kind) VALUES"
                " (%s, %s, 'pir'), (%s, %s, 'wristband')",
                (f"P-{elder}", elder, f"W-{elder}", elder),
            )
    yield settings.model_copy(
        update={"bus_shards": 2, "timer_poll_ms": 50, "rules_shard_lease_ms": 500}
    )


class Io:
    """Publishes events on their elder's shard; collects the alerts stream."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = bus.make_bus(settings)
        self.feed = Feed()
        self._seq = 0

        async def collect(body: bytes) -> None:
            self.feed.deliveries.append(decode_alert_change(body))

        self.bus.subscribe(bus.ALERTS_STREAM, group="test-feed", consumer="feed", handler=collect)

    async def send(self, elder: str, device: str, kind: str, **fields: object) -> Event:
        self._seq += 1
        now = time.time_ns() // 1_000_000
        e = Event(
            id=f"{device}:{self._seq}",
            elder_id=elder,
            device_id=device,
            device_kind=kind,
            type="status" if "state" in fields else "telemetry",
            device_time_ms=now,
            received_ms=now,
            seq=self._seq,
            state=fields.pop("state", None),  # type: ignore[arg-type]
            data=dict(fields),
        )
        shard = bus.shard_of(elder, self.settings.bus_shards)
        await self.bus.publish(bus.events_stream(shard), encode(e))
        return e


@pytest.fixture
async def io(absence_settings: Settings) -> AsyncIterator[Io]:
    i = Io(absence_settings)
    await i.bus.start()
    yield i
    await i.bus.stop()


async def kill(task: asyncio.Task[None]) -> None:
    task.cancel()  # no clean shutdown: as if the process died
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_inactivity_deadlines_fire_exactly_once_after_the_worker_is_killed(
    absence_settings: Settings, io: Io
) -> None:
    s = absence_settings
    async with worker(s) as first:
        for elder in ELDERS:
            await io.send(elder, f"P-{elder}", "pir", motion=True)

        async def armed() -> bool:
            found = await rows(
                s, "SELECT 1 FROM rule_timers WHERE kind = 'inactivity' AND fired_at IS NULL"
            )
            return len(found) == len(ELDERS)

        await until(armed, "an inactivity deadline per elder")
        await kill(first)
    assert await rows(s, "SELECT id FROM alerts") == []

    # two workers start after the deadlines (their clocks say so) and race for them
    later = OffsetClock((THRESHOLD_S + 30) * 1000)
    async with worker(s, later), worker(s, later):

        async def all_opened() -> bool:
            opened = [c for c in io.feed.changes if c.kind == "inactivity"]
            return len(opened) == len(ELDERS)

        await until(all_opened, "an open inactivity change per elder")

    found = await rows(
        s, "SELECT id::text AS id, elder_id, severity, status, rule, details FROM alerts"
    )
    assert sorted(a["elder_id"] for a in found) == sorted(ELDERS)
    for a in found:
        assert (a["severity"], a["status"], a["rule"]) == (
            "warning",
            "open",
            "inactivity.no_sign_of_life",
        )
        assert a["details"]["threshold_source"] == "floor"
        actions = await rows(
            s, "SELECT action FROM alert_events WHERE alert_id = %s ORDER BY id", a["id"]
        )
        assert [r["action"] for r in actions] == ["opened"]
    # exactly once, however often delivered: one open change per alert
    assert {c.id for c in io.feed.deliveries} == {f"{a['id']}:open:1" for a in found}
    fired = await rows(s, "SELECT fired_at FROM rule_timers WHERE kind = 'inactivity'")
    assert len(fired) == len(ELDERS) and all(r["fired_at"] is not None for r in fired)

    # still unanswered one threshold later: escalated to critical, published as such
    even_later = OffsetClock((3 * THRESHOLD_S + 30) * 1000)
    async with worker(s, even_later):

        async def escalated() -> bool:
            return len([c for c in io.feed.changes if c.reason == "escalated"]) == len(ELDERS)

        await until(escalated, "an escalated change per alert")
    for a in found:
        changes = io.feed.of(a["id"])
        assert [(c.status, c.severity, c.reason) for c in changes] == [
            ("open", "warning", None),
            ("open", "critical", "escalated"),
        ]
        assert changes[1].id == f"{a['id']}:open:2"
    severities = await rows(s, "SELECT DISTINCT severity FROM alerts")
    assert severities == [{"severity": "critical"}]


async def test_device_reminders_reach_the_alerts_stream_until_the_band_is_back(
    absence_settings: Settings, io: Io
) -> None:
    s = absence_settings
    async with worker(s):
        await io.send("A1", "W-A1", "wristband", state="offline")  # the MQTT last will

        async def opened() -> bool:
            return any(c.kind == "device_offline" for c in io.feed.changes)

        await until(opened, "the offline alert")
    [alert] = await rows(s, "SELECT id::text AS id FROM alerts WHERE kind = 'device_offline'")

    async with worker(s, OffsetClock((THRESHOLD_S + 10) * 1000)):
        await until(
            sync(lambda: [c.reason for c in io.feed.of(alert["id"])] == [None, "reminder"]),
            "the first reminder",
        )
        await io.send("A1", "W-A1", "wristband", state="online")
        await until(
            sync(lambda: io.feed.statuses(alert["id"]) == ["open", "open", "resolved"]),
            "the alert resolved by the band coming back",
        )

    actions = await rows(
        s, "SELECT action FROM alert_events WHERE alert_id = %s ORDER BY id", alert["id"]
    )
    assert [r["action"] for r in actions] == ["opened", "reminder", "resolved"]
    [closed] = await rows(s, "SELECT status, closed_at FROM alerts WHERE id = %s", alert["id"])
    assert closed["status"] == "resolved" and closed["closed_at"] is not None


async def test_a_deadline_pushed_back_after_it_was_listed_is_not_fired(
    absence_settings: Settings,
) -> None:
    """The timer loop lists due timers, then claims each; a sign of life in between
    moves the deadline, and the claim must see the new due time (nothing fires)."""
    s = absence_settings
    engine = default_engine(s)
    clock = SystemClock()
    pool = await open_pool(s.database_url, max_size=2)
    try:

        def motion(delay_ms: int) -> Event:
            now = clock.now_ms()
            return Event(
                id=f"P-A1:{now + delay_ms}",
                elder_id="A1",
                device_id="P-A1",
                device_kind="pir",
                type="telemetry",
                device_time_ms=now + delay_ms,
                received_ms=now + delay_ms,
                data={"motion": True},
            )

        async def apply(e: Event) -> None:
            outcome = await store.apply_event(
                pool, e, lambda v: engine.run(e, lambda: v, clock.now_ms()) or [], s, clock
            )
            assert outcome.result == "applied"

        await apply(motion(-(THRESHOLD_S + 5) * 1000))  # last seen 65 s ago: due 5 s ago
        [listed] = await store.due_timers(pool, clock.now_ms())
        assert listed.timer_id == "inactivity:A1"
        await apply(motion(0))  # moves it a minute ahead before the claim

        def decide(t: DueTimer, v: ElderView) -> list[Decision]:
            return engine.on_timer(t, v, clock.now_ms())

        outcome = await store.fire_timer(pool, listed.timer_id, "A1", decide, s, clock)
        assert outcome.result == "gone"
        [timer] = await rows(
            s, "SELECT due_at, fired_at FROM rule_timers WHERE id = %s", listed.timer_id
        )
        assert timer["fired_at"] is None and timer["due_at"] > ms_to_dt(clock.now_ms())
        assert await rows(s, "SELECT id FROM alerts") == []

        # once it has fired, the next sign of life arms the same deadline again
        later = OffsetClock((THRESHOLD_S + 5) * 1000)
        fired = await store.fire_timer(
            pool,
            listed.timer_id,
            "A1",
            lambda t, v: engine.on_timer(t, v, later.now_ms()),
            s,
            later,
        )
        assert fired.result == "applied" and [c.kind for c in fired.changes] == ["inactivity"]
        await apply(motion((THRESHOLD_S + 10) * 1000))  # seen after the alert opened
        [rearmed] = await rows(s, "SELECT fired_at FROM rule_timers WHERE id = %s", listed.timer_id)
        assert rearmed["fired_at"] is None
        assert await rows(s, "SELECT status, rule FROM alerts") == [
            {"status": "resolved", "rule": "inactivity.no_sign_of_life"}
        ]
    finally:
        await pool.close()
