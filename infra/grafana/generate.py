"""Generate the carewatch Grafana dashboards (the operator wall) as JSON files.

Dashboards are plain Python data rendered to the JSON model Grafana provisions from
infra/grafana/dashboards/. The generated files are checked in; a test regenerates them
and fails when they differ, so edit this file and run:

    .venv/bin/python infra/grafana/generate.py          # write the JSON files
    .venv/bin/python infra/grafana/generate.py --check  # exit 1 if they are stale

Why no SDK: grafana-foundation-sdk (PyPI) installs, but has no query type for the
PostgreSQL datasource, types the geomap centre as integers, emits empty refIds and
overflows its own automatic layout; plain dictionaries are shorter and exact.

Every SQL query declares the columns (name and kind) its panel needs; the tests run each
query against a populated PostgreSQL and check that contract. SQL panels use a single
Grafana macro, $__timeFilter(column), which the tests substitute.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from carewatch.labels import KIND_LABELS

HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = HERE / "dashboards"

# Datasource uids are fixed by provisioning/datasources/carewatch.yml.
PROMETHEUS: dict[str, str] = {"type": "prometheus", "uid": "carewatch-prometheus"}
POSTGRES: dict[str, str] = {"type": "grafana-postgresql-datasource", "uid": "carewatch-postgres"}

# Centre of the map: Chongqing, Yuzhong district.
MAP_CENTRE = (29.5547, 106.5708)
GRID_COLUMNS = 24

ColumnKind = Literal["time", "number", "text"]
SqlFormat = Literal["table", "time_series"]
Json = dict[str, Any]

# Display labels (user-facing, Simplified Chinese) for codes stored in the database.
ALERT_KIND_LABELS = KIND_LABELS
ALERT_STATUS_LABELS: dict[str, tuple[str, str]] = {  # status -> (label, map colour)
    "pending": ("待确认", "orange"),
    "open": ("待处理", "red"),
    "acknowledged": ("处理中", "blue"),
}
RECIPIENT_LABELS: dict[str, str] = {
    "family": "家属",
    "station": "养老服务站",
    "duty_officer": "区值班员",
}
DEVICE_KIND_LABELS: dict[str, str] = {
    "wristband": "智能手环",
    "pir": "人体感应",
    "door": "门磁",
    "water_meter": "智能水表",
    "radar": "毫米波雷达",
    "smoke": "烟感",
    "gas": "燃气探测器",
    "leak": "水浸探测器",
}
OPEN_STATUSES_SQL = "('pending', 'open', 'acknowledged')"  # carewatch.messages.OPEN_STATUSES


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlQuery:
    sql: str
    format: SqlFormat
    columns: Mapping[str, ColumnKind]  # exactly the columns the query returns, in order


@dataclass(frozen=True)
class PromQuery:
    expr: str
    legend: str


Query = SqlQuery | PromQuery


@dataclass(frozen=True)
class Panel:
    title: str
    type: str  # Grafana panel plugin id
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    description: str = ""
    unit: str | None = None
    options: Json = field(default_factory=dict)
    field_defaults: Json = field(default_factory=dict)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    time_from: str = "now-24h"
    refresh: str = "30s"


# --------------------------------------------------------------------------------------
# SQL helpers
# --------------------------------------------------------------------------------------


def literal(text: str) -> str:
    """A SQL string literal for a constant of this file (never for outside input)."""
    if "'" in text or "\\" in text:
        raise ValueError(f"unexpected quote in constant {text!r}")
    return f"'{text}'"


def label_join(alias: str, column: str, labels: Mapping[str, str]) -> str:
    """LEFT JOIN a VALUES list mapping codes to display labels (constants of this file)."""
    rows = ", ".join(f"({literal(code)}, {literal(label)})" for code, label in labels.items())
    return f"LEFT JOIN (VALUES {rows}) AS {alias}(code, label) ON {alias}.code = {column}"


def seconds(interval_sql: str) -> str:
    return f"extract(epoch FROM {interval_sql})::float8"


def response_time_columns() -> str:
    """Median and p90 of time to acknowledge and to resolve, in seconds (NULLs skipped)."""
    ack = seconds("a.acknowledged_at - a.opened_at")
    resolve = seconds("a.closed_at - a.opened_at")
    resolved = f"CASE WHEN a.status = 'resolved' THEN {resolve} END"
    return (
        "count(*)::int AS alerts,\n"
        "  count(a.acknowledged_at)::int AS acknowledged,\n"
        f"  percentile_cont(0.5) WITHIN GROUP (ORDER BY {ack}) AS ack_p50_s,\n"
        f"  percentile_cont(0.9) WITHIN GROUP (ORDER BY {ack}) AS ack_p90_s,\n"
        f"  percentile_cont(0.5) WITHIN GROUP (ORDER BY {resolved}) AS resolve_p50_s,\n"
        f"  percentile_cont(0.9) WITHIN GROUP (ORDER BY {resolved}) AS resolve_p90_s"
    )


RESPONSE_COLUMNS: dict[str, ColumnKind] = {
    "alerts": "number",
    "acknowledged": "number",
    "ack_p50_s": "number",
    "ack_p90_s": "number",
    "resolve_p50_s": "number",
    "resolve_p90_s": "number",
}
RESPONSE_HEADERS = {
    "alerts": "告警数",
    "acknowledged": "已确认",
    "ack_p50_s": "确认用时 中位数",
    "ack_p90_s": "确认用时 P90",
    "resolve_p50_s": "处置完成用时 中位数",
    "resolve_p90_s": "处置完成用时 P90",
}


def column_overrides(columns: Mapping[str, ColumnKind]) -> list[Json]:
    """Per-column display: a Chinese header, and seconds as a unit for *_s columns.

    Overrides match the query's own column names, which stay ASCII (the tests and the
    SQL refer to them); only what the operator sees is translated."""
    headers = {**RESPONSE_HEADERS, **TABLE_HEADERS}
    overrides = []
    for column in columns:
        properties: list[Json] = []
        if column in headers:
            properties.append({"id": "displayName", "value": headers[column]})
        if column.endswith("_s"):
            properties.append({"id": "unit", "value": "s"})
        if properties:
            overrides.append(
                {"matcher": {"id": "byName", "options": column}, "properties": properties}
            )
    return overrides


def alerts_over_time(group_sql: str, join_sql: str) -> SqlQuery:
    return SqlQuery(
        "SELECT date_trunc('hour', a.opened_at) AS time,\n"
        f"  {group_sql} AS metric,\n"
        "  count(*)::int AS value\n"
        "FROM alerts a\n"
        f"{join_sql}\n"
        "WHERE $__timeFilter(a.opened_at)\n"
        "GROUP BY 1, 2\n"
        "ORDER BY 1, 2",
        "time_series",
        {"time": "time", "metric": "text", "value": "number"},
    )


# --------------------------------------------------------------------------------------
# Panels
# --------------------------------------------------------------------------------------

STATUS_MAPPINGS: list[Json] = [
    {
        "type": "value",
        "options": {
            code: {"text": label, "color": colour, "index": i}
            for i, (code, (label, colour)) in enumerate(ALERT_STATUS_LABELS.items())
        },
    }
]


def open_alerts_map() -> Panel:
    query = SqlQuery(
        "SELECT a.opened_at AS time,\n"
        "  e.lat AS latitude,\n"
        "  e.lon AS longitude,\n"
        "  e.name AS elder,\n"
        "  e.district,\n"
        "  e.street,\n"
        "  COALESCE(k.label, a.kind) AS kind,\n"
        "  a.severity,\n"
        "  a.status\n"
        "FROM alerts a\n"
        "JOIN elders e ON e.id = a.elder_id\n"
        f"{label_join('k', 'a.kind', ALERT_KIND_LABELS)}\n"
        f"WHERE a.status IN {OPEN_STATUSES_SQL}\n"
        "ORDER BY a.opened_at",
        "table",
        {
            "time": "time",
            "latitude": "number",
            "longitude": "number",
            "elder": "text",
            "district": "text",
            "street": "text",
            "kind": "text",
            "severity": "text",
            "status": "text",
        },
    )
    lat, lon = MAP_CENTRE
    return Panel(
        "在办告警地图",
        "geomap",
        (query,),
        width=16,
        height=14,
        description="待确认、待处理、处理中的告警，标注在老人住址上；颜色表示状态。",
        options={
            "view": {"id": "coords", "lat": lat, "lon": lon, "zoom": 11},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showScale": True},
            "basemap": {"type": "default", "name": "底图"},
            "layers": [
                {
                    "type": "markers",
                    "name": "在办告警",
                    "location": {
                        "mode": "coords",
                        "latitude": "latitude",
                        "longitude": "longitude",
                    },
                    "config": {
                        "showLegend": True,
                        "style": {
                            "size": {"fixed": 8},
                            "color": {"field": "status", "fixed": "red"},
                            "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                        },
                    },
                    "tooltip": True,
                }
            ],
            "tooltip": {"mode": "details"},
        },
        field_defaults={"mappings": STATUS_MAPPINGS},
    )


def open_alerts_by_status() -> Panel:
    rows = ", ".join(
        f"({i}, {literal(code)}, {literal(label)})"
        for i, (code, (label, _colour)) in enumerate(ALERT_STATUS_LABELS.items())
    )
    query = SqlQuery(
        "SELECT s.label AS status, count(a.id)::int AS alerts\n"
        f"FROM (VALUES {rows}) AS s(ord, code, label)\n"
        "LEFT JOIN alerts a ON a.status = s.code\n"
        "GROUP BY s.ord, s.label\n"
        "ORDER BY s.ord",
        "table",
        {"status": "text", "alerts": "number"},
    )
    return Panel(
        "在办告警",
        "stat",
        (query,),
        width=8,
        height=14,
        description="当前各状态的告警数（不受时间范围影响）。",
        options={
            "reduceOptions": {"values": True, "calcs": [], "fields": "/^alerts$/"},
            "orientation": "horizontal",
            "textMode": "value_and_name",
            "colorMode": "background",
        },
        field_defaults={"displayName": "${__data.fields.status}"},
    )


def alerts_by_kind() -> Panel:
    return Panel(
        "告警趋势（按类型）",
        "timeseries",
        (
            alerts_over_time(
                "COALESCE(k.label, a.kind)", label_join("k", "a.kind", ALERT_KIND_LABELS)
            ),
        ),
        description="每小时新开告警数，按告警类型。",
        options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"]}},
        field_defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
    )


def alerts_by_district() -> Panel:
    return Panel(
        "告警趋势（按区县）",
        "timeseries",
        (alerts_over_time("e.district", "JOIN elders e ON e.id = a.elder_id"),),
        description="每小时新开告警数，按老人所在区县。",
        options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"]}},
        field_defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
    )


def response_times_by_grid() -> Panel:
    query = SqlQuery(
        "SELECT g.name AS grid,\n"
        "  g.district,\n"
        f"  {response_time_columns()}\n"
        "FROM alerts a\n"
        "JOIN elders e ON e.id = a.elder_id\n"
        "JOIN grids g ON g.id = e.grid_id\n"
        "WHERE $__timeFilter(a.opened_at)\n"
        "GROUP BY g.id, g.name, g.district\n"
        "ORDER BY ack_p90_s DESC NULLS LAST",
        "table",
        {"grid": "text", "district": "text", **RESPONSE_COLUMNS},
    )
    return Panel(
        "响应时间（按网格）",
        "table",
        (query,),
        width=24,
        description="从告警产生到首次确认、到处置完成（已解决）的用时，中位数与 P90。",
        options={"sortBy": [{"displayName": RESPONSE_HEADERS["ack_p90_s"], "desc": True}]},
        field_defaults={"custom": {"align": "auto"}},
    )


def response_times_by_station() -> Panel:
    # An alert belongs to the station nearest to the elder's home: the station whose
    # area the home is in (planar distance with a longitude correction is enough here).
    # Dashboard SQL is assembled from constants of this file only, never from input.
    query = SqlQuery(
        "SELECT s.name AS station,\n"  # noqa: S608
        "  s.district,\n"
        f"  {response_time_columns()}\n"
        "FROM alerts a\n"
        "JOIN elders e ON e.id = a.elder_id\n"
        "CROSS JOIN LATERAL (\n"
        "  SELECT st.id, st.name, st.district FROM stations st\n"
        "  ORDER BY (st.lat - e.lat) ^ 2 + ((st.lon - e.lon) * cos(radians(e.lat))) ^ 2\n"
        "  LIMIT 1\n"
        ") s\n"
        "WHERE $__timeFilter(a.opened_at)\n"
        "GROUP BY s.id, s.name, s.district\n"
        "ORDER BY ack_p90_s DESC NULLS LAST",
        "table",
        {"station": "text", "district": "text", **RESPONSE_COLUMNS},
    )
    return Panel(
        "响应时间（按养老服务站）",
        "table",
        (query,),
        width=24,
        description="告警按离老人住址最近的服务站归属；确认与处置完成用时，中位数与 P90。",
    )


def escalations_reached() -> Panel:
    query = SqlQuery(
        "SELECT COALESCE(r.label, n.recipient_kind) AS recipient,\n"
        "  count(DISTINCT n.alert_id)::int AS alerts,\n"
        "  (count(DISTINCT n.alert_id) FILTER (WHERE n.step > 0))::int AS escalated,\n"
        "  max(n.step)::int AS max_step\n"
        "FROM notifications n\n"
        f"{label_join('r', 'n.recipient_kind', RECIPIENT_LABELS)}\n"
        "WHERE n.purpose = 'alert'\n"
        f"  AND n.recipient_kind IN ({', '.join(literal(k) for k in RECIPIENT_LABELS)})\n"
        "  AND $__timeFilter(n.created_at)\n"
        "GROUP BY 1\n"
        "ORDER BY 1",
        "table",
        {"recipient": "text", "alerts": "number", "escalated": "number", "max_step": "number"},
    )
    return Panel(
        "告警升级到达",
        "table",
        (query,),
        width=12,
        description="通知到家属、养老服务站、区值班员的告警数；“经升级”为在第 1 步之后才通知到的告警。",
    )


def escalation_depth() -> Panel:
    # The deepest step each alert's escalation reached, as a distribution.
    query = SqlQuery(
        "SELECT ('第 ' || (d.max_step + 1) || ' 步') AS step, count(*)::int AS alerts\n"
        "FROM (\n"
        "  SELECT n.alert_id, max(n.step) AS max_step FROM notifications n\n"
        "  WHERE n.purpose = 'alert' AND $__timeFilter(n.created_at)\n"
        "  GROUP BY n.alert_id\n"
        ") d\n"
        "GROUP BY d.max_step\n"
        "ORDER BY d.max_step",
        "table",
        {"step": "text", "alerts": "number"},
    )
    return Panel(
        "告警最终升级步数",
        "barchart",
        (query,),
        width=12,
        description="每条告警的通知最远升级到第几步（第 1 步：网格员/家属）。",
        options={"xField": "step", "orientation": "vertical", "showValue": "auto"},
    )


def device_online_rate() -> Panel:
    query = SqlQuery(
        "SELECT (100.0 * avg(d.online::int))::float8 AS online_pct FROM devices d",
        "table",
        {"online_pct": "number"},
    )
    return Panel(
        "设备在线率",
        "stat",
        (query,),
        width=6,
        unit="percent",
        options={"reduceOptions": {"values": False, "calcs": ["lastNotNull"]}},
        field_defaults={
            "min": 0,
            "max": 100,
            "thresholds": {
                "mode": "absolute",
                "steps": [
                    {"color": "red", "value": None},
                    {"color": "orange", "value": 90},
                    {"color": "green", "value": 97},
                ],
            },
        },
    )


def device_online_by_district() -> Panel:
    query = SqlQuery(
        "SELECT e.district,\n"
        "  (100.0 * avg(d.online::int))::float8 AS online_pct\n"
        "FROM devices d\n"
        "JOIN elders e ON e.id = d.elder_id\n"
        "GROUP BY e.district\n"
        "ORDER BY e.district",
        "table",
        {"district": "text", "online_pct": "number"},
    )
    return Panel(
        "设备在线率（按区县）",
        "bargauge",
        (query,),
        width=18,
        unit="percent",
        options={
            "reduceOptions": {"values": True, "calcs": [], "fields": "/^online_pct$/"},
            "orientation": "horizontal",
            "displayMode": "gradient",
        },
        field_defaults={"min": 0, "max": 100, "displayName": "${__data.fields.district}"},
    )


def devices_by_kind() -> Panel:
    query = SqlQuery(
        "SELECT COALESCE(k.label, d.kind) AS kind,\n"
        "  count(*) FILTER (WHERE d.online)::int AS online,\n"
        "  count(*) FILTER (WHERE NOT d.online)::int AS offline,\n"
        "  count(*) FILTER (WHERE d.last_seen < now() - interval '1 hour'"
        " OR d.last_seen IS NULL)::int AS silent_1h\n"
        "FROM devices d\n"
        f"{label_join('k', 'd.kind', DEVICE_KIND_LABELS)}\n"
        "GROUP BY 1\n"
        "ORDER BY 1",
        "table",
        {"kind": "text", "online": "number", "offline": "number", "silent_1h": "number"},
    )
    return Panel(
        "设备状态（按类型）",
        "table",
        (query,),
        width=12,
        description="在线、离线，以及 1 小时以上未上报的设备数。",
    )


def battery_distribution() -> Panel:
    query = SqlQuery(
        "SELECT b.label AS battery, count(d.id)::int AS devices\n"
        "FROM (VALUES (0, '未知', NULL, NULL), (1, '0-10%', 0, 10), (2, '10-20%', 10, 20),\n"
        "             (3, '20-50%', 20, 50), (4, '50-100%', 50, 101))\n"
        "  AS b(ord, label, lo, hi)\n"
        "LEFT JOIN devices d ON (b.lo IS NULL AND d.battery IS NULL)\n"
        "  OR (d.battery >= b.lo AND d.battery < b.hi)\n"
        "GROUP BY b.ord, b.label\n"
        "ORDER BY b.ord",
        "table",
        {"battery": "text", "devices": "number"},
    )
    return Panel(
        "电量分布",
        "barchart",
        (query,),
        width=12,
        options={"xField": "battery", "orientation": "vertical", "showValue": "auto"},
    )


def low_battery_devices() -> Panel:
    query = SqlQuery(
        "SELECT d.id AS device,\n"
        "  COALESCE(k.label, d.kind) AS kind,\n"
        "  e.name AS elder,\n"
        "  e.district,\n"
        "  e.street,\n"
        "  d.battery,\n"
        "  d.last_seen\n"
        "FROM devices d\n"
        "JOIN elders e ON e.id = d.elder_id\n"
        f"{label_join('k', 'd.kind', DEVICE_KIND_LABELS)}\n"
        "WHERE d.battery < 20\n"
        "ORDER BY d.battery, d.id\n"
        "LIMIT 500",
        "table",
        {
            "device": "text",
            "kind": "text",
            "elder": "text",
            "district": "text",
            "street": "text",
            "battery": "number",
            "last_seen": "time",
        },
    )
    return Panel(
        "低电量设备（< 20%）",
        "table",
        (query,),
        width=24,
        height=10,
        options={"sortBy": [{"displayName": TABLE_HEADERS["battery"], "desc": False}]},
    )


def prom(title: str, queries: Sequence[tuple[str, str]], unit: str, width: int = 12) -> Panel:
    return Panel(
        title,
        "timeseries",
        tuple(PromQuery(expr, legend) for expr, legend in queries),
        width=width,
        unit=unit,
        options={"legend": {"displayMode": "list", "placement": "bottom"}},
    )


def pipeline_panels() -> tuple[Panel, ...]:
    return (
        prom("设备消息接入速率", [("carewatch:ingest_messages:rate5m", "{{type}}")], "reqps"),
        prom("拒收速率（按原因）", [("carewatch:ingest_rejects:rate5m", "{{reason}}")], "reqps"),
        prom(
            "重复消息与遥测写入",
            [
                ("carewatch:ingest_duplicates:rate5m", "重复消息"),
                ("carewatch:telemetry_rows:rate5m", "遥测写入行"),
            ],
            "reqps",
        ),
        prom("规则引擎事件处理", [("carewatch:rules_events:rate5m", "{{type}}")], "reqps"),
        prom("总线积压", [("carewatch:bus_lag_messages:max", "{{stream}}")], "short"),
        prom(
            "告警开启速率（按类型）",
            [('sum by (kind) (carewatch:alerts:rate5m{status=~"pending|open"})', "{{kind}}")],
            "reqps",
        ),
        prom(
            "通知请求（按渠道与结果）",
            [("carewatch:notifications:rate5m", "{{channel}} {{outcome}}")],
            "reqps",
        ),
        prom(
            "通知失败率",
            [("carewatch:notification_failure_ratio:rate5m", "{{channel}}")],
            "percentunit",
        ),
        prom(
            "端到端延迟（设备事件到发出通知）",
            [
                ("carewatch:e2e_latency_seconds:p50_5m", "P50"),
                ("carewatch:e2e_latency_seconds:p99_5m", "P99"),
            ],
            "s",
        ),
        prom("各阶段延迟 P99", [("carewatch:stage_latency_seconds:p99_5m", "{{stage}}")], "s"),
        prom(
            "升级步骤执行",
            [("carewatch:escalation_steps:rate5m", "{{policy}} 第{{step}}步")],
            "reqps",
        ),
        prom("工作进程在线", [('up{job=~"carewatch-.*"}', "{{job}} {{instance}}")], "short"),
    )


def dashboards() -> tuple[Dashboard, ...]:
    return (
        Dashboard(
            "carewatch-alerts",
            "居家养老应急 · 告警总览",
            "在办告警地图、告警趋势、响应时间与升级情况",
            (
                open_alerts_map(),
                open_alerts_by_status(),
                alerts_by_kind(),
                alerts_by_district(),
                response_times_by_grid(),
                response_times_by_station(),
                escalations_reached(),
                escalation_depth(),
            ),
            time_from="now-7d",
        ),
        Dashboard(
            "carewatch-devices",
            "居家养老应急 · 设备健康",
            "设备在线率与电量",
            (
                device_online_rate(),
                device_online_by_district(),
                devices_by_kind(),
                battery_distribution(),
                low_battery_devices(),
            ),
        ),
        Dashboard(
            "carewatch-pipeline",
            "居家养老应急 · 数据管道",
            "接入吞吐、拒收、总线积压、通知与端到端延迟（Prometheus）",
            pipeline_panels(),
            time_from="now-6h",
        ),
    )


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def render_target(query: Query, ref_id: str) -> Json:
    if isinstance(query, PromQuery):
        return {
            "refId": ref_id,
            "datasource": PROMETHEUS,
            "expr": query.expr,
            "legendFormat": query.legend,
            "range": True,
        }
    return {
        "refId": ref_id,
        "datasource": POSTGRES,
        "rawSql": query.sql,
        "format": query.format,
        "rawQuery": True,
        "editorMode": "code",
    }


def panel_datasource(panel: Panel) -> dict[str, str]:
    kinds = {type(q) for q in panel.queries}
    if len(kinds) != 1:
        raise ValueError(f"panel {panel.title!r} mixes datasources")
    return PROMETHEUS if kinds == {PromQuery} else POSTGRES


def layout(panels: Sequence[Panel]) -> list[Json]:
    """Left-to-right rows of GRID_COLUMNS; a panel that does not fit starts a new row."""
    positions: list[Json] = []
    x = y = row_height = 0
    for panel in panels:
        if panel.width > GRID_COLUMNS:
            raise ValueError(f"panel {panel.title!r} is wider than the grid")
        if x + panel.width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"h": panel.height, "w": panel.width, "x": x, "y": y})
        x += panel.width
        row_height = max(row_height, panel.height)
    return positions


def render_panel(panel: Panel, panel_id: int, grid_pos: Json) -> Json:
    defaults: Json = dict(panel.field_defaults)
    if panel.unit:
        defaults["unit"] = panel.unit
    rendered: Json = {
        "id": panel_id,
        "type": panel.type,
        "title": panel.title,
        "description": panel.description,
        "datasource": panel_datasource(panel),
        "gridPos": grid_pos,
        "targets": [render_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options,
    }
    if panel.type in LABELLED_PANEL_TYPES and isinstance(panel.queries[0], SqlQuery):
        rendered["fieldConfig"]["overrides"] = column_overrides(panel.queries[0].columns)
    return rendered


# Panels that show column names to the operator; they get Chinese display names.
LABELLED_PANEL_TYPES = ("table", "barchart")
# Chinese headers for the other columns (column names stay ASCII for the tests).
TABLE_HEADERS = {
    "devices": "设备数",
    "step": "升级步数",
    "grid": "网格",
    "district": "区县",
    "station": "养老服务站",
    "recipient": "通知对象",
    "escalated": "经升级",
    "max_step": "最远步骤",
    "kind": "类型",
    "online": "在线",
    "offline": "离线",
    "silent_1h": "1 小时未上报",
    "device": "设备",
    "elder": "老人",
    "street": "街道",
    "battery": "电量 %",
    "last_seen": "最后上报",
}


def render(dashboard: Dashboard) -> Json:
    positions = layout(dashboard.panels)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["carewatch"],
        "timezone": "Asia/Shanghai",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": dashboard.refresh,
        "time": {"from": dashboard.time_from, "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["carewatch"], "asDropdown": False, "title": "看板"}
        ],
        "panels": [
            render_panel(panel, i + 1, pos)
            for i, (panel, pos) in enumerate(zip(dashboard.panels, positions, strict=True))
        ],
    }


def to_json(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[Path, str]:
    return {DASHBOARD_DIR / f"{d.uid}.json": to_json(d) for d in dashboards()}


def stale_files(out_dir: Path = DASHBOARD_DIR) -> list[Path]:
    """Dashboard files that are missing, differ from the generator or are not generated."""
    expected = {out_dir / p.name: text for p, text in expected_files().items()}
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text("utf-8") != text]
    extra = [p for p in out_dir.glob("*.json") if p not in expected]
    return sorted(stale + extra)


def write_all(out_dir: Path = DASHBOARD_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in expected_files().items():
        target = out_dir / path.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
