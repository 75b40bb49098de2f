"""SMS failover through the real worker: both providers down -> the alert SMS is retried
with backoff, counted as overdue for the platform's on-call, and sent exactly once per
person when a provider comes back."""

from __future__ import annotations

from prometheus_client import REGISTRY
from pydantic import SecretStr

from carewatch.settings import Settings
from harness.services import await_until
from tests.fake_provider_server import running_fake_providers
from tests.support.notifier import (
    FAMILY_1_PHONE,
    GRID_WORKER_PHONE,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)


def overdue() -> float:
    value = REGISTRY.get_sample_value("carewatch_outbox_overdue_retries_total", {"channel": "sms"})
    return value or 0.0


async def test_both_sms_providers_down_retries_and_loses_nothing(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    s = notifier_settings(
        settings,
        escalation_wait_s=120.0,
        outbox_max_attempts=2,
        outbox_retry_max_interval_s=0.4,
        tencent_secret_key=SecretStr("tc-secret"),
    )
    before = overdue()
    async with running_fake_providers(s) as fake:
        await fake.fail("sms", count=10_000, mode="5xx")
        await fake.fail("sms_tencent", count=10_000, mode="5xx")
        async with running_notifier(fake.settings):
            await publish_changes(fake.settings, change(alert_id))

            async def retried() -> bool:
                rows = query(
                    dsn,
                    "SELECT min(attempts) FROM notifications WHERE channel = 'sms'"
                    " AND status = 'pending'",
                )
                return rows[0][0] is not None and rows[0][0] >= 3

            await await_until(retried, 15, "SMS retried past max attempts")
            errors = query(dsn, "SELECT last_error FROM notifications WHERE channel = 'sms'")
            assert all("aliyun:" in e[0] and "tencent: http 502" in e[0] for e in errors)
            assert overdue() > before  # CarewatchAlertMessagesOverdue pages the on-call

            await fake.recover("sms_tencent")  # Tencent comes back first

            async def sent() -> bool:
                rows = query(
                    dsn,
                    "SELECT count(*) FROM notifications WHERE channel = 'sms' AND status = 'sent'",
                )
                return bool(rows[0][0] == 2)

            await await_until(sent, 15, "the SMS sent by Tencent")
        delivered = [r for r in await fake.records("sms_tencent") if r["outcome"] == "delivered"]
        assert sorted(r["address"] for r in delivered) == [
            "+86" + GRID_WORKER_PHONE,
            "+86" + FAMILY_1_PHONE,
        ]
        assert not [r for r in await fake.records("sms") if r["outcome"] == "delivered"]
        ids = query(dsn, "SELECT provider_message_id FROM notifications WHERE channel = 'sms'")
        assert all(i[0].startswith("tencent:") for i in ids)
