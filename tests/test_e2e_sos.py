"""End to end on real services: MQTT -> ingest -> rules -> notifier -> fake providers -> ack.

Every worker runs as the `carewatch` command in its own process (harness/pipeline.py);
devices publish over MQTT; what the providers received is read back from the fake
provider servers, which speak the real Aliyun SMS and WeCom HTTP APIs.
"""

from __future__ import annotations

import httpx
import msgspec
import psycopg
import pytest

from carewatch.settings import Settings
from harness.pipeline import Pipeline
from harness.services import wait_until
from tests.fake_provider_server import link_in_sms
from tests.support import e2e
from tests.support.e2e import (
    FAMILY_1,
    FAMILY_2,
    GRID_WORKER,
    STATION_24H,
    Device,
    fall_then_im_ok_inside_window_notifies_nobody,
    query,
    sms_to,
    sos_escalates_until_acknowledged_then_stops,
)

pytestmark = pytest.mark.slow

pipeline = e2e.pipeline  # the fixture, used here by name


def test_sos_escalates_until_acknowledged_then_stops(pipeline: Pipeline) -> None:
    sos_escalates_until_acknowledged_then_stops(pipeline)


def test_fall_then_im_ok_inside_window_notifies_nobody(pipeline: Pipeline) -> None:
    fall_then_im_ok_inside_window_notifies_nobody(pipeline)


def test_duplicate_sos_delivery_gives_one_alert_and_one_notification_each(
    pipeline: Pipeline,
) -> None:
    s = pipeline.settings
    band = Device("WB0001", s.mqtt_port)
    payload, _ = band.event("sos")
    band.publish("event", payload)
    band.publish("event", payload)  # a QoS 1 redelivery: same seq
    pipeline.wait_records(sms_to(GRID_WORKER), 1)
    pipeline.wait_records(sms_to(FAMILY_2), 1)  # step 1 too, so both steps are counted
    assert query(s, "SELECT count(*) FROM alerts") == [(1,)]
    per_recipient = query(
        s,
        "SELECT step, recipient_id, channel, count(*) FROM notifications GROUP BY 1, 2, 3"
        " HAVING count(*) > 1",
    )
    assert per_recipient == []
    delivered_to_gw = [r for r in pipeline.records() if sms_to(GRID_WORKER)(r)]  # type: ignore[operator]
    assert len(delivered_to_gw) == 1


def test_notifier_killed_mid_escalation_continues_without_resending(pipeline: Pipeline) -> None:
    s = pipeline.settings
    band = Device("WB0001", s.mqtt_port)
    payload, _ = band.event("sos")
    band.publish("event", payload)
    pipeline.wait_records(sms_to(GRID_WORKER), 1)
    pipeline.kill("notifier")  # SIGKILL between step 0 and step 1
    pipeline.start("notifier")
    pipeline.wait_records(sms_to(FAMILY_2), 1)
    pipeline.wait_records(sms_to(STATION_24H), 1)
    delivered = [r for r in pipeline.records() if r["outcome"] == "delivered"]
    # each notification reached its recipient once (the fake sends a repeated OutId
    # again, as Aliyun does: a resend after the kill would show here)
    keys = [(r["provider"], r["out_id"] or r["dedup_key"]) for r in delivered]
    assert len(keys) == len(set(keys))
    # step 0 went out before the kill and was not sent again after the restart
    assert len([r for r in delivered if sms_to(GRID_WORKER)(r)]) == 1  # type: ignore[operator]
    steps = query(
        s, "SELECT step, count(*) FROM notifications WHERE channel = 'sms' GROUP BY 1 ORDER BY 1"
    )
    assert [step for step, _ in steps][:2] == [0, 1]


def fake_stats(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    response = httpx.get(f"{pipeline.fake_url}/_stats", timeout=5)
    response.raise_for_status()
    stats: dict[str, dict[str, int]] = response.json()
    return stats


def inject(pipeline: Pipeline, provider: str, count: int, mode: str) -> None:
    body = {"provider": provider, "count": count, "mode": mode}
    httpx.post(f"{pipeline.fake_url}/_control/fail", json=body, timeout=5).raise_for_status()


def test_notifier_killed_mid_send_sends_no_sms_twice(pipeline: Pipeline) -> None:
    """kill -9 while the provider holds the accepted SMS' replies (issue 14, item 6): the
    fake sends every accepted request as Aliyun does, and counts repeats; none."""
    s = pipeline.settings
    pipeline.kill("notifier")
    pipeline.start("notifier", outbox_lease_s=2.0, provider_timeout_s=60.0)
    # the two step-0 SMS are accepted and sent, and their replies never come
    inject(pipeline, "sms", 2, "timeout_after_send")
    band = Device("WB0001", s.mqtt_port)
    payload, _ = band.event("sos")
    band.publish("event", payload)
    pipeline.wait_records(sms_to(GRID_WORKER), 1)
    pipeline.wait_records(sms_to(FAMILY_1), 1)
    pipeline.kill("notifier")  # SIGKILL mid-send: both rows are leased, unrecorded
    pipeline.start("notifier")
    [(alert_id,)] = query(s, "SELECT id FROM alerts WHERE elder_id = 'E0001'")
    wait_until(
        lambda: (
            query(
                s,
                "SELECT count(*) FROM notifications WHERE alert_id = %s AND step = 0"
                " AND channel = 'sms' AND status = 'sent' AND attempts = 2",
                alert_id,
            )
            == [(2,)]
        ),
        20,
        "the step-0 SMS to be recorded sent after the lease",
    )
    pipeline.wait_records(sms_to(FAMILY_2), 1)  # the escalation goes on (step 1)
    stats = fake_stats(pipeline)["sms"]
    assert stats["delivered_again"] == 0, pipeline.records()
    assert len([r for r in pipeline.records() if sms_to(GRID_WORKER)(r)]) == 1  # type: ignore[operator]
    found = query(
        s,
        "SELECT count(*) FROM alert_events WHERE alert_id = %s AND action = 'notified'"
        " AND details->>'channel' = 'sms' AND (details->>'already_sent')::boolean",
        alert_id,
    )
    assert found == [(2,)]


def test_ack_server_killed_mid_send_sends_no_handled_sms_twice(pipeline: Pipeline) -> None:
    """kill -9 of the ack server while the 'handled' SMS it queued is accepted but not
    answered: the notifier takes the row after its lease, finds it sent, sends no second."""
    s = pipeline.settings
    pipeline.kill("ack-server")
    pipeline.start("ack-server", outbox_lease_s=2.0, provider_timeout_s=60.0)
    band = Device("WB0001", s.mqtt_port)
    payload, _ = band.event("sos")
    band.publish("event", payload)
    gw_sms = pipeline.wait_records(sms_to(GRID_WORKER), 1)
    pipeline.wait_records(sms_to(FAMILY_1), 1)
    inject(pipeline, "sms", 1, "timeout_after_send")  # the family's 'handled' SMS
    link = link_in_sms(gw_sms[0])

    def handled_sms() -> list[dict[str, object]]:
        return [
            r
            for r in pipeline.records()
            if r["template_code"] == s.aliyun_sms_template_handled and r["outcome"] == "delivered"
        ]

    # the ack page answers after its transaction, before the SMS it queued is answered
    assert httpx.post(link, data={"action": "acknowledge"}, timeout=10).status_code == 200
    wait_until(lambda: len(handled_sms()) >= 1, 10, "the handled SMS to be accepted")
    pipeline.kill("ack-server")
    pipeline.start("ack-server")
    wait_until(
        lambda: (
            query(
                s,
                "SELECT count(*) FROM notifications WHERE purpose = 'handled' AND channel = 'sms'"
                " AND status = 'sent'",
            )
            == [(len(handled_sms()),)]
        ),
        20,
        "every handled SMS recorded sent",
    )
    assert fake_stats(pipeline)["sms"]["delivered_again"] == 0, pipeline.records()
    assert len({r["out_id"] for r in handled_sms()}) == len(handled_sms())


def test_sos_with_a_reused_seq_after_a_counter_reset_opens_a_new_alert_and_notifies(
    pipeline: Pipeline,
) -> None:
    """A band's seq counter is reset (battery swap, firmware update) after an SOS that was
    handled and closed: its next press reuses the old seq with a later device time. It
    is a new message, not a copy of the old one: a new alert, notified again."""
    s = pipeline.settings
    band = Device("WB0001", s.mqtt_port)
    payload, _ = band.event("sos")
    band.publish("event", payload)
    pipeline.wait_records(sms_to(GRID_WORKER), 1)
    query_commit(s, "UPDATE alerts SET status = 'resolved' WHERE device_id = 'WB0001'")

    band.seq -= 1  # the reset: the next press carries the seq of the one above
    again, _ = band.event("sos")
    assert msgspec.json.decode(again)["seq"] == msgspec.json.decode(payload)["seq"]
    band.publish("event", again)
    pipeline.wait_records(sms_to(GRID_WORKER), 2)
    rows = query(s, "SELECT id, status FROM alerts WHERE kind = 'sos' ORDER BY opened_at")
    assert len(rows) == 2 and rows[0][0] != rows[1][0], rows
    assert [r[1] for r in rows] == ["resolved", "open"]


def query_commit(settings: Settings, sql: str) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql)
