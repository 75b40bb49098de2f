"""定期巡访 and the street report over HTTP, on a real PostgreSQL: the visit list ranks an
elder whose activity declines over three weeks above a stable one and says why; a
check-in is recorded, counts as a sign of life and in the street report; the exports
download and parse; the phone page shows the list and takes a check-in."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from openpyxl import load_workbook

from harness.services import Proc
from operator_api.report_export import HEADERS
from tests.operator_support import REPORT_DAY, Tokens, seed, serving
from tests.support.visits import CHINA, insert_telemetry

STABLE, FALLING = "E5", "E6"
STREET = "解放碑街道"


def add_elders(dsn: str) -> None:
    """Two elders of grid G1 alike in everything but their last three weeks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO elders (id, name, district, street, address, lat, lon, grid_id,"
            " care_profile_id, lives_alone) VALUES"
            " ('E5', '刘玉珍', '渝中区', '解放碑街道', '八一路5号', 29.55, 106.57, 'G1', 'alone', true),"
            " ('E6', '赵德明', '渝中区', '解放碑街道', '八一路6号', 29.55, 106.57, 'G1', 'alone', true)"
        )
        now = conn.execute("SELECT now()").fetchone()
        assert now is not None
        today = now[0].astimezone(CHINA).date()
        insert_telemetry(conn, STABLE, today, declining=False)
        insert_telemetry(conn, FALLING, today, declining=True)


@pytest.fixture
async def site(db_dsn: str, redis_server: Proc) -> AsyncIterator[tuple[str, Tokens]]:
    tokens = seed(db_dsn)
    add_elders(db_dsn)
    async with serving(db_dsn, redis_server.port) as base:
        yield base, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_json(http: httpx.AsyncClient, path: str, token: str, **params: str) -> Any:
    answer = await http.get(path, params=params, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return answer.json()


def street_row(report: dict[str, Any], street: str) -> dict[str, Any]:
    rows = [r for r in report["rows"] if r["level"] == "street" and r["street"] == street]
    assert len(rows) == 1, report
    return rows[0]


async def test_declining_elder_ranks_above_stable_and_a_checkin_counts(
    site: tuple[str, Tokens],
) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        listed = await get_json(http, "/api/visits", tokens.gw1)
        items = {i["elder_id"]: i for i in listed["items"]}
        order = [i["elder_id"] for i in listed["items"]]
        assert set(order) == {"E1", "E2", STABLE, FALLING}  # grid G1 only
        assert order.index(FALLING) < order.index(STABLE)
        falling, stable = items[FALLING], items[STABLE]
        why = [r["text"] for r in falling["reasons"]]
        assert why[0].startswith("近7天活动较前4周下降：") and "步数-" in why[0], why
        assert {c["measure"] for c in falling["decline"]} == {"steps", "motion", "water"}
        assert all(0.3 <= c["drop"] <= 0.7 for c in falling["decline"])
        assert stable["decline"] == [] and "独居" in [r["text"] for r in stable["reasons"]]
        assert falling["score"] > stable["score"]
        assert stable["days_since_visit"] is None and stable["last_checkin"] is None

        before = street_row(
            await get_json(http, "/api/reports/areas", tokens.operator_yuzhong), STREET
        )
        saved = await http.post(
            f"/api/visits/{STABLE}/checkins",
            json={"outcome": "visited", "note": "血压正常"},
            headers=bearer(tokens.gw1),
        )
        assert saved.status_code == 201, saved.text
        checkin = saved.json()
        assert (checkin["outcome"], checkin["outcome_label"], checkin["actor"]) == (
            "visited",
            "已入户走访",
            "grid_worker:GW1",
        )
        after = street_row(
            await get_json(http, "/api/reports/areas", tokens.operator_yuzhong), STREET
        )
        assert after["visits_done"] == before["visits_done"] + 1
        assert after["checkins"] == before["checkins"] + 1
        assert after["visits_due"] == before["visits_due"] == 4  # E1, E3, E5, E6 live alone

        # the check-in is the elder's newest sign of life, and resets the days since a visit
        elder = await get_json(http, f"/api/elders/{STABLE}", tokens.gw1)
        assert datetime.fromisoformat(elder["last_sign_of_life"]) == datetime.fromisoformat(
            checkin["at"]
        )
        relisted = await get_json(http, "/api/visits", tokens.gw1)
        again = next(i for i in relisted["items"] if i["elder_id"] == STABLE)
        assert again["days_since_visit"] == 0 and again["last_checkin"]["note"] == "血压正常"
        assert again["score"] < stable["score"]


async def test_not_at_home_is_recorded_but_is_no_visit(site: tuple[str, Tokens]) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        before = street_row(await get_json(http, "/api/reports/areas", tokens.gw1), STREET)
        saved = await http.post(
            f"/api/visits/{FALLING}/checkins",
            json={"outcome": "not_home"},
            headers=bearer(tokens.gw1),
        )
        assert saved.status_code == 201
        after = street_row(await get_json(http, "/api/reports/areas", tokens.gw1), STREET)
    assert after["checkins"] == before["checkins"] + 1
    assert after["visits_done"] == before["visits_done"]


async def test_checkins_and_reports_keep_to_the_callers_scope(site: tuple[str, Tokens]) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        outside = await http.post(
            f"/api/visits/{STABLE}/checkins", json={"outcome": "phoned"}, headers=bearer(tokens.gw3)
        )
        unknown = await http.post(
            "/api/visits/NOPE/checkins", json={"outcome": "phoned"}, headers=bearer(tokens.gw1)
        )
        bad = await http.post(
            f"/api/visits/{STABLE}/checkins", json={"outcome": "maybe"}, headers=bearer(tokens.gw1)
        )
        other_grid = await http.get(
            "/api/visits", params={"grid": "G3"}, headers=bearer(tokens.gw1)
        )
        yuzhong = await get_json(http, "/api/reports/areas", tokens.operator_yuzhong)
        everyone = await get_json(http, "/api/reports/areas", tokens.operator_all, period="month")
        worker = await get_json(http, "/api/reports/areas", tokens.gw3)
    assert (outside.status_code, unknown.status_code, bad.status_code) == (403, 404, 422)
    assert other_grid.status_code == 403
    assert {r["district"] for r in yuzhong["rows"]} == {"渝中区"}
    assert {r["district"] for r in everyone["rows"]} == {"渝中区", "江北区"}
    assert everyone["period"] == "month" and everyone["start"].endswith("-01")
    assert [(r["street"], r["elders"]) for r in worker["rows"]] == [("观音桥街道", 1), (None, 1)]


async def test_exports_download_and_parse(site: tuple[str, Tokens]) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        report = await get_json(http, "/api/reports/areas", tokens.operator_all)
        xlsx = await http.get("/api/reports/areas.xlsx", headers=bearer(tokens.operator_all))
        as_csv = await http.get("/api/reports/areas.csv", headers=bearer(tokens.operator_all))
        anonymous = await http.get("/api/reports/areas.csv")
    assert anonymous.status_code == 401
    assert xlsx.status_code == 200 and "attachment" in xlsx.headers["content-disposition"]
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert str(rows[0][0]).startswith("巡访与告警统计（本周：")
    assert rows[1] == HEADERS
    assert len(rows) == 2 + len(report["rows"])
    expected = [(r["district"], r["street"] or "合计", r["elders"]) for r in report["rows"]]
    assert [(r[0], r[1], r[2]) for r in rows[2:]] == expected
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert tuple(table[0]) == HEADERS
    assert [(r[0], r[1], int(r[2])) for r in table[1:]] == expected


async def test_phone_page_shows_the_visit_list_and_takes_a_checkin(
    site: tuple[str, Tokens],
) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        entry = await http.get("/m", params={"token": tokens.gw1})
        assert entry.status_code == 303
        page = (await http.get("/m")).text
        assert "今日巡访" in page and "近7天活动较前4周下降" in page
        assert page.index(f'data-elder-id="{FALLING}" data-score') < page.index(
            f'data-elder-id="{STABLE}" data-score'
        )
        assert f'action="/m/visits/{FALLING}/checkin"' in page and "未遇本人" in page
        posted = await http.post(
            f"/m/visits/{FALLING}/checkin", data={"outcome": "phoned", "note": "说腿疼，周三上门"}
        )
        assert posted.status_code == 303 and posted.headers["location"] == "/m#visits"
        page = (await http.get("/m")).text
        assert "上次登记：已电话访问" in page
        refused = await http.post("/m/visits/E4/checkin", data={"outcome": "visited"})
        assert refused.status_code == 403 and "无权操作" in refused.text
        report = await http.get("/m/reports")
        assert report.status_code == 200
        assert "巡访与告警统计（本周：" in report.text and STREET in report.text
        assert "观音桥街道" not in report.text and "下载 Excel" in report.text
        download = await http.get("/m/reports.xlsx", params={"period": "month"})
        assert download.status_code == 200
        rows = list(load_workbook(io.BytesIO(download.content)).active.iter_rows(values_only=True))  # type: ignore[union-attr]
        done = next(r for r in rows[2:] if r[1] == STREET)
        assert done[4] == 1  # the phone call this month


async def test_a_later_checkin_is_no_sign_of_life_on_a_past_day(site: tuple[str, Tokens]) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        saved = await http.post(
            "/api/visits/E2/checkins", json={"outcome": "visited"}, headers=bearer(tokens.gw1)
        )
        assert saved.status_code == 201
        past = await get_json(http, "/api/reports/daily", tokens.gw1, date=REPORT_DAY)
        day = datetime.fromisoformat(saved.json()["at"]).astimezone(CHINA).date()
        today = await get_json(http, "/api/reports/daily", tokens.gw1, date=day.isoformat())
    assert "E2" in [e["elder_id"] for e in past["silent_elders"]]  # nothing heard by then
    assert "E2" not in [e["elder_id"] for e in today["silent_elders"]]  # the visit today


async def test_past_days_are_kept_and_read_back(site: tuple[str, Tokens], db_dsn: str) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        first = await get_json(http, "/api/visits", tokens.gw1)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            kept = conn.execute(
                "SELECT count(*), count(steps), max(steps) FROM visit_activity_days"
                " WHERE elder_id = %s",
                (STABLE,),
            ).fetchone()
            # the days kept are what the list reads: flatten the decline there
            conn.execute(
                "UPDATE visit_activity_days SET steps = 4000, motion = 30, water = 12"
                " WHERE elder_id = %s",
                (FALLING,),
            )
        second = await get_json(http, "/api/visits", tokens.gw1)
    assert kept is not None
    days, with_steps, most = kept
    assert days in (34, 35)  # yesterday is kept from 01:00 on
    assert with_steps == days and most == 4400  # the busiest weekday: 4,000 + 10 %
    before = next(i for i in first["items"] if i["elder_id"] == FALLING)
    after = next(i for i in second["items"] if i["elder_id"] == FALLING)
    assert before["decline"] and after["decline"] == []
