"""Alarm work first, within one worker's event loop.

A worker that serves both lanes in one asyncio loop (ingest's two MQTT sessions, a
rules worker's event and telemetry streams) runs whatever is ready in turn. A batch of
telemetry is handled without awaiting anything, so an SOS that arrives meanwhile waits
for the whole batch, and again for every other batch that became ready, at each of its
own database and bus round trips. Measured at 10,000 msg/s of telemetry
(`bench.sos_latency`'s stage table), that queueing was most of the SOS tail.

So the bulk lane calls `pause()` between items, when `due()` says it would do anything
(ingest's telemetry lane, rules_engine.worker.EventHandler.handle_batch): at most every
`slice_s` it gives the loop a turn (an alarm that arrived is then noticed), and while
alarm work is in flight (`alarm()`) it stands aside. It never stands aside for longer than `max_wait_s` at a
time: a flood of device events (a hostile or broken device) slows telemetry down but
cannot stop it. `pause()` must only be called where the bulk lane holds nothing an
alarm may need (no transaction, no lock), or an alarm would wait `max_wait_s` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator

SLICE_S = 0.001  # the longest the bulk lane runs without giving the loop a turn
MAX_WAIT_S = 0.1  # the longest it stands aside for alarms at one pause


class AlarmPriority:
    def __init__(self, slice_s: float = SLICE_S, max_wait_s: float = MAX_WAIT_S) -> None:
        self._slice_s = slice_s
        self._max_wait_s = max_wait_s
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._turn_at = time.monotonic()  # when the bulk lane last gave the loop a turn

    @property
    def alarms_in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def alarm(self) -> Iterator[None]:
        """Marks alarm work in flight for as long as the block runs."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def due(self) -> bool:
        """Would `pause()` do anything now? The bulk lanes ask before every item and await
        `pause()` only when it is due: most items then cost no coroutine at all."""
        return bool(self._in_flight) or time.monotonic() - self._turn_at >= self._slice_s

    async def pause(self) -> None:
        """Called by the bulk lane between items (when `due()`)."""
        if not self.due():
            return
        if not self._in_flight:
            await asyncio.sleep(0)  # the loop's turn: an alarm that arrived starts now
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self._max_wait_s)
        self._turn_at = time.monotonic()


def run_as_bulk(niceness: int) -> int:
    """Alarm work first between processes: a process that runs only bulk work (ingest's
    telemetry lane) gives itself at least `niceness` (0: leaves it alone), so the kernel
    runs the alarm path's processes (ingest's events lane, the rules worker, the notifier)
    first whenever both want the CPU. Lowering one's own priority needs no privilege.

    On Linux a nice value belongs to a thread, and new threads inherit it: call this
    first thing, before the process starts any thread. Returns the nice value now.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        return niceness
    return current
