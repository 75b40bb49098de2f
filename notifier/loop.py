"""What every notifier loop works with: the database pool, the settings, the outbox sender
that sends what it enqueues, the clock (injected in tests), its batch size, and the gate
that keeps it out of the way of alert changes (`AlarmGate`).

The escalation loop (notifier.escalation.Escalator), the watch on whoever acknowledged
(notifier.handler_watch.HandlerWatcher) and the wait for SMS receipts
(notifier.receipts.ReceiptWatcher) share it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from notifier.outbox import OutboxSender

# How long background work (the watchers' polls, the outbox's poll for retries) waits for
# a moment without an alert change in hand before it runs anyway: alert changes cannot
# starve it, they only go first.
GATE_MAX_WAIT_S = 1.0


class AlarmGate:
    """Alert changes first: the bus handler of the alerts stream holds the gate while it
    decides a change (`alarm()`); background loops wait for it to be free before each
    poll (`quiet()`), at most GATE_MAX_WAIT_S. On one event loop this is the only way to
    give the alarm path priority: asyncio runs ready callbacks first come, first served,
    so a watcher's poll started just before an SOS arrived would otherwise run
    interleaved with it, each await of either one turn each."""

    def __init__(self) -> None:
        self._in_hand = 0
        self._free = asyncio.Event()
        self._free.set()

    @property
    def busy(self) -> bool:
        return self._in_hand > 0

    @contextlib.contextmanager
    def alarm(self) -> Iterator[None]:
        self._in_hand += 1
        self._free.clear()
        try:
            yield
        finally:
            self._in_hand -= 1
            if self._in_hand == 0:
                self._free.set()

    async def quiet(self, max_wait_s: float = GATE_MAX_WAIT_S) -> None:
        """Return once no alert change is in hand, or after max_wait_s regardless."""
        if self._in_hand:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._free.wait(), max_wait_s)


class NotifierLoop:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        sender: OutboxSender,
        clock: Clock | None = None,
        batch_size: int = 50,
        gate: AlarmGate | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.sender = sender
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self.gate = gate or AlarmGate()
