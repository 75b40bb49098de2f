"""Alert changes first in the notifier (docs/reliability.md, "Alarms first under overload").

The bus consumer of the alerts stream has a database pool of its own: an SOS is decided
and sent while every connection of the shared pool waits for a lock, as a send's record
waits for the row lock of a delivery report the provider callbacks app is writing."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from carewatch.db.pool import open_pool
from carewatch.settings import Settings
from harness.services import await_until
from notifier import outbox
from notifier.loop import notifier_priority
from notifier.outbox import NewNotification
from notifier.receipts import RECEIPT_POLL_MAX_S, ReceiptWatcher
from notifier.targets import Recipient
from notifier.worker import gated
from tests.fake_provider_server import running_fake_providers
from tests.support.notifier import (
    GRID_WORKER_PHONE,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)

SHARED_POOL_SIZE = 8  # carewatch.db.pool.open_pool's default, the notifier's shared pool


async def test_an_sos_is_sent_while_every_shared_connection_waits_for_a_lock(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    blocked_alert = insert_alert(dsn, kind="fall")
    sos = insert_alert(dsn)
    s = notifier_settings(settings, escalation_wait_s=60.0)
    recipients = [
        Recipient("family", f"F{i}", f"家属{i}", "女儿", phone=f"139000000{i:02d}")
        for i in range(SHARED_POOL_SIZE + 2)
    ]
    async with running_fake_providers(s) as fake, running_notifier(fake.settings):
        hour_later_ms = int(time.time() * 1000) + 3_600_000
        pool = await open_pool(dsn, max_size=1)
        try:
            async with pool.connection() as conn:
                items = [
                    NewNotification(blocked_alert, 0, "alert", "sms", r, str(r.phone), {"x": "1"})
                    for r in recipients
                ]
                await outbox.enqueue(conn, items, hour_later_ms)  # not due yet
        finally:
            await pool.close()
        with psycopg.connect(dsn, autocommit=True) as holder:
            # the alert row locked: every send of its messages is made, and its record
            # (a timeline row referencing the alert) then waits, holding a connection
            holder.execute("BEGIN")
            holder.execute("SELECT 1 FROM alerts WHERE id = %s FOR UPDATE", (blocked_alert,))
            with psycopg.connect(dsn, autocommit=True) as due:  # due now
                due.execute(
                    "UPDATE notifications SET next_attempt_at = now() WHERE alert_id = %s",
                    (blocked_alert,),
                )

            async def shared_pool_exhausted() -> bool:
                waiting = query(
                    dsn,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                    " AND position('INSERT INTO alert_events' in query) = 1",
                )[0][0]
                return bool(waiting >= SHARED_POOL_SIZE)

            await await_until(shared_pool_exhausted, 15, "every shared connection waiting")
            await publish_changes(fake.settings, change(sos))

            async def sos_sent() -> bool:
                return any(
                    r["address"] == GRID_WORKER_PHONE and r["outcome"] == "delivered"
                    for r in await fake.records("sms")
                )

            await await_until(sos_sent, 15, "the SOS's SMS while the shared pool is taken")
            # still held: the SOS did not get its connection by the lock going away
            assert (
                query(
                    dsn,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()",
                )[0][0]
                >= SHARED_POOL_SIZE
            )
            holder.execute("ROLLBACK")
    assert query(dsn, "SELECT count(*) FROM notifications WHERE alert_id = %s", sos)[0][0] > 0


async def test_background_work_waits_for_the_alert_change_in_hand() -> None:
    priority = notifier_priority()
    events: list[str] = []
    release = asyncio.Event()

    async def handler(raw: bytes) -> None:
        events.append(f"alarm {raw.decode()} started")
        await release.wait()
        events.append(f"alarm {raw.decode()} done")

    alarm = asyncio.create_task(gated(priority, handler)(b"sos"))
    await asyncio.sleep(0)
    assert priority.alarms_in_flight == 1

    async def background() -> None:  # a watcher's poll, a send's record
        await priority.pause()
        events.append("background")

    later = asyncio.create_task(background())
    for _ in range(5):
        await asyncio.sleep(0)
    assert events == ["alarm sos started"]  # the background work is held back
    release.set()
    await asyncio.gather(alarm, later)
    assert events == ["alarm sos started", "alarm sos done", "background"]
    assert priority.alarms_in_flight == 0


@pytest.mark.parametrize(
    ("confirm_s", "poll_ms", "expected"),
    [(120.0, 200, RECEIPT_POLL_MAX_S), (10.0, 200, 1.0), (1.0, 200, 0.2), (1.0, 50, 0.1)],
)
def test_the_receipt_watch_polls_at_a_tenth_of_the_confirmation_wait(
    confirm_s: float, poll_ms: int, expected: float
) -> None:
    s = Settings(voice_sms_confirm_s=confirm_s, outbox_poll_ms=poll_ms)
    assert ReceiptWatcher.poll_interval_s(s) == pytest.approx(expected)
