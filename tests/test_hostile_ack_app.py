"""Hostile requests to the ack app: any token, content type or body gets a 4xx, never a 5xx.

Both tests run the real app under uvicorn (its lifespan opens the real PostgreSQL pool,
Redis broker and channels) and speak HTTP to it over a socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from carewatch.settings import Settings
from harness.services import free_port
from notifier.ack_app import PAGE_ACTIONS
from notifier.ack_links import sign
from tests.support.ack import rejects, running_ack_app
from tests.support.hostile import RAW_VALUES, json_values
from tests.support.notifier import GRID_WORKER_ID, insert_alert, query, seed_registry

CONTENT_TYPES = (
    None,
    "application/json",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "json",
    "",
)
# Header values a client can send: printable ASCII without surrounding whitespace.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)
# A fixed expiry (in 2100), so the drawn examples are the same on every run.
FAR_FUTURE_MS = 4_102_444_800_000
content_types = st.sampled_from(CONTENT_TYPES) | header_text
actions = st.sampled_from(
    (*PAGE_ACTIONS, "delete", "", "ACKNOWLEDGE", "acknowledge\x00")
) | st.text(max_size=12)

bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    actions.map(lambda a: json.dumps({"action": a}).encode()),
    st.sampled_from(RAW_VALUES).map(lambda v: f'{{"action":{v}}}'.encode()),
    st.lists(st.tuples(st.sampled_from(("action", "ACTION", "a", "")), actions), max_size=4).map(
        lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()
    ),
    st.just(b"action=%ff%fe&action=acknowledge"),
)
# Signed for an alert that does not exist, so a parsed action can never change anything.
GHOST_ALERT = "00000000-0000-4000-8000-000000000000"


def hostile_settings(settings: Settings) -> Settings:
    port = free_port()
    return settings.model_copy(
        update={"ack_port": port, "ack_base_url": f"http://127.0.0.1:{port}"}
    )


def test_any_post_body_or_token_is_a_4xx(settings: Settings) -> None:
    settings = hostile_settings(settings)
    secret = settings.ack_secret.get_secret_value()
    good = sign(GHOST_ALERT, "grid_worker", GRID_WORKER_ID, FAR_FUTURE_MS, secret)
    tokens = (
        st.just(good) | st.text(max_size=60) | st.sampled_from((good + "x", good[:-1], "." + good))
    )
    # The app runs under uvicorn on this test's own event loop, driven between examples.
    loop = asyncio.new_event_loop()
    app = running_ack_app(settings)
    try:
        http = loop.run_until_complete(app.__aenter__())

        @hsettings(
            max_examples=200,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            tokens, content_types, bodies, st.sampled_from(("", "application/json", "text/html"))
        )
        @example(good, "application/json", b"[" * 100_000, "")
        @example(good, "application/json", b'{"action": ' + b"[" * 5000 + b"]" * 5000 + b"}", "")
        @example(good, "application/x-www-form-urlencoded", b"action=" + b"x" * 1_000_000, "")
        @example("0/", None, b"action=acknowledge", "")
        def check(token: str, content_type: str | None, body: bytes, accept: str) -> None:
            headers = {"accept": accept}
            if content_type is not None:
                headers["content-type"] = content_type
            response = loop.run_until_complete(
                # A token ending in an encoded "/" is redirected to the path without it.
                http.post(
                    f"/ack/{quote(token, safe='')}",
                    content=body,
                    headers=headers,
                    follow_redirects=True,
                )
            )
            assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
            seen.add(response.status_code)

        seen: set[int] = set()
        check()
        # Refused links (403), unknown actions (400) and parsed actions that reached the
        # database for the missing alert (404) were all exercised.
        assert {400, 403, 404} <= seen, seen
    finally:
        loop.run_until_complete(app.__aexit__(None, None, None))
        loop.close()


async def test_hostile_bodies_over_real_http_change_nothing(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    s = hostile_settings(settings)
    future = int(time.time() * 1000) + 3_600_000
    token = sign(alert_id, "grid_worker", GRID_WORKER_ID, future, s.ack_secret.get_secret_value())
    before = rejects("unknown_action")
    # bodies larger than any ack form are refused 413 before they are read
    oversized = (
        ("application/json", b"[" * 100_000),
        ("application/x-www-form-urlencoded", b"action=" + b"A" * 2_000_000),
    )
    hostile = (
        ("application/json", b"[" * 1_000),
        ("application/json", b"\xff\xfe{"),
        ("application/json", b'{"action": ["acknowledge"]}'),
        ("application/x-www-form-urlencoded", b"action=%ff%fe"),
        ("application/x-www-form-urlencoded", b"action=" + b"A" * 10_000),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\n\r\n--xyz--"),
    )
    async with running_ack_app(s) as http:
        for content_type, body in hostile:
            response = await http.post(
                f"/ack/{token}", content=body, headers={"content-type": content_type}
            )
            assert response.status_code == 400, (content_type, response.status_code)
        for content_type, body in oversized:
            response = await http.post(
                f"/ack/{token}", content=body, headers={"content-type": content_type}
            )
            assert response.status_code == 413, (content_type, response.status_code)
        assert rejects("unknown_action") == before + len(hostile)
    assert query(dsn, "SELECT status FROM alerts WHERE id = %s", alert_id) == [("open",)]
    assert query(dsn, "SELECT count(*) FROM ack_uses") == [(0,)]
