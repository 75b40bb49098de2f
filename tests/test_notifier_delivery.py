"""Delivery rules of issue 14 through the real notifier, ack app, PostgreSQL, Redis and the
fake providers: no stale alert message after an acknowledgement (item 8), a wrong device
clock (item 9), the person handling an acknowledged alert (item 5)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest
from prometheus_client import REGISTRY

from carewatch.clock import ManualClock, SystemClock
from carewatch.settings import Settings
from harness.services import await_until, free_port
from notifier.ack_links import link_url, sign
from notifier.content import device_clock_off, event_time_ms
from notifier.outbox import OutboxSender
from tests.fake_provider_server import running_fake_providers
from tests.support.ack import running_ack_app
from tests.support.notifier import (
    FAR_STAFFED,
    GRID_WORKER_ID,
    GRID_WORKER_PHONE,
    NEAR_UNSTAFFED,
    STATION_PHONE,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)
from tests.support.outbox import enqueue, sender_for, sms_to, status_of


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
    assert all(f"于{received}发出" in t for t in texts), texts
    assert not any(f"于{wrong}发出" in t for t in texts)
    assert latency_count() == before[0]  # neither SMS put 3 h into the histogram
    assert skipped() >= before[1] + 2


def skipped() -> float:
    return (
        REGISTRY.get_sample_value(
            "carewatch_e2e_latency_skipped_total", {"kind": "sos", "reason": "device_clock"}
        )
        or 0.0
    )


# --- after an acknowledgement: the person handling it (item 5) ---------------------------


def acknowledge_as_operator_api_does(dsn: str, alert_id: str, actor: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_by = %s,"
            " acknowledged_at = now(), version = version + 1 WHERE id = %s",
            (actor, alert_id),
        )


def press_again_as_the_rules_engine_does(dsn: str, alert_id: str) -> None:
    """What rules_engine.store does with a RepeatAlert: count it, and a timeline entry."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE alerts SET updates = updates + 1 WHERE id = %s", (alert_id,))
        conn.execute(
            "INSERT INTO alert_events (alert_id, actor, action, details)"
            " VALUES (%s, 'rules', 'repeated', '{}')",
            (alert_id,),
        )


def events(dsn: str, alert_id: str, action: str) -> list[dict[str, object]]:
    rows = query(
        dsn,
        "SELECT details FROM alert_events WHERE alert_id = %s AND action = %s ORDER BY id",
        alert_id,
        action,
    )
    return [r[0] for r in rows]


@pytest.mark.parametrize("station_on_leave", [False, True])
async def test_after_an_acknowledgement_presses_reach_the_handler_who_is_then_watched(
    settings: Settings, station_on_leave: bool
) -> None:
    """A press on an acknowledged SOS reaches the person handling it; without 已到达 they are
    reminded, then the station and the duty officer are alerted (the duty rosters apply:
    a station on leave passes the alert to its substitute). A second alert whose handler
    arrives gets neither."""
    dsn = settings.database_url
    seed_registry(dsn)
    if station_on_leave:  # the staffed station is on leave around today; the other stands in
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "INSERT INTO duty_leaves (member_kind, member_id, first_day, last_day,"
                " substitute_id) VALUES ('station', %s, current_date - 2, current_date + 2, %s)",
                (FAR_STAFFED, NEAR_UNSTAFFED),
            )
    sos = insert_alert(dsn)
    fall = insert_alert(dsn, kind="fall")
    gw = f"grid_worker:{GRID_WORKER_ID}"
    s = notifier_settings(
        settings,
        escalation_wait_s=60.0,
        handler_remind_after_s=2.0,
        handler_escalate_after_s=4.0,
        handler_press_min_interval_s=0.0,
    )
    async with running_fake_providers(s) as fake, running_notifier(fake.settings):
        await publish_changes(fake.settings, change(sos), change(fall, kind="fall"))

        async def step0_sent() -> bool:
            return len(alert_sms(await fake.records("sms"))) == 4

        await await_until(step0_sent, 10, "step 0 of both alerts")
        for alert_id in (sos, fall):
            acknowledge_as_operator_api_does(dsn, alert_id, gw)
        await publish_changes(
            fake.settings,
            change(sos, status="acknowledged", version=2, actor=gw),
            change(fall, status="acknowledged", version=2, actor=gw, kind="fall"),
        )

        async def armed() -> bool:
            rows = query(dsn, "SELECT count(*) FROM escalations WHERE presses_seen = 0")
            return bool(rows[0][0] == 2)

        await await_until(armed, 10, "the watch on the handler armed")
        with psycopg.connect(dsn) as conn:  # the fall's handler arrives (已到达)
            conn.execute(
                "INSERT INTO alert_events (alert_id, actor, action) VALUES (%s, %s, 'arrived')",
                (fall, gw),
            )
        acked = len(await fake.records("sms"))
        press_again_as_the_rules_engine_does(dsn, sos)

        def to_handler(records: list[dict[str, object]]) -> list[dict[str, object]]:
            return [r for r in alert_sms(records) if r["address"] == GRID_WORKER_PHONE]

        async def press_passed_on() -> bool:
            return len(to_handler((await fake.records("sms"))[acked:])) == 1

        await await_until(press_passed_on, 10, "the new press to reach the handler")
        assert events(dsn, sos, "handler_renotified")[0]["reason"] == "pressed_again"

        async def escalated() -> bool:
            return bool(events(dsn, sos, "handler_escalated"))

        await await_until(escalated, 15, "no arrival: reminded, then escalated")
        await wait_sent(dsn, sos)
        after = (await fake.records("sms"))[acked:]
    reasons = [e["reason"] for e in events(dsn, sos, "handler_renotified")]
    assert reasons == ["pressed_again", "not_arrived"]
    assert len(to_handler(after)) == 2  # the press, then the reminder: the same person
    others = {str(r["address"]) for r in alert_sms(after)} - {GRID_WORKER_PHONE}
    # the staffed station (or its substitute), the duty officer
    station = NEAR_UNSTAFFED_PHONE if station_on_leave else STATION_PHONE
    assert others == {station, "13800000009"}
    # every message after the acknowledgement is about the SOS, whose handler never came
    assert all(r["params"]["kind_event"] == "发出紧急呼叫" for r in alert_sms(after))
    assert events(dsn, fall, "handler_renotified") == []
    assert events(dsn, fall, "handler_escalated") == []


NEAR_UNSTAFFED_PHONE = "13800000005"


async def wait_sent(dsn: str, alert_id: str) -> None:
    async def all_sent() -> bool:
        rows = query(
            dsn,
            "SELECT count(*) FROM notifications WHERE alert_id = %s AND status = 'pending'",
            alert_id,
        )
        return bool(rows[0][0] == 0)

    await await_until(all_sent, 10, "every message of the alert sent")
