"""End to end on real services: MQTT -> ingest -> rules -> notifier -> fake providers -> ack.

Every worker runs as the `carewatch` command in its own process (harness/pipeline.py);
devices publish over MQTT; what the providers received is read back from the fake
provider servers, which speak the real Aliyun SMS and WeCom HTTP APIs.
"""

from __future__ import annotations

import pytest

from harness.pipeline import Pipeline
from tests.support import e2e
from tests.support.e2e import (
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
    # each notification reached its recipient once (a resend after the kill would have
    # been recorded by the provider as a duplicate of the same OutId, not delivered)
    keys = [(r["provider"], r["out_id"] or r["dedup_key"]) for r in delivered]
    assert len(keys) == len(set(keys))
    # step 0 went out before the kill and was not sent again after the restart
    assert len([r for r in delivered if sms_to(GRID_WORKER)(r)]) == 1  # type: ignore[operator]
    steps = query(
        s, "SELECT step, count(*) FROM notifications WHERE channel = 'sms' GROUP BY 1 ORDER BY 1"
    )
    assert [step for step, _ in steps][:2] == [0, 1]
