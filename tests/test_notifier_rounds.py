"""Reminders and raised severities from the rules engine start a new escalation round."""

from __future__ import annotations

import msgspec
import psycopg

from carewatch.settings import Settings
from harness.services import await_until
from tests.fake_provider_server import running_fake_providers
from tests.support.notifier import (
    GRID_WORKER_ID,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)


def alert_rows(dsn: str, alert_id: str) -> list[tuple[str, str, str, str]]:
    rows = query(
        dsn,
        "SELECT idempotency_key, recipient_kind, recipient_id::text, channel FROM notifications"
        " WHERE alert_id = %s AND purpose = 'alert' AND status = 'sent' ORDER BY id",
        alert_id,
    )
    return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


async def test_raised_severity_and_reminder_notify_again(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn, kind="inactivity", severity="warning")
    async with running_fake_providers(notifier_settings(settings)) as fake:
        s = fake.settings
        async with running_notifier(s):
            await publish_changes(s, change(alert_id, kind="inactivity", severity="warning"))

            async def warning_sent() -> bool:
                return len(alert_rows(dsn, alert_id)) == 2  # grid worker: sms + wecom

            await await_until(warning_sent, 10, "the warning's step 0")
            assert {r[1] for r in alert_rows(dsn, alert_id)} == {"grid_worker"}

            # the rules engine raises it to critical: the critical policy runs from step 0,
            # which also reaches the first family contact; the grid worker hears again
            with psycopg.connect(dsn) as conn:
                conn.execute("UPDATE alerts SET severity = 'critical' WHERE id = %s", (alert_id,))
            raised = msgspec.structs.replace(
                change(alert_id, version=2, kind="inactivity", severity="critical"),
                reason="escalated",
            )
            await publish_changes(s, raised)

            def grid_worker_sms() -> int:
                rows = alert_rows(dsn, alert_id)
                return len([r for r in rows if r[2] == GRID_WORKER_ID and r[3] == "sms"])

            # the round's messages are sent one by one: wait for both kinds before judging
            async def critical_sent() -> bool:
                rows = alert_rows(dsn, alert_id)
                return any(r[1] == "family" for r in rows) and grid_worker_sms() >= 2

            await await_until(critical_sent, 10, "the critical round")
            rows = alert_rows(dsn, alert_id)
            assert grid_worker_sms() == 2
            assert len({r[0] for r in rows}) == len(rows)  # a new round, new keys

            # a reminder (device health repeats while the condition lasts) notifies again
            reminder = msgspec.structs.replace(
                change(alert_id, version=3, kind="inactivity", severity="critical"),
                reason="reminder",
            )
            await publish_changes(s, reminder, reminder)  # duplicate delivery: one round

            async def reminded() -> bool:
                grid = [r for r in alert_rows(dsn, alert_id) if r[2] == GRID_WORKER_ID]
                return len([r for r in grid if r[3] == "sms"]) == 3

            await await_until(reminded, 10, "the reminder round")
            rounds = query(dsn, "SELECT round FROM escalations WHERE alert_id = %s", alert_id)
            assert rounds == [(2,)]
        delivered = [r for r in await fake.records("sms") if r.get("outcome") == "delivered"]
        assert len(delivered) == len({r["out_id"] for r in delivered})


async def test_acknowledged_elsewhere_still_tells_everyone_notified(settings: Settings) -> None:
    """The operator API stops the escalation in its own transaction; the notifier must
    still send the 'handled' messages when the acknowledged change reaches it."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(notifier_settings(settings)) as fake:
        s = fake.settings
        async with running_notifier(s):
            await publish_changes(s, change(alert_id))

            async def step0_sent() -> bool:
                return len(alert_rows(dsn, alert_id)) == 4

            await await_until(step0_sent, 10, "step 0")
            with psycopg.connect(dsn) as conn:  # what operator_api.actions does
                conn.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_by = 'operator:OP1'"
                    " WHERE id = %s",
                    (alert_id,),
                )
                conn.execute(
                    "UPDATE escalations SET next_step_at = NULL, stopped_at = now(),"
                    " stopped_reason = 'acknowledged via operator API' WHERE alert_id = %s",
                    (alert_id,),
                )
            await publish_changes(
                s, change(alert_id, status="acknowledged", version=2, actor="operator:OP1")
            )

            async def handled_sent() -> bool:
                rows = query(
                    dsn,
                    "SELECT count(*) FROM notifications WHERE alert_id = %s"
                    " AND purpose = 'handled' AND status = 'sent'",
                    alert_id,
                )
                return bool(rows[0][0] >= 4)

            await await_until(handled_sent, 10, "'handled' messages to grid worker and family")


async def test_inbox_forgets_changes_older_than_the_redelivery_horizon(settings: Settings) -> None:
    from carewatch.db.pool import open_pool
    from notifier.escalation import Escalator
    from notifier.worker import notifier_parts

    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO notifier_inbox (change_id, alert_id, processed_at) VALUES"
            " ('old', %s, now() - interval '2 days'), ('fresh', %s, now())",
            (alert_id, alert_id),
        )
    async with notifier_parts(settings) as parts:
        pool = await open_pool(dsn, max_size=1)
        try:
            pruned = await Escalator(pool, settings, parts.sender).prune_inbox()
        finally:
            await pool.close()
    assert pruned == 1
    assert query(dsn, "SELECT change_id FROM notifier_inbox") == [("fresh",)]
