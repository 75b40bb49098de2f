"""Delivery rules of issue 14 through the real notifier, ack app, PostgreSQL, Redis and the
fake providers: no stale alert message after an acknowledgement (item 8), a wrong device
clock (item 9)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg
from prometheus_client import REGISTRY

from carewatch.clock import ManualClock, SystemClock
from carewatch.settings import Settings
from notifier.ack_links import link_url, sign
from notifier.content import device_clock_off, event_time_ms
from notifier.outbox import OutboxSender
from tests.fake_provider_server import running_fake_providers
from tests.services import await_until, free_port
from tests.test_ack_app import running_ack_app
from tests.test_notifier_outbox import enqueue, sender_for, sms_to, status_of
from tests.test_notifier_support import (
    GRID_WORKER_ID,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)


def alert_sms(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [
        r
        for r in records
        if r["outcome"] == "delivered" and str(r["text"]).startswith("【智慧养老】紧急")
    ]


async def test_acknowledgement_cancels_the_rounds_queued_alert_messages(
    settings: Settings,
) -> None:
    """Both step-0 alert SMS fail and wait for a retry; the grid worker acknowledges (on
    WeCom) before it: the retries never go out, the 'handled' notices do."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    port = free_port()
    base = notifier_settings(
        settings,
        escalation_wait_s=30.0,
        outbox_backoff_base_s=2.0,
        ack_port=port,
        ack_base_url=f"http://127.0.0.1:{port}",
    )
    async with (
        running_fake_providers(base) as fake,
        running_notifier(fake.settings),
        running_ack_app(fake.settings) as http,
    ):
        s = fake.settings
        await fake.fail("sms", count=2, mode="5xx")
        await publish_changes(s, change(alert_id))

        async def sms_failed_once() -> bool:
            rows = query(
                dsn,
                "SELECT count(*) FROM notifications WHERE channel = 'sms' AND attempts = 1"
                " AND status = 'pending' AND last_error IS NOT NULL",
            )
            return bool(rows[0][0] == 2)

        await await_until(sms_failed_once, 10, "both step-0 SMS to fail and wait for a retry")
        [(retry_at,)] = query(
            dsn, "SELECT max(next_attempt_at) FROM notifications WHERE channel = 'sms'"
        )
        token = sign(
            alert_id,
            "grid_worker",
            GRID_WORKER_ID,
            int(time.time() * 1000) + 3_600_000,
            s.ack_secret.get_secret_value(),
        )
        acked = await http.post(
            urlsplit(link_url(s.ack_base_url, token)).path, json={"action": "acknowledge"}
        )
        assert acked.status_code == 200, acked.text
        # in the acknowledgement's own transaction: the retries are cancelled
        assert query(
            dsn,
            "SELECT recipient_kind, status FROM notifications WHERE channel = 'sms'"
            " AND purpose = 'alert' ORDER BY recipient_kind",
        ) == [("family", "cancelled"), ("grid_worker", "cancelled")]

        async def handled_sent() -> bool:
            rows = query(
                dsn,
                "SELECT count(*) FROM notifications WHERE purpose = 'handled' AND status = 'sent'",
            )
            return bool(rows[0][0] == 2)  # the family's WeCom and the wristband

        await await_until(handled_sent, 10, "handled notices sent")

        async def past_retry() -> bool:
            return time.time() > retry_at.timestamp() + 5 * s.outbox_poll_ms / 1000

        await await_until(past_retry, 10, "the cancelled retries' due time to pass")
        records = await fake.records("sms")
    assert alert_sms(records) == []  # no '紧急' SMS after the acknowledgement, to anyone
    assert query(
        dsn,
        "SELECT count(*) FROM alert_events WHERE action = 'notifications_cancelled'"
        " AND (details->>'count')::int = 2",
    ) == [(1,)]
    # the family was reached on WeCom and told there; its failed SMS reached nobody
    assert query(
        dsn,
        "SELECT channel, recipient_kind FROM notifications WHERE purpose = 'handled'"
        " ORDER BY channel",
    ) == [("downlink", "device"), ("wecom", "family")]


async def test_an_alert_acknowledged_elsewhere_gets_no_stale_retry(settings: Settings) -> None:
    """Acknowledged (or closed) by a path whose change the notifier has not handled yet:
    the sender itself does not send the alert message queued before, and says so."""
    dsn = settings.database_url
    seed_registry(dsn)
    acked_id = insert_alert(dsn)
    closed_id = insert_alert(dsn, kind="fall")
    async with running_fake_providers(notifier_settings(settings)) as fake:
        clock = ManualClock(SystemClock().now_ms())
        async with sender_for(fake.settings) as plain:
            sender = OutboxSender(plain.pool, plain.channels, fake.settings, clock)
            [acked_row] = await enqueue(sender, sms_to(acked_id))
            [closed_row] = await enqueue(sender, sms_to(closed_id))
            with psycopg.connect(dsn) as conn:  # what operator_api.actions does
                conn.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_at = now() + '1 s',"
                    " acknowledged_by = 'operator:OP1' WHERE id = %s",
                    (acked_id,),
                )
                conn.execute(
                    "UPDATE alerts SET status = 'resolved', closed_at = now() WHERE id = %s",
                    (closed_id,),
                )
            clock.advance(1)
            assert await sender.send_due() == 2
        records = await fake.records("sms")
    assert records == []
    assert status_of(dsn, acked_row) == ("cancelled", 0)
    assert status_of(dsn, closed_row) == ("cancelled", 0)
    assert query(
        dsn, "SELECT count(*) FROM alert_events WHERE action = 'notifications_cancelled'"
    ) == [(2,)]


# --- device clock skew (item 9) ---------------------------------------------------------


def test_the_event_time_is_the_devices_unless_its_clock_is_off() -> None:
    server = 1_764_000_000_000
    skew_s = 300.0
    # a normal delay, and a press buffered a few minutes: the device's time
    assert event_time_ms(server - 800, server, skew_s) == server - 800
    assert event_time_ms(server - 299_000, server, skew_s) == server - 299_000
    # behind by hours (a reset clock), or ahead of the server: the server's receive time
    assert event_time_ms(server - 3 * 3_600_000, server, skew_s) == server
    assert event_time_ms(server + 60_000, server, skew_s) == server
    assert device_clock_off(server + 60_000, server, skew_s)
    assert not device_clock_off(server + 2_000, server, skew_s)  # within the tolerance
    assert not device_clock_off(server - 3 * 3_600_000, None, skew_s)  # unknown: trusted


def latency_count(kind: str = "sos") -> float:
    return (
        REGISTRY.get_sample_value(
            "carewatch_e2e_latency_seconds_count", {"kind": kind, "channel": "sms"}
        )
        or 0.0
    )


async def test_a_wrong_device_clock_shows_the_receive_time_and_stays_out_of_latency(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    # the wristband's clock is three hours behind: it said 16:02 of a press at 19:02
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE alerts SET device_time = opened_at - interval '3 hours' WHERE id = %s",
            (alert_id,),
        )
    [(opened_at, device_time)] = query(
        dsn, "SELECT opened_at, device_time FROM alerts WHERE id = %s", alert_id
    )
    before = (latency_count(), skipped())
    async with running_fake_providers(notifier_settings(settings)) as fake:
        async with running_notifier(fake.settings):
            await publish_changes(fake.settings, change(alert_id))

            async def sms_sent() -> bool:
                return len(alert_sms(await fake.records("sms"))) == 2

            await await_until(sms_sent, 10, "step-0 SMS")
        texts = [str(r["text"]) for r in alert_sms(await fake.records("sms"))]
    zone = ZoneInfo(settings.timezone)
    received = opened_at.astimezone(zone).strftime("%H:%M")
    wrong = device_time.astimezone(zone).strftime("%H:%M")
    assert all(f"于{received}触发" in t for t in texts), texts
    assert not any(f"于{wrong}触发" in t for t in texts)
    assert latency_count() == before[0]  # neither SMS put 3 h into the histogram
    assert skipped() >= before[1] + 2


def skipped() -> float:
    return (
        REGISTRY.get_sample_value(
            "carewatch_e2e_latency_skipped_total", {"kind": "sos", "reason": "device_clock"}
        )
        or 0.0
    )
