"""The rules worker's view cache and the pure no-effect test of timer decisions (no I/O)."""

from __future__ import annotations

from carewatch.clock import ManualClock
from carewatch.settings import Settings
from rules_engine.decisions import (
    CancelTimer,
    Decision,
    ResolveAlert,
    ScheduleTimer,
    timers_deciding_effect,
    without_effect,
)
from rules_engine.detectors.base import ElderView
from rules_engine.thresholds import resolve_thresholds
from rules_engine.view_cache import ViewCache

TTL_MS = 5_000


def view(elder_id: str) -> ElderView:
    return ElderView(elder_id, resolve_thresholds(Settings(), {}))


def shard_of(elder_id: str) -> int:
    return int(elder_id[1:]) % 2  # E0, E2, ... shard 0; E1, E3, ... shard 1


def cache(clock: ManualClock, ttl_ms: int = TTL_MS, max_elders: int = 100) -> ViewCache:
    return ViewCache(clock, ttl_ms, shard_of, max_elders)


def fill(c: ViewCache, clock: ManualClock, *elder_ids: str) -> None:
    for elder_id in elder_ids:
        c.put(c.begin(elder_id), view(elder_id), clock.now_ms())


def test_a_view_is_served_until_its_ttl_from_the_load_has_passed() -> None:
    clock = ManualClock()
    c = cache(clock)
    loaded_ms = clock.now_ms()
    ticket = c.begin("E1")
    clock.advance(1)  # the load itself took a second: the TTL counts from its start
    c.put(ticket, view("E1"), loaded_ms)

    clock.advance(3.999)
    assert c.get("E1") == view("E1")
    clock.advance(0.001)
    assert c.get("E1") is None
    assert len(c) == 0


def test_ttl_zero_disables_the_cache() -> None:
    clock = ManualClock()
    c = cache(clock, ttl_ms=0)
    fill(c, clock, "E1")
    assert not c.enabled
    assert c.get("E1") is None


def test_invalidate_forgets_the_elder_only() -> None:
    clock = ManualClock()
    c = cache(clock)
    fill(c, clock, "E1", "E2")
    c.invalidate("E1")
    assert c.get("E1") is None
    assert c.get("E2") == view("E2")


def test_a_load_that_began_before_an_invalidation_is_not_kept() -> None:
    clock = ManualClock()
    c = cache(clock)
    ticket = c.begin("E1")  # the view is being read...
    c.invalidate("E1")  # ...while the other lane commits a change for the elder
    c.put(ticket, view("E1"), clock.now_ms())
    assert c.get("E1") is None

    fill(c, clock, "E1")  # the next load lands
    assert c.get("E1") == view("E1")


def test_only_the_latest_load_of_an_elder_lands() -> None:
    clock = ManualClock()
    c = cache(clock)
    first, second = c.begin("E1"), c.begin("E1")
    c.put(first, view("E1"), clock.now_ms())
    assert c.get("E1") is None
    c.put(second, view("E1"), clock.now_ms())
    assert c.get("E1") == view("E1")


def test_an_unknown_elder_is_not_cached() -> None:
    clock = ManualClock()
    c = cache(clock)
    c.put(c.begin("E1"), None, clock.now_ms())
    assert c.get("E1") is None
    assert len(c) == 0


def test_the_least_recently_used_elder_goes_first_beyond_the_bound() -> None:
    clock = ManualClock()
    c = cache(clock, max_elders=3)
    fill(c, clock, "E1", "E2", "E3")
    assert c.get("E1") is not None  # used: E2 is now the least recently used
    fill(c, clock, "E4")

    assert len(c) == 3
    assert c.get("E2") is None
    assert [c.get(e) is not None for e in ("E1", "E3", "E4")] == [True, True, True]


def test_clearing_a_shard_drops_its_views_and_its_loads_in_flight() -> None:
    clock = ManualClock()
    c = cache(clock)
    fill(c, clock, "E0", "E1", "E2", "E3")
    in_flight = c.begin("E4")
    c.clear_shard(0)
    c.put(in_flight, view("E4"), clock.now_ms())

    assert [c.get(e) is not None for e in ("E0", "E1", "E2", "E3", "E4")] == [
        False,
        True,
        False,
        True,
        False,
    ]


# --- which decisions can be no-ops -------------------------------------------------------


def test_timer_decisions_name_the_timers_that_decide_their_effect() -> None:
    decisions: list[Decision] = [CancelTimer("off-wrist:W1"), ScheduleTimer("t2", "k", 1)]
    assert timers_deciding_effect(decisions) == ("off-wrist:W1", "t2")
    assert timers_deciding_effect([]) == ()


def test_anything_else_has_an_effect_whatever_the_timers() -> None:
    moved = ScheduleTimer("inactivity:E1", "inactivity", 1, replace=True)
    resolve = ResolveAlert("a1", "low_battery", "device.charged", "W1:1", {})
    assert timers_deciding_effect([CancelTimer("t"), moved]) is None
    assert timers_deciding_effect([resolve]) is None
    assert not without_effect([moved], {"inactivity:E1": True})


def test_cancelling_a_timer_is_a_no_op_only_if_there_is_none() -> None:
    cancel = [CancelTimer("t")]
    assert without_effect(cancel, {})
    assert not without_effect(cancel, {"t": True})  # pending: it would be deleted
    # fired: its effect (e.g. an alert it opened) may be missing from a cached view
    assert not without_effect(cancel, {"t": False})


def test_scheduling_without_replace_is_a_no_op_only_while_the_timer_is_pending() -> None:
    schedule = [ScheduleTimer("t", "k", 1)]
    assert without_effect(schedule, {"t": True})
    assert not without_effect(schedule, {})  # a new timer would be armed
    assert not without_effect(schedule, {"t": False})  # fired: as above
    assert without_effect([], {})
