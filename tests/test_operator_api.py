"""Operator API over real HTTP (uvicorn on a free port) against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from harness.services import Proc
from operator_api.tokens import create_token, revoke_token
from tests.operator_support import (
    A1,
    A2,
    A3,
    A4,
    CONTACT_PHONE,
    ELDER_PHONE,
    GW1_PHONE,
    REPORT_DAY,
    Tokens,
    alert_changes,
    seed,
    serving,
)


@dataclass
class Api:
    base: str
    dsn: str
    redis_url: str
    tokens: Tokens
    http: httpx.AsyncClient

    async def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return await self.http.get(
            self.base + path, params=params, headers={"Authorization": f"Bearer {token}"}
        )

    async def post(self, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(
            self.base + path, json=body, headers={"Authorization": f"Bearer {token}"}
        )

    def one(self, query: str, *params: object) -> tuple[Any, ...]:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return row


@pytest.fixture
async def api(db_dsn: str, redis_server: Proc) -> AsyncIterator[Api]:
    tokens = seed(db_dsn)
    async with serving(db_dsn, redis_server.port) as base, httpx.AsyncClient(timeout=10) as http:
        yield Api(base, db_dsn, f"redis://127.0.0.1:{redis_server.port}/0", tokens, http)


def ids(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {item["id"] for item in resp.json()["items"]}


async def test_openapi_document_is_typed(api: Api) -> None:
    doc = (await api.get("/openapi.json", api.tokens.gw1)).json()
    assert {"/api/alerts", "/api/alerts/{alert_id}", "/api/reports/daily"} <= set(doc["paths"])
    detail = doc["components"]["schemas"]["AlertDetail"]["properties"]
    assert {"events", "notifications", "escalation"} <= set(detail)
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


async def test_missing_bad_or_revoked_token_is_401(api: Api) -> None:
    missing = await api.http.get(api.base + "/api/alerts")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (await api.get("/api/alerts", "cwo_not-a-token")).status_code == 401
    token = create_token(api.dsn, "operator", "temp", "*")
    assert (await api.get("/api/alerts", token)).status_code == 200
    assert revoke_token(api.dsn, token)
    assert (await api.get("/api/alerts", token)).status_code == 401
    stored = api.one("SELECT count(*) FROM api_tokens WHERE token_hash = %s", token)
    assert stored == (0,), "the token itself must never be stored"


async def test_alert_filters(api: Api) -> None:
    admin = api.tokens.admin
    get = api.get
    assert ids(await get("/api/alerts", admin, status="open")) == {A1, A3}
    kinds = {"kind": ["low_battery", "inactivity"], "status": ["open", "resolved"]}
    assert ids(await get("/api/alerts", admin, **kinds)) == {A3, A4}
    assert ids(await get("/api/alerts", admin, severity="info")) == {A4}
    assert ids(await get("/api/alerts", admin, district="江北区", status="open")) == {A3}
    assert ids(await get("/api/alerts", admin, grid="G2")) == {A2}
    # the report-day alerts are the only ones opened in 2026
    window = {"since": "2026-11-20T00:00:00+08:00", "until": "2026-11-21T00:00:00+08:00"}
    assert len(ids(await get("/api/alerts", admin, **window))) == 5
    page = await get("/api/alerts", admin, status=["open", "acknowledged"], limit=2, offset=0)
    body = page.json()
    assert body["total"] == 4  # A1, A2, A3 and the acknowledged report-day fall
    assert len(body["items"]) == 2
    rest = await get("/api/alerts", admin, status=["open", "acknowledged"], limit=2, offset=2)
    assert ids(page).isdisjoint(ids(rest))
    assert (await get("/api/alerts", admin, status="nonsense")).status_code == 422


async def test_grid_worker_sees_only_their_grid(api: Api) -> None:
    gw1 = api.tokens.gw1
    listed = await api.get("/api/alerts", gw1, status=["open", "acknowledged", "resolved"])
    assert {item["grid_id"] for item in listed.json()["items"]} == {"G1"}
    assert A3 not in ids(listed) and A2 not in ids(listed)
    assert (await api.get(f"/api/alerts/{A3}", gw1)).status_code == 403
    assert (await api.get("/api/alerts", gw1, grid="G3")).status_code == 403
    assert (await api.get("/api/alerts", gw1, district="江北区")).status_code == 403
    elders = await api.get("/api/elders", gw1)
    assert ids(elders) == {"E1", "E2"}
    assert (await api.get("/api/elders/E4", gw1)).status_code == 403
    refused = await api.post(f"/api/alerts/{A3}/acknowledge", gw1, {"note": "不是我的"})
    assert refused.status_code == 403
    assert api.one("SELECT status FROM alerts WHERE id = %s", A3) == ("open",)
    assert api.one("SELECT count(*) FROM alert_events WHERE alert_id = %s", A3) == (0,)


async def test_operator_scope_is_their_district_or_all(api: Api) -> None:
    every = {"status": ["open", "acknowledged"]}
    yuzhong = await api.get("/api/alerts", api.tokens.operator_yuzhong, **every)
    assert {item["district"] for item in yuzhong.json()["items"]} == {"渝中区"}
    assert A3 not in ids(yuzhong)
    assert (await api.get(f"/api/alerts/{A3}", api.tokens.operator_yuzhong)).status_code == 403
    assert A3 in ids(await api.get("/api/alerts", api.tokens.operator_all, **every))
    stations = await api.get("/api/stations", api.tokens.operator_yuzhong)
    assert [s["id"] for s in stations.json()] == ["S1"]
    assert (
        await api.get("/api/stations", api.tokens.operator_yuzhong, district="江北区")
    ).status_code == 403
    assert (await api.get(f"/api/alerts/{A3}", api.tokens.gw3)).status_code == 200


async def test_timeline_with_notifications_and_masked_phones(api: Api) -> None:
    resp = await api.get(f"/api/alerts/{A1}", api.tokens.gw1)
    assert resp.status_code == 200, resp.text
    alert = resp.json()
    assert alert["kind_label"] == "紧急呼叫" and alert["elder_name"] == "张秀英"
    assert [e["action"] for e in alert["events"]] == ["opened", "notified"]
    assert alert["escalation"]["policy"] == "critical"
    assert alert["escalation"]["next_step_at"] is not None
    sms, wecom, pending = alert["notifications"]
    assert (sms["recipient_name"], sms["channel"], sms["status"]) == ("周敏", "sms", "sent")
    assert sms["attempts"] == 1 and sms["sent_at"] is not None
    assert (wecom["channel"], wecom["status"], wecom["attempts"]) == ("wecom", "failed", 3)
    assert wecom["address"] == "zhangwei"  # a WeCom user id is not a phone number
    assert sms["address"] == "138****0001"
    assert pending["address"] == "136****5432"
    assert alert["details"]["callback"] == "135****5678"
    assert GW1_PHONE not in resp.text and CONTACT_PHONE not in resp.text
    assert ELDER_PHONE not in resp.text

    admin_view = await api.get(f"/api/alerts/{A1}", api.tokens.admin)
    assert admin_view.json()["notifications"][0]["address"] == GW1_PHONE

    elder = await api.get("/api/elders/E1", api.tokens.gw1)
    assert elder.json()["phone"] == "135****5678"
    assert elder.json()["contacts"][0]["phone"] == "136****5432"
    assert ELDER_PHONE not in elder.text and CONTACT_PHONE not in elder.text
    stations = await api.get("/api/stations", api.tokens.gw1)
    assert stations.json()[0]["phone"] == "139****0001"
    admin_elder = await api.get("/api/elders/E1", api.tokens.admin)
    assert admin_elder.json()["contacts"][0]["phone"] == CONTACT_PHONE


async def test_elder_profile_devices_and_last_sign_of_life(api: Api) -> None:
    elder = (await api.get("/api/elders/E1", api.tokens.operator_all)).json()
    assert elder["care_profile_name"] == "独居" and elder["lives_alone"] is True
    (band,) = elder["devices"]
    assert (band["id"], band["battery"], band["online"]) == ("W1", 80, True)
    assert band["last_seen"] is not None
    assert elder["last_sign_of_life"] == band["last_seen"]
    assert elder["open_alerts"] == 2  # A1 and the acknowledged report-day fall
    listed = await api.get("/api/elders", api.tokens.operator_all, grid="G2")
    (e3,) = listed.json()["items"]
    assert e3["id"] == "E3" and e3["last_sign_of_life"] is not None  # telemetry only
    assert (await api.get("/api/elders/NOPE", api.tokens.admin)).status_code == 404


async def test_acknowledge_and_resolve_change_the_alert_and_leave_the_notifier_its_tables(
    api: Api,
) -> None:
    ack = await api.post(f"/api/alerts/{A1}/acknowledge", api.tokens.gw1, {"note": "马上到"})
    assert ack.status_code == 200, ack.text
    assert ack.json()["status"] == "acknowledged"
    assert ack.json()["actor"] == "grid_worker:GW1"
    assert api.one(
        "SELECT status, acknowledged_by, acknowledged_at IS NOT NULL FROM alerts WHERE id = %s",
        A1,
    ) == ("acknowledged", "grid_worker:GW1", True)
    # the escalation and the outbox are the notifier's: it stops and cancels them when the
    # published change reaches it, as for an ack link (tests/test_alert_owner.py runs both)
    assert api.one("SELECT stopped_at FROM escalations WHERE alert_id = %s", A1) == (None,)
    timeline = (await api.get(f"/api/alerts/{A1}", api.tokens.gw1)).json()["events"]
    assert timeline[-1]["action"] == "acknowledged"
    assert timeline[-1]["actor"] == "grid_worker:GW1"
    assert timeline[-1]["details"]["note"] == "马上到"
    again = await api.post(f"/api/alerts/{A1}/acknowledge", api.tokens.admin, {})
    assert again.json()["status"] == "acknowledged"  # allowed, recorded, but no new change

    done = await api.post(f"/api/alerts/{A1}/resolve", api.tokens.operator_yuzhong, {"note": "ok"})
    assert done.json()["status"] == "resolved"
    assert api.one("SELECT status, closed_at IS NOT NULL FROM alerts WHERE id = %s", A1) == (
        "resolved",
        True,
    )
    statuses = api.one(
        "SELECT array_agg(status ORDER BY idempotency_key) FROM notifications WHERE alert_id = %s",
        A1,
    )
    assert statuses == (["sent", "failed", "pending"],)
    changes = [(c.status, c.actor, c.alert_id) for c in alert_changes(api.redis_url)]
    assert changes == [
        ("acknowledged", "grid_worker:GW1", A1),
        ("resolved", "operator:op-yz", A1),
    ]
    unpublished = api.one(
        "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FROM rules_outbox"
    )
    assert unpublished == (0, 2)  # both changes went through the outbox, both published
    twice = await api.post(f"/api/alerts/{A1}/resolve", api.tokens.admin, {})
    assert twice.status_code == 409
    unknown = "00000000-0000-4000-8000-00000000dead"
    assert (
        await api.post(f"/api/alerts/{unknown}/acknowledge", api.tokens.admin, {})
    ).status_code == 404


async def test_daily_report_on_known_data(api: Api) -> None:
    resp = await api.get("/api/reports/daily", api.tokens.gw1, grid="G1", date=REPORT_DAY)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["alerts_total"] == 4
    assert report["alerts_by_kind"] == {"fall": 2, "inactivity": 1, "sos": 1}
    # acknowledged after 60, 120, 300 s; resolved after 600, 1200 s (the cancelled one and
    # the acknowledged-only one do not count as resolved)
    assert report["time_to_acknowledge"] == {"count": 3, "median_s": 120.0, "p90_s": 264.0}
    assert report["time_to_resolve"] == {"count": 2, "median_s": 900.0, "p90_s": 1140.0}
    # as of the end of that day: E1 sent telemetry at 20:00, E2 nothing in the 24 h before
    assert [e["elder_id"] for e in report["silent_elders"]] == ["E2"]

    today = (await api.get("/api/reports/daily", api.tokens.admin, date=_today_china(api))).json()
    silent_today = {e["elder_id"] for e in today["silent_elders"]}
    assert silent_today == {"E2"}  # device 3 days ago; E1, E4 devices, E3 telemetry recent

    wider = await api.get("/api/reports/daily", api.tokens.gw1, date=REPORT_DAY, grid="G3")
    assert wider.status_code == 403


def _today_china(api: Api) -> str:
    (day,) = api.one("SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date::text")
    return str(day)


async def test_change_unannounced_by_a_bus_failure_is_published_by_the_sweep(api: Api) -> None:
    """The action commits with its AlertChange in the outbox; a bus failure right after
    only delays it: the sweep the rules workers run publishes it."""
    from uuid import UUID

    from carewatch.alert_outbox import AlertPublisher
    from carewatch.bus import make_bus
    from carewatch.db.pool import open_pool
    from carewatch.messages import AlertChange
    from carewatch.settings import Settings
    from operator_api.actions import act_and_announce
    from operator_api.scope import Principal

    async def bus_down(_change: AlertChange) -> None:
        raise ConnectionError("bus unreachable")

    pool = await open_pool(api.dsn, max_size=2)
    broker = make_bus(Settings(redis_url=api.redis_url, _env_file=None))
    await broker.start()
    try:
        admin = Principal(role="admin", subject_id="root")
        result = await act_and_announce(pool, bus_down, admin, UUID(A3), "acknowledge", "")
        assert result.status == "acknowledged"  # the action itself stands
        assert alert_changes(api.redis_url) == []
        assert await AlertPublisher(broker, pool).sweep(older_than_ms=0) == 1
    finally:
        await broker.stop()
        await pool.close()
    assert [(c.alert_id, c.status, c.actor) for c in alert_changes(api.redis_url)] == [
        (A3, "acknowledged", "admin:root")
    ]
    assert api.one("SELECT count(*) FROM rules_outbox WHERE published_at IS NULL") == (0,)
