"""Gateways end to end on real services: watches over TCP and platform pushes over HTTP
-> `carewatch gateway` -> MQTT as the device -> ingest -> rules -> notifier -> fake SMS.

Every worker is its own `carewatch` process (harness/pipeline.py); the watches and the
platforms are the simulators in simulators/gateways.py, over real sockets.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import msgspec
import psycopg
import pytest
from pydantic import SecretStr

from carewatch.messages import Telemetry
from carewatch.settings import Settings
from carewatch.topics import topic
from gateways.ledger import import_files as import_gateway_files
from harness.pipeline import Pipeline, with_fake_providers
from harness.services import free_port, wait_port, wait_until
from registry.importer import import_files
from simulators.gateways import (
    SOS_BIT,
    CtwingPusher,
    IwWatch,
    OneNetPusher,
    Watch3g,
    ctwing_data_report,
    onenet_datapoint,
)
from tests import ledger
from tests.fake_provider_server import link_in_sms

pytestmark = pytest.mark.slow

GRID_WORKER = "13700000001"
WATCH_A = "8800000001"  # WB0001, elder E0001, 3G watch
WATCH_B = "8800000003"  # WB0003, elder E0003, 3G watch
IW_IMEI = "353456789012345"  # WB0002, elder E0002, IW watch
SMOKE_IMEI = "860000000000001"  # SMK0001 at E0001, CTWing
GAS_DEV_ID = "2016617"  # GAS0001 at E0002, OneNET
TOKEN = "onenet-test-token"
METRICS_PORTS: dict[int, int] = {}  # pipeline -> the gateway's /metrics port

ELDER_3 = (
    "E0003,陈素珍,13800000003,渝中区,七星岗街道,七星岗街道和平路3号,29.5595,106.5635,G01,"
    "金汤街网格,GW01,李建国,13700000001,gw_li,alone,true,WB0003,,"
    "陈刚,儿子,13600000004,fam_chen,,,,\n"
)
GATEWAY_DEVICES = f"""device_id,protocol,imei,product
WB0001,watch3g,{WATCH_A},
WB0003,watch3g,{WATCH_B},
WB0002,iw,{IW_IMEI},
SMK0001,ctwing,{SMOKE_IMEI},15000001
GAS0001,onenet,{GAS_DEV_ID},gas-v1
"""
PRODUCT_FIELDS = """platform,product,field,meaning,alarm_values
ctwing,15000001,smoke_state,smoke,1
ctwing,15000001,battery_value,battery,
onenet,gas-v1,gas_alarm,gas,1|alarm
"""


def query(settings: Settings, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, args).fetchall()


def write_files(folder: Path) -> tuple[list[Path], list[Path]]:
    files = ledger.write_ledger(folder)
    elders = folder / "elders.csv"
    text = ledger.ELDERS.replace(
        "pir:PIR0001;door:DOOR0001", "pir:PIR0001;door:DOOR0001;smoke:SMK0001"
    )
    text = text.replace(
        "gw_li,elderly_80plus,false,WB0002,,", "gw_li,elderly_80plus,false,WB0002,gas:GAS0001,"
    )
    elders.write_text(text + ELDER_3, encoding="utf-8")
    devices, products = folder / "gateway_devices.csv", folder / "gateway_products.csv"
    devices.write_text(GATEWAY_DEVICES, encoding="utf-8")
    products.write_text(PRODUCT_FIELDS, encoding="utf-8")
    return files, [devices, products]


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    s = with_fake_providers(settings).model_copy(
        update={
            "escalation_wait_s": 3.0,
            "fall_confirm_window_s": 2.0,
            "sos_cancel_window_s": 1.0,
            "gateway_watch_port": free_port(),
            "gateway_iw_port": free_port(),
            "gateway_http_port": free_port(),
            "onenet_token": SecretStr(TOKEN),
        }
    )
    ledger_files, gateway_files = write_files(tmp_path / "ledger")
    report = import_files(s.database_url, ledger_files)
    assert not report.errors, report.errors
    gateway_report = import_gateway_files(s.database_url, gateway_files)
    assert gateway_report.ok and gateway_report.devices == 5, gateway_report.errors
    p = Pipeline(s, tmp_path)
    for name in ("fake-providers", "ack-server", "notifier", "rules", "ingest"):
        p.start(name)
    METRICS_PORTS[id(p)] = free_port()
    p.start("gateway", metrics_port=METRICS_PORTS[id(p)])
    for port in (s.gateway_watch_port, s.gateway_iw_port, s.gateway_http_port):
        wait_port(port, 30)
    # ingest is ready once it stores a probe from a native device (its MQTT session may
    # take a moment; what the gateway publishes before that would have no subscriber)
    probe_seq = time.time_ns() // 1_000_000

    def probe_stored() -> bool:
        nonlocal probe_seq
        p.assert_running()
        probe_seq += 1
        asyncio.run(_publish_probe(s.mqtt_port, probe_seq))
        return bool(query(s, "SELECT 1 FROM telemetry WHERE device_id = 'DOOR0001' LIMIT 1"))

    wait_until(probe_stored, 30, "ingest to store a probe message")
    yield p
    p.stop_all()
    del METRICS_PORTS[id(p)]


def gateway_counter(pipeline: Pipeline, name: str, **labels: str) -> float:
    """Sum of a counter's samples with these labels, read from the gateway's /metrics."""
    port = METRICS_PORTS[id(pipeline)]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _publish_probe(port: int, seq: int) -> None:
    payload = msgspec.json.encode(Telemetry(v=1, seq=seq, ts=seq, motion=False))
    async with aiomqtt.Client("127.0.0.1", port, identifier="probe-DOOR0001") as client:
        await client.publish(topic("DOOR0001", "telemetry"), payload, qos=1)


def sms_to(phone: str) -> object:
    return lambda r: (
        r["provider"] == "sms" and r["address"] == phone and r["outcome"] == "delivered"
    )


def wait_ingest(settings: Settings, device_id: str) -> None:
    wait_until(
        lambda: query(settings, "SELECT 1 FROM telemetry WHERE device_id = %s LIMIT 1", device_id),
        30,
        f"ingest to store a message of {device_id}",
    )


async def test_watch_sos_reaches_the_grid_worker_and_the_ack_shows_on_the_watch(
    pipeline: Pipeline,
) -> None:
    s = pipeline.settings
    watch = Watch3g(WATCH_A, "127.0.0.1", s.gateway_watch_port)
    await watch.connect()
    await watch.heartbeat()
    assert (await watch.wait_for("LK")).content == b"LK"
    # the SOS numbers and the phonebook come from the elder's family contacts
    assert (await watch.wait_for("SOS1")).args == ("13600000001",)
    assert (await watch.wait_for("PHB")).args[0] == "13600000001"
    wait_ingest(s, "WB0001")  # the heartbeat went through: ingest is subscribed

    await watch.alarm(SOS_BIT)  # no GPS fix
    assert (await watch.wait_for("AL")).content == b"AL"
    await watch.wait_for("CR")  # locate now, as the alert opens
    gw_sms = pipeline.wait_records(sms_to(GRID_WORKER), 1, timeout=30)
    alerts = query(s, "SELECT id, kind, severity FROM alerts WHERE elder_id = 'E0001'")
    assert [(a[1], a[2]) for a in alerts] == [("sos", "critical")]

    link = link_in_sms(gw_sms[0])
    async with httpx.AsyncClient(timeout=5) as client:
        ack = await client.post(link, data={"action": "acknowledge"})
    assert ack.status_code == 200, ack.text
    message = await watch.wait_for("MESSAGE", timeout=30)
    text = bytes.fromhex(message.args[0]).decode("utf-16-be")
    assert text.startswith("已有人前来帮助")
    await watch.close()


async def test_watch_logged_in_as_a_cannot_speak_for_b(pipeline: Pipeline) -> None:
    s = pipeline.settings
    watch = Watch3g(WATCH_A, "127.0.0.1", s.gateway_watch_port)
    await watch.connect()
    await watch.heartbeat()
    await watch.wait_for("LK")
    wait_ingest(s, "WB0001")
    await watch.send("LK,1,0,50", device_id=WATCH_B)
    await watch.alarm(SOS_BIT)  # after the refused frame, on the same connection
    assert await watch.closed_by_server()
    assert gateway_counter(pipeline, "carewatch_gateway_rejects_total", reason="impersonation") == 1
    # an unknown id is refused too
    stranger = Watch3g("9999999999", "127.0.0.1", s.gateway_watch_port)
    await stranger.connect()
    await stranger.heartbeat()
    assert await stranger.closed_by_server()
    assert (
        gateway_counter(pipeline, "carewatch_gateway_rejects_total", reason="unknown_device") >= 1
    )
    assert query(s, "SELECT count(*) FROM telemetry WHERE device_id = 'WB0003'") == [(0,)]
    assert query(s, "SELECT count(*) FROM alerts") == [(0,)]


async def test_iw_watch_fall_opens_a_fall_alert_with_its_confirmation_window(
    pipeline: Pipeline,
) -> None:
    s = pipeline.settings
    watch = IwWatch(IW_IMEI, "127.0.0.1", s.gateway_iw_port)
    await watch.connect()
    login = await watch.login()
    assert re.fullmatch(rb"IWBP00,\d{14},8", login), login
    assert await watch.heartbeat() == b"IWBP03"
    wait_ingest(s, "WB0002")
    assert await watch.alarm("05") == b"IWBP10"
    wait_until(
        lambda: (
            query(s, "SELECT status FROM alerts WHERE elder_id = 'E0002' AND kind = 'fall'")
            == [("pending",)]
        ),
        20,
        "a pending fall alert (confirmation window)",
    )
    # nobody cancels: confirmed after the window, as for a native wristband
    wait_until(
        lambda: (
            query(s, "SELECT status FROM alerts WHERE elder_id = 'E0002' AND kind = 'fall'")
            == [("open",)]
        ),
        20,
        "the fall alert confirmed",
    )
    pipeline.wait_records(sms_to(GRID_WORKER), 1, timeout=30)
    await watch.close()


async def test_ctwing_smoke_push_alerts_once_and_a_malformed_push_is_kept(
    pipeline: Pipeline,
) -> None:
    s = pipeline.settings
    pusher = CtwingPusher(f"http://127.0.0.1:{s.gateway_http_port}/ctwing")
    body = ctwing_data_report(
        SMOKE_IMEI, "15000001", {"smoke_state": 1, "battery_value": 87}, packet_sn=17
    )
    assert await pusher.push(body) == 200
    assert await pusher.push(body) == 200  # the platform delivers it again
    pipeline.wait_records(sms_to(GRID_WORKER), 1, timeout=30)
    alerts = query(s, "SELECT kind, severity FROM alerts WHERE elder_id = 'E0001'")
    assert alerts == [("smoke", "critical")]
    # one event row and one telemetry row: the second copy was a duplicate for ingest
    wait_until(
        lambda: query(s, "SELECT count(*) FROM telemetry WHERE device_id = 'SMK0001'") == [(2,)],
        10,
        "the push's event and telemetry rows",
    )

    assert await pusher.push(b'{"messageType": "dataReport", "IMEI": ') == 200
    wait_until(
        lambda: (
            query(s, "SELECT reason FROM dead_letters WHERE topic = 'gateway/ctwing'")
            == [("malformed_json",)]
        ),
        10,
        "the malformed push in dead_letters",
    )
    assert (
        gateway_counter(
            pipeline, "carewatch_gateway_rejects_total", protocol="ctwing", reason="malformed_json"
        )
        == 1
    )
    # the next good push still goes through
    later = ctwing_data_report(SMOKE_IMEI, "15000001", {"battery_value": 55}, packet_sn=18)
    assert await pusher.push(later) == 200
    wait_until(
        lambda: (
            query(
                s,
                "SELECT count(*) FROM telemetry WHERE device_id = 'SMK0001'"
                " AND data->>'battery' = '55'",
            )
            == [(1,)]
        ),
        10,
        "the next push stored",
    )
    assert query(s, "SELECT battery FROM devices WHERE id = 'SMK0001'") == [(55,)]


async def test_onenet_verification_and_signed_pushes(pipeline: Pipeline) -> None:
    s = pipeline.settings
    pusher = OneNetPusher(f"http://127.0.0.1:{s.gateway_http_port}/onenet", TOKEN)
    right = await pusher.verify()
    assert right.status_code == 200 and right.text == right.request.url.params["msg"]
    assert (await pusher.verify(token="wrong-token")).status_code == 403

    point = onenet_datapoint(GAS_DEV_ID, "gas_alarm", 1)
    assert await pusher.push(point, signature="AAAAAAAAAAAAAAAAAAAAAA==") == 403
    assert gateway_counter(pipeline, "carewatch_gateway_rejects_total", reason="bad_signature") == 2
    assert query(s, "SELECT count(*) FROM telemetry WHERE device_id = 'GAS0001'") == [(0,)]

    assert await pusher.push(point) == 200
    wait_until(
        lambda: (
            query(s, "SELECT kind, severity FROM alerts WHERE elder_id = 'E0002'")
            == [("gas", "critical")]
        ),
        20,
        "a critical gas alert",
    )
