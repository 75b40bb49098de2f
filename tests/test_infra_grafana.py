"""The Grafana wall: generated dashboards are in sync, well formed, and every SQL panel
query runs against a populated PostgreSQL and returns the columns its panel needs."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "infra/grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
TIME_FILTER = re.compile(r"\$__timeFilter\(([a-z_.]+)\)")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "carewatch_grafana_generate", GRAFANA / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def provisioned_datasource_uids() -> dict[str, str]:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/carewatch.yml").read_text("utf-8"))
    return {ds["uid"]: ds["type"] for ds in doc["datasources"]}


# --------------------------------------------------------------------------------------
# Files and structure
# --------------------------------------------------------------------------------------


def test_generated_dashboards_are_checked_in_and_current() -> None:
    assert DASHBOARD_FILES, "no dashboards under infra/grafana/dashboards"
    assert gen.stale_files() == [], "run: .venv/bin/python infra/grafana/generate.py"


def test_stale_files_notices_a_hand_edit(tmp_path: Path) -> None:
    written = gen.write_all(tmp_path)
    assert gen.stale_files(tmp_path) == []
    written[0].write_text(written[0].read_text("utf-8").replace("告警", "警告"), "utf-8")
    (tmp_path / "extra.json").write_text("{}", "utf-8")
    assert gen.stale_files(tmp_path) == sorted([written[0], tmp_path / "extra.json"])


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_dashboard_json_is_well_formed(path: Path) -> None:
    board = json.loads(path.read_text("utf-8"))
    uids = provisioned_datasource_uids()
    assert board["uid"] == path.stem and board["title"] and board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    for panel in board["panels"]:
        where = f"{path.name} panel {panel['id']} {panel['title']!r}"
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) and pos[k] >= 0 for k in "xywh"), where
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] + pos["w"] <= 24, where
        ds = panel["datasource"]
        assert uids.get(ds["uid"]) == ds["type"], f"{where}: datasource {ds} not provisioned"
        assert panel["targets"], f"{where}: no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), where
        for target in panel["targets"]:
            assert target["datasource"] == ds, where
            query = target.get("expr") if ds["type"] == "prometheus" else target.get("rawSql")
            assert isinstance(query, str) and query.strip(), f"{where}: empty query"
    panels = board["panels"]
    for i, a in enumerate(panels):
        for b in panels[i + 1 :]:
            assert not overlaps(a["gridPos"], b["gridPos"]), f"{a['title']} overlaps {b['title']}"


def test_every_requested_view_is_on_the_wall() -> None:
    types = {
        (p["type"], p["datasource"]["type"])
        for f in DASHBOARD_FILES
        for p in json.loads(f.read_text("utf-8"))["panels"]
    }
    assert ("geomap", "grafana-postgresql-datasource") in types
    assert ("timeseries", "prometheus") in types
    titles = " ".join(
        p["title"] for f in DASHBOARD_FILES for p in json.loads(f.read_text("utf-8"))["panels"]
    )
    for word in (
        "地图",
        "按类型",
        "按区县",
        "按网格",
        "按养老服务站",
        "升级",
        "在线率",
        "电量",
        "端到端延迟",
    ):
        assert word in titles, word


def test_columns_shown_to_operators_have_chinese_names() -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for board in gen.dashboards():
        rendered = {p["title"]: p for p in gen.render(board)["panels"]}
        for panel in board.panels:
            if panel.type not in ("table", "barchart"):
                continue
            overrides = rendered[panel.title]["fieldConfig"]["overrides"]
            names = {
                o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                for o in overrides
            }
            for column in panel.queries[0].columns:
                label = names.get(column, {}).get("displayName", "")
                assert cjk.search(label), f"{panel.title}: column {column} has no Chinese name"
                if column.endswith("_s"):
                    assert names[column]["unit"] == "s"


def test_provisioning_holds_no_credentials() -> None:
    text = (GRAFANA / "provisioning/datasources/carewatch.yml").read_text("utf-8")
    doc = yaml.safe_load(text)
    for ds in doc["datasources"]:
        for key in ("url", "user"):
            if key in ds:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", ds[key]), (ds["name"], key)
        for value in ds.get("secureJsonData", {}).values():
            assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", value), ds["name"]
    provider = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/carewatch.yml").read_text("utf-8")
    )
    assert provider["providers"][0]["type"] == "file"


# --------------------------------------------------------------------------------------
# SQL panels against a populated database
# --------------------------------------------------------------------------------------

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


def seed(conn: psycopg.Connection[Any]) -> None:
    """Two districts, three stations, six elders, devices of every health, and alerts in
    every status with their timelines and escalation notifications."""
    conn.execute(
        "INSERT INTO grids (id, name, district, street) VALUES"
        " ('G1', '金汤街网格', '渝中区', '七星岗街道'), ('G2', '石桥铺网格', '九龙坡区', '石桥铺街道')"
    )
    conn.cursor().executemany(
        "INSERT INTO stations (id, name, kind, district, street, lat, lon)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            (
                "S1",
                "七星岗社区养老服务站",
                "community_station",
                "渝中区",
                "七星岗街道",
                29.558,
                106.562,
            ),
            (
                "S2",
                "七星岗街道养老服务中心",
                "street_centre",
                "渝中区",
                "七星岗街道",
                29.560,
                106.570,
            ),
            (
                "S3",
                "石桥铺街道养老服务中心",
                "street_centre",
                "九龙坡区",
                "石桥铺街道",
                29.530,
                106.480,
            ),
        ],
    )
    elders = [
        ("E1", "王秀英", "渝中区", "七星岗街道", 29.5585, 106.5625, "G1"),
        ("E2", "刘桂兰", "渝中区", "七星岗街道", 29.5590, 106.5630, "G1"),
        ("E3", "陈德明", "渝中区", "七星岗街道", 29.5610, 106.5710, "G1"),
        ("E4", "赵玉珍", "九龙坡区", "石桥铺街道", 29.5310, 106.4810, "G2"),
        ("E5", "孙建华", "九龙坡区", "石桥铺街道", 29.5320, 106.4790, "G2"),
        ("E6", "周淑芬", "九龙坡区", "石桥铺街道", 29.5290, 106.4820, "G2"),
    ]
    conn.cursor().executemany(
        "INSERT INTO elders (id, name, district, street, lat, lon, grid_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        elders,
    )
    devices = [
        ("WB1", "E1", "wristband", ago(1), True, 85),
        ("PIR1", "E1", "pir", ago(2), True, 15),
        ("WB2", "E2", "wristband", ago(300), False, 5),
        ("WB3", "E3", "wristband", ago(1), True, 45),
        ("WB4", "E4", "wristband", None, False, None),
        ("DOOR4", "E4", "door", ago(3), True, 60),
        ("WB5", "E5", "wristband", ago(90), False, 18),
        ("WB6", "E6", "wristband", ago(1), True, 99),
    ]
    conn.cursor().executemany(
        "INSERT INTO devices (id, elder_id, kind, last_seen, online, battery)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        devices,
    )
    # (id, elder, kind, severity, status, opened minutes ago, ack after s, closed after s)
    alerts = [
        ("00000000-0000-0000-0000-000000000001", "E1", "sos", "critical", "open", 5, None, None),
        (
            "00000000-0000-0000-0000-000000000002",
            "E2",
            "fall",
            "critical",
            "pending",
            1,
            None,
            None,
        ),
        (
            "00000000-0000-0000-0000-000000000003",
            "E4",
            "sos",
            "critical",
            "acknowledged",
            30,
            95,
            None,
        ),
        (
            "00000000-0000-0000-0000-000000000004",
            "E3",
            "fall",
            "critical",
            "resolved",
            600,
            60,
            1800,
        ),
        (
            "00000000-0000-0000-0000-000000000005",
            "E5",
            "smoke",
            "critical",
            "resolved",
            1500,
            240,
            3600,
        ),
        (
            "00000000-0000-0000-0000-000000000006",
            "E6",
            "sos",
            "critical",
            "cancelled",
            200,
            None,
            10,
        ),
        (
            "00000000-0000-0000-0000-000000000007",
            "E1",
            "inactivity",
            "warning",
            "false_alarm",
            900,
            400,
            900,
        ),
    ]
    for aid, elder, kind, severity, status, opened_min, ack_s, closed_s in alerts:
        opened = ago(opened_min)
        acked = opened + dt.timedelta(seconds=ack_s) if ack_s is not None else None
        closed = opened + dt.timedelta(seconds=closed_s) if closed_s is not None else None
        conn.execute(
            "INSERT INTO alerts (id, elder_id, kind, severity, status, source_event_id, device_time,"
            " opened_at, acknowledged_at, acknowledged_by, closed_at, rule)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                aid,
                elder,
                kind,
                severity,
                status,
                f"{aid}:1",
                opened,
                opened,
                acked,
                "grid_worker:GW1" if acked else None,
                closed,
                kind,
            ),
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, actor, action) VALUES (%s, %s, 'rules', 'opened')",
            (aid, opened),
        )
        if acked:
            conn.execute(
                "INSERT INTO alert_events (alert_id, at, actor, action)"
                " VALUES (%s, %s, 'grid_worker:GW1', 'acknowledged')",
                (aid, acked),
            )
    # escalation notifications: (alert, step, recipient_kind, recipient, minutes ago)
    notes = [
        ("00000000-0000-0000-0000-000000000001", 0, "grid_worker", "GW1", 5),
        ("00000000-0000-0000-0000-000000000001", 0, "family", "C1", 5),
        ("00000000-0000-0000-0000-000000000001", 1, "family", "C2", 3),
        ("00000000-0000-0000-0000-000000000001", 1, "station", "S2", 3),
        ("00000000-0000-0000-0000-000000000001", 2, "duty_officer", "DO1", 1),
        ("00000000-0000-0000-0000-000000000003", 0, "grid_worker", "GW2", 30),
        ("00000000-0000-0000-0000-000000000003", 0, "family", "C4", 30),
        ("00000000-0000-0000-0000-000000000004", 0, "grid_worker", "GW1", 600),
        ("00000000-0000-0000-0000-000000000007", 0, "grid_worker", "GW1", 900),
        ("00000000-0000-0000-0000-000000000007", 1, "family", "C1", 895),
    ]
    for i, (aid, step, rkind, rid, minutes) in enumerate(notes):
        conn.execute(
            "INSERT INTO notifications (idempotency_key, alert_id, step, channel, recipient_kind,"
            " recipient_id, recipient_name, address, status, created_at)"
            " VALUES (%s, %s, %s, 'sms', %s, %s, %s, %s, 'delivered', %s)",
            (f"k{i}", aid, step, rkind, rid, f"接收人{i}", f"1380000{i:04d}", ago(minutes)),
        )


def expand_macros(raw: str, start: dt.datetime, end: dt.datetime) -> sql.Composed:
    """Expand $__timeFilter(col) the way Grafana does (col BETWEEN from AND to)."""
    parts: list[sql.Composable] = []
    last = 0
    for match in TIME_FILTER.finditer(raw):
        parts.append(sql.SQL(raw[last : match.start()]))
        parts += [
            sql.SQL(f"{match.group(1)} BETWEEN "),
            sql.Literal(start),
            sql.SQL(" AND "),
            sql.Literal(end),
        ]
        last = match.end()
    parts.append(sql.SQL(raw[last:]))
    return sql.Composed(parts)


def kind_of(value: object) -> str:
    if isinstance(value, dt.datetime):
        return "time"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def sql_queries() -> list[tuple[str, Any, Any]]:
    return [
        (f"{board.uid}/{panel.title}", panel, query)
        for board in gen.dashboards()
        for panel in board.panels
        for query in panel.queries
        if isinstance(query, gen.SqlQuery)
    ]


def sql_panel_problems(dsn: str) -> list[str]:
    """Run every SQL panel query; return what is wrong with each result's shape."""
    failures: list[str] = []
    with psycopg.connect(dsn) as conn:
        for name, panel, query in sql_queries():
            leftover = re.findall(r"\$\w+", TIME_FILTER.sub("", query.sql))
            assert not leftover, f"{name}: unsupported macros/variables {leftover}"
            cursor = conn.execute(expand_macros(query.sql, NOW - dt.timedelta(days=2), NOW))
            columns = [c.name for c in cursor.description or []]
            rows = cursor.fetchall()
            if columns != list(query.columns):
                failures.append(f"{name}: columns {columns} != declared {list(query.columns)}")
                continue
            if not rows:
                failures.append(f"{name}: no rows on the populated database")
                continue
            for column, want in query.columns.items():
                got = {kind_of(row[columns.index(column)]) for row in rows} - {"NoneType"}
                if got and got != {want}:
                    failures.append(f"{name}: column {column} is {got}, panel needs {want}")
            if panel.type == "geomap":
                for row in rows:
                    lat, lon = row[columns.index("latitude")], row[columns.index("longitude")]
                    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                        failures.append(f"{name}: bad coordinates {lat}, {lon}")
            if query.format == "time_series" and columns[0] != "time":
                failures.append(f"{name}: time series must start with a time column")
    return failures


def test_sql_panels_return_rows_of_the_shape_their_panel_needs(db_dsn: str) -> None:
    assert len(sql_queries()) >= 10
    with psycopg.connect(db_dsn) as conn:
        seed(conn)
    problems = sql_panel_problems(db_dsn)
    assert not problems, "\n".join(problems)


def test_grafana_reader_role_sees_the_panels_but_no_phone_numbers(db_dsn: str) -> None:
    """infra/deploy/postgres/grafana-reader.sql grants exactly what the panels read."""
    with psycopg.connect(db_dsn) as conn:
        seed(conn)
    reader, password = f"cw_reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    script = ROOT / "infra/deploy/postgres/grafana-reader.sql"
    psql = ["psql", db_dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"reader={reader}"]
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_PG_PASSWORD"}
    refused = subprocess.run([*psql, "-f", str(script)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "GRAFANA_PG_PASSWORD" in refused.stdout + refused.stderr
    for _ in range(2):  # idempotent: runs after every migration
        subprocess.run(
            [*psql, "-f", str(script)],
            env={**env, "GRAFANA_PG_PASSWORD": password},
            check=True,
            capture_output=True,
        )
    reader_dsn = psycopg.conninfo.make_conninfo(db_dsn, user=reader, password=password)
    try:
        problems = sql_panel_problems(reader_dsn)
        assert not problems, "\n".join(problems)
        with psycopg.connect(reader_dsn) as conn:
            for forbidden in (
                "SELECT phone FROM elders",
                "SELECT address FROM notifications",
                "SELECT phone FROM contacts",
                "SELECT count(*) FROM telemetry",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(forbidden)
                conn.rollback()
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("DELETE FROM devices")
    finally:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


def test_panel_figures_match_the_seeded_facts(db_dsn: str) -> None:
    """Spot-check the figures, not only the shapes: a wrong join would still have rows."""
    panels = {name: query for name, _panel, query in sql_queries()}

    def run(name: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(db_dsn) as conn:
            raw = panels[name].sql
            return conn.execute(expand_macros(raw, NOW - dt.timedelta(days=2), NOW)).fetchall()

    with psycopg.connect(db_dsn) as conn:
        seed(conn)
    open_map = run("carewatch-alerts/在办告警地图")
    assert sorted(r[8] for r in open_map) == ["acknowledged", "open", "pending"]
    assert {r[6] for r in open_map} == {"紧急呼叫", "跌倒"}
    by_status = dict(run("carewatch-alerts/在办告警"))
    assert by_status == {"待确认": 1, "待处理": 1, "处理中": 1}
    reached = {r[0]: r[1:] for r in run("carewatch-alerts/告警升级到达")}
    # alert 1 reached all three; alert 3 reached family at step 0; alert 7 family at step 1
    assert reached == {"家属": (3, 2, 1), "养老服务站": (1, 1, 1), "区值班员": (1, 1, 2)}
    grid = {r[0]: r[2:] for r in run("carewatch-alerts/响应时间（按网格）")}
    alerts, acked, ack_p50, _ack_p90, resolve_p50, _ = grid["金汤街网格"]
    assert (alerts, acked) == (4, 2)  # E1 x2, E2, E3
    assert ack_p50 == pytest.approx(230.0)  # median of 60 s and 400 s
    assert resolve_p50 == pytest.approx(1800.0)  # only the resolved fall counts
    station = {r[0] for r in run("carewatch-alerts/响应时间（按养老服务站）")}
    assert station == {"七星岗社区养老服务站", "七星岗街道养老服务中心", "石桥铺街道养老服务中心"}
    assert run("carewatch-devices/设备在线率") == [(pytest.approx(62.5),)]
    battery = dict(run("carewatch-devices/电量分布"))
    assert battery == {"未知": 1, "0-10%": 1, "10-20%": 2, "20-50%": 1, "50-100%": 3}
    low = [r[0] for r in run("carewatch-devices/低电量设备（< 20%）")]
    assert low == ["WB2", "PIR1", "WB5"]
