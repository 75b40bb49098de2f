"""Escalation through the real worker: Redis alerts stream in, PostgreSQL outbox, real
adapters sending to the fake Aliyun SMS / WeCom servers over HTTP."""

from __future__ import annotations

from typing import Any

from carewatch.bus import ALERTS_STREAM, make_bus
from carewatch.settings import Settings
from harness.services import await_until
from tests.fake_provider_server import link_in_sms, running_fake_providers
from tests.support.notifier import (
    DUTY_OFFICER_ID,
    ELDER_NAME,
    FAMILY_1_PHONE,
    FAMILY_2_PHONE,
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
    wait_consumed,
)


def rows_of(
    dsn: str, alert_id: str, step: int, purpose: str = "alert"
) -> set[tuple[str, Any, str]]:
    rows = query(
        dsn,
        "SELECT recipient_kind, recipient_id, channel FROM notifications"
        " WHERE alert_id = %s AND step = %s AND purpose = %s",
        alert_id,
        step,
        purpose,
    )
    return {(r[0], r[1], r[2]) for r in rows}


def family_ids(dsn: str) -> list[str]:
    return [str(r[0]) for r in query(dsn, "SELECT id FROM contacts ORDER BY priority")]


async def test_open_alert_escalates_step_by_step_without_duplicates(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    first, second = family_ids(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(notifier_settings(settings)) as fake:
        s = fake.settings
        async with running_notifier(s):
            opened = change(alert_id)
            await publish_changes(s, opened)

            # step 0 at once: grid worker and the first family contact, SMS and WeCom
            step0 = {
                ("grid_worker", GRID_WORKER_ID, "sms"),
                ("grid_worker", GRID_WORKER_ID, "wecom"),
                ("family", first, "sms"),
                ("family", first, "wecom"),
            }

            async def step0_sent() -> bool:
                sent = query(
                    dsn,
                    "SELECT count(*) FROM notifications WHERE step = 0 AND status = 'sent'",
                )
                return bool(sent[0][0] == 4)

            await await_until(step0_sent, 10, "step 0 sent")
            assert rows_of(dsn, alert_id, 0) == step0

            # no acknowledgement: after the wait step 1 reaches all family and the nearest
            # STAFFED station (the nearer unstaffed one is skipped); the first family
            # contact, reached at step 0, is not sent the same alert again
            async def step1_enqueued() -> bool:
                return bool(rows_of(dsn, alert_id, 1))

            await await_until(step1_enqueued, 10, "step 1")
            assert rows_of(dsn, alert_id, 1) == {
                ("family", second, "sms"),  # no WeCom account: SMS only
                ("station", FAR_STAFFED, "sms"),
                ("station", FAR_STAFFED, "wecom"),
            }
            assert not query(
                dsn, "SELECT 1 FROM notifications WHERE recipient_id = %s", NEAR_UNSTAFFED
            )

            # and the district duty officer last; then nothing more is scheduled
            async def finished() -> bool:
                rows = query(dsn, "SELECT step, next_step_at FROM escalations")
                return rows == [(2, None)]

            await await_until(finished, 10, "last step")
            assert rows_of(dsn, alert_id, 2) == {
                ("duty_officer", DUTY_OFFICER_ID, "sms"),
                ("duty_officer", DUTY_OFFICER_ID, "wecom"),
            }

            # the same change again, and another 'open' change for the same alert:
            # no new notification, no new timeline step
            before = query(dsn, "SELECT count(*) FROM notifications")[0][0]
            await publish_changes(s, opened, change(alert_id, version=2))
            await wait_consumed(s)
            assert query(dsn, "SELECT count(*) FROM notifications")[0][0] == before

            async def all_sent() -> bool:
                rows = query(dsn, "SELECT count(*) FROM notifications WHERE status <> 'sent'")
                return bool(rows[0][0] == 0)

            await await_until(all_sent, 10, "every notification sent")

        # what the providers received: real requests, each recipient's own link
        sms = {r["address"]: r for r in await fake.records("sms")}
        assert {GRID_WORKER_PHONE, FAMILY_1_PHONE, FAMILY_2_PHONE, STATION_PHONE} <= set(sms)
        gw = sms[GRID_WORKER_PHONE]
        assert gw["params"]["elder_name"] == ELDER_NAME
        assert link_in_sms(gw) == f"{s.ack_base_url}/a/{gw['params']['code']}"
        assert gw["params"]["code"] != sms[FAMILY_1_PHONE]["params"]["code"]
        sms_requests = [r for r in await fake.records("sms") if r["outcome"] == "delivered"]
        assert len(sms_requests) == len({r["out_id"] for r in sms_requests})

    steps = query(
        dsn,
        "SELECT details->>'step' FROM alert_events WHERE alert_id = %s AND actor = 'notifier'"
        " AND action = 'escalation_step' ORDER BY id",
        alert_id,
    )
    assert [r[0] for r in steps] == ["0", "1", "2"]
    notified = query(
        dsn,
        "SELECT count(*) FROM alert_events WHERE alert_id = %s AND action = 'notified'",
        alert_id,
    )
    assert notified[0][0] == query(dsn, "SELECT count(*) FROM notifications")[0][0]


async def test_closing_an_alert_stops_escalation_and_tells_who_was_notified(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    first, _ = family_ids(dsn)
    alert_id = insert_alert(dsn)
    # a long wait: the alert is closed while step 1 is still ahead
    async with running_fake_providers(notifier_settings(settings, escalation_wait_s=600)) as fake:
        s = fake.settings
        async with running_notifier(s):
            await publish_changes(s, change(alert_id))

            async def step0_sent() -> bool:
                rows = query(dsn, "SELECT count(*) FROM notifications WHERE status = 'sent'")
                return bool(rows[0][0] == 4)

            await await_until(step0_sent, 10, "step 0 sent")
            # the elder cancels on the device: the rules engine closes the alert
            query(dsn, "UPDATE alerts SET status = 'cancelled' WHERE id = %s RETURNING 1", alert_id)
            await publish_changes(s, change(alert_id, "cancelled", 2))

            async def closed_sent() -> bool:
                rows = query(
                    dsn,
                    "SELECT count(*) FROM notifications WHERE purpose = 'closed' AND status = 'sent'",
                )
                return bool(rows[0][0] == 4)

            await await_until(closed_sent, 10, "closed notifications sent")
        sms = await fake.records("sms")
        updates = [r for r in sms if r["template_code"] == s.aliyun_sms_template_handled]
        assert {r["address"] for r in updates} == {GRID_WORKER_PHONE, FAMILY_1_PHONE}
        assert all("结束" in r["text"] for r in updates)

    assert rows_of(dsn, alert_id, 0, "closed") == {
        ("grid_worker", GRID_WORKER_ID, "sms"),
        ("grid_worker", GRID_WORKER_ID, "wecom"),
        ("family", first, "sms"),
        ("family", first, "wecom"),
    }
    esc = query(dsn, "SELECT next_step_at, stopped_reason FROM escalations")
    assert esc == [(None, "cancelled")]


async def test_undecodable_alert_change_is_kept_and_the_worker_goes_on(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(notifier_settings(settings)) as fake:
        s = fake.settings
        async with running_notifier(s):
            bus = make_bus(s)
            await bus.start()
            await bus.publish(ALERTS_STREAM, b'{"id": 1, "status": "open"}')
            await bus.stop()
            await publish_changes(s, change(alert_id))

            async def notified() -> bool:
                return bool(rows_of(dsn, alert_id, 0))

            await await_until(notified, 10, "the next good change to be acted on")
    dead = query(dsn, "SELECT topic, reason, payload FROM dead_letters")
    assert dead == [("alerts", "bad_alert_change", b'{"id": 1, "status": "open"}')]
