"""Seed data and a live operator API server for the operator API tests.

Two districts, three grids; four "live" alerts relative to now and a fixed report day
(2026-11-20, China time) whose response times are known, so report figures can be
computed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

import httpx
import psycopg
import redis
from faststream.redis.parser.binary import BinaryMessageFormatV1

from carewatch.bus import ALERTS_STREAM
from carewatch.messages import AlertChange, decode_alert_change
from carewatch.settings import Settings
from harness.services import await_until, free_port
from operator_api.app import run
from operator_api.tokens import create_token

A1 = "00000000-0000-4000-8000-0000000000a1"  # E1 sos, open, G1: escalating
A2 = "00000000-0000-4000-8000-0000000000a2"  # E3 fall, acknowledged, G2
A3 = "00000000-0000-4000-8000-0000000000a3"  # E4 inactivity, open, G3 (江北区)
A4 = "00000000-0000-4000-8000-0000000000a4"  # E2 low_battery, resolved, G1
REPORT_DAY = "2026-11-20"
GW1_PHONE = "13800000001"
CONTACT_PHONE = "13698765432"
ELDER_PHONE = "13512345678"

_REGISTRY = """
INSERT INTO grids (id, name, district, street) VALUES
  ('G1', '解放碑第一网格', '渝中区', '解放碑街道'),
  ('G2', '解放碑第二网格', '渝中区', '解放碑街道'),
  ('G3', '观音桥第一网格', '江北区', '观音桥街道');
INSERT INTO grid_workers (id, name, phone, grid_id) VALUES
  ('GW1', '周敏', '13800000001', 'G1'),
  ('GW2', '吴强', '13800000002', 'G2'),
  ('GW3', '郑丽', '13800000003', 'G3');
INSERT INTO stations (id, name, kind, district, street, lat, lon, phone) VALUES
  ('S1', '解放碑街道养老服务中心', 'street_centre', '渝中区', '解放碑街道', 29.557, 106.577, '13900000001'),
  ('S2', '观音桥街道养老服务中心', 'street_centre', '江北区', '观音桥街道', 29.575, 106.531, '13900000002');
INSERT INTO elders (id, name, phone, district, street, address, lat, lon, grid_id, care_profile_id, lives_alone) VALUES
  ('E1', '张秀英', '13512345678', '渝中区', '解放碑街道', '民族路1号', 29.55, 106.57, 'G1', 'alone', true),
  ('E2', '李建国', NULL, '渝中区', '解放碑街道', '民权路2号', 29.55, 106.57, 'G1', 'standard', false),
  ('E3', '王桂兰', NULL, '渝中区', '解放碑街道', '邹容路3号', 29.55, 106.57, 'G2', 'elderly_80plus', true),
  ('E4', '陈淑芬', NULL, '江北区', '观音桥街道', '建新北路4号', 29.57, 106.53, 'G3', 'standard', true);
INSERT INTO contacts (elder_id, priority, name, relation, phone) VALUES
  ('E1', 1, '张伟', '儿子', '13698765432');
INSERT INTO devices (id, elder_id, kind, last_seen, online, battery) VALUES
  ('W1', 'E1', 'wristband', now() - interval '12 minutes 10 seconds', true, 80),
  ('P2', 'E2', 'pir', now() - interval '3 days', false, 15),
  ('W4', 'E4', 'wristband', now() - interval '1 hour', true, 55);
-- E3 has no device row but sent telemetry two hours ago; E1 was heard on the report day
INSERT INTO telemetry (ts, device_id, elder_id, seq, data) VALUES
  (now() - interval '2 hours', 'W3', 'E3', 1, '{"steps": 10}'),
  ('2026-11-20 20:00:00+08', 'W1', 'E1', 1, '{"steps": 5}');
"""


class ReportAlert(NamedTuple):
    id: str
    elder: str
    kind: str
    severity: str
    status: str
    opened: str
    ack_after_s: int | None
    closed_after_s: int | None


def _report_id(n: int) -> str:
    return f"00000000-0000-4000-8000-0000000001{n:02d}"


_REPORT_ALERTS = [
    ReportAlert(
        _report_id(1), "E1", "sos", "critical", "resolved", "2026-11-20 10:00:00+08", 60, 600
    ),
    ReportAlert(
        _report_id(2), "E2", "fall", "critical", "resolved", "2026-11-20 11:00:00+08", 120, 1200
    ),
    ReportAlert(
        _report_id(3), "E1", "fall", "critical", "acknowledged", "2026-11-20 12:00:00+08", 300, None
    ),
    ReportAlert(
        _report_id(4),
        "E2",
        "inactivity",
        "warning",
        "cancelled",
        "2026-11-20 23:30:00+08",
        None,
        100,
    ),
    # outside the day (China time) or outside grid G1: must not count
    ReportAlert(
        _report_id(5), "E1", "sos", "critical", "resolved", "2026-11-19 23:59:00+08", 10, 20
    ),
    ReportAlert(
        _report_id(6), "E1", "sos", "critical", "resolved", "2026-11-21 00:00:30+08", 10, 20
    ),
    ReportAlert(
        _report_id(7), "E4", "sos", "critical", "resolved", "2026-11-20 10:00:00+08", 5, 10
    ),
]


@dataclass(frozen=True)
class Tokens:
    admin: str
    operator_yuzhong: str
    operator_all: str
    gw1: str
    gw3: str


def _insert_report_alert(conn: psycopg.Connection, alert: ReportAlert) -> None:
    conn.execute(
        "INSERT INTO alerts (id, elder_id, kind, severity, status, source_event_id, device_time,"
        " opened_at, acknowledged_at, acknowledged_by, closed_at, rule)"
        " VALUES (%(id)s::uuid, %(elder)s, %(kind)s, %(severity)s, %(status)s, %(id)s::text, %(opened)s,"
        " %(opened)s, %(opened)s::timestamptz + make_interval(secs => %(ack_after_s)s),"
        " CASE WHEN %(ack_after_s)s::int IS NULL THEN NULL ELSE 'grid_worker:GW1' END,"
        " %(opened)s::timestamptz + make_interval(secs => %(closed_after_s)s), %(kind)s)",
        alert._asdict(),
    )


def seed(dsn: str) -> Tokens:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_REGISTRY)
        live = [
            (A1, "E1", "sos", "critical", "open", "-5 minutes"),
            (A2, "E3", "fall", "critical", "acknowledged", "-30 minutes"),
            (A3, "E4", "inactivity", "warning", "open", "-2 hours"),
            (A4, "E2", "low_battery", "info", "resolved", "-1 day"),
        ]
        for alert_id, elder, kind, severity, status, age in live:
            conn.execute(
                "INSERT INTO alerts (id, elder_id, device_id, kind, severity, status,"
                " source_event_id, device_time, opened_at, rule, details)"
                " VALUES (%s, %s, 'W1', %s, %s, %s, %s, now() + %s::interval,"
                " now() + %s::interval, %s, %s)",
                (
                    alert_id,
                    elder,
                    kind,
                    severity,
                    status,
                    f"{alert_id}:7",
                    age,
                    age,
                    kind,
                    json.dumps({"callback": ELDER_PHONE}),
                ),
            )
        for report_alert in _REPORT_ALERTS:
            _insert_report_alert(conn, report_alert)
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, actor, action, details) VALUES"
            " (%(a)s, now() - interval '5 minutes', 'rules', 'opened', '{\"rule\": \"sos\"}'),"
            " (%(a)s, now() - interval '4 minutes', 'notifier', 'notified', '{\"step\": 0}')",
            {"a": A1},
        )
        conn.execute(
            "INSERT INTO notifications (idempotency_key, alert_id, step, channel, recipient_kind,"
            " recipient_id, recipient_name, address, status, attempts, sent_at, created_at)"
            " VALUES"
            " ('k1', %(a)s, 0, 'sms', 'grid_worker', 'GW1', '周敏', %(gw)s, 'sent', 1,"
            "  now() - interval '4 minutes', now() - interval '4 minutes 30 seconds'),"
            " ('k2', %(a)s, 0, 'wecom', 'family', '1', '张伟', 'zhangwei', 'failed', 3, NULL,"
            "  now() - interval '4 minutes 20 seconds'),"
            " ('k3', %(a)s, 1, 'sms', 'family', '1', '张伟', %(cp)s, 'pending', 0, NULL,"
            "  now() - interval '1 minute')",
            {"a": A1, "gw": GW1_PHONE, "cp": CONTACT_PHONE},
        )
        conn.execute(
            "INSERT INTO escalations (alert_id, policy, step, next_step_at) VALUES"
            " (%s, 'critical', 0, now() + interval '2 minutes')",
            (A1,),
        )
    return Tokens(
        admin=create_token(dsn, "admin", "root"),
        operator_yuzhong=create_token(dsn, "operator", "op-yz", "渝中区"),
        operator_all=create_token(dsn, "operator", "op-all", "*"),
        gw1=create_token(dsn, "grid_worker", "GW1"),
        gw3=create_token(dsn, "grid_worker", "GW3"),
    )


def alert_changes(redis_url: str) -> list[AlertChange]:
    """Every AlertChange on the alerts stream (entries are FastStream-framed)."""
    client = redis.Redis.from_url(redis_url)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(ALERTS_STREAM)  # type: ignore[assignment]
    return [decode_alert_change(BinaryMessageFormatV1.parse(f[b"__data__"])[0]) for _, f in entries]


async def sse_events(response: httpx.Response, into: list[tuple[str, dict[str, object]]]) -> None:
    """Append each server-sent event of a streaming response as (event name, JSON data)."""
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            into.append((name, json.loads(line[len("data: ") :])))


@contextlib.asynccontextmanager
async def serving(
    dsn: str, redis_port: int, bus_shards: int | None = None, **overrides: object
) -> AsyncIterator[str]:
    """Run operator_api.app.run on a free port; yield its base URL. Empties Redis first.
    `bus_shards`: as the rules worker of the test has it (events it publishes);
    `overrides`: more settings (e.g. the console's tile server)."""
    redis.Redis(port=redis_port).flushall()
    port = free_port()
    settings = Settings(
        database_url=dsn,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        operator_port=port,
        log_json=False,
        _env_file=None,
        **overrides,  # type: ignore[arg-type]
    )
    if bus_shards is not None:
        settings = settings.model_copy(update={"bus_shards": bus_shards})
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))

    async def listening() -> bool:
        if task.done():
            task.result()  # startup failed: raise its error here
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await await_until(listening, what="operator API listening")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
