"""The ack pages' HTTP hardening, over real HTTP: every answer forbids framing, caching
and leaking the link as a referrer, the page's styles are the only thing its CSP
allows, and a form post from another site's page is refused before it acts."""

from __future__ import annotations

import base64
import hashlib
import re
import time

import pytest

from carewatch.settings import Settings
from notifier.ack_app import is_cross_origin
from notifier.ack_links import sign
from tests.services import free_port
from tests.test_ack_app import rejects, running_ack_app
from tests.test_notifier_support import GRID_WORKER_ID, insert_alert, query, seed_registry


def ack_settings(settings: Settings) -> Settings:
    port = free_port()
    return settings.model_copy(
        update={"ack_port": port, "ack_base_url": f"http://127.0.0.1:{port}"}
    )


def link_for(settings: Settings, alert_id: str) -> str:
    future = int(time.time() * 1000) + 3_600_000
    token = sign(
        alert_id, "grid_worker", GRID_WORKER_ID, future, settings.ack_secret.get_secret_value()
    )
    return f"/ack/{token}"


def assert_hardened(headers: dict[str, str] | object, page: str | None = None) -> None:
    h = headers  # httpx.Headers: case-insensitive
    csp = h["content-security-policy"]  # type: ignore[index]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp and "script-src" not in csp
    assert h["x-frame-options"] == "DENY"  # type: ignore[index]
    assert h["referrer-policy"] == "same-origin"  # type: ignore[index]
    assert h["cache-control"] == "no-store"  # type: ignore[index]
    assert h["x-content-type-options"] == "nosniff"  # type: ignore[index]
    if page is not None:
        styles = re.findall(r"<style>(.*?)</style>", page, re.S)
        assert styles
        for style in styles:  # the browser would apply exactly these styles
            digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in csp


async def test_every_answer_carries_the_security_headers(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    s = ack_settings(settings)
    link = link_for(s, insert_alert(dsn))
    async with running_ack_app(s) as http:
        page = await http.get(link)
        assert page.status_code == 200 and "我来处理" in page.text
        assert_hardened(page.headers, page.text)
        forged = await http.get("/ack/forged.token")
        assert forged.status_code == 403
        assert_hardened(forged.headers, forged.text)
        unknown = await http.get("/a/AAAAAAAAAAAA")
        assert_hardened(unknown.headers, unknown.text)
        done = await http.post(link, data={"action": "arrive"}, headers={"origin": s.ack_base_url})
        assert_hardened(done.headers, done.text)
        assert_hardened((await http.get("/healthz")).headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"referer": "https://evil.example/page.html"},
        {"origin": "http://127.0.0.1.evil.example"},
    ],
)
async def test_a_cross_origin_form_post_is_refused_and_changes_nothing(
    settings: Settings, headers: dict[str, str]
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    s = ack_settings(settings)
    before = rejects("cross_origin")
    async with running_ack_app(s) as http:
        response = await http.post(
            link_for(s, alert_id), data={"action": "false_alarm"}, headers=headers
        )
        assert response.status_code == 403
        assert "请直接在短信或企业微信中的链接页面上操作" in response.text
        assert_hardened(response.headers)
    assert rejects("cross_origin") == before + 1
    assert query(dsn, "SELECT status FROM alerts WHERE id = %s", alert_id) == [("open",)]
    assert query(dsn, "SELECT count(*) FROM ack_uses") == [(0,)]


async def test_same_origin_posts_and_non_browser_clients_act(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    s = ack_settings(settings)
    async with running_ack_app(s) as http:
        # the page's own form (Origin of the ack base URL, or its Referer)
        first = insert_alert(dsn)
        own = await http.post(
            link_for(s, first), data={"action": "acknowledge"}, headers={"origin": s.ack_base_url}
        )
        assert own.status_code == 200, own.text
        second = insert_alert(dsn, kind="fall")
        by_referer = await http.post(
            link_for(s, second),
            data={"action": "acknowledge"},
            headers={"referer": s.ack_base_url + link_for(s, second)},
        )
        assert by_referer.status_code == 200, by_referer.text
        # the JSON API (no Origin, no Referer): not a browser form, nothing to forge
        third = insert_alert(dsn, kind="inactivity", severity="warning")
        api = await http.post(link_for(s, third), json={"action": "acknowledge"})
        assert api.status_code == 200 and api.json()["status"] == "acknowledged"
    statuses = query(
        dsn, "SELECT status FROM alerts WHERE id IN (%s, %s, %s)", first, second, third
    )
    assert statuses == [("acknowledged",)] * 3


class _Req:
    def __init__(self, **headers: str) -> None:
        self.headers = headers


@pytest.mark.parametrize(
    ("headers", "cross"),
    [
        ({}, False),
        ({"origin": "https://ack.example.gov.cn"}, False),
        ({"origin": "https://ACK.example.gov.cn:443"}, False),
        ({"origin": "http://ack.example.gov.cn"}, True),  # another scheme, another origin
        ({"origin": "https://ack.example.gov.cn.evil.cn"}, True),
        ({"origin": "https://ack.example.gov.cn:8443"}, True),
        ({"referer": "https://ack.example.gov.cn/a/abc"}, False),
        ({"referer": "https://evil.cn/?https://ack.example.gov.cn"}, True),
        ({"origin": "https://10.0.0.5:8081", "host": "10.0.0.5:8081"}, False),  # internal
        ({"origin": "null"}, True),
        ({"origin": "https://[::1"}, True),
    ],
)
def test_cross_origin_rule(headers: dict[str, str], cross: bool) -> None:
    assert is_cross_origin(_Req(**headers), "https://ack.example.gov.cn") is cross  # type: ignore[arg-type]
