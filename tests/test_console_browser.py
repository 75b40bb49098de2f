"""The dispatcher console in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium), against real workers.

1. An SOS pressed on a wristband travels MQTT -> ingest -> rules -> PostgreSQL and
   appears in the open console's queue without a reload, with a sound; the dispatcher
   opens the card (map without tiles, what the ledger lacks), dispatches the grid worker
   (派单: the fake provider gets his SMS), adds a note, logs a call, resolves it with a
   category, reopens it, takes it over asking the others to stay away (接手) and closes
   it as a false alarm (refused without a reason); the timeline shows each step; the
   报表 view shows the district's area report and its CSV/XLSX downloads. Screenshots at 1366x768 and 390x844 are saved (under
   CAREWATCH_SCREENSHOT_DIR when set, else the test's tmp dir) and checked.
2. Scope: a 江北区 dispatcher's console shows nothing of 渝中区 in the queue (live
   included), the search or the alert pages.

The operator API runs as its own `carewatch operator-api` process: Selenium's calls
block, so it cannot share the test's event loop. Skipped, with the reason, only when
chromium or its driver is missing (CI installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import aiomqtt
import msgspec
import psycopg
import pytest

from carewatch.messages import DeviceEvent, Telemetry
from carewatch.settings import Settings
from carewatch.topics import topic
from harness.pipeline import Pipeline, with_fake_providers
from harness.services import free_port, wait_port, wait_until
from operator_api.console_map import wgs84_to_gcj02
from operator_api.tokens import create_token
from registry.importer import import_files
from tests.ledger import write_ledger
from tests.operator_support import A1, A3, seed

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
    ),
]

DESKTOP = (1366, 768)
PHONE = (390, 844)
# Press to queue on this shared, loaded machine; the time is printed and reported.
QUEUE_DEADLINE_S = 10.0


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CAREWATCH_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--hide-scrollbars",
        "--autoplay-policy=no-user-gesture-required",  # the alert sound, without a click
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: object, width: int, height: int) -> None:
    """Make the page's viewport exactly width x height (the window has a frame)."""
    drv: object = driver
    drv.set_window_size(width, height)  # type: ignore[attr-defined]
    inner = drv.execute_script("return [window.innerWidth, window.innerHeight]")  # type: ignore[attr-defined]
    drv.set_window_size(width * 2 - inner[0], height * 2 - inner[1])  # type: ignore[attr-defined]

    def exact() -> bool:
        got = drv.execute_script("return [window.innerWidth, window.innerHeight]")  # type: ignore[attr-defined]
        return list(got) == [width, height]

    wait_until(exact, 10, f"a {width}x{height} viewport")


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def shoot(driver: object, folder: Path, name: str, size: tuple[int, int]) -> Path:
    path = folder / name
    assert driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    width, height, values = png_facts(path.read_bytes())
    assert (width, height) == size, f"{name}: {width}x{height}"
    assert values > 40, f"{name}: a nearly blank screenshot ({values} byte values)"
    return path


def text_of(driver: object, css: str) -> str:
    """The rendered text of what `css` selects, read in one go (the page re-renders live)."""
    text: str = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.innerText).join('\\n')",
        css,
    )
    return text


# what a live re-render can briefly cause between finding an element and using it
def _transient() -> tuple[type[Exception], ...]:
    from selenium.common.exceptions import (
        ElementNotInteractableException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    return StaleElementReferenceException, ElementNotInteractableException, NoSuchElementException


def click(driver: object, css: str) -> None:
    """Click like a person; a live re-render between finding and clicking is retried."""
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()  # type: ignore[attr-defined]
        except _transient():
            return False
        return True

    wait_until(clicked, 10, f"a click on {css}")


def type_into(driver: object, css: str, text: str) -> None:
    """Type into a field; retried (after clearing it) when a live re-render interferes."""
    from selenium.webdriver.common.by import By

    def typed() -> bool:
        try:
            field = driver.find_element(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]
            field.clear()
            field.send_keys(text)
        except _transient():
            return False
        return True

    wait_until(typed, 10, f"typing into {css}")


def select(driver: object, css: str, value: str) -> None:
    """Choose an option of a <select> by value; retried like a click."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    def chosen() -> bool:
        try:
            Select(driver.find_element(By.CSS_SELECTOR, css)).select_by_value(value)  # type: ignore[attr-defined]
        except _transient():
            return False
        return True

    wait_until(chosen, 10, f"choosing {value} in {css}")


def press(settings: Settings, device_id: str, kind: str) -> None:
    """A wristband publishes a device event (or telemetry) over MQTT, as the device does."""
    seq = ts = time.time_ns() // 1_000_000
    if kind == "telemetry":
        body = msgspec.json.encode(Telemetry(v=1, seq=seq, ts=ts, hr=72, battery=80, worn=True))
        subtopic = "telemetry"
    else:
        body = msgspec.json.encode(DeviceEvent(v=1, seq=seq, ts=ts, type=kind))  # type: ignore[arg-type]
        subtopic = "event"

    async def send() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", settings.mqtt_port, identifier=f"dev-{device_id}"
        ) as client:
            await client.publish(topic(device_id, subtopic), body, qos=1)  # type: ignore[arg-type]

    asyncio.run(send())


def query(dsn: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    s = with_fake_providers(settings).model_copy(
        update={"operator_port": free_port(), "sos_cancel_window_s": 1.0, "escalation_wait_s": 60.0}
    )
    report = import_files(s.database_url, write_ledger(tmp_path / "ledger"))
    assert not report.errors, report.errors
    with psycopg.connect(s.database_url) as conn:  # 医疗与照护需求, all but 用药
        conn.execute(
            "INSERT INTO elder_care_notes (elder_id, allergies, mobility, key_holder_name,"
            " key_holder_phone) VALUES ('E0001', '青霉素过敏', '轮椅', '赵桂兰', '13500000001')"
        )
    p = Pipeline(s, tmp_path)
    for name in ("fake-providers", "notifier", "rules", "ingest", "operator-api"):
        p.start(name)
    wait_port(s.operator_port, 30)  # five workers start at once on a shared machine

    def probe_stored() -> bool:  # ingest is ready once it stores a probe
        p.assert_running()
        press(s, "WB0002", "telemetry")
        return bool(query(s.database_url, "SELECT 1 FROM telemetry WHERE device_id = 'WB0002'"))

    wait_until(probe_stored, 30, "ingest to store a probe message")
    yield p
    p.stop_all()


def test_sos_reaches_the_console_live_and_is_resolved_with_a_category(
    pipeline: Pipeline, browser: object, tmp_path: Path
) -> None:
    s = pipeline.settings
    base = f"http://127.0.0.1:{s.operator_port}"
    token = create_token(s.database_url, "operator", "op-yz", "渝中区")
    drv: object = browser
    drv.get(f"{base}/console?token={token}")  # type: ignore[attr-defined]
    viewport(drv, *DESKTOP)
    wait_until(
        lambda: drv.execute_script("return document.body.dataset.live") == "1",  # type: ignore[attr-defined]
        20,
        "the console's live stream",
    )
    assert "/console?token" not in drv.current_url  # type: ignore[attr-defined]
    loaded_from_elsewhere = drv.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(r => r.name)"
        ".filter(u => !u.startsWith(location.origin))"
    )
    assert loaded_from_elsewhere == []  # no CDN, fonts or tiles: it works offline
    wait_until(lambda: "暂无待处理告警" in text_of(drv, "#queue"), 10, "the empty queue")
    drv.execute_script("window.__sameDocument = 42")  # type: ignore[attr-defined]

    pressed = time.time()
    press(s, "WB0001", "sos")
    wait_until(lambda: "王秀英" in text_of(drv, "#queue"), QUEUE_DEADLINE_S, "the SOS in the queue")
    on_screen = time.time()
    # no reload: the same document, and it rang
    assert drv.execute_script("return window.__sameDocument") == 42  # type: ignore[attr-defined]
    assert int(drv.execute_script("return document.body.dataset.sounds || 0")) >= 1  # type: ignore[attr-defined]
    ((alert_id, opened_at),) = query(
        s.database_url, "SELECT id::text, opened_at FROM alerts WHERE elder_id = 'E0001'"
    )
    first_seen_ms = drv.execute_script(  # type: ignore[attr-defined]
        "return window.cwConsole.firstSeen[arguments[0]]", alert_id
    )
    created_to_shown = first_seen_ms / 1000 - opened_at.timestamp()  # type: ignore[attr-defined]
    print(
        f"\nSOS press -> console queue: {on_screen - pressed:.3f} s (polled);"
        f" alert row created -> shown: {created_to_shown * 1000:.0f} ms"
    )
    queue_text = text_of(drv, "#queue")
    assert "紧急呼叫" in queue_text and "七星岗街道金汤街12号3-2" in queue_text

    # the card: address, care profile, family with tel: links, devices, notifications
    click(drv, f'li.alert[data-alert-id="{alert_id}"]')
    wait_until(lambda: "家属及紧急联系人" in text_of(drv, "#detail"), 10, "the alert card")
    # the notifier's sends show up in the open card as they happen (the stream)
    wait_until(lambda: "已发送" in text_of(drv, "#notifications"), 20, "a sent notification")
    card = text_of(drv, "#detail")
    for expected in ("王秀英", "七星岗街道金汤街12号3-2", "张伟（儿子）", "手环", "WB0001", "短信"):
        assert expected in card, expected
    tels = set(
        drv.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.querySelectorAll('#detail a.tel')).map(a => a.href)"
        )
    )
    assert {"tel:13600000001", "tel:13600000002", "tel:13700000001"} <= tels
    assert "距下一级升级" in text_of(drv, ".escalation")
    # medical notes and the key holder (a dispatcher dials the full number); what the
    # ledger lacks is named
    needs = text_of(drv, "#care-needs")
    for expected in ("过敏史", "青霉素过敏", "行动能力", "轮椅", "钥匙保管人", "赵桂兰"):
        assert expected in needs, expected
    assert "tel:13500000001" in tels
    assert text_of(drv, "#care-needs-missing").startswith("台账中尚未登记：用药。")
    # the map: Leaflet from the console itself, no tile server configured, so the marker
    # on a plain background and the coordinates as text
    assert drv.execute_script(  # type: ignore[attr-defined]
        "const m = document.getElementById('map');"
        "return m.classList.contains('leaflet-container') && m.classList.contains('no-tiles')"
        " && m.querySelectorAll('path.leaflet-interactive').length === 1"
        " && m.querySelectorAll('img.leaflet-tile').length === 0"
    )
    assert "未配置底图" in text_of(drv, "#map-coords")
    assert "回执" in text_of(drv, "#notifications")
    folder = screenshot_dir(tmp_path)
    shoot(drv, folder, "console-live-sos-1366x768.png", DESKTOP)
    assert "王秀英" in text_of(drv, "#queue") and "老人信息" in text_of(drv, "#detail")

    # dispatch the grid worker with a note for him; he is sent the alert (SMS) himself
    choices = drv.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('#dispatch-person option'))"
        ".map(o => o.textContent)"
    )
    assert "网格员 李建国" in choices, choices
    assert any(c.startswith("家属 张伟（儿子）") for c in choices), choices
    assert any("七星岗街道养老服务中心" in c and "公里" in c for c in choices), choices
    select(drv, "#dispatch-person", "grid_worker:GW01")
    type_into(drv, "#dispatch-note", "请带上轮椅")
    click(drv, "#btn-dispatch")
    wait_until(lambda: text_of(drv, "#alert-status") == "处理中", 10, "dispatched")
    wait_until(
        lambda: "派单给 网格员 李建国" in text_of(drv, "#timeline"), 10, "派单 on the timeline"
    )
    assert "已派单：网格员 李建国" in text_of(drv, "#action-msg")

    def dispatch_sms_out_id() -> str | None:
        rows = query(
            s.database_url,
            "SELECT out_id FROM notifications WHERE alert_id = %s AND step = -1"
            " AND recipient_kind = 'grid_worker' AND recipient_id = 'GW01' AND channel = 'sms'"
            " AND status IN ('sent', 'delivered') AND out_id IS NOT NULL",
            alert_id,
        )
        return str(rows[0][0]) if rows else None

    wait_until(lambda: dispatch_sms_out_id() is not None, 20, "the dispatch SMS sent")
    out_id = dispatch_sms_out_id()
    (sms,) = pipeline.wait_records(lambda r: r["provider"] == "sms" and r["out_id"] == out_id, 1)
    assert sms["address"] == "13700000001" and sms["outcome"] == "delivered"
    wait_until(
        lambda: "派单通知" in text_of(drv, "#timeline"), 10, "the dispatch send on the timeline"
    )
    shoot(drv, folder, "console-dispatched-1366x768.png", DESKTOP)
    # note the call, resolve it as 送医
    type_into(drv, "#note-text", "已电话联系儿子张伟，正赶往现场")
    click(drv, "#btn-note")
    wait_until(lambda: "正赶往现场" in text_of(drv, "#timeline"), 10, "the note on the timeline")
    # a phone call to the son, answered
    select(drv, "#call-callee", "张伟（儿子）")
    click(drv, '#call-form input[value="answered"]')
    type_into(drv, "#call-note", "儿子已出发")
    click(drv, "#btn-call")
    wait_until(lambda: "儿子已出发" in text_of(drv, "#timeline"), 10, "the call on the timeline")
    assert "致电 张伟（儿子）：接通" in text_of(drv, "#timeline")
    click(drv, '#resolve-form input[value="hospital"]')
    type_into(drv, "#resolve-note", "120 送医")
    click(drv, "#btn-resolve")
    wait_until(lambda: text_of(drv, "#alert-status") == "已解决", 10, "resolved")
    wait_until(lambda: "王秀英" not in text_of(drv, "#queue"), 10, "the queue to drop it")
    steps = drv.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('#timeline li')).map(li => li.dataset.action)"
    )
    for step in ("opened", "notified", "acknowledged", "note", "resolved"):
        assert step in steps, (step, steps)
    assert steps.index("opened") < steps.index("acknowledged") < steps.index("resolved")
    timeline = text_of(drv, "#timeline")
    assert "结果：送医" in timeline and "调度员 op-yz" in timeline
    assert query(s.database_url, "SELECT status FROM alerts WHERE id = %s", alert_id) == [
        ("resolved",)
    ]
    shoot(drv, folder, "console-resolved-1366x768.png", DESKTOP)

    # reopened (the family calls back), it is back in the queue, handled
    type_into(drv, "#reopen-note", "家属来电：老人仍感不适")
    click(drv, "#btn-reopen")
    wait_until(lambda: text_of(drv, "#alert-status") == "处理中", 10, "reopened")
    wait_until(lambda: "王秀英" in text_of(drv, "#queue"), 10, "the queue to show it again")
    # the operator takes it over and asks the others to stay away
    click(drv, "#take-over-stand-down")
    type_into(drv, "#take-over-note", "调度员已联系家属处理")
    click(drv, "#btn-take-over")
    wait_until(lambda: "已请其他人停止前往" in text_of(drv, "#timeline"), 10, "the take-over")
    assert "调度员已联系家属处理" in text_of(drv, "#timeline")
    # a false alarm is refused without a reason, then closes it with one
    click(drv, '#resolve-form input[value="false_alarm"]')
    click(drv, "#btn-resolve")
    wait_until(lambda: "须选择误报原因" in text_of(drv, "#action-msg"), 10, "the refusal")
    assert text_of(drv, "#alert-status") == "处理中"
    select(drv, "#false-alarm-reason", "elder_fine")
    click(drv, "#btn-resolve")
    wait_until(lambda: text_of(drv, "#alert-status") == "误报", 10, "closed as a false alarm")
    steps = drv.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('#timeline li')).map(li => li.dataset.action)"
    )
    order = [
        "opened",
        "acknowledged",
        "note",
        "call",
        "resolved",
        "reopened",
        "acknowledged",
        "false_alarm",
    ]
    assert [a for a in steps if a in order] == order, steps
    assert "误报原因：已核实老人无事" in text_of(drv, "#timeline")

    # a phone-sized window: one column, the same content, readable
    viewport(drv, *PHONE)
    assert drv.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]  # type: ignore[attr-defined]
    assert "应急调度台" in text_of(drv, "header")
    assert "误报" in text_of(drv, "#alert-status") and "重新打开" in text_of(drv, "#timeline")
    shoot(drv, folder, "console-closed-390x844.png", PHONE)

    # 报表: the street and district report of the dispatcher's district, with downloads
    click(drv, "#btn-reports")
    wait_until(lambda: "七星岗街道" in text_of(drv, "#report-table"), 10, "the area report")
    report = text_of(drv, "#report-table")
    assert "渝中区" in report and "合计" in report and "江北区" not in report
    assert drv.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]  # type: ignore[attr-defined]
    shoot(drv, folder, "console-reports-390x844.png", PHONE)
    downloads = drv.execute_async_script(  # type: ignore[attr-defined]
        "const done = arguments[arguments.length - 1];"
        "Promise.all(['#report-csv', '#report-xlsx'].map(id =>"
        " fetch(document.querySelector(id).href).then(r =>"
        " r.arrayBuffer().then(b => [r.status, r.headers.get('content-type'), b.byteLength]))))"
        ".then(done)"
    )
    (csv_status, csv_type, csv_size), (xlsx_status, xlsx_type, xlsx_size) = downloads
    assert csv_status == 200 and csv_type.startswith("text/csv") and csv_size > 0
    assert xlsx_status == 200 and "spreadsheetml" in xlsx_type and xlsx_size > 0
    viewport(drv, *DESKTOP)
    assert "下载 Excel" in text_of(drv, "#detail")
    shoot(drv, folder, "console-reports-1366x768.png", DESKTOP)


def _open_alert(dsn: str, elder: str, kind: str) -> str:
    alert_id = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (id, elder_id, kind, severity, status, source_event_id,"
            " device_time, rule) VALUES (%s, %s, %s, 'critical', 'open', %s, now(), %s)",
            (alert_id, elder, kind, f"test:{alert_id}", kind),
        )
    return alert_id


@contextlib.contextmanager
def tile_server() -> Iterator[tuple[str, list[str]]]:
    """A local XYZ tile server (every tile the same PNG): (its URL template, paths asked)."""
    tile = (
        resources.files("operator_api") / "static/vendor/leaflet/images/layers.png"
    ).read_bytes()
    asked: list[str] = []

    class Tiles(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/amap/{{z}}/{{x}}/{{y}}.png", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_district_dispatcher_sees_nothing_of_another(
    db_dsn: str, settings: Settings, browser: object, tmp_path: Path
) -> None:
    """Also: a configured GCJ-02 tile server (local, standing in for AMap) is allowed by
    the page's CSP, its tiles load and the marker sits at the converted position."""
    seed(db_dsn)
    token = create_token(db_dsn, "operator", "op-jb", "江北区")
    tiles = contextlib.ExitStack()
    tile_url, asked = tiles.enter_context(tile_server())
    s = settings.model_copy(
        update={
            "operator_port": free_port(),
            "console_tile_url": tile_url,
            "console_tile_crs": "gcj02",
            "console_tile_attribution": "测试底图",
        }
    )
    p = Pipeline(s, tmp_path)
    p.start("operator-api")
    try:
        wait_port(s.operator_port, 30)
        base = f"http://127.0.0.1:{s.operator_port}"
        drv: object = browser
        drv.get(f"{base}/console?token={token}")  # type: ignore[attr-defined]
        viewport(drv, *DESKTOP)
        wait_until(
            lambda: drv.execute_script("return document.body.dataset.live") == "1",  # type: ignore[attr-defined]
            20,
            "the console's live stream",
        )
        wait_until(lambda: "陈淑芬" in text_of(drv, "#queue"), 10, "江北区's open alert")
        click(drv, f'li.alert[data-alert-id="{A3}"]')
        wait_until(
            lambda: (
                drv.execute_script(  # type: ignore[attr-defined]
                    "return document.querySelectorAll('#map img.leaflet-tile-loaded').length"
                )
                > 0
            ),
            10,
            "map tiles from the configured server",
        )
        assert asked and all(path.startswith("/amap/") for path in asked)
        shown = drv.execute_script(  # type: ignore[attr-defined]
            "const m = document.getElementById('map'); return [+m.dataset.lat, +m.dataset.lon]"
        )
        assert shown == pytest.approx(list(wgs84_to_gcj02(29.57, 106.53)))
        assert "已换算" in text_of(drv, "#map-coords") and "测试底图" in text_of(drv, "#map")
        # 渝中区 gets a new alert, then 江北区: once 江北区's shows, 渝中区's would have too
        _open_alert(db_dsn, "E2", "fall")
        _open_alert(db_dsn, "E4", "fall")
        wait_until(lambda: text_of(drv, "#queue").count("陈淑芬") == 2, 10, "the live alert")
        page = drv.page_source  # type: ignore[attr-defined]
        for other in ("张秀英", "李建国", "王桂兰", "民族路", "解放碑"):
            assert other not in page, other
        # the search finds only 江北区's elders
        click(drv, "#tab-search")
        type_into(drv, "#search-q", "张秀英")
        click(drv, "#search-form button")
        wait_until(lambda: "没有找到" in text_of(drv, "#search-note"), 10, "an empty search")
        # filters by care profile and device state (E4: 独居, wristband online)
        type_into(drv, "#search-q", "")
        select(drv, "#search-device", "all_online")
        select(drv, "#search-profile", "alone")
        wait_until(lambda: "陈淑芬" in text_of(drv, "#search-results"), 10, "the filtered elder")
        select(drv, "#search-device", "offline")
        wait_until(lambda: "没有找到" in text_of(drv, "#search-note"), 10, "no offline device")
        grids = text_of(drv, "#search-grid")
        assert "观音桥第一网格" in grids and "解放碑" not in grids
        # another district's alert and elder pages are refused
        statuses = drv.execute_script(  # type: ignore[attr-defined]
            "return Promise.all(arguments[0].map(u => fetch(u).then(r => r.status)))",
            [f"/console/api/alerts/{A1}", "/console/api/elders/E1"],
        )
        assert statuses == [403, 403]
        shoot(drv, screenshot_dir(tmp_path), "console-scope-jiangbei-1366x768.png", DESKTOP)

        # the API documentation renders in the browser with nothing from outside
        drv.get(f"{base}/console/docs")  # type: ignore[attr-defined]
        wait_until(
            lambda: drv.execute_script("return document.body.dataset.ready") == "1",  # type: ignore[attr-defined]
            10,
            "the docs page",
        )
        docs = text_of(drv, "#docs")
        assert "carewatch operator API" in docs and "/api/alerts/{alert_id}" in docs
        external = drv.execute_script(  # type: ignore[attr-defined]
            "return performance.getEntriesByType('resource').map(r => r.name)"
            ".filter(u => !u.startsWith(location.origin))"
        )
        assert external == []
        shoot(drv, screenshot_dir(tmp_path), "api-docs-1366x768.png", DESKTOP)
    finally:
        p.stop_all()
        tiles.close()
