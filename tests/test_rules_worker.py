"""The rules worker against real Redis Streams and PostgreSQL (private test services).

Events go in on events.{shard} exactly as ingest publishes them; what comes out is read
back from the database (alerts, alert_events, rule_timers) and from the `alerts` stream
through a consumer group, as the notifier reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import psycopg
import pytest

from carewatch.alert_outbox import AlertPublisher
from carewatch.clock import SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import Event
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.decisions import Decision
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.fall.detector import FallDetector
from rules_engine.engine import Engine, default_engine
from rules_engine.timers import fire_due
from tests.support import rules as support
from tests.support.rules import (
    ELDER,
    Bus,
    OffsetClock,
    alerts,
    event,
    metric,
    one_alert,
    rows,
    sync,
    timeline,
    until,
    worker,
)

# fixtures of the support module, used here by name
rules_settings = support.rules_settings
bus_io = support.bus_io


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
        engine = default_engine(settings)
        clock = SystemClock()
        outcome = await store.apply_event(
            pool, e, lambda v: engine.run(e, lambda: v, clock.now_ms()) or [], settings, clock
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


class BrokenTimerDetector(Detector[None]):
    """A plug-in whose timer effect fails every time (a bug shipped in a detector)."""

    timer_kinds = frozenset({"broken"})

    def on_timer(self, timer: DueTimer, elder: ElderView, now_ms: int) -> Sequence[Decision]:
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
    engine = Engine([BrokenTimerDetector(), FallDetector()])
    pool = await open_pool(short.database_url, max_size=2)
    try:
        clock = OffsetClock(1_000)
        fired = await fire_due(pool, engine, AlertPublisher(bus_io.bus, pool), short, clock)
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
