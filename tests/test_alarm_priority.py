"""Alarm work first within one event loop (carewatch.alarm_priority), and the GC freeze
every worker does at start (carewatch.cli)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from psycopg_pool import AsyncConnectionPool

from carewatch.alarm_priority import AlarmPriority
from carewatch.alert_outbox import AlertPublisher
from carewatch.cli import freeze_startup_objects
from carewatch.clock import SystemClock
from carewatch.messages import Event, encode
from carewatch.settings import Settings
from rules_engine.detectors.base import Detector
from rules_engine.engine import Engine
from rules_engine.worker import EventHandler
from tests.events import telemetry_event


class _Telemetry(Detector):
    """Records the telemetry it sees and wants none of it (so nothing reaches a
    database); `on_seq` runs when the sample of that seq is seen."""

    def __init__(self, order: list[str], on_seq: int, call: Callable[[], None]) -> None:
        self.order, self.on_seq, self.call = order, on_seq, call

    def wants(self, event: Event) -> bool:
        self.order.append(f"t{event.seq}")
        if event.seq == self.on_seq:
            self.call()  # the alarm "arrives" while the batch is being handled
        return False


def _rules_lane(
    order: list[str], alarm_may_start: asyncio.Event, priority: AlarmPriority | None
) -> Callable[[list[bytes]], Awaitable[None]]:
    """The rules worker's real batch handler, with one recording detector."""
    engine = Engine([_Telemetry(order, 10, alarm_may_start.set)])
    no_io = cast(AsyncConnectionPool, None)  # nothing here may touch a database
    publisher = cast(AlertPublisher, None)
    handler = EventHandler(Settings(), no_io, engine, publisher, SystemClock())
    return handler.for_stream("telemetry.0", priority)


BATCH = [encode(telemetry_event({"hr": 70}, 1_000 * i, seq=i)) for i in range(100)]


async def test_an_alarm_arriving_mid_batch_finishes_before_the_batch() -> None:
    priority = AlarmPriority(slice_s=0.0)
    order: list[str] = []
    alarm_may_start = asyncio.Event()

    async def alarm() -> None:
        await alarm_may_start.wait()
        with priority.alarm():
            order.append("alarm start")
            await asyncio.sleep(0)  # a round trip: telemetry must not run meanwhile
            await asyncio.sleep(0)
            order.append("alarm end")

    batch = _rules_lane(order, alarm_may_start, priority)
    await asyncio.gather(batch(BATCH), alarm())
    start, end = order.index("alarm start"), order.index("alarm end")
    assert end == start + 1, order[start - 2 : end + 3]
    assert start < 15, f"the alarm waited for {start} telemetry messages"
    assert [x for x in order if x.startswith("t")] == [f"t{i}" for i in range(100)]


async def test_without_pauses_the_alarm_waits_for_the_whole_batch() -> None:
    """The control for the test above: the same batch handler without a priority (the
    event lanes' own handler)."""
    order: list[str] = []
    alarm_may_start = asyncio.Event()

    async def alarm() -> None:
        await alarm_may_start.wait()
        order.append("alarm")

    await asyncio.gather(_rules_lane(order, alarm_may_start, None)(BATCH), alarm())
    assert order.index("alarm") == 100


@pytest.mark.parametrize(
    ("slice_s", "pauses", "yields"),
    [
        # within a slice the bulk lane keeps the loop: cheap when nothing is urgent
        (3600.0, 50, False),
        # once the slice is used up, the next pause gives the loop a turn
        (0.0, 1, True),
    ],
)
async def test_pause_yields_only_once_a_slice_is_used_up(
    slice_s: float, pauses: int, yields: bool
) -> None:
    priority = AlarmPriority(slice_s=slice_s)
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    for _ in range(pauses):
        assert priority.due() is yields
        await priority.pause()
    assert ran.is_set() is yields
    await task


async def test_a_flood_of_alarms_slows_the_bulk_lane_but_cannot_stop_it() -> None:
    priority = AlarmPriority(slice_s=0.0, max_wait_s=0.01)
    with priority.alarm():  # alarm work that never ends while the bulk lane pauses
        for _ in range(3):
            await priority.pause()
        assert priority.alarms_in_flight == 1
    assert priority.alarms_in_flight == 0


async def test_alarms_in_flight_counts_nested_and_concurrent_alarms() -> None:
    priority = AlarmPriority()
    with priority.alarm(), priority.alarm():
        assert priority.alarms_in_flight == 2
    assert priority.alarms_in_flight == 0
    await priority.pause()  # nothing in flight: returns


def test_worker_start_freezes_the_objects_alive_then() -> None:
    try:
        freeze_startup_objects()
        # the imported libraries are far more than a few thousand objects
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
