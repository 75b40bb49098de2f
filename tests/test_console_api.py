"""The dispatcher console's server side (/console): login, queue, alert card, actions,
search, the live stream and the offline docs page, on a real operator API and PostgreSQL.

Scope: the seed (tests/operator_support.py) has 渝中区 (解放碑街道, grids G1 and G2) and
江北区 (观音桥街道, grid G3). A 渝中区 operator must see nothing of 江北区 in the queue,
the search, the alert pages and the live stream, and the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources

import httpx
import psycopg
import pytest

from harness.services import Proc, await_until
from operator_api.console_map import wgs84_to_gcj02
from operator_api.live import RESYNC, AlertFeed
from operator_api.tokens import create_token
from tests.operator_support import (
    A1,
    A2,
    A3,
    A4,
    CONTACT_PHONE,
    GW1_PHONE,
    Tokens,
    seed,
    serving,
    sse_events,
)

HEADERS = {"X-Carewatch-Console": "1"}
OLD_FALL = "00000000-0000-4000-8000-000000000103"  # acknowledged on the seed's report day


@dataclass(frozen=True)
class Site:
    base: str
    tokens: Tokens
    jiangbei: str  # an operator of 江北区


@pytest.fixture
async def site(db_dsn: str, redis_server: Proc) -> AsyncIterator[Site]:
    tokens = seed(db_dsn)
    jiangbei = create_token(db_dsn, "operator", "op-jb", "江北区")
    async with serving(db_dsn, redis_server.port) as base:
        yield Site(base, tokens, jiangbei)


async def logged_in(base: str, token: str) -> httpx.AsyncClient:
    """A client (not yet opened) holding the console cookie the login link set."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as login:
        entry = await login.get("/console", params={"token": token})
    assert entry.status_code == 303 and entry.headers["location"] == "/console"
    cookie = entry.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    return httpx.AsyncClient(base_url=base, timeout=10, cookies=dict(login.cookies))


async def test_login_page_then_console_without_anything_from_outside(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=10) as anon:
        login = await anon.get("/console")
        assert login.status_code == 200 and "访问令牌" in login.text
        refused = await anon.post(
            "/console/login", data={"token": "cwo_forged"}, headers={"Origin": site.base}
        )
        assert refused.status_code == 401 and "令牌无效" in refused.text
        assert (await anon.get("/console/api/queue")).status_code == 401
        form = await anon.post("/console/login", data={"token": site.tokens.operator_yuzhong})
        assert form.status_code == 303
        page = await anon.get("/console")
    assert page.status_code == 200
    assert 'lang="zh-CN"' in page.text and "/console/static/console.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    # nothing the page loads names another host: no CDN, no fonts, no tiles
    for name in ("console.js", "console.css", "apidocs.js", "apidocs.css"):
        text = (resources.files("operator_api") / "static" / name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), name
    assert not re.search(r"https?://", page.text)


async def test_queue_is_sorted_and_scoped(site: Site) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    jb = await logged_in(site.base, site.jiangbei)
    async with yz, jb:
        mine = (await yz.get("/console/api/queue")).json()["items"]
        theirs = (await jb.get("/console/api/queue")).json()["items"]
        me = (await yz.get("/console/api/me")).json()
    # critical before warning, then the longest waiting first (the report day's
    # acknowledged fall is the oldest); A4 is resolved
    assert [a["id"] for a in mine] == [OLD_FALL, A2, A1]
    assert mine[2]["address"] == "民族路1号" and mine[2]["care_profile_id"] == "alone"
    assert mine[2]["kind_label"] == "紧急呼叫" and mine[2]["next_step_at"] is not None
    assert [a["id"] for a in theirs] == [A3]
    assert me["title"].startswith("值班调度员") and me["full_numbers"] is True
    assert {g["id"] for g in me["grids"]} == {"G1", "G2"}
    assert "到达无事" in me["outcomes"].values()


async def test_alert_card_has_what_a_dispatcher_calls_with(site: Site, db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE elders SET gender = '女', community = '民族路社区',"
            " id_card_masked = '500103********0021' WHERE id = 'E1'"
        )
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    gw = await logged_in(site.base, site.tokens.gw1)
    async with yz, gw:
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
        worker_view = (await gw.get(f"/console/api/alerts/{A1}")).json()
        other_street = await yz.get(f"/console/api/alerts/{A3}")
    assert other_street.status_code == 403
    elder = card["elder"]
    assert elder["address"] == "民族路1号" and elder["care_profile_name"] is not None
    assert [(d["id"], d["battery"]) for d in elder["devices"]] == [("W1", 80)]
    # the dispatcher dials the family and the grid worker: full numbers, for tel: links
    assert card["dial"]["full_numbers"] is True
    assert card["dial"]["contacts"][0]["phone"] == CONTACT_PHONE
    assert card["dial"]["grid_workers"][0]["phone"] == GW1_PHONE
    # a grid worker's console keeps them masked (the API's rule for non-admins)
    assert worker_view["dial"]["contacts"][0]["phone"] == "136****5432"
    # every notification with channel and delivery state; the escalation's next step
    states = {(n["channel"], n["status"]) for n in card["alert"]["notifications"]}
    assert states == {("sms", "sent"), ("wecom", "failed"), ("sms", "pending")}
    assert card["alert"]["escalation"]["next_step_at"] is not None
    # the office ledger's gender and community; never the ID card number, even masked
    assert card["person"] == {"gender": "女", "community": "民族路社区"}
    assert "********" not in json.dumps(card) and "id_card" not in json.dumps(card)


async def test_actions_acknowledge_note_resolve_with_category(site: Site, db_dsn: str) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    async with yz:
        no_header = await yz.post(f"/console/api/alerts/{A1}/acknowledge", json={})
        cross_site = await yz.post(
            f"/console/api/alerts/{A1}/acknowledge",
            json={},
            headers={**HEADERS, "Origin": "https://evil.example"},
        )
        assert no_header.status_code == 403 and cross_site.status_code == 403
        ack = await yz.post(f"/console/api/alerts/{A1}/acknowledge", json={}, headers=HEADERS)
        assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
        note = await yz.post(
            f"/console/api/alerts/{A1}/note", json={"note": "已电话联系儿子张伟"}, headers=HEADERS
        )
        assert note.status_code == 200 and note.json()["status"] == "acknowledged"
        empty = await yz.post(f"/console/api/alerts/{A1}/note", json={}, headers=HEADERS)
        no_outcome = await yz.post(f"/console/api/alerts/{A1}/resolve", json={}, headers=HEADERS)
        assert empty.status_code == 422 and no_outcome.status_code == 422
        resolved = await yz.post(
            f"/console/api/alerts/{A1}/resolve",
            json={"outcome": "hospital", "note": "120 已送重医附一院"},
            headers=HEADERS,
        )
        assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
        again = await yz.post(
            f"/console/api/alerts/{A1}/resolve", json={"outcome": "handled"}, headers=HEADERS
        )
        assert again.status_code == 409
        out_of_scope = await yz.post(
            f"/console/api/alerts/{A3}/note", json={"note": "x"}, headers=HEADERS
        )
        assert out_of_scope.status_code == 403
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
    steps = [(e["action"], e["actor"]) for e in card["alert"]["events"]]
    assert steps[-3:] == [
        ("acknowledged", "operator:op-yz"),
        ("note", "operator:op-yz"),
        ("resolved", "operator:op-yz"),
    ]
    last = card["alert"]["events"][-1]["details"]
    assert last["outcome"] == "hospital" and last["outcome_label"] == "送医"
    assert last["via"] == "console"
    with psycopg.connect(db_dsn) as conn:
        pending = conn.execute(
            "SELECT count(*) FROM notifications WHERE alert_id = %s AND status = 'pending'", (A1,)
        ).fetchone()
        untouched = conn.execute("SELECT status FROM alerts WHERE id = %s", (A3,)).fetchone()
        changes = conn.execute(
            "SELECT change_id FROM rules_outbox WHERE change_id LIKE %s ORDER BY created_at",
            (f"{A1}:%",),
        ).fetchall()
    # the outbox rows are the notifier's: it cancels them when the published change reaches
    # it, as for an ack link (tests/test_alert_owner.py); the console leaves them alone
    assert pending == (1,) and untouched == ("open",)
    assert [c.split(":")[1] for (c,) in changes] == ["acknowledged", "resolved"]


async def test_false_alarm_category_closes_as_false_alarm(site: Site, db_dsn: str) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    async with yz:
        no_reason = await yz.post(
            f"/console/api/alerts/{A1}/resolve",
            json={"outcome": "false_alarm", "note": "老人误按"},
            headers=HEADERS,
        )
        other_without_text = await yz.post(
            f"/console/api/alerts/{A1}/resolve",
            json={"outcome": "false_alarm", "reason": "other"},
            headers=HEADERS,
        )
        assert no_reason.status_code == 422 and other_without_text.status_code == 422
        done = await yz.post(
            f"/console/api/alerts/{A1}/resolve",
            json={"outcome": "false_alarm", "reason": "pressed_by_mistake", "note": "老人误按"},
            headers=HEADERS,
        )
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
    assert done.status_code == 200 and done.json()["status"] == "false_alarm"
    last = card["alert"]["events"][-1]
    assert last["action"] == "false_alarm"
    assert last["details"]["false_alarm_reason_label"] == "误按"
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT status, closed_at IS NOT NULL FROM alerts WHERE id = %s", (A1,))
        closed = row.fetchone()
        published = conn.execute(
            "SELECT count(*) FROM rules_outbox WHERE change_id LIKE %s", (f"{A1}:false_alarm:%",)
        ).fetchone()
    # closed by the alert state owner; the notifier stops the escalation when the change
    # (in the outbox with the action) reaches it
    assert closed == ("false_alarm", True) and published == (1,)


async def test_search_by_name_address_grid_within_scope(site: Site) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    jb = await logged_in(site.base, site.jiangbei)
    async with yz, jb:

        async def names(client: httpx.AsyncClient, **params: str) -> list[str]:
            found = await client.get("/console/api/elders", params=params)
            assert found.status_code == 200, found.text
            return [e["name"] for e in found.json()["items"]]

        assert await names(yz, q="张秀") == ["张秀英"]
        assert await names(yz, q="邹容路") == ["王桂兰"]
        assert sorted(await names(yz, q="第一网格")) == ["张秀英", "李建国"]
        assert await names(yz, grid="G2") == ["王桂兰"]
        assert await names(yz, q="%") == []  # wildcards are literal
        # 江北区's elder is invisible to 渝中区 whatever the query, and vice versa
        assert await names(yz, q="陈淑芬") == []
        assert await names(yz, q="建新北路") == []
        assert await names(jb, q="张秀英") == []
        assert await names(jb) == ["陈淑芬"]
        assert await names(yz, grid="G3") == []  # another district's grid: nobody
        refused = await yz.get("/console/api/elders", params={"district": "江北区"})
        assert refused.status_code == 403
        assert (await yz.get("/console/api/elders/E4")).status_code == 403
        elder = (await yz.get("/console/api/elders/E1")).json()
    assert [a["id"] for a in elder["alerts"]][:1] == [A1]
    assert OLD_FALL in {a["id"] for a in elder["alerts"]}


async def _wait_for(
    events: list[tuple[str, dict[str, object]]], name: str, alert_id: str | None = None
) -> None:
    async def seen() -> bool:
        return any(n == name and (alert_id is None or d.get("id") == alert_id) for n, d in events)

    await await_until(seen, 10, f"{name} {alert_id or ''} on the stream")


def _open_alert(dsn: str, elder: str, kind: str) -> str:
    alert_id = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (id, elder_id, kind, severity, status, source_event_id,"
            " device_time, rule) VALUES (%s, %s, %s, 'critical', 'open', %s, now(), %s)",
            (alert_id, elder, kind, f"test:{alert_id}", kind),
        )
    return alert_id


async def test_live_stream_pushes_new_alerts_only_within_scope(site: Site, db_dsn: str) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    jb = await logged_in(site.base, site.jiangbei)
    yz_events: list[tuple[str, dict[str, object]]] = []
    jb_events: list[tuple[str, dict[str, object]]] = []
    async with (
        yz,
        jb,
        yz.stream("GET", "/console/api/stream") as yz_stream,
        jb.stream("GET", "/console/api/stream") as jb_stream,
    ):
        assert yz_stream.headers["content-type"].startswith("text/event-stream")
        readers = [
            asyncio.create_task(sse_events(yz_stream, yz_events)),
            asyncio.create_task(sse_events(jb_stream, jb_events)),
        ]
        try:
            await _wait_for(yz_events, "ready")
            await _wait_for(jb_events, "ready")
            # 江北区 first, then 渝中区: when 渝中区 hears of its own, it would already
            # have heard of 江北区's had the stream leaked it
            theirs = _open_alert(db_dsn, "E4", "fall")
            mine = _open_alert(db_dsn, "E2", "fall")
            await _wait_for(yz_events, "alert", mine)
            await _wait_for(jb_events, "alert", theirs)
            # a change to an alert (an acknowledgement through the API) is pushed too
            ack = await yz.post(f"/console/api/alerts/{mine}/acknowledge", json={}, headers=HEADERS)
            assert ack.status_code == 200

            async def acknowledged() -> bool:
                return any(
                    d.get("id") == mine and d.get("status") == "acknowledged" for _, d in yz_events
                )

            await await_until(acknowledged, 10, "the acknowledgement on the stream")
        finally:
            for reader in readers:
                reader.cancel()
    yz_ids = {d.get("id") for n, d in yz_events if n == "alert"}
    jb_ids = {d.get("id") for n, d in jb_events if n == "alert"}
    assert mine in yz_ids and theirs not in yz_ids and A3 not in yz_ids
    assert theirs in jb_ids and mine not in jb_ids
    assert all("陈淑芬" not in json.dumps(d, ensure_ascii=False) for _, d in yz_events)


async def test_docs_page_works_offline(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=10) as http:
        anonymous = await http.get("/docs")
        page = await http.get(
            "/docs", headers={"Authorization": f"Bearer {site.tokens.operator_yuzhong}"}
        )
        script = await http.get("/console/static/apidocs.js")
    console = await logged_in(site.base, site.tokens.operator_yuzhong)
    async with console:
        from_console = await console.get("/console/docs")
    assert anonymous.status_code == 401  # like the API
    assert from_console.status_code == 200 and "/console/static/apidocs.js" in from_console.text
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"https?://", page.text.split('id="openapi">')[0])
    assert '<script src="/console/static/apidocs.js"' in page.text
    assert '"/api/alerts/{alert_id}"' in page.text  # the OpenAPI document, inlined
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )


async def test_open_streams_end_when_the_server_stops(db_dsn: str, redis_server: Proc) -> None:
    tokens = seed(db_dsn)
    events: list[tuple[str, dict[str, object]]] = []
    async with contextlib.AsyncExitStack() as client_side:
        server = contextlib.AsyncExitStack()
        base = await server.enter_async_context(serving(db_dsn, redis_server.port))
        client = await client_side.enter_async_context(
            await logged_in(base, tokens.operator_yuzhong)
        )
        stream = await client_side.enter_async_context(client.stream("GET", "/console/api/stream"))
        reader = asyncio.create_task(sse_events(stream, events))
        await _wait_for(events, "ready")
        # serving() fails here if the server has not stopped 10 s after it was told to,
        # which is what an open stream did before streams watched for the stop
        await server.aclose()
        with contextlib.suppress(httpx.HTTPError):  # closed mid-chunk or cleanly: ended
            await asyncio.wait_for(reader, 10)
        assert reader.done()


def test_a_stream_that_falls_behind_is_told_to_reload() -> None:
    feed = AlertFeed("postgresql:///unused", asyncio.Event())
    slow: asyncio.Queue[str] = asyncio.Queue(3)
    feed._queues.add(slow)
    for n in range(5):
        feed._deliver(f"alert-{n}")
    drained = [slow.get_nowait() for _ in range(slow.qsize())]
    # the backlog was dropped for one RESYNC; what came after it is still delivered
    assert drained == [RESYNC, "alert-4"]


async def test_call_log_and_reopen_within_the_window(site: Site, db_dsn: str) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    async with yz:
        bad = await yz.post(
            f"/console/api/alerts/{A1}/call", json={"outcome": "busy"}, headers=HEADERS
        )
        assert bad.status_code == 422
        called = await yz.post(
            f"/console/api/alerts/{A1}/call",
            json={"outcome": "no_answer", "callee": "老人本人", "note": "响铃无人接"},
            headers=HEADERS,
        )
        assert called.status_code == 200 and called.json()["outcome_label"] == "未接"
        outside = await yz.post(
            f"/console/api/alerts/{A3}/call", json={"outcome": "answered"}, headers=HEADERS
        )
        assert outside.status_code == 403
        still_open = await yz.post(
            f"/console/api/alerts/{A1}/reopen", json={"note": "复查"}, headers=HEADERS
        )
        assert still_open.status_code == 409  # only a closed alert is reopened
        resolved = await yz.post(
            f"/console/api/alerts/{A1}/resolve", json={"outcome": "arrived_ok"}, headers=HEADERS
        )
        assert resolved.json()["status"] == "resolved"
        no_reason = await yz.post(f"/console/api/alerts/{A1}/reopen", json={}, headers=HEADERS)
        assert no_reason.status_code == 422
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
        assert card["reopen_until"] is not None
        reopened = await yz.post(
            f"/console/api/alerts/{A1}/reopen",
            json={"note": "家属来电：老人又感不适"},
            headers=HEADERS,
        )
        assert reopened.status_code == 200, reopened.text
        assert reopened.json()["status"] == "acknowledged"
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
        # A4 was resolved long before the reopen window (its closed_at set back below)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE alerts SET closed_at = now() - interval '25 hours' WHERE id = %s", (A4,)
            )
        too_late = await yz.post(
            f"/console/api/alerts/{A4}/reopen", json={"note": "复查"}, headers=HEADERS
        )
        assert too_late.status_code == 409 and "hours ago" in too_late.json()["detail"]
    steps = [(e["action"], e["details"].get("outcome_label")) for e in card["alert"]["events"]]
    assert steps[-3:] == [("call", "未接"), ("resolved", "到达无事"), ("reopened", None)]
    call = card["alert"]["events"][-3]["details"]
    assert call["callee"] == "老人本人" and call["note"] == "响铃无人接"
    assert card["alert"]["status"] == "acknowledged" and card["alert"]["closed_at"] is None
    assert card["reopen_until"] is None
    with psycopg.connect(db_dsn) as conn:
        changes = conn.execute(
            "SELECT change_id FROM rules_outbox WHERE change_id LIKE %s ORDER BY created_at",
            (f"{A1}:%",),
        ).fetchall()
    # the reopen is a published change of the alert state owner, like every status change
    assert [c.split(":")[1] for (c,) in changes] == ["resolved", "acknowledged"]


async def test_operator_api_calls_false_alarm_reopen(site: Site) -> None:
    auth = {"Authorization": f"Bearer {site.tokens.operator_yuzhong}"}
    async with httpx.AsyncClient(base_url=site.base, timeout=10, headers=auth) as api:
        call = await api.post(f"/api/alerts/{A1}/calls", json={"outcome": "powered_off"})
        assert call.status_code == 200 and call.json()["outcome_label"] == "关机"
        note = await api.post(f"/api/alerts/{A1}/note", json={"note": "  "})
        assert note.status_code == 422
        unexplained = await api.post(f"/api/alerts/{A1}/false-alarm", json={})
        assert unexplained.status_code == 422
        false_alarm = await api.post(
            f"/api/alerts/{A1}/false-alarm", json={"reason": "test", "note": "安装测试"}
        )
        assert false_alarm.json()["status"] == "false_alarm"
        reopened = await api.post(f"/api/alerts/{A1}/reopen", json={"note": "并非测试"})
        assert reopened.json()["status"] == "acknowledged"
        outside = await api.post(f"/api/alerts/{A3}/calls", json={"outcome": "answered"})
        assert outside.status_code == 403
        document = (await api.get("/openapi.json")).json()
    for path in ("calls", "note", "false-alarm", "reopen"):
        assert f"/api/alerts/{{alert_id}}/{path}" in document["paths"], path


async def test_card_receipts_care_needs_map_and_filters(site: Site, db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE notifications SET status = 'delivered', receipt = 'delivered',"
            " receipt_code = 'DELIVRD', receipt_at = now() WHERE idempotency_key = 'k1'"
        )
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    async with yz:
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
        me = (await yz.get("/console/api/me")).json()

        async def names(**params: str) -> list[str]:
            found = await yz.get("/console/api/elders", params=params)
            assert found.status_code == 200, found.text
            return sorted(e["name"] for e in found.json()["items"])

        assert await names(profile="elderly_80plus") == ["王桂兰"]
        assert await names(profile="alone") == ["张秀英", "王桂兰"]  # also who lives alone
        assert await names(device="offline") == ["李建国"]
        assert await names(device="low_battery") == ["李建国"]
        assert await names(device="no_device") == ["王桂兰"]
        assert await names(device="all_online") == ["张秀英"]
        assert await names(device="offline", q="张") == []
        assert (await yz.get("/console/api/elders", params={"device": "x"})).status_code == 422
        leaflet = await yz.get("/console/static/vendor/leaflet/leaflet.js")
        licence = await yz.get("/console/static/vendor/leaflet/LICENSE")
        icon = await yz.get("/console/static/vendor/leaflet/images/marker-icon.png")
        missing = await yz.get("/console/static/vendor/leaflet/../console.js")
    assert ("delivered", "delivered") in [
        (n["status"], n["receipt"]) for n in card["alert"]["notifications"]
    ]
    assert card["care_needs"] is None and "钥匙保管人" in card["care_needs_missing"]
    # no tile server configured: the stored position, no tiles
    assert card["map"] == {
        "wgs84": {"lat": 29.55, "lon": 106.57},
        "lat": 29.55,
        "lon": 106.57,
        "crs": "wgs84",
        "tile_url": None,
        "attribution": "",
    }
    assert me["map"]["tile_url"] is None and me["call_outcomes"]["wrong_number"] == "号码错误"
    assert leaflet.status_code == 200 and "Leaflet" in leaflet.text[:400]
    assert "BSD" in licence.text or "Redistribution" in licence.text
    assert icon.headers["content-type"] == "image/png" and icon.content[:4] == b"\x89PNG"
    assert missing.status_code == 404


async def test_a_gcj02_tile_server_moves_the_marker_and_is_allowed_by_csp(
    db_dsn: str, redis_server: Proc
) -> None:
    tokens = seed(db_dsn)
    amap = "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}"
    async with serving(
        db_dsn,
        redis_server.port,
        console_tile_url=amap,
        console_tile_crs="gcj02",
        console_tile_attribution="© 高德地图",
    ) as base:
        yz = await logged_in(base, tokens.operator_yuzhong)
        async with yz:
            page = await yz.get("/console")
            card = (await yz.get(f"/console/api/alerts/{A1}")).json()
    assert (
        "img-src 'self' data: https://*.is.autonavi.com;" in page.headers["content-security-policy"]
    )
    view = card["map"]
    assert view["crs"] == "gcj02" and view["tile_url"] == amap
    assert (view["lat"], view["lon"]) == pytest.approx(wgs84_to_gcj02(29.55, 106.57))
    assert view["wgs84"] == {"lat": 29.55, "lon": 106.57}


async def test_take_over_and_dispatch_from_the_card_and_the_area_report(site: Site) -> None:
    yz = await logged_in(site.base, site.tokens.operator_yuzhong)
    async with yz:
        card = (await yz.get(f"/console/api/alerts/{A1}")).json()
        listed = {(c["kind"], c["id"]): c for c in card["dispatch"]}
        # the grid's worker, the son, the district's station; nothing of 江北区
        assert {("grid_worker", "GW1"), ("station", "S1")} <= set(listed)
        assert listed[("grid_worker", "GW1")]["name"] == "周敏"
        assert any(k == "family" and c["role"] == "儿子" for (k, _i), c in listed.items())
        assert ("station", "S2") not in listed and ("grid_worker", "GW3") not in listed
        assert isinstance(listed[("station", "S1")]["km"], float)
        nobody = await yz.post(
            f"/console/api/alerts/{A1}/dispatch",
            json={"kind": "grid_worker", "id": "GW-none"},
            headers=HEADERS,
        )
        elsewhere = await yz.post(
            f"/console/api/alerts/{A3}/dispatch",
            json={"kind": "grid_worker", "id": "GW3"},
            headers=HEADERS,
        )
        no_header = await yz.post(
            f"/console/api/alerts/{A1}/dispatch", json={"kind": "grid_worker", "id": "GW1"}
        )
        assert (nobody.status_code, elsewhere.status_code, no_header.status_code) == (
            422,
            403,
            403,
        )
        sent = await yz.post(
            f"/console/api/alerts/{A1}/dispatch",
            json={"kind": "grid_worker", "id": "GW1", "note": "请带上轮椅", "note_to": "everyone"},
            headers=HEADERS,
        )
        assert sent.status_code == 200 and sent.json()["status"] == "acknowledged"
        twice = await yz.post(
            f"/console/api/alerts/{A1}/dispatch",
            json={"kind": "station", "id": "S1"},
            headers=HEADERS,
        )
        assert twice.status_code == 409  # someone has it: not sent over their head
        taken = await yz.post(
            f"/console/api/alerts/{A1}/take-over",
            json={"note": "调度员接手", "stand_down": True},
            headers=HEADERS,
        )
        assert taken.status_code == 200 and taken.json()["status"] == "acknowledged"
        events = (await yz.get(f"/console/api/alerts/{A1}")).json()["alert"]["events"]
        report = await yz.get("/console/api/reports/areas?period=month")
        csv = await yz.get("/console/api/reports/areas.csv?period=week")
        xlsx = await yz.get("/console/api/reports/areas.xlsx")
    acks = [e["details"] for e in events if e["action"] == "acknowledged"]
    assert acks[-2]["mode"] == "dispatch" and acks[-2]["dispatched"] == "grid_worker:GW1"
    assert acks[-2]["note_for"] == "all" and acks[-2]["note"] == "请带上轮椅"
    assert acks[-1]["mode"] == "take_over" and acks[-1]["stand_down"] is True
    assert acks[-1]["via"] == "console"
    assert report.status_code == 200 and report.json()["period"] == "month"
    districts = {r["district"] for r in report.json()["rows"]}
    assert districts == {"渝中区"}
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "解放碑街道" in csv.content.decode("utf-8-sig") and "观音桥" not in csv.text
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    async with httpx.AsyncClient(base_url=site.base) as anonymous:
        assert (await anonymous.get("/console/api/reports/areas.csv")).status_code == 401
