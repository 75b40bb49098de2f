"""The ack web app over real HTTP (uvicorn on a free port), with the notifier worker,
PostgreSQL, the Redis alerts stream, Mosquitto for the wristband downlink and the fake
SMS / WeCom providers all running."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiomqtt
import msgspec

from carewatch.messages import DeviceCommand
from carewatch.settings import Settings
from carewatch.topics import topic
from harness.services import await_until, free_port
from notifier import timeline
from notifier.ack_links import link_url, new_short_code, sign, unverified_expiry
from tests.fake_provider_server import link_in_sms, running_fake_providers
from tests.support.ack import alert_changes_on_stream, path_of, rejects, running_ack_app
from tests.support.notifier import (
    DEVICE_ID,
    ELDER_NAME,
    FAMILY_1_PHONE,
    GRID_WORKER_ID,
    GRID_WORKER_PHONE,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)


async def test_ack_stops_escalation_tells_the_others_and_the_wristband(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    port = free_port()
    base = notifier_settings(
        settings, escalation_wait_s=3.0, ack_port=port, ack_base_url=f"http://127.0.0.1:{port}"
    )
    async with (
        running_fake_providers(base) as fake,
        running_notifier(fake.settings),
        running_ack_app(fake.settings) as http,
        aiomqtt.Client("127.0.0.1", settings.mqtt_port, identifier="band-W1") as band,
    ):
        s = fake.settings
        await band.subscribe(topic(DEVICE_ID, "cmd"), qos=1)
        await publish_changes(s, change(alert_id))

        async def step0_sent() -> bool:
            rows = query(dsn, "SELECT count(*) FROM notifications WHERE status = 'sent'")
            return bool(rows[0][0] == 4)

        await await_until(step0_sent, 10, "step 0 sent")
        due = query(dsn, "SELECT next_step_at FROM escalations")[0][0]
        sms = {r["address"]: r for r in await fake.records("sms")}
        # the short link the SMS carries: the same page and actions as the full one
        link = path_of(link_in_sms(sms[GRID_WORKER_PHONE]))
        assert link.startswith("/a/") and len(link) == len("/a/") + 12

        # the phone page
        page = await http.get(link)
        assert page.status_code == 200
        assert 'name="viewport"' in page.text and ELDER_NAME in page.text
        for label in ("我来处理", "误报", "已到达并处理", "已送医", "紧急呼叫", "待处理"):
            assert label in page.text
        # its own button: the label alone is inside 已到达并处理 too
        assert 'value="arrive">已到达</button>' in page.text

        # the grid worker presses 我来处理 (a plain form post, as the page sends it)
        acked = await http.post(link, data={"action": "acknowledge"})
        assert acked.status_code == 200, acked.text
        assert "处理中" in acked.text
        row = query(dsn, "SELECT status, acknowledged_by FROM alerts")
        assert row == [("acknowledged", f"grid_worker:{GRID_WORKER_ID}")]
        esc = query(dsn, "SELECT next_step_at, stopped_reason FROM escalations")
        assert esc == [(None, f"acknowledged by grid_worker:{GRID_WORKER_ID}")]
        assert query(
            dsn,
            "SELECT count(*) FROM alert_events WHERE actor = %s AND action = 'acknowledged'",
            f"grid_worker:{GRID_WORKER_ID}",
        ) == [(1,)]

        # "help is coming" on the wristband, through the outbox (channel 'downlink')
        message = await asyncio.wait_for(anext(band.messages), 10)
        command = msgspec.json.decode(message.payload, type=DeviceCommand)
        assert (command.type, command.alert_id) == ("help_coming", alert_id)
        assert command.text == "已有人前来帮助，请保持冷静"

        # the first family contact (the only other one reached) is told who handles it
        async def handled_sent() -> bool:
            rows = query(
                dsn,
                "SELECT count(*) FROM notifications WHERE purpose = 'handled' AND status = 'sent'",
            )
            return bool(rows[0][0] == 3)

        await await_until(handled_sent, 10, "handled notifications sent")
        handled = query(
            dsn,
            "SELECT recipient_kind, channel, params->>'handler' FROM notifications"
            " WHERE purpose = 'handled' ORDER BY channel",
        )
        assert handled == [
            ("device", "downlink", "张三（网格员）"),
            ("family", "sms", "张三（网格员）"),
            ("family", "wecom", "张三（网格员）"),
        ]
        family_sms = [r for r in await fake.records("sms") if r["address"] == FAMILY_1_PHONE]
        assert any("张三（网格员）" in r["text"] for r in family_sms)

        # the AlertChange went out on the alerts stream, through the outbox
        assert any(b'"status":"acknowledged"' in e for e in await alert_changes_on_stream(s))
        assert query(
            dsn, "SELECT source LIKE 'ack:%%', published_at IS NOT NULL FROM rules_outbox"
        ) == [(True, True)]

        # the escalation is over: once step 1 would have been due, still no step-1 rows
        async def past_due() -> bool:
            return bool(time.time() > due.timestamp() + 3 * s.outbox_poll_ms / 1000)

        await await_until(past_due, 10, "step 1's former due time to pass")
        assert query(dsn, "SELECT count(*) FROM notifications WHERE step > 0") == [(0,)]
        assert query(dsn, "SELECT step FROM escalations") == [(0,)]


def link_setup(settings: Settings) -> tuple[str, str, Settings, str, int]:
    """A seeded registry with one alert and an ack app's settings on a free port:
    (dsn, alert id, settings, link secret, an expiry an hour ahead in ms)."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    port = free_port()
    s = notifier_settings(settings, ack_port=port, ack_base_url=f"http://127.0.0.1:{port}")
    future = int(time.time() * 1000) + 3_600_000
    return dsn, alert_id, s, s.ack_secret.get_secret_value(), future


async def test_bad_expired_malformed_and_replayed_links_are_refused(settings: Settings) -> None:
    dsn, alert_id, s, secret, future = link_setup(settings)
    good = sign(alert_id, "grid_worker", GRID_WORKER_ID, future, secret)
    forged = sign(alert_id, "grid_worker", GRID_WORKER_ID, future, "guessed-secret")
    expired = sign(alert_id, "grid_worker", GRID_WORKER_ID, future - 7_200_000, secret)
    before = {r: rejects(r) for r in ("bad_signature", "expired", "malformed", "replay")}

    async with running_fake_providers(s) as fake, running_ack_app(fake.settings) as http:
        for token, reason, text in (
            (forged, "bad_signature", "链接无效"),
            (expired, "expired", "链接已过期"),
            ("not-a-token", "malformed", "链接不完整"),
        ):
            page = await http.get(f"/ack/{token}")
            assert page.status_code == 403 and text in page.text
            posted = await http.post(f"/ack/{token}", json={"action": "acknowledge"})
            assert posted.status_code == 403
            assert posted.json()["error"] == reason
            assert rejects(reason) == before[reason] + 2
        assert query(dsn, "SELECT status FROM alerts") == [("open",)]

        first = await http.post(f"/ack/{good}", json={"action": "acknowledge"})
        assert first.status_code == 200 and first.json()["status"] == "acknowledged"
        replay = await http.post(f"/ack/{good}", json={"action": "acknowledge"})
        assert replay.status_code == 409 and replay.json()["error"] == "replay"
        assert rejects("replay") == before["replay"] + 1
        # the same link may still record the next step, once
        arrived = await http.post(f"/ack/{good}", data={"action": "arrive"})
        assert arrived.status_code == 200 and "已记录您到达现场" in arrived.text
        resolved = await http.post(f"/ack/{good}", json={"action": "resolve"})
        assert resolved.json()["status"] == "resolved"
        # a closed alert takes no more actions, whoever asks
        other = sign(alert_id, "family", "1", future, secret)
        late = await http.post(
            f"/ack/{other}", json={"action": "false_alarm", "reason": "老人误按"}
        )
        assert late.status_code == 409 and late.json()["error"] == "transition"
        unknown = await http.post(f"/ack/{other}", json={"action": "delete"})
        assert unknown.status_code == 400

    actions = query(
        dsn, "SELECT actor, action FROM alert_events WHERE actor <> 'notifier' ORDER BY id"
    )
    actor = f"grid_worker:{GRID_WORKER_ID}"
    assert actions == [(actor, "acknowledged"), (actor, "arrived"), (actor, "resolved")]
    assert query(dsn, "SELECT status, closed_at IS NOT NULL FROM alerts") == [("resolved", True)]


def store_short_link(dsn: str, token: str) -> str:
    """A short code for `token`, stored as the notifier stores it."""
    [(code,)] = query(
        dsn,
        "INSERT INTO ack_short_links (code, token, expires_at) VALUES (%s, %s, %s) RETURNING code",
        new_short_code(),
        token,
        timeline.from_ms(unverified_expiry(token)),
    )
    return str(code)


async def test_short_links_follow_the_rules_of_the_full_links(settings: Settings) -> None:
    dsn, alert_id, s, secret, future = link_setup(settings)
    good = store_short_link(dsn, sign(alert_id, "grid_worker", GRID_WORKER_ID, future, secret))
    expired = store_short_link(dsn, sign(alert_id, "family", "1", future - 7_200_000, secret))
    forged = store_short_link(dsn, sign(alert_id, "family", "1", future, "guessed-secret"))
    before = {r: rejects(r) for r in ("unknown_code", "expired", "bad_signature", "replay")}

    async with running_fake_providers(s) as fake, running_ack_app(fake.settings) as http:
        # never issued (well formed or not): refused like a forged link, nothing looked up
        # beyond the code
        for code in (new_short_code(), "short", "Ab3_x-Yz09Q%3D", "短码短码短码短码短码短码"):
            page = await http.get(f"/a/{code}")
            assert page.status_code == 403 and "链接无效" in page.text, code
            posted = await http.post(f"/a/{code}", json={"action": "acknowledge"})
            assert posted.status_code == 403 and posted.json()["error"] == "unknown_code"
        assert rejects("unknown_code") == before["unknown_code"] + 8
        # a stored code is no better than its token
        page = await http.get(f"/a/{expired}")
        assert page.status_code == 403 and "链接已过期" in page.text
        posted = await http.post(f"/a/{expired}", json={"action": "acknowledge"})
        assert posted.status_code == 403 and posted.json()["error"] == "expired"
        assert rejects("expired") == before["expired"] + 2
        posted = await http.post(f"/a/{forged}", data={"action": "acknowledge"})
        assert posted.status_code == 403 and "链接无效" in posted.text
        assert rejects("bad_signature") == before["bad_signature"] + 1
        assert query(dsn, "SELECT status FROM alerts") == [("open",)]

        # the valid code: the phone page, and its form posts back to the short link
        page = await http.get(f"/a/{good}")
        assert page.status_code == 200 and "我来处理" in page.text
        assert '<form method="post">' in page.text
        first = await http.post(f"/a/{good}", data={"action": "acknowledge"})
        assert first.status_code == 200 and "已确认由您处理" in first.text
        # a replay is refused, through the short link or the full link behind it alike
        replay = await http.post(f"/a/{good}", json={"action": "acknowledge"})
        assert replay.status_code == 409 and replay.json()["error"] == "replay"
        [(token,)] = query(dsn, "SELECT token FROM ack_short_links WHERE code = %s", good)
        full = urlsplit(link_url(s.ack_base_url, token)).path
        replay = await http.post(full, json={"action": "acknowledge"})
        assert replay.status_code == 409
        assert rejects("replay") == before["replay"] + 2

    assert query(
        dsn, "SELECT actor, action FROM alert_events WHERE actor <> 'notifier' ORDER BY id"
    ) == [(f"grid_worker:{GRID_WORKER_ID}", "acknowledged")]
    assert query(dsn, "SELECT status FROM alerts") == [("acknowledged",)]
