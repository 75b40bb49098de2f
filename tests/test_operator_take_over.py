"""An operator's take-over and dispatch through the operator API, over real HTTP, with the
notifier, the ack app and the fake SMS / WeCom providers running: each sends the texts it
should, and a false alarm without a reason is refused."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from carewatch.settings import Settings
from harness.services import await_until, free_port
from operator_api.app import run as run_operator_api
from operator_api.tokens import create_token
from tests.fake_provider_server import RunningFakeProviders, link_in_sms, running_fake_providers
from tests.support.ack import path_of, running_ack_app, running_server
from tests.support.notifier import (
    FAMILY_1_PHONE,
    FAR_STAFFED,
    GRID_WORKER_PHONE,
    STATION_PHONE,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)


@contextlib.asynccontextmanager
async def operator_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The operator API on a free port, with an operator's token for every request."""
    api_settings = settings.model_copy(update={"operator_port": free_port()})
    token = create_token(settings.database_url, "operator", "op1", "*")
    async with (
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_settings.operator_port}",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        ) as http,
        running_server(
            lambda stop: run_operator_api(api_settings, stop),
            http,
            "/api/alerts",
            "operator API listening",
        ),
    ):
        yield http


def sent(dsn: str, alert_id: str, purpose: str) -> int:
    rows = query(
        dsn,
        "SELECT count(*) FROM notifications WHERE alert_id = %s AND purpose = %s"
        " AND status = 'sent'",
        alert_id,
        purpose,
    )
    return int(rows[0][0])


async def wait_sent(dsn: str, alert_id: str, purpose: str, count: int) -> None:
    async def done() -> bool:
        return sent(dsn, alert_id, purpose) >= count

    await await_until(done, 15, f"{count} {purpose} notifications sent")


async def texts_to(fake: RunningFakeProviders, address: str) -> list[str]:
    return [str(r["text"]) for r in await fake.records() if r.get("address") == address]


async def opened_and_step0_sent(fake: RunningFakeProviders, dsn: str, **kw: Any) -> str:
    alert_id = insert_alert(dsn, **kw)
    await publish_changes(fake.settings, change(alert_id, **kw))
    # step 0: the grid worker and the first family contact, by SMS and WeCom
    await wait_sent(dsn, alert_id, "alert", 4)
    return alert_id


async def test_take_over_dispatch_and_false_alarm_send_the_right_texts(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    port = free_port()
    base = notifier_settings(
        settings, escalation_wait_s=60.0, ack_port=port, ack_base_url=f"http://127.0.0.1:{port}"
    )
    async with (
        running_fake_providers(base) as fake,
        running_notifier(fake.settings),
        running_ack_app(fake.settings) as ack,
        operator_api(fake.settings) as api,
    ):
        # take over: the others are told who has it and the note, not to stay away
        first = await opened_and_step0_sent(fake, dsn)
        taken = await api.post(
            f"/api/alerts/{first}/take-over", json={"note": "已联系120，请到楼下接应"}
        )
        assert taken.status_code == 200, taken.text
        await wait_sent(dsn, first, "handled", 4)  # worker + family, SMS + WeCom
        for address in (GRID_WORKER_PHONE, FAMILY_1_PHONE):
            [text] = [t for t in await texts_to(fake, address) if "接手处理" in t]
            assert "已由值班人员于" in text and "值班人员留言：已联系120，请到楼下接应" in text
            assert "无需前往" not in text

        # dispatch: the station is sent the alert with its own link, the others whom
        second = await opened_and_step0_sent(fake, dsn, kind="fall")
        no_one = await api.post(
            f"/api/alerts/{second}/dispatch", json={"kind": "station", "id": "NOPE"}
        )
        assert no_one.status_code == 422
        dispatched = await api.post(
            f"/api/alerts/{second}/dispatch",
            json={"kind": "station", "id": FAR_STAFFED, "note": "请带上轮椅"},
        )
        assert dispatched.status_code == 200, dispatched.text
        assert query(dsn, "SELECT acknowledged_by FROM alerts WHERE id = %s", second) == [
            (f"station:{FAR_STAFFED}",)
        ]
        await wait_sent(dsn, second, "handled", 4)
        await wait_sent(dsn, second, "alert", 6)  # + the station's SMS and WeCom
        [station_sms] = await texts_to(fake, STATION_PHONE)
        assert "检测到跌倒" in station_sms and "/a/" in station_sms
        [card] = await texts_to(fake, "station_far")
        assert "值班人员留言：请带上轮椅" in card
        worker_texts = [t for t in await texts_to(fake, GRID_WORKER_PHONE) if "派" in t]
        assert len(worker_texts) == 1
        assert "已由值班人员于" in worker_texts[0] and "派解放碑养老服务站" in worker_texts[0]
        assert "请带上轮椅" not in worker_texts[0] and "无需前往" not in worker_texts[0]
        # the station's page: it has the alert, and sees the note
        page = await ack.get(path_of(link_in_sms({"text": station_sms})))
        assert "值班人员留言：请带上轮椅" in page.text and "我也前往" not in page.text

        # a false alarm needs a reason; the family is told how it ended
        refused = await api.post(f"/api/alerts/{second}/false-alarm", json={})
        assert refused.status_code == 422
        assert refused.json()["message"] == "标记误报须说明原因。"
        assert query(dsn, "SELECT status FROM alerts WHERE id = %s", second) == [("acknowledged",)]
        closed = await api.post(f"/api/alerts/{second}/false-alarm", json={"reason": "老人误按"})
        assert closed.status_code == 200, closed.text
        await wait_sent(dsn, second, "closed", 6)
        family = [t for t in await texts_to(fake, FAMILY_1_PHONE) if "结束" in t]
        assert len(family) == 1 and "（误报：老人误按）" in family[0]


async def test_a_plain_operator_acknowledge_no_longer_sends_everyone_away(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    base = notifier_settings(settings, escalation_wait_s=60.0)
    async with (
        running_fake_providers(base) as fake,
        running_notifier(fake.settings),
        operator_api(fake.settings) as api,
    ):
        alert_id = await opened_and_step0_sent(fake, dsn)
        done = await api.post(f"/api/alerts/{alert_id}/acknowledge", json={})
        assert done.status_code == 200, done.text
        await wait_sent(dsn, alert_id, "handled", 4)
        [text] = [t for t in await texts_to(fake, GRID_WORKER_PHONE) if "接手处理" in t]
        assert "无需前往" not in text and "如您已在路上，请继续前往" in text
        # with stand_down the operator says so
        other = await opened_and_step0_sent(fake, dsn, kind="fall")
        told = await api.post(f"/api/alerts/{other}/take-over", json={"stand_down": True})
        assert told.status_code == 200
        await wait_sent(dsn, other, "handled", 4)
        away = [t for t in await texts_to(fake, GRID_WORKER_PHONE) if "跌倒警报已由" in t]
        assert len(away) == 1 and "您无需前往" in away[0]
