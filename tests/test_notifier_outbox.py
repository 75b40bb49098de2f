"""The outbox against PostgreSQL and the fake providers: dedup, retries with backoff,
permanent failures, and rows a dead sender had claimed."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator

import httpx
from prometheus_client import REGISTRY

from carewatch.clock import ManualClock, SystemClock
from carewatch.db.pool import open_pool
from carewatch.settings import Settings
from harness.services import await_until
from notifier import outbox
from notifier.ack_links import new_short_code
from notifier.channels.base import Message
from notifier.channels.registry import build_channels
from notifier.escalation import load_alert
from notifier.outbox import NewNotification, OutboxSender
from notifier.targets import Recipient
from tests.fake_provider_server import RunningFakeProviders, running_fake_providers
from tests.support.notifier import (
    GRID_WORKER_ID,
    insert_alert,
    notifier_settings,
    query,
    seed_registry,
)
from tests.support.outbox import enqueue, polling, sender_for, sms_to, status_of


async def test_enqueue_is_idempotent_by_key(settings: Settings) -> None:
    seed_registry(settings.database_url)
    alert_id = insert_alert(settings.database_url)
    async with sender_for(notifier_settings(settings)) as sender:
        first = await enqueue(sender, sms_to(alert_id))
        again = await enqueue(sender, sms_to(alert_id))
    assert len(first) == 1 and again == []
    key = query(settings.database_url, "SELECT idempotency_key FROM notifications")
    assert key == [(f"{alert_id}:0:alert:grid_worker:{GRID_WORKER_ID}:sms",)]


async def test_a_step_is_enqueued_at_once_in_order_and_only_new_rows_keep_codes(
    settings: Settings,
) -> None:
    seed_registry(settings.database_url)
    alert_id = insert_alert(settings.database_url)
    old = sms_to(alert_id)
    family = Recipient("family", "F1", "李四", "家属", "13800000001")
    later = NewNotification(
        alert_id, 1, "alert", "sms", family, "13800000001", sms_to(alert_id).params
    )
    station = dataclasses.replace(later, channel="wecom", address="st-1")
    async with sender_for(notifier_settings(settings)) as sender:
        [old_id] = await enqueue(sender, old)
        retried = dataclasses.replace(old, params={**old.params, "code": new_short_code()})
        ids = await enqueue(sender, later, retried, station)
    rows = query(settings.database_url, "SELECT id, idempotency_key FROM notifications ORDER BY id")
    assert [key for _, key in rows] == [
        old.idempotency_key,
        later.idempotency_key,
        station.idempotency_key,
    ]
    assert ids == [rows[1][0], rows[2][0]] and old_id == rows[0][0]
    codes = {c for (c,) in query(settings.database_url, "SELECT code FROM ack_short_links")}
    # the duplicate's fresh code was never sent: not stored
    assert codes == {old.params["code"], later.params["code"]}


async def test_provider_failures_are_retried_with_backoff_then_sent(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(notifier_settings(settings)) as fake:
        await fake.fail("sms", count=2, mode="5xx")
        async with sender_for(fake.settings) as sender, polling(sender):
            [row_id] = await enqueue(sender, sms_to(alert_id))

            async def sent() -> bool:
                return status_of(dsn, row_id)[0] == "sent"

            await await_until(sent, 15, "the notification to get through")
        records = await fake.records("sms")

    assert status_of(dsn, row_id) == ("sent", 3)
    assert [r["outcome"] for r in records] == ["failed", "failed", "delivered"]
    # waits grow: at least base, then at least twice base, between the attempts
    base_ms = fake.settings.outbox_backoff_base_s * 1000
    gaps = [b["received_ms"] - a["received_ms"] for a, b in itertools.pairwise(records)]
    assert gaps[0] >= base_ms * 0.95 and gaps[1] >= 2 * base_ms * 0.95
    row = query(dsn, "SELECT provider_message_id, sent_at IS NOT NULL FROM notifications")
    assert row == [(records[-1]["message_id"], True)]


async def test_a_permanent_error_fails_at_once(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(notifier_settings(settings)) as fake:
        async with sender_for(fake.settings) as sender:
            [row_id] = await enqueue(sender, sms_to(alert_id, phone="12345"))
            assert await sender.send_due() == 1
        records = await fake.records("sms")
    assert status_of(dsn, row_id) == ("failed", 1)
    assert [r["outcome"] for r in records] == ["rejected"]
    events = query(dsn, "SELECT action FROM alert_events WHERE actor = 'notifier'")
    assert events == [("notification_failed",)]


@dataclasses.dataclass
class DeadAndAlive:
    """An alert, the fake providers and two senders with a 1 s lease: `dead` takes a row
    and dies before sending it, `alive` polls."""

    dsn: str
    alert_id: str
    fake: RunningFakeProviders
    dead: OutboxSender
    alive: OutboxSender

    async def sent_once_the_lease_runs_out(self, row_id: int) -> None:
        """`alive`'s polling sends the row `dead` held: after its lease, on the second
        attempt, delivered exactly once."""
        leased_until = query(self.dsn, "SELECT next_attempt_at FROM notifications")[0][0]
        async with polling(self.alive):

            async def sent() -> bool:
                return status_of(self.dsn, row_id)[0] == "sent"

            await await_until(sent, 15, "the orphaned row to be sent")
        records = await self.fake.records("sms")
        assert status_of(self.dsn, row_id) == ("sent", 2)
        assert [r["outcome"] for r in records] == ["delivered"]
        assert records[0]["received_ms"] >= leased_until.timestamp() * 1000 - 1


@contextlib.asynccontextmanager
async def dead_and_alive(settings: Settings) -> AsyncIterator[DeadAndAlive]:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with (
        running_fake_providers(notifier_settings(settings, outbox_lease_s=1.0)) as fake,
        sender_for(fake.settings) as dead,
        sender_for(fake.settings) as alive,
    ):
        yield DeadAndAlive(dsn, alert_id, fake, dead, alive)


async def test_rows_claimed_by_a_dead_sender_are_sent_after_the_lease(settings: Settings) -> None:
    async with dead_and_alive(settings) as run:
        [row_id] = await enqueue(run.dead, sms_to(run.alert_id))
        # the first sender claims the row and dies before sending it
        claimed = await run.dead.claim()
        assert [c.id for c in claimed] == [row_id]
        # while leased, nobody else can take it
        assert await run.alive.claim() == []
        await run.sent_once_the_lease_runs_out(row_id)
    sent = query(run.dsn, "SELECT count(*) FROM notifications WHERE status = 'sent'")
    assert sent == [(1,)]


async def enqueue_leased(sender: OutboxSender, alert_id: str) -> outbox.Claimed:
    async with sender.pool.connection() as conn:
        alert = await load_alert(conn, alert_id)
        assert alert is not None
        [row] = await outbox.enqueue_leased(
            conn, alert, [sms_to(alert_id)], sender.lease_until_ms()
        )
    return row


async def test_rows_enqueued_leased_are_sent_at_once_by_their_sender_only(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(notifier_settings(settings)) as fake:
        async with sender_for(fake.settings) as sender, sender_for(fake.settings) as other:
            row = await enqueue_leased(sender, alert_id)
            assert status_of(dsn, row.id) == ("pending", 1)
            assert await other.claim() == []  # leased: no poll takes it
            sender.send_leased([row])
            await sender.drain()
        records = await fake.records("sms")
    assert status_of(dsn, row.id) == ("sent", 1)
    assert [r["outcome"] for r in records] == ["delivered"]
    assert row.alert_kind == "sos" and row.idempotency_key == sms_to(alert_id).idempotency_key


async def test_rows_enqueued_leased_by_a_dead_sender_are_sent_after_the_lease(
    settings: Settings,
) -> None:
    async with dead_and_alive(settings) as run:
        row = await enqueue_leased(run.dead, run.alert_id)  # ... and dies before sending it
        await run.sent_once_the_lease_runs_out(row.id)


# --- resends are safe: Aliyun sends every accepted request (issue 14, item 6) ----------


def sms_lookups(result: str) -> float:
    return REGISTRY.get_sample_value("carewatch_sms_resend_lookups_total", {"result": result}) or 0


async def test_a_timeout_after_acceptance_is_looked_up_and_not_sent_twice(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    found_before = sms_lookups("found")
    s = notifier_settings(settings, provider_timeout_s=0.5)
    async with running_fake_providers(s) as fake:
        await fake.fail("sms", mode="timeout_after_send")  # accepted, the reply never comes
        async with sender_for(fake.settings) as sender, polling(sender):
            [row_id] = await enqueue(sender, sms_to(alert_id))

            async def sent() -> bool:
                return status_of(dsn, row_id)[0] == "sent"

            await await_until(sent, 15, "the notification to be recorded as sent")
        stats = (await fake.stats())["sms"]
        records = await fake.records("sms")
    assert status_of(dsn, row_id) == ("sent", 2)
    assert [r["outcome"] for r in records] == ["delivered"]
    assert (stats["delivered"], stats["delivered_again"]) == (1, 0)
    assert sms_lookups("found") == found_before + 1
    [(details,)] = query(
        dsn,
        "SELECT details FROM alert_events WHERE action = 'notified' AND alert_id = %s",
        alert_id,
    )
    assert details["already_sent"] is True and details["attempts"] == 2


async def test_a_sender_dead_after_the_provider_accepted_is_not_sent_twice(
    settings: Settings,
) -> None:
    async with dead_and_alive(settings) as run:
        [row_id] = await enqueue(run.dead, sms_to(run.alert_id))
        [claimed] = await run.dead.claim()
        # the request reaches the provider, which sends it; the sender dies before it
        # records the answer (as kill -9 between the two)
        assert (await run.dead.channels["sms"].send(outbox_message(claimed))).ok
        async with polling(run.alive):

            async def sent() -> bool:
                return status_of(run.dsn, row_id)[0] == "sent"

            await await_until(sent, 15, "the orphaned row to be recorded as sent")
        stats = (await run.fake.stats())["sms"]
    assert status_of(run.dsn, row_id) == ("sent", 2)
    assert (stats["delivered"], stats["delivered_again"]) == (1, 0)


async def test_a_sender_dead_before_the_provider_accepted_sends_once(settings: Settings) -> None:
    """The lookup finds nothing: the resend goes out (once)."""
    async with dead_and_alive(settings) as run:
        [row_id] = await enqueue(run.dead, sms_to(run.alert_id))
        assert len(await run.dead.claim()) == 1  # ... and dies before sending
        not_found_before = sms_lookups("not_found")
        await run.sent_once_the_lease_runs_out(row_id)
    assert sms_lookups("not_found") == not_found_before + 1


def outbox_message(row: outbox.Claimed) -> Message:
    return Message(row.idempotency_key, row.address, row.purpose, dict(row.params))


# --- alert messages of an open alert are not given up (issue 14, item 7) ---------------


async def test_a_ten_minute_sms_outage_ends_with_the_open_alerts_sms_sent(
    settings: Settings,
) -> None:
    """The retry schedule is fast-forwarded with an injected clock: every attempt is a real
    request to the fake provider, which fails them all until the outage ends."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    closed_id = insert_alert(dsn, status="resolved")
    clock = ManualClock(SystemClock().now_ms())
    start_ms = clock.now_ms()
    overdue_before = (
        REGISTRY.get_sample_value("carewatch_outbox_overdue_retries_total", {"channel": "sms"}) or 0
    )
    s = notifier_settings(settings, outbox_backoff_base_s=1.0, outbox_retry_max_interval_s=60.0)
    async with running_fake_providers(s) as fake:
        await fake.fail("sms", count=10_000, mode="5xx")
        pool = await open_pool(settings.database_url)
        async with httpx.AsyncClient() as client:
            sender = OutboxSender(pool, build_channels(fake.settings, client), fake.settings, clock)
            try:
                [alert_row] = await enqueue(sender, sms_to(alert_id))
                [update_row] = await enqueue(
                    sender, dataclasses.replace(sms_to(closed_id), purpose="closed")
                )
                while clock.now_ms() - start_ms < 600_000:
                    await sender.send_due()
                    [(due,)] = query(
                        dsn, "SELECT next_attempt_at FROM notifications WHERE id = %s", alert_row
                    )
                    clock.advance(max(0.0, due.timestamp() - clock.now_ms() / 1000) + 0.001)
                status, attempts = status_of(dsn, alert_row)
                # still trying after 10 minutes, at most once a minute once backed off
                assert status == "pending" and attempts > s.outbox_max_attempts
                assert attempts <= 7 + 600 // 60
                # a message that is not an alert of an open alert is given up as before
                assert status_of(dsn, update_row) == ("failed", s.outbox_max_attempts)
                overdue = REGISTRY.get_sample_value(
                    "carewatch_outbox_overdue_retries_total", {"channel": "sms"}
                )
                assert overdue == overdue_before + attempts - s.outbox_max_attempts + 1

                await fake.recover("sms")  # the provider is back
                clock.advance(61)
                assert await sender.send_due() == 1
            finally:
                await pool.close()
        delivered = [r for r in await fake.records("sms") if r["outcome"] == "delivered"]
    assert status_of(dsn, alert_row)[0] == "sent"
    assert [r["out_id"] for r in delivered] == [sms_to(alert_id).idempotency_key]
