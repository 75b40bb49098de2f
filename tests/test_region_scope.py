"""The region hierarchy (市 -> 区县 -> 街道/乡镇 -> 社区/村 -> 网格) and what each role at
each level sees, over real HTTP against the operator API and a real PostgreSQL.

The seed (tests/operator_support.py) has 渝中区/解放碑街道 (grids G1, G2) and
江北区/观音桥街道 (G3); this module adds a second street of 渝中区, 朝天门街道 (grid G5,
elder E5 with an open SOS), and puts G1 and G2 in two communities. 解放碑街道 is "street
A", 朝天门街道 "street B": one district, so only the street level tells them apart.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from carewatch.db.migrate import migrate
from harness.services import Proc, await_until
from operator_api.tokens import create_token
from tests.operator_support import A1, A2, A3, REPORT_DAY, Tokens, seed, serving, sse_events

A5 = "00000000-0000-4000-8000-0000000000a5"  # E5 sos, open, G5 (朝天门街道)
CONSOLE = {"X-Carewatch-Console": "1"}

_STREET_B = """
UPDATE grids SET community = '民族路社区' WHERE id = 'G1';
UPDATE grids SET community = '邹容路社区' WHERE id = 'G2';
INSERT INTO grids (id, name, district, street, community) VALUES
  ('G5', '朝天门第一网格', '渝中区', '朝天门街道', '朝东路社区');
INSERT INTO grid_workers (id, name, phone, grid_id) VALUES ('GW5', '钱芳', '13800000005', 'G5');
INSERT INTO stations (id, name, kind, district, street, lat, lon, phone) VALUES
  ('S5', '朝天门街道养老服务中心', 'street_centre', '渝中区', '朝天门街道', 29.56, 106.58,
   '13900000005');
INSERT INTO elders (id, name, phone, district, street, address, lat, lon, grid_id,
                    care_profile_id, lives_alone) VALUES
  ('E5', '赵德明', NULL, '渝中区', '朝天门街道', '朝东路5号', 29.56, 106.58, 'G5', 'alone', true);
INSERT INTO alerts (id, elder_id, kind, severity, status, source_event_id, device_time,
                    opened_at, rule) VALUES
  ('00000000-0000-4000-8000-0000000000a5', 'E5', 'sos', 'critical', 'open', 'a5:1',
   now() - interval '10 minutes', now() - interval '10 minutes', 'sos'),
  ('00000000-0000-4000-8000-0000000001b5', 'E5', 'fall', 'critical', 'resolved', 'b5:1',
   '2026-11-20 09:00:00+08', '2026-11-20 09:00:00+08', 'fall');
"""

EVERYONE = {"E1", "E2", "E3", "E4", "E5"}
# token name -> the elders it sees
SEES = {
    "admin": EVERYONE,
    "city": EVERYONE,
    "district": {"E1", "E2", "E3", "E5"},
    "street_a": {"E1", "E2", "E3"},
    "street_b": {"E5"},
    "community": {"E1", "E2"},
    "grid_op": {"E3"},
    "gw1": {"E1", "E2"},
    "gw5": {"E5"},
}
ELDER_NAMES = {"E1": "张秀英", "E2": "李建国", "E3": "王桂兰", "E4": "陈淑芬", "E5": "赵德明"}


@dataclass
class Site:
    base: str
    dsn: str
    tokens: dict[str, str]
    http: httpx.AsyncClient

    async def get(self, who: str, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return await self.http.get(self.base + path, params=params, headers=headers)


def _tokens(dsn: str, seeded: Tokens) -> dict[str, str]:
    return {
        "admin": seeded.admin,
        "city": seeded.operator_all,
        "district": seeded.operator_yuzhong,  # made as a plain district name, as before 070
        "street_a": create_token(dsn, "operator", "op-jfb", "渝中区/解放碑街道"),
        "street_b": create_token(dsn, "operator", "op-ctm", "渝中区/朝天门街道"),
        "community": create_token(dsn, "operator", "op-mzl", "渝中区/解放碑街道/民族路社区"),
        "grid_op": create_token(dsn, "operator", "op-g2", "渝中区/解放碑街道/邹容路社区/G2"),
        "gw1": seeded.gw1,
        "gw5": create_token(dsn, "grid_worker", "GW5"),
    }


@pytest.fixture
async def site(db_dsn: str, redis_server: Proc) -> AsyncIterator[Site]:
    seeded = seed(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(_STREET_B)
    tokens = _tokens(db_dsn, seeded)
    async with serving(db_dsn, redis_server.port) as base, httpx.AsyncClient(timeout=10) as http:
        yield Site(base, db_dsn, tokens, http)


async def _login(base: str, token: str) -> httpx.AsyncClient:
    """A client holding the cookie a console or phone-page login link sets."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as login:
        console = await login.get("/console", params={"token": token})
        phone = await login.get("/m", params={"token": token})
    assert console.status_code == 303 and phone.status_code == 303
    return httpx.AsyncClient(base_url=base, timeout=10, cookies=dict(login.cookies))


# --- the tree ----------------------------------------------------------------------------


def test_registry_rows_hang_on_the_tree(db_dsn: str) -> None:
    seed(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(_STREET_B)
        rows = conn.execute(
            "SELECT r.level, r.name, p.name, r.path LIKE p.path || r.id || '/'"
            " FROM regions r LEFT JOIN regions p ON p.id = r.parent_id ORDER BY r.path"
        ).fetchall()
        grid_parent = dict(
            conn.execute(
                "SELECT g.id, p.name FROM grids g JOIN regions r ON r.id = g.region_id"
                " JOIN regions p ON p.id = r.parent_id"
            ).fetchall()
        )
        station_node = dict(
            conn.execute(
                "SELECT s.id, r.level || ':' || r.name FROM stations s"
                " JOIN regions r ON r.id = s.region_id"
            ).fetchall()
        )
    assert rows[0][:3] == ("city", "全市", None)
    assert all(ok for *_, ok in rows[1:])
    names = {(level, name) for level, name, _, _ in rows}
    assert {("district", "渝中区"), ("district", "江北区"), ("street", "朝天门街道")} <= names
    assert grid_parent == {
        "G1": "民族路社区",
        "G2": "邹容路社区",
        "G3": "观音桥街道",  # no community known: straight under its street
        "G5": "朝东路社区",
    }
    assert station_node == {
        "S1": "street:解放碑街道",
        "S2": "street:观音桥街道",
        "S5": "street:朝天门街道",
    }


def test_moves_carry_the_subtree_and_levels_keep_their_order(db_dsn: str) -> None:
    seed(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(_STREET_B)
        # a street moved to another district takes its communities and grids along
        conn.execute(
            "UPDATE regions SET parent_id = (SELECT id FROM regions WHERE name = '江北区')"
            " WHERE name = '朝天门街道'"
        )
        (g5_path, jb_path) = conn.execute(
            "SELECT (SELECT r.path FROM grids g JOIN regions r ON r.id = g.region_id"
            "  WHERE g.id = 'G5'), (SELECT path FROM regions WHERE name = '江北区')"
        ).fetchone() or ("", "")
        assert g5_path.startswith(jb_path) and g5_path.count("/") == 6
        # a grid whose street changes in the registry moves its node
        conn.execute("UPDATE grids SET street = '观音桥街道', district = '江北区' WHERE id = 'G1'")
        (g1_parent,) = conn.execute(
            "SELECT p.name FROM grids g JOIN regions r ON r.id = g.region_id"
            " JOIN regions p ON p.id = r.parent_id WHERE g.id = 'G1'"
        ).fetchone() or ("",)
        assert g1_parent == "民族路社区"
        (community_parent,) = conn.execute(
            "SELECT p.name FROM regions c JOIN regions p ON p.id = c.parent_id"
            " WHERE c.name = '民族路社区' AND c.parent_id = p.id AND p.name = '观音桥街道'"
        ).fetchone() or ("",)
        assert community_parent == "观音桥街道"
        with pytest.raises(psycopg.errors.RaiseException, match="cannot lie under"):
            conn.execute(
                "INSERT INTO regions (parent_id, level, name)"
                " SELECT region_id, 'street', '错层街道' FROM grids WHERE id = 'G3'"
            )


def test_tokens_from_before_the_tree_keep_their_district(db_dsn: str) -> None:
    seed(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # back to the schema before 070-072, with tokens made then
        conn.execute(
            "DROP FUNCTION carewatch_place_grid, carewatch_place_station,"
            "   carewatch_place_officer, carewatch_place_region, carewatch_city_region,"
            "   carewatch_region_child, carewatch_region_moved, carewatch_region_path,"
            "   carewatch_region_rank CASCADE;"
            " ALTER TABLE api_tokens DROP COLUMN region_id;"
            " ALTER TABLE grids DROP COLUMN region_id, DROP COLUMN community;"
            " ALTER TABLE stations DROP COLUMN region_id;"
            " ALTER TABLE duty_officers DROP COLUMN region_id;"
            " DROP TABLE regions CASCADE;"
            " DELETE FROM schema_migrations WHERE version BETWEEN 70 AND 72;"
            " UPDATE elders SET community = '民族路社区' WHERE grid_id = 'G1';"
            " INSERT INTO api_tokens (token_hash, role, subject_id, scope) VALUES"
            "  (repeat('a', 64), 'operator', 'old-yz', '渝中区'),"
            "  (repeat('b', 64), 'operator', 'old-all', '*'),"
            "  (repeat('c', 64), 'operator', 'old-nowhere', '不存在区')"
        )
    assert migrate(db_dsn) == [
        "070_regions.sql",
        "071_region_places.sql",
        "072_api_token_regions.sql",
    ]
    with psycopg.connect(db_dsn) as conn:
        scopes = conn.execute(
            "SELECT t.subject_id, r.level, r.name FROM api_tokens t"
            " JOIN regions r ON r.id = t.region_id WHERE t.subject_id LIKE 'old-%'"
            " ORDER BY t.subject_id"
        ).fetchall()
        g1_parent = conn.execute(
            "SELECT p.name FROM grids g JOIN regions r ON r.id = g.region_id"
            " JOIN regions p ON p.id = r.parent_id WHERE g.id = 'G1'"
        ).fetchone()
    assert scopes == [
        ("old-all", "city", "全市"),
        ("old-nowhere", "district", "不存在区"),
        ("old-yz", "district", "渝中区"),
    ]
    assert g1_parent == ("民族路社区",)  # the community its elders agree on


def test_token_scopes_name_existing_nodes(db_dsn: str) -> None:
    seed(db_dsn)
    with pytest.raises(ValueError, match="no region"):
        create_token(db_dsn, "operator", "op-x", "渝中区/不存在街道")
    with pytest.raises(ValueError, match="empty name"):
        create_token(db_dsn, "operator", "op-x", "渝中区//G1")
    with psycopg.connect(db_dsn) as conn:
        (made,) = conn.execute(
            "SELECT count(*) FROM api_tokens WHERE subject_id = 'op-x'"
        ).fetchone() or (0,)
    assert made == 0


# --- the API -----------------------------------------------------------------------------


async def test_each_role_at_each_level_sees_its_subtree_in_the_api(site: Site) -> None:
    for who, expected in SEES.items():
        elders = await site.get(who, "/api/elders", limit=1000)
        assert elders.status_code == 200, (who, elders.text)
        assert {e["id"] for e in elders.json()["items"]} == expected, who
        alerts = await site.get(who, "/api/alerts", limit=500)
        assert {a["elder_id"] for a in alerts.json()["items"]} == expected, who
        for alert_id, elder in ((A1, "E1"), (A2, "E3"), (A3, "E4"), (A5, "E5")):
            status = (await site.get(who, f"/api/alerts/{alert_id}")).status_code
            assert status == (200 if elder in expected else 403), (who, alert_id)
        for elder in EVERYONE:
            status = (await site.get(who, f"/api/elders/{elder}")).status_code
            assert status == (200 if elder in expected else 403), (who, elder)


async def test_street_a_cannot_act_on_or_report_street_b(site: Site) -> None:
    headers = {"Authorization": f"Bearer {site.tokens['street_a']}"}
    refused = await site.http.post(
        f"{site.base}/api/alerts/{A5}/acknowledge", json={"note": "不是我的"}, headers=headers
    )
    assert refused.status_code == 403
    with psycopg.connect(site.dsn) as conn:
        assert conn.execute("SELECT status FROM alerts WHERE id = %s", (A5,)).fetchone() == (
            "open",
        )
    # the daily report (the export the street office takes away)
    got = await site.get("street_a", "/api/reports/daily", date=REPORT_DAY)
    assert got.status_code == 200, got.text
    report_a = got.json()
    report_b = (await site.get("street_b", "/api/reports/daily", date=REPORT_DAY)).json()
    report_d = (await site.get("district", "/api/reports/daily", date=REPORT_DAY)).json()
    silent_a = {s["elder_id"] for s in report_a["silent_elders"]}
    assert "E5" not in silent_a and silent_a <= SEES["street_a"]
    assert {s["elder_id"] for s in report_b["silent_elders"]} == {"E5"}
    assert report_b["alerts_total"] == 1 and report_b["alerts_by_kind"] == {"fall": 1}
    assert report_d["alerts_total"] == report_a["alerts_total"] + report_b["alerts_total"]
    assert "赵德明" not in json.dumps(report_a, ensure_ascii=False)
    # the area report and its downloads (what the civil-affairs office takes away)
    for period in ("week", "month"):
        areas_a = (await site.get("street_a", "/api/reports/areas", period=period)).json()
        streets = {r["street"] for r in areas_a["rows"] if r["level"] == "street"}
        assert streets <= {"解放碑街道"} and streets, areas_a
        totals = [r for r in areas_a["rows"] if r["level"] == "district"]
        street_rows = [r for r in areas_a["rows"] if r["level"] == "street"]
        for field in ("elders", "alerts", "checkins", "devices_offline"):
            assert sum(r[field] for r in totals) == sum(r[field] for r in street_rows), field
        areas_b = (await site.get("street_b", "/api/reports/areas", period=period)).json()
        assert {r["street"] for r in areas_b["rows"] if r["level"] == "street"} == {"朝天门街道"}
    as_csv = await site.get("street_a", "/api/reports/areas.csv", period="month")
    assert as_csv.status_code == 200 and "解放碑街道" in as_csv.text
    assert "朝天门" not in as_csv.text
    xlsx = await site.get("street_a", "/api/reports/areas.xlsx", period="month")
    assert xlsx.status_code == 200
    with zipfile.ZipFile(io.BytesIO(xlsx.content)) as book:
        cells = "".join(
            book.read(name).decode()
            for name in book.namelist()
            if (name.endswith(".xml") and "/worksheets/" in name)
            or name.endswith("sharedStrings.xml")
        )
    assert "解放碑街道" in cells and "朝天门" not in cells
    # stations: those inside the scope and the ones serving it from above
    stations = {
        who: sorted(s["id"] for s in (await site.get(who, "/api/stations")).json())
        for who in ("city", "district", "street_a", "street_b", "community", "gw1")
    }
    assert stations == {
        "city": ["S1", "S2", "S5"],
        "district": ["S1", "S5"],
        "street_a": ["S1"],
        "street_b": ["S5"],
        "community": ["S1"],
        "gw1": ["S1"],
    }


async def test_a_grid_moved_in_the_registry_moves_what_tokens_see(site: Site) -> None:
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE grids SET street = '朝天门街道', community = '朝东路社区' WHERE id = 'G2'"
        )
    a = await site.get("street_a", "/api/elders")
    b = await site.get("street_b", "/api/elders")
    assert {e["id"] for e in a.json()["items"]} == {"E1", "E2"}
    assert {e["id"] for e in b.json()["items"]} == {"E3", "E5"}
    assert (await site.get("grid_op", f"/api/alerts/{A2}")).status_code == 200


# --- the console, the phone page, the live stream ------------------------------------------


async def test_street_a_sees_nothing_of_street_b_in_the_console(site: Site) -> None:
    a = await _login(site.base, site.tokens["street_a"])
    b = await _login(site.base, site.tokens["street_b"])
    async with a, b:
        queue_a = {q["id"] for q in (await a.get("/console/api/queue")).json()["items"]}
        queue_b = {q["id"] for q in (await b.get("/console/api/queue")).json()["items"]}
        assert A5 not in queue_a and {A1, A2} <= queue_a
        assert queue_b == {A5}
        for q in ("赵德明", "朝东路", "朝天门", ""):
            found = (await a.get("/console/api/elders", params={"q": q})).json()["items"]
            assert "E5" not in {e["id"] for e in found}, q
        assert (await a.get("/console/api/elders", params={"grid": "G5"})).json()["items"] == []
        everyone_b = (await b.get("/console/api/elders")).json()["items"]
        assert [e["id"] for e in everyone_b] == ["E5"]
        assert (await a.get(f"/console/api/alerts/{A5}")).status_code == 403
        assert (await a.get("/console/api/elders/E5")).status_code == 403
        assert (await b.get(f"/console/api/alerts/{A1}")).status_code == 403
        refused = await a.post(f"/console/api/alerts/{A5}/acknowledge", json={}, headers=CONSOLE)
        assert refused.status_code == 403
        me_a = (await a.get("/console/api/me")).json()
        assert sorted(g["id"] for g in me_a["grids"]) == ["G1", "G2"]
        assert "解放碑街道" in me_a["title"]
        # the phone page of a street operator
        page_a = (await a.get("/m")).text
        assert "张秀英" in page_a and "赵德明" not in page_a


async def test_grid_worker_sees_only_their_grid_on_the_phone_and_in_the_console(
    site: Site,
) -> None:
    gw1 = await _login(site.base, site.tokens["gw1"])
    gw5 = await _login(site.base, site.tokens["gw5"])
    async with gw1, gw5:
        page1, page5 = (await gw1.get("/m")).text, (await gw5.get("/m")).text
        assert "赵德明" in page5
        for elder, name in ELDER_NAMES.items():
            assert (name in page1) == (elder in SEES["gw1"]), name
            assert (name in page5) == (elder in SEES["gw5"]), name
        queue5 = {q["id"] for q in (await gw5.get("/console/api/queue")).json()["items"]}
        assert queue5 == {A5}
        found = (await gw1.get("/console/api/elders")).json()["items"]
        assert {e["id"] for e in found} == SEES["gw1"]


def _open_alert(dsn: str, elder: str) -> str:
    alert_id = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (id, elder_id, kind, severity, status, source_event_id,"
            " device_time, rule) VALUES (%s, %s, 'fall', 'critical', 'open', %s, now(), 'fall')",
            (alert_id, elder, f"test:{alert_id}"),
        )
    return alert_id


async def test_live_stream_of_street_a_carries_nothing_of_street_b(site: Site) -> None:
    a = await _login(site.base, site.tokens["street_a"])
    b = await _login(site.base, site.tokens["street_b"])
    heard: dict[str, list[tuple[str, dict[str, object]]]] = {"a": [], "b": []}

    def saw(who: str, name: str, alert_id: str | None = None) -> bool:
        return any(
            n == name and (alert_id is None or d.get("id") == alert_id) for n, d in heard[who]
        )

    async def both_ready() -> bool:
        return saw("a", "ready") and saw("b", "ready")

    async def heard_by(who: str, alert_id: str) -> bool:
        return saw(who, "alert", alert_id)

    async with (
        a,
        b,
        a.stream("GET", "/console/api/stream") as stream_a,
        b.stream("GET", "/console/api/stream") as stream_b,
    ):
        readers = [
            asyncio.create_task(sse_events(stream_a, heard["a"])),
            asyncio.create_task(sse_events(stream_b, heard["b"])),
        ]
        try:
            await await_until(both_ready, 10, "both streams ready")
            # street B's first: by the time A hears its own, it would have heard B's
            theirs = _open_alert(site.dsn, "E5")
            mine = _open_alert(site.dsn, "E2")
            await await_until(lambda: heard_by("a", mine), 10, "street A's alert")
            await await_until(lambda: heard_by("b", theirs), 10, "street B's alert")
        finally:
            for reader in readers:
                reader.cancel()
    ids_a = {d.get("id") for n, d in heard["a"] if n == "alert"}
    ids_b = {d.get("id") for n, d in heard["b"] if n == "alert"}
    assert theirs not in ids_a and mine in ids_a
    assert mine not in ids_b and theirs in ids_b
    assert "赵德明" not in json.dumps(heard["a"], ensure_ascii=False)
    assert "李建国" not in json.dumps(heard["b"], ensure_ascii=False)
