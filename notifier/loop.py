"""What every notifier loop works with: the database pool, the settings, the outbox sender
that sends what it enqueues, the clock (injected in tests), its batch size, and the
worker's alarm priority (carewatch.alarm_priority): the escalation loop marks alert
changes in hand with it, and background loops pause for them before each poll.

The escalation loop (notifier.escalation.Escalator), the watch on whoever acknowledged
(notifier.handler_watch.HandlerWatcher) and the wait for SMS receipts
(notifier.receipts.ReceiptWatcher) share it."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from carewatch.alarm_priority import AlarmPriority
from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from notifier.outbox import OutboxSender

# How long background work (the watchers' polls, a send's record) stands aside for the
# alert change in hand at one pause: alert changes go first, they cannot starve it.
BACKGROUND_MAX_WAIT_S = 1.0


def notifier_priority() -> AlarmPriority:
    return AlarmPriority(max_wait_s=BACKGROUND_MAX_WAIT_S)


class NotifierLoop:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        sender: OutboxSender,
        clock: Clock | None = None,
        batch_size: int = 50,
        priority: AlarmPriority | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.sender = sender
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self.priority = priority or notifier_priority()
