"""Acknowledgements people can trust, over real HTTP: of two concurrent 我来处理 exactly one
wins and is told so; the other is shown who has it and when, offered 我也前往 and a call,
never a false "由您处理". 误报 asks for confirmation and a reason first."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg

from carewatch.settings import Settings
from harness.services import await_until, free_port
from notifier.ack_links import sign
from tests.support.ack import running_ack_app
from tests.support.notifier import (
    FAMILY_1_PHONE,
    GRID_WORKER_ID,
    GRID_WORKER_PHONE,
    insert_alert,
    notifier_settings,
    query,
    seed_registry,
)

GRID_WORKER = f"grid_worker:{GRID_WORKER_ID}"


def setup(settings: Settings) -> tuple[str, str, Settings]:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    port = free_port()
    s = notifier_settings(settings, ack_port=port, ack_base_url=f"http://127.0.0.1:{port}")
    return dsn, alert_id, s


def link(s: Settings, alert_id: str, kind: str, rid: str) -> str:
    future = int(time.time() * 1000) + 3_600_000
    return "/ack/" + sign(alert_id, kind, rid, future, s.ack_secret.get_secret_value())


def waiting_on_locks(dsn: str) -> int:
    rows = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'",
    )
    return int(rows[0][0])


async def test_two_concurrent_acknowledgements_have_one_winner(settings: Settings) -> None:
    dsn, alert_id, s = setup(settings)
    links = {
        GRID_WORKER: link(s, alert_id, "grid_worker", GRID_WORKER_ID),
        "family:1": link(s, alert_id, "family", "1"),
    }
    async with running_ack_app(s) as http:
        # hold the alert row so both requests are provably inside their transactions,
        # waiting on the same lock, before either can act
        with psycopg.connect(dsn) as blocker:
            blocker.execute("SELECT 1 FROM alerts WHERE id = %s FOR UPDATE", (alert_id,))

            async def press(who: str) -> tuple[str, httpx.Response]:
                return who, await http.post(links[who], data={"action": "acknowledge"})

            both = asyncio.gather(press(GRID_WORKER), press("family:1"))

            async def both_waiting() -> bool:
                return waiting_on_locks(dsn) >= 2

            await await_until(both_waiting, 10, "both acknowledgements waiting on the alert")
            blocker.rollback()
            answers = dict(await both)
    assert all(r.status_code == 200 for r in answers.values())
    [(winner,)] = query(dsn, "SELECT acknowledged_by FROM alerts WHERE id = %s", alert_id)
    loser = next(who for who in answers if who != winner)
    assert "已确认由您处理" in answers[winner].text
    assert "我也前往" not in answers[winner].text
    page = answers[loser].text
    assert "由您处理" not in page
    winner_name = "张三（网格员）" if winner == GRID_WORKER else "李四（女儿）"
    winner_phone = GRID_WORKER_PHONE if winner == GRID_WORKER else FAMILY_1_PHONE
    [(hhmm,)] = query(
        dsn,
        "SELECT to_char(acknowledged_at AT TIME ZONE %s, 'HH24:MI') FROM alerts",
        s.timezone,
    )
    assert f"已由{winner_name}处理（{hhmm}）" in page
    assert "我也前往" in page and f'href="tel:{winner_phone}"' in page
    assert f"联系{winner_name}" in page
    # one status change; the later acknowledgement is on the timeline with who had it
    events = query(
        dsn,
        "SELECT actor, details->>'from', details->>'handled_by' FROM alert_events"
        " WHERE action = 'acknowledged' ORDER BY id",
    )
    assert events == [(winner, "open", None), (loser, "acknowledged", winner)]
    assert query(dsn, "SELECT version FROM alerts") == [(2,)]


async def test_the_loser_opens_the_page_and_goes_too(settings: Settings) -> None:
    dsn, alert_id, s = setup(settings)
    worker = link(s, alert_id, "grid_worker", GRID_WORKER_ID)
    family = link(s, alert_id, "family", "1")
    async with running_ack_app(s) as http:
        first = await http.post(worker, json={"action": "acknowledge"})
        assert first.json()["handled_by_you"] is True
        late = await http.post(family, json={"action": "acknowledge"})
        body = late.json()
        assert body["handled_by_you"] is False and body["handler"] == "张三（网格员）"
        assert body["message"].startswith("已由张三（网格员）处理（")
        shown = await http.get(family)
        assert "已由张三（网格员）处理（" in shown.text and "由您处理" not in shown.text
        going = await http.post(family, data={"action": "join"})
        assert going.status_code == 200 and "已记录您也在前往" in going.text
        # the handler's own page offers the next steps, not 我也前往
        own = await http.get(worker)
        assert "已到达" in own.text and "我也前往" not in own.text
    assert query(dsn, "SELECT actor FROM alert_events WHERE action = 'joined'") == [("family:1",)]
    assert query(dsn, "SELECT status, acknowledged_by FROM alerts") == [
        ("acknowledged", GRID_WORKER)
    ]


async def test_false_alarm_asks_for_confirmation_and_a_reason(settings: Settings) -> None:
    dsn, alert_id, s = setup(settings)
    worker = link(s, alert_id, "grid_worker", GRID_WORKER_ID)
    async with running_ack_app(s) as http:
        asked = await http.post(worker, data={"action": "false_alarm"})
        assert asked.status_code == 200 and "确认这是误报吗" in asked.text
        assert "老人误按" in asked.text and 'name="confirm"' in asked.text
        no_reason = await http.post(worker, data={"action": "false_alarm", "confirm": "1"})
        assert no_reason.status_code == 422 and "请选择或填写误报原因" in no_reason.text
        only_other = await http.post(
            worker, data={"action": "false_alarm", "confirm": "1", "reason": "其他"}
        )
        assert only_other.status_code == 422
        api = await http.post(worker, json={"action": "false_alarm"})
        assert api.status_code == 422 and api.json()["error"] == "reason_required"
        assert "reason" in api.json()["message_en"]
        assert query(dsn, "SELECT status FROM alerts") == [("open",)]
        done = await http.post(
            worker,
            data={
                "action": "false_alarm",
                "confirm": "1",
                "reason": "其他",
                "reason_text": "猫碰到",
            },
        )
        assert done.status_code == 200 and "已按误报结束警报" in done.text
    assert query(dsn, "SELECT status FROM alerts") == [("false_alarm",)]
    assert query(
        dsn, "SELECT details->>'reason' FROM alert_events WHERE action = 'false_alarm'"
    ) == [("猫碰到",)]
