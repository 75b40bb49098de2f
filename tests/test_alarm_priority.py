"""Alarm work first within one event loop (carewatch.alarm_priority), and the GC freeze
every worker does at start (carewatch.cli)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from carewatch import bus
from carewatch.alarm_priority import AlarmPriority
from carewatch.cli import freeze_startup_objects


async def test_an_alarm_arriving_mid_batch_finishes_before_the_batch() -> None:
    priority = AlarmPriority(slice_s=0.0)
    order: list[str] = []
    alarm_may_start = asyncio.Event()

    async def telemetry(body: bytes) -> None:
        order.append(body.decode())
        if body == b"t10":
            alarm_may_start.set()  # the alarm "arrives" while the batch is being handled

    async def alarm() -> None:
        await alarm_may_start.wait()
        with priority.alarm():
            order.append("alarm start")
            await asyncio.sleep(0)  # a round trip: telemetry must not run meanwhile
            await asyncio.sleep(0)
            order.append("alarm end")

    batch = bus.each(telemetry, priority)
    await asyncio.gather(batch([f"t{i}".encode() for i in range(100)]), alarm())
    start, end = order.index("alarm start"), order.index("alarm end")
    assert end == start + 1, order[start - 2 : end + 3]
    assert start < 15, f"the alarm waited for {start} telemetry messages"
    assert [x for x in order if x.startswith("t")] == [f"t{i}" for i in range(100)]


async def test_without_pauses_the_alarm_waits_for_the_whole_batch() -> None:
    """The control for the test above: the same batch handler without `pause`."""
    order: list[str] = []
    alarm_may_start = asyncio.Event()

    async def telemetry(body: bytes) -> None:
        order.append(body.decode())
        if body == b"t10":
            alarm_may_start.set()

    async def alarm() -> None:
        await alarm_may_start.wait()
        order.append("alarm")

    await asyncio.gather(bus.each(telemetry)([f"t{i}".encode() for i in range(100)]), alarm())
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
