"""What every notifier loop works with: the database pool, the settings, the outbox sender
that sends what it enqueues, the clock (injected in tests) and its batch size.

The escalation loop (notifier.escalation.Escalator), the watch on whoever acknowledged
(notifier.handler_watch.HandlerWatcher) and the wait for SMS receipts
(notifier.receipts.ReceiptWatcher) share it."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from notifier.outbox import OutboxSender


class NotifierLoop:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        sender: OutboxSender,
        clock: Clock | None = None,
        batch_size: int = 50,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.sender = sender
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
