"""The rules worker's view cache inside a running worker (real Redis and PostgreSQL).

Telemetry the detectors want is decided on a cached view of the elder first; what
decides nothing never touches the database, what decides something is applied on a
fresh view as before. Edits made outside the worker (operator, care profile) reach the
no-op decisions within `rules_view_cache_s`: the worker's clock is moved past it,
nobody sleeps.

Every sample is followed by a marker event of another elder on the same stream; one
stream is consumed in order, so once the marker is applied the sample was handled.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from carewatch.clock import SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import Event
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.geo import LatLon, Zone
from tests.support import rules as support
from tests.support.rules import (
    ELDER,
    RulesBusIO,
    alerts,
    event,
    metric,
    rows,
    timeline,
    until,
    worker,
)

# the rules worker tests' fixtures: an elder with devices, and the bus with its alert feed
rules_settings = support.rules_settings
bus_io = support.bus_io

TTL_S = 60.0  # far longer than a test runs: only the clock moved by hand expires a view
MARKER_ELDER = "M1"

_seq = itertools.count(700_000)


@pytest.fixture
def cache_on(rules_settings: Settings) -> Settings:
    """The rules worker tests' settings with the view cache on, and a second elder."""
    with psycopg.connect(rules_settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id,"
            " care_profile_id) VALUES (%s, '王奶奶', '渝中区', '解放碑街道', 29.56, 106.57,"
            " 'G1', 'standard')",
            (MARKER_ELDER,),
        )
    return rules_settings.model_copy(update={"rules_view_cache_s": TTL_S})


class SteppedClock:
    """System time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self._system = SystemClock()
        self._offset_ms = 0

    def now_ms(self) -> int:
        return self._system.now_ms() + self._offset_ms

    def advance(self, seconds: float) -> None:
        self._offset_ms += round(seconds * 1000)


def sample(data: Mapping[str, object], device: str = "W1") -> Event:
    seq = next(_seq)
    now = time.time_ns() // 1_000_000
    return Event(
        id=f"{device}:{seq}",
        elder_id=ELDER,
        device_id=device,
        device_kind="wristband",
        type="telemetry",
        device_time_ms=now,
        received_ms=now,
        seq=seq,
        data=dict(data),
    )


async def handled(settings: Settings, bus_io: RulesBusIO, *samples: Event) -> None:
    """Send `samples`, then a marker (a bed exit of another elder: applied, and it writes
    nothing the samples' elder depends on), and wait until the marker is applied."""
    marker = msgspec.structs.replace(
        event("bed_exit", "R1", device_kind="radar"), elder_id=MARKER_ELDER
    )
    await bus_io.send(*samples, marker)
    await until(
        lambda: rows(settings, "SELECT 1 FROM rules_seen_events WHERE event_id = %s", marker.id),
        f"the marker after {len(samples)} sample(s)",
    )


async def seen(settings: Settings, e: Event) -> bool:
    return bool(await rows(settings, "SELECT 1 FROM rules_seen_events WHERE event_id = %s", e.id))


async def low_battery_alerts(settings: Settings) -> list[dict[str, Any]]:
    return [a for a in await alerts(settings) if a["kind"] == "low_battery"]


def decided(path: str) -> float:
    return metric("carewatch_rules_decided_total", path=path)


async def test_telemetry_that_decides_nothing_is_settled_without_a_database_write(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    # wanted by the geofence (first fix: learn the zones; inside the home circle) and by
    # device health (first worn=true: cancel an off-wrist timer, of which there is none)
    first = sample({"hr": 72, "worn": True, "lat": 29.56, "lon": 106.57})
    by_cache, by_db = decided("cache"), decided("db")
    async with worker(cache_on):
        await handled(cache_on, bus_io, first)

    assert not await seen(cache_on, first)
    assert decided("cache") == by_cache + 1
    assert decided("db") == by_db + 1  # the marker
    assert await alerts(cache_on) == []
    assert await rows(cache_on, "SELECT id FROM rule_timers WHERE elder_id = %s", ELDER) == []


async def test_a_pending_timer_makes_its_cancel_go_to_the_database(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    off = sample({"worn": False})
    on = sample({"worn": True})
    async with worker(cache_on):
        await handled(cache_on, bus_io, off)
        [timer] = await rows(cache_on, "SELECT id FROM rule_timers WHERE elder_id = %s", ELDER)
        assert timer["id"] == "off-wrist:W1"
        await handled(cache_on, bus_io, on)

    assert await seen(cache_on, off) and await seen(cache_on, on)
    assert await rows(cache_on, "SELECT id FROM rule_timers WHERE elder_id = %s", ELDER) == []


async def test_telemetry_that_opens_an_alert_opens_exactly_one(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    low = sample({"battery": 10})
    lower = sample({"battery": 9})  # a change, but the alert is active: nothing to do
    async with worker(cache_on):
        await handled(cache_on, bus_io, low, low, lower)
        await bus_io.feed.wait_statuses((await low_battery_alerts(cache_on))[0]["id"], ["open"])

    [alert] = await low_battery_alerts(cache_on)
    assert (alert["status"], alert["source_event_id"]) == ("open", low.id)
    assert await timeline(cache_on, alert["id"]) == ["opened"]
    # the alert's own write invalidated the cached view: the next sample saw the alert
    assert not await seen(cache_on, lower)


async def test_alert_resolved_by_an_operator_opens_again_once_the_cached_view_expires(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    clock = SteppedClock()
    low, known = sample({"battery": 10}), sample({"battery": 9})
    stale, fresh = sample({"battery": 8}), sample({"battery": 7})
    async with worker(cache_on, clock):
        await handled(cache_on, bus_io, low, known)  # the view with the alert is cached
        [first] = await low_battery_alerts(cache_on)
        await operator_sets(cache_on, first["id"], "resolved")

        # within the TTL the cached view still shows the alert: this reading decides
        # nothing, which is the staleness rules_view_cache_s allows
        await handled(cache_on, bus_io, stale)
        assert len(await low_battery_alerts(cache_on)) == 1

        clock.advance(TTL_S)
        await handled(cache_on, bus_io, fresh)

    found = await low_battery_alerts(cache_on)
    assert [(a["status"], a["source_event_id"]) for a in found] == [
        ("resolved", low.id),
        ("open", fresh.id),
    ]


async def test_a_stale_view_never_writes_what_the_fresh_one_does_not_decide(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    """Charged readings resolve a low-battery alert. The cached view still says 'open'
    after the operator acted, so the reading goes to the database, where it is decided
    again on what is there: an acknowledged alert is resolved, a resolved one is left."""
    low, known, charged = sample({"battery": 10}), sample({"battery": 9}), sample({"battery": 90})
    async with worker(cache_on):
        await handled(cache_on, bus_io, low, known)
        [alert] = await low_battery_alerts(cache_on)
        await operator_sets(cache_on, alert["id"], "acknowledged")
        await handled(cache_on, bus_io, charged)
        await bus_io.feed.wait_statuses(alert["id"], ["open", "resolved"])

        low2, known2 = sample({"battery": 10}), sample({"battery": 9})
        charged2 = sample({"battery": 91})
        await handled(cache_on, bus_io, low2, known2)
        second = [a for a in await low_battery_alerts(cache_on) if a["id"] != alert["id"]]
        [again] = second
        await operator_sets(cache_on, again["id"], "resolved")
        await handled(cache_on, bus_io, charged2)

    assert await timeline(cache_on, alert["id"]) == ["opened", "resolved"]
    # resolved by the operator (outside the rules engine's timeline), not by the reading
    assert await timeline(cache_on, again["id"]) == ["opened"]
    assert await seen(cache_on, charged2)  # decided again on the fresh view: nothing


async def test_care_profile_threshold_change_applies_once_the_cached_view_expires(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    clock = SteppedClock()
    normal, stale, fresh = sample({"battery": 50}), sample({"battery": 49}), sample({"battery": 48})
    async with worker(cache_on, clock):
        await handled(cache_on, bus_io, normal)  # decides nothing: the view is cached
        async with await psycopg.AsyncConnection.connect(
            cache_on.database_url, autocommit=True
        ) as conn:
            await conn.execute(
                "UPDATE care_profiles SET thresholds = COALESCE(thresholds, '{}') || %s"
                " WHERE id = 'standard'",
                (Jsonb({"low_battery_pct": 60, "low_battery_clear_pct": 70}),),
            )
        await handled(cache_on, bus_io, stale)
        assert await low_battery_alerts(cache_on) == []  # old thresholds, within the TTL

        clock.advance(TTL_S)
        await handled(cache_on, bus_io, fresh)

    [alert] = await low_battery_alerts(cache_on)
    assert alert["source_event_id"] == fresh.id
    assert alert["threshold"] == {"low_battery_pct": 60.0, "low_battery_clear_pct": 70.0}


async def test_cache_off_sends_every_wanted_sample_to_the_database(
    cache_on: Settings, bus_io: RulesBusIO
) -> None:
    off = cache_on.model_copy(update={"rules_view_cache_s": 0.0})
    first = sample({"worn": True, "lat": 29.56, "lon": 106.57})
    by_cache = decided("cache")
    async with worker(off):
        await handled(off, bus_io, first)

    assert await seen(off, first)
    assert decided("cache") == by_cache


async def operator_sets(settings: Settings, alert_id: str, status: str) -> None:
    """What the operator API does to an alert, reduced to its row (no rules involved)."""
    query = {
        "acknowledged": "UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(),"
        " version = version + 1 WHERE id = %s",
        "resolved": "UPDATE alerts SET status = 'resolved', closed_at = now(),"
        " version = version + 1 WHERE id = %s",
    }[status]
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        await conn.execute(query, (alert_id,))


async def test_the_view_read_by_the_cache_is_the_view_the_store_locks(
    cache_on: Settings,
) -> None:
    async with await psycopg.AsyncConnection.connect(
        cache_on.database_url, autocommit=True
    ) as conn:
        await conn.execute(
            "UPDATE care_profiles SET thresholds = %s WHERE id = 'standard'",
            (Jsonb({"low_battery_pct": 15, "quiet_start_h": 21}),),
        )
        await conn.execute(
            "INSERT INTO alerts (id, elder_id, device_id, kind, severity, status,"
            " source_event_id, device_time, opened_at, rule, threshold, confidence, details)"
            " VALUES (gen_random_uuid(), %s, 'W1', 'vitals', 'warning', 'acknowledged', 'W1:9',"
            " '2025-11-25 10:00:00.123456+08', now(), 'vitals.hr', '{}', 0.75, %s),"
            " (gen_random_uuid(), %s, 'W1', 'sos', 'critical', 'resolved', 'W1:8', now(),"
            " now(), 'sos.press', '{}', NULL, '{}')",
            (ELDER, Jsonb({"sign": "hr", "value": 150}), ELDER),
        )
        await conn.execute(
            "INSERT INTO geofence_zones (elder_id, name, centre_lat, centre_lon, radius_m)"
            " VALUES (%s, 'home', 29.56, 106.57, 300)",
            (ELDER,),
        )
        await conn.execute(
            "INSERT INTO geofence_zones (elder_id, name, polygon) VALUES (%s, 'park', %s)",
            (ELDER, Jsonb([[29.5, 106.5], [29.6, 106.5], [29.6, 106.6]])),
        )
    pool = await open_pool(cache_on.database_url)
    try:
        fast = await store.load_view(pool, ELDER, cache_on)
        async with pool.connection() as conn, conn.transaction():
            loaded = await store._load_view(conn.cursor(row_factory=dict_row), ELDER, cache_on)
        assert loaded is not None
        locked, rows = loaded
        assert await store.load_view(pool, "nobody", cache_on) is None
    finally:
        await pool.close()

    assert fast == locked
    assert fast is not None
    # the rows the writes go through are the view's active alerts, with their versions
    assert {(r.kind, r.status, r.version) for r in rows.values()} == {
        (a.kind, a.status, 1) for a in fast.active.values()
    }
    [vitals] = fast.active.values()
    assert (vitals.kind, vitals.severity, vitals.status, vitals.device_id, vitals.rule) == (
        "vitals",
        "warning",
        "acknowledged",
        "W1",
        "vitals.hr",
    )
    assert vitals.device_time_ms == 1_764_036_000_123  # 10:00:00.123456 +08, whole ms
    assert (vitals.confidence, vitals.details) == (0.75, {"sign": "hr", "value": 150})
    assert fast.zones == (
        Zone("home", centre=LatLon(29.56, 106.57), radius_m=300.0),
        Zone("park", points=(LatLon(29.5, 106.5), LatLon(29.6, 106.5), LatLon(29.6, 106.6))),
    )
    assert (fast.profile_id, fast.home) == ("standard", LatLon(29.56, 106.57))
    assert fast.thresholds.low_battery_pct == 15.0
    assert fast.thresholds.quiet_start_h == 21.0
