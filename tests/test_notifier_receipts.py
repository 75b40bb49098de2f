"""Receipts that drive escalation, and the voice channel (issue 18), end to end: the
notifier worker and the provider callbacks app in this process, PostgreSQL, the Redis
alerts stream, and the fake Aliyun SMS / voice / WeCom providers pushing their delivery
and call reports over HTTP as the real service does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import msgspec
import psycopg
from prometheus_client import REGISTRY

from carewatch.messages import DeviceCommand
from carewatch.settings import Settings
from carewatch.topics import topic
from harness.services import await_until
from tests.fake_provider_server import RunningFakeProviders, running_fake_providers
from tests.support.notifier import (
    DEVICE_ID,
    DUTY_OFFICER_ID,
    FAMILY_1_PHONE,
    FAMILY_2_PHONE,
    GRID_WORKER_ID,
    GRID_WORKER_PHONE,
    change,
    insert_alert,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)
from tests.support.provider_callbacks import receipt_settings, running_callbacks

DUTY_OFFICER_PHONE = "13800000009"


def timeline(dsn: str, alert_id: str, action: str) -> list[dict[str, Any]]:
    rows = query(
        dsn,
        "SELECT details FROM alert_events WHERE alert_id = %s AND action = %s ORDER BY id",
        alert_id,
        action,
    )
    return [r[0] for r in rows]


def last_steps_reached() -> float:
    """carewatch_escalation_last_step_total of every policy, in this process."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "carewatch_escalation_last_step"
        for sample in metric.samples
        if sample.name == "carewatch_escalation_last_step_total"
    )


@contextlib.asynccontextmanager
async def alert_sms_delivered(
    settings: Settings, *, push_twice: bool = False
) -> AsyncIterator[tuple[RunningFakeProviders, str]]:
    """An open alert whose SMS reached the grid worker and the first family contact
    (delivery reports in), with the notifier and the provider callbacks app running:
    ready for replies."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(receipt_settings(settings), push_reports=True) as fake:
        s = fake.settings
        if push_twice:
            await fake.push_twice()
        async with running_callbacks(s), running_notifier(s):
            await publish_changes(s, change(alert_id))

            async def alert_sms_sent() -> bool:
                rows = query(dsn, "SELECT count(*) FROM notifications WHERE receipt = 'delivered'")
                return bool(rows[0][0] == 2)

            await await_until(alert_sms_sent, 15, "the alert SMS delivered")
            yield fake, alert_id


def sms_texts(fake: RunningFakeProviders, phone: str, *, reply: bool = True) -> list[str]:
    """The SMS sent to `phone`: the answers to its replies, or (reply=False) the rest."""
    template = fake.settings.aliyun_sms_template_reply
    return [
        str(r.text)
        for r in fake.state.book.select(provider="sms")
        if r.address == phone and (r.template_code == template) == reply
    ]


def notification(dsn: str, alert_id: str, channel: str, recipient_id: str) -> dict[str, Any]:
    rows = query(
        dsn,
        "SELECT step, status, receipt, receipt_code, receipt_at, calls_unanswered FROM"
        " notifications WHERE alert_id = %s AND channel = %s AND recipient_id = %s"
        " AND purpose = 'alert' ORDER BY id",
        alert_id,
        channel,
        recipient_id,
    )
    assert len(rows) == 1, rows
    keys = ("step", "status", "receipt", "receipt_code", "receipt_at", "calls_unanswered")
    return dict(zip(keys, rows[0], strict=True))


async def test_undelivered_sms_rings_at_once_and_key1_acknowledges(settings: Settings) -> None:
    """Night SOS, its SMS path: the grid worker's SMS is reported undelivered -> their phone
    rings at once (no waiting out the 120 s step; the night window is off here, so only
    the receipt can make it ring) -> they press 1 -> escalation stops, the others are told
    who is handling it, the wristband that help is coming."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(receipt_settings(settings), push_reports=True) as fake:
        s = fake.settings
        await fake.fail_sms_delivery(GRID_WORKER_PHONE, code="MK:0005")
        await fake.script_calls(GRID_WORKER_PHONE, "key1")
        async with (
            running_callbacks(s),
            running_notifier(s),
            aiomqtt.Client("127.0.0.1", settings.mqtt_port, identifier="band-W1") as band,
        ):
            await band.subscribe(topic(DEVICE_ID, "cmd"), qos=1)
            await publish_changes(s, change(alert_id))

            async def acknowledged() -> bool:
                rows = query(dsn, "SELECT status, acknowledged_by FROM alerts")
                return rows == [("acknowledged", f"grid_worker:{GRID_WORKER_ID}")]

            await await_until(acknowledged, 15, "key 1 to acknowledge the alert")

            # the SMS receipt is on the notification, with the carrier's code and time
            sms = notification(dsn, alert_id, "sms", GRID_WORKER_ID)
            assert (sms["receipt"], sms["receipt_code"]) == ("failed", "MK:0005")
            assert sms["receipt_at"] is not None
            # one call, at step 0: the escalation never reached step 1
            call = notification(dsn, alert_id, "voice", GRID_WORKER_ID)
            assert (call["step"], call["receipt"], call["status"]) == (0, "key1", "delivered")
            calls = await fake.records("voice")
            assert [(c["address"], c["text"]) for c in calls] == [(GRID_WORKER_PHONE, "IvrCall")]
            assert calls[0]["params"]["elder_name"] == "王秀英"
            assert not query(dsn, "SELECT 1 FROM notifications WHERE step >= 1")
            stopped = query(dsn, "SELECT stopped_at IS NOT NULL, next_step_at FROM escalations")
            assert stopped == [(True, None)]
            # the timeline tells the story in order
            actions = [
                r[0]
                for r in query(
                    dsn,
                    "SELECT action FROM alert_events WHERE alert_id = %s AND action IN"
                    " ('receipt', 'voice_queued', 'acknowledged', 'escalation_stopped')"
                    " ORDER BY id",
                    alert_id,
                )
            ]
            i_failed = next(
                i
                for i, d in enumerate(timeline(dsn, alert_id, "receipt"))
                if d["receipt"] == "failed"
            )
            assert i_failed >= 0
            assert actions.index("voice_queued") < actions.index("acknowledged")
            assert actions.index("acknowledged") < actions.index("escalation_stopped")
            queued = timeline(dsn, alert_id, "voice_queued")
            assert [q["reason"] for q in queued] == ["sms_undelivered"]

            # the others are told who is handling it; the wristband that help is coming
            async def others_told() -> bool:
                texts = [
                    r["text"]
                    for r in await fake.records("sms")
                    if r["address"] == FAMILY_1_PHONE and "接手处理" in (r["text"] or "")
                ]
                band = query(
                    dsn,
                    "SELECT status FROM notifications WHERE channel = 'downlink'"
                    " AND purpose = 'handled'",
                )
                return len(texts) == 1 and "张三（网格员）" in texts[0] and band == [("sent",)]

            await await_until(others_told, 10, "handled messages to the family and the band")
            # the wristband says help is coming
            message = await asyncio.wait_for(anext(band.messages), 10)
            command = msgspec.json.decode(message.payload, type=DeviceCommand)
            assert (command.type, command.alert_id) == ("help_coming", alert_id)
            # the grid worker who pressed 1 is not told it is handled by themselves
            handled_to_gw = query(
                dsn,
                "SELECT count(*) FROM notifications WHERE purpose = 'handled'"
                " AND recipient_id = %s",
                GRID_WORKER_ID,
            )
            assert handled_to_gw == [(0,)]


async def test_call_not_answered_three_times_moves_to_the_next_step(settings: Settings) -> None:
    """At night a critical alert also calls; three calls nobody answers (no answer, busy,
    no answer) make the next step due at once, not after the 120 s wait."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    night = receipt_settings(settings, voice_quiet_start="00:00", voice_quiet_end="23:59")
    async with running_fake_providers(night, push_reports=True) as fake:
        s = fake.settings
        await fake.script_calls(GRID_WORKER_PHONE, "no_answer", "busy", "no_answer")
        await fake.script_calls(FAMILY_1_PHONE, "answered")  # step 0 (not called again)
        await fake.script_calls(FAMILY_2_PHONE, "key1")  # step 1
        async with running_callbacks(s), running_notifier(s):
            await publish_changes(s, change(alert_id))

            async def step1() -> bool:
                return bool(query(dsn, "SELECT 1 FROM notifications WHERE step = 1"))

            await await_until(step1, 15, "step 1 after three unanswered calls")
            call = notification(dsn, alert_id, "voice", GRID_WORKER_ID)
            assert (call["receipt"], call["calls_unanswered"]) == ("unanswered", 3)
            rang = [c for c in await fake.records("voice") if c["address"] == GRID_WORKER_PHONE]
            assert len(rang) == 3
            assert [r["calls_unanswered"] for r in timeline(dsn, alert_id, "voice_redial")] == [
                1,
                2,
            ]
            hastened = timeline(dsn, alert_id, "escalation_hastened")
            assert [(h["reason"], h["step"]) for h in hastened] == [("call_not_answered", 0)]
            codes = [
                r["code"] for r in timeline(dsn, alert_id, "receipt") if r["channel"] == "voice"
            ]
            assert codes.count("200003") == 2 and codes.count("200002") == 1
            # step 1 at night calls too (the son and the staffed station; the daughter,
            # called at step 0, is not called again in the same round)
            assert query(
                dsn,
                "SELECT count(*) FROM notifications WHERE step = 1 AND channel = 'voice'",
            ) == [(2,)]

            # the son presses 1 in his step-1 call: the others are told in writing,
            # nobody is woken by a second call to say it is handled
            async def handled() -> bool:
                rows = query(dsn, "SELECT count(*) FROM notifications WHERE purpose = 'handled'")
                return bool(rows[0][0])

            await await_until(handled, 15, "key 1 in the step-1 call")
            assert query(dsn, "SELECT acknowledged_by LIKE 'family:%%' FROM alerts") == [(True,)]
            to_gw = query(
                dsn,
                "SELECT channel FROM notifications WHERE purpose = 'handled'"
                " AND recipient_id = %s ORDER BY channel",
                GRID_WORKER_ID,
            )
            assert to_gw == [("sms",), ("wecom",)]
            assert query(
                dsn,
                "SELECT count(*) FROM notifications WHERE purpose = 'handled' AND channel = 'voice'",
            ) == [(0,)]


async def test_repeat_until_ack_loops_the_last_step_and_stops_on_ack(settings: Settings) -> None:
    """After the last step a critical alert repeats it, voice included, each round in the
    timeline, until the duty officer presses 1 in the second repeat's call."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    looping = receipt_settings(
        settings,
        escalation_wait_s=0.3,
        escalation_repeat_count=5,
        escalation_repeat_interval_s=1.0,
    )
    last_steps_before = last_steps_reached()
    async with running_fake_providers(looping, push_reports=True) as fake:
        s = fake.settings
        await fake.script_calls(DUTY_OFFICER_PHONE, "answered", "key1")
        async with running_callbacks(s), running_notifier(s):
            await publish_changes(s, change(alert_id))

            async def acknowledged() -> bool:
                rows = query(
                    dsn, "SELECT acknowledged_by FROM alerts WHERE status = 'acknowledged'"
                )
                return rows == [(f"duty_officer:{DUTY_OFFICER_ID}",)]

            await await_until(acknowledged, 20, "the duty officer's key 1 in a repeat")
            steps = timeline(dsn, alert_id, "escalation_step")
            repeats = [d for d in steps if d["repeat"] > 0]
            assert [d["repeat"] for d in repeats][:2] == [1, 2]
            assert all(
                "voice" in d["channels"] and d["targets"] == ["duty_officer"] for d in repeats
            )
            assert all("voice" not in d["channels"] for d in steps if d["repeat"] == 0)
            # the alert rule's counter: the last step reached once, its repeats not counted
            assert last_steps_reached() - last_steps_before == 1
            stopped = query(dsn, "SELECT stopped_at IS NOT NULL, next_step_at FROM escalations")
            assert stopped == [(True, None)]
            # the key was pressed in the second repeat's call (step 2 + 2): nothing after it
            # but what was already due when it came
            last = query(dsn, "SELECT max(step) FROM notifications WHERE purpose = 'alert'")
            assert last[0][0] <= 5
            officer_calls = [
                c for c in await fake.records("voice") if c["address"] == DUTY_OFFICER_PHONE
            ]
            assert len(officer_calls) >= 2


async def test_pushes_are_verified_and_idempotent(settings: Settings) -> None:
    """A push to a wrong secret is refused; a body not in the provider's format is a 400
    kept in dead_letters; the same report pushed twice is recorded once."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    s = receipt_settings(settings)
    async with running_fake_providers(s, push_reports=True) as fake:
        await fake.push_twice()
        async with running_callbacks(fake.settings) as http, running_notifier(fake.settings):
            await publish_changes(fake.settings, change(alert_id))

            async def delivered() -> bool:
                rows = query(dsn, "SELECT count(*) FROM notifications WHERE receipt = 'delivered'")
                return bool(rows[0][0] == 2)  # the grid worker's and the family's SMS

            await await_until(delivered, 15, "delivery reports recorded")

            async def all_pushed() -> bool:
                # two reports (one batch push, or two), each pushed twice
                return sum(len(p["items"]) for p in await fake.pushes()) == 4

            await await_until(all_pushed, 10, "each report pushed twice")
            assert {p["answer"] for p in await fake.pushes()} == {200}
            receipts = timeline(dsn, alert_id, "receipt")
            assert len(receipts) == 2
            assert query(
                dsn, "SELECT outcome, count(*) FROM provider_receipts GROUP BY outcome"
            ) == [("recorded", 2)]

            secret = s.provider_callback_secret.get_secret_value()
            wrong = await http.post("/callbacks/not-the-secret/aliyun/sms-report", json=[])
            assert wrong.status_code == 403
            bad = await http.post(
                f"/callbacks/{secret}/aliyun/sms-report", content=b'{"not": "an array"}'
            )
            assert bad.status_code == 400
            kept = query(dsn, "SELECT topic, reason FROM dead_letters")
            assert kept == [("callbacks.sms_report", "bad_push")]
            # a report of a message we never sent: taken (200), recorded as unmatched
            stray = [
                {
                    "phone_number": "13900000000",
                    "success": True,
                    "biz_id": "1^0",
                    "out_id": "nothing-of-ours",
                    "err_code": "DELIVERED",
                }
            ]
            answer = await http.post(
                f"/callbacks/{secret}/aliyun/sms-report", content=json.dumps(stray)
            )
            assert answer.json() == {"code": 0, "msg": "接收成功"}
            unmatched = query(
                dsn, "SELECT count(*) FROM provider_receipts WHERE outcome = 'unmatched'"
            )
            assert unmatched == [(1,)]
            # a push larger than any real batch is refused before it is read
            huge = await http.post(
                f"/callbacks/{secret}/aliyun/sms-report", content=b"[" + b" " * (2 << 20) + b"]"
            )
            assert huge.status_code == 413
            assert "request body larger than" in huge.json()["detail"]  # carewatch.http_guard
            assert query(dsn, "SELECT count(*) FROM provider_receipts") == [(3,)]


async def test_sms_reply_acknowledges_once_and_a_late_reply_gets_a_polite_answer(
    settings: Settings,
) -> None:
    """The alert SMS says 回复1由我处理; "1" acknowledges (pushed twice: one
    acknowledgement, one answer); "1" about an alert that is over, or from a number we
    never alerted, gets a short polite answer and changes nothing."""
    dsn = settings.database_url
    async with alert_sms_delivered(settings, push_twice=True) as (fake, alert_id):
        [to_gw] = [r for r in await fake.records("sms") if r["address"] == GRID_WORKER_PHONE]
        assert "（回复1由我处理，回复2误报）：http" in to_gw["text"]

        await fake.sms_reply(GRID_WORKER_PHONE, "1")

        async def acknowledged() -> bool:
            rows = query(dsn, "SELECT status, acknowledged_by FROM alerts")
            return rows == [("acknowledged", f"grid_worker:{GRID_WORKER_ID}")]

        await await_until(acknowledged, 15, "the reply to acknowledge")

        async def answered_once() -> bool:
            ups = [p for p in await fake.pushes() if p["path"] == "sms-up"]
            return len(ups) == 2 and len(sms_texts(fake, GRID_WORKER_PHONE)) == 1

        await await_until(answered_once, 10, "both pushes taken, one answer")
        assert sms_texts(fake, GRID_WORKER_PHONE) == [
            "【智慧养老】您的回复已收到：已确认由您处理，请尽快前往"
        ]
        assert len(timeline(dsn, alert_id, "acknowledged")) == 1
        assert query(dsn, "SELECT count(*) FROM ack_uses WHERE token_id LIKE 'sms:%%'") == [(1,)]
        assert query(
            dsn,
            "SELECT outcome, count(*) FROM provider_receipts WHERE kind = 'sms_up'"
            " GROUP BY outcome",
        ) == [("acknowledge", 1)]

        # the alert is over; the family's late "1" changes nothing and is answered
        # (off the event loop: the notifier in this loop may hold the row's lock)
        def resolve() -> None:
            with psycopg.connect(dsn) as conn:
                conn.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (alert_id,))

        await asyncio.to_thread(resolve)
        before = query(dsn, "SELECT status, version, acknowledged_by FROM alerts")
        await fake.push_twice(False)
        await fake.sms_reply(FAMILY_1_PHONE, "１。")  # full-width, with a full stop
        await fake.sms_reply("13900000099", "1")  # never alerted

        async def polite() -> bool:
            return bool(sms_texts(fake, FAMILY_1_PHONE)) and bool(sms_texts(fake, "13900000099"))

        await await_until(polite, 10, "polite answers")
        assert sms_texts(fake, FAMILY_1_PHONE) == [
            "【智慧养老】您的回复已收到：该警报已结束，无需处理，谢谢"
        ]
        assert sms_texts(fake, "13900000099") == [
            "【智慧养老】您的回复已收到：未找到需要您处理的警报，谢谢"
        ]
        assert query(dsn, "SELECT status, version, acknowledged_by FROM alerts") == before
        replies = timeline(dsn, alert_id, "sms_reply")
        assert [r["outcome"] for r in replies] == ["closed"]


async def test_sms_reply_that_loses_the_race_is_told_who_has_the_alert(
    settings: Settings,
) -> None:
    """A "1" read while the alert is open, whose acknowledgement comes second (someone
    else acknowledges while the reply waits for the alert's row lock): the alert keeps
    its first handler and the reply is answered 已由XX处理（HH:MM）, not 由您处理."""
    dsn = settings.database_url
    async with alert_sms_delivered(settings) as (fake, alert_id):
        s = fake.settings
        winner = f"duty_officer:{DUTY_OFFICER_ID}"
        connecting = psycopg.AsyncConnection.connect(dsn)
        async with await connecting as lock, lock.transaction():
            await lock.execute("SELECT 1 FROM alerts WHERE id = %s FOR UPDATE", (alert_id,))
            await fake.sms_reply(GRID_WORKER_PHONE, "1")

            async def reply_waits_for_the_lock() -> bool:
                rows = query(
                    dsn,
                    # the reply's ack transaction: its ack_uses row written,
                    # waiting for the alert's row lock
                    "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l"
                    " ON l.pid = a.pid WHERE a.wait_event_type = 'Lock'"
                    " AND l.relation = 'ack_uses'::regclass AND l.granted",
                )
                return bool(rows[0][0] >= 1)

            await await_until(reply_waits_for_the_lock, 15, "the reply waiting")
            await lock.execute(
                "UPDATE alerts SET status = 'acknowledged', acknowledged_by = %s,"
                " acknowledged_at = now(), version = version + 1 WHERE id = %s",
                (winner, alert_id),
            )
        [(at,)] = query(dsn, "SELECT acknowledged_at FROM alerts WHERE id = %s", alert_id)
        hhmm = at.astimezone(ZoneInfo(s.timezone)).strftime("%H:%M")

        async def answered() -> bool:
            return bool(sms_texts(fake, GRID_WORKER_PHONE))

        await await_until(answered, 15, "the answer to the reply")
        [text] = sms_texts(fake, GRID_WORKER_PHONE)
        assert text.startswith("【智慧养老】您的回复已收到：已由赵值班（"), text
        assert text.endswith(f"处理（{hhmm}）"), text
        assert "由您处理" not in text
        assert query(dsn, "SELECT status, acknowledged_by FROM alerts") == [
            ("acknowledged", winner)
        ]
        [entry] = timeline(dsn, alert_id, "acknowledged")
        assert entry["handled_by"] == winner
        assert query(dsn, "SELECT outcome FROM provider_receipts WHERE kind = 'sms_up'") == [
            ("beaten",)
        ]


async def test_sms_reply_false_alarm_needs_a_reason(settings: Settings) -> None:
    """A bare "2" is asked for a reason and changes nothing; "2老人误按" (no space) closes
    the alert as a false alarm with that reason, and the family's closing SMS says so."""
    dsn = settings.database_url
    async with alert_sms_delivered(settings) as (fake, alert_id):
        await fake.sms_reply(GRID_WORKER_PHONE, "2")

        async def asked() -> bool:
            return bool(sms_texts(fake, GRID_WORKER_PHONE))

        await await_until(asked, 15, "the answer to a bare 2")
        assert sms_texts(fake, GRID_WORKER_PHONE) == [
            "【智慧养老】您的回复已收到：如确认误报，请回复“2+原因”，例如：2 老人误按"
        ]
        assert query(dsn, "SELECT status FROM alerts") == [("open",)]
        assert [r["outcome"] for r in timeline(dsn, alert_id, "sms_reply")] == ["reason_required"]

        await fake.sms_reply(GRID_WORKER_PHONE, "2老人误按")

        async def closed() -> bool:
            return query(dsn, "SELECT status FROM alerts") == [("false_alarm",)]

        await await_until(closed, 15, "the reply with a reason to close the alert")
        [entry] = query(
            dsn,
            "SELECT actor, details FROM alert_events WHERE alert_id = %s"
            " AND details->>'to' = 'false_alarm'",
            alert_id,
        )
        assert entry == (
            f"grid_worker:{GRID_WORKER_ID}",
            {"from": "open", "to": "false_alarm", "reason": "老人误按"},
        )

        async def family_told() -> bool:
            return any("结束" in t for t in sms_texts(fake, FAMILY_1_PHONE, reply=False))

        await await_until(family_told, 15, "the family's closing SMS")
        family = [t for t in sms_texts(fake, FAMILY_1_PHONE, reply=False) if "结束" in t]
        assert len(family) == 1 and "误报：老人误按" in family[0], family

        async def both_answered() -> bool:
            return len(sms_texts(fake, GRID_WORKER_PHONE)) == 2

        await await_until(both_answered, 15, "the answer to the reply with a reason")
        assert sms_texts(fake, GRID_WORKER_PHONE)[1].endswith("：已按误报结束该警报")
