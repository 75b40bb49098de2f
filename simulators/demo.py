"""`carewatch demo`: a generated street, every worker, three scripted scenarios, printed.

Runs everything in this one process (workers, fake SMS/WeCom providers, simulated
devices) against the configured PostgreSQL, Redis and Mosquitto, and prints what happened
to each alert: who was notified on which channel at which step, the acknowledgement,
and the latency from the device's press to the SMS provider's request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import httpx
import msgspec
import psycopg
import uvicorn
from psycopg.rows import dict_row

from carewatch.db.migrate import migrate
from carewatch.logs import JsonFormatter, mask_phone
from carewatch.messages import DeviceEvent, EventType, Telemetry
from carewatch.settings import Settings
from carewatch.topics import topic
from simulators.fake_providers.records import link_at_end

DISTRICT = "渝中区"
OUT = Path("var/demo")
T = TypeVar("T")


def say(text: str = "") -> None:
    print(text, flush=True)


class Band:
    """The demo's wristband: a device clock and a sequence number that never repeats."""

    def __init__(self, client: aiomqtt.Client, device_id: str) -> None:
        self.client = client
        self.device_id = device_id
        self.seq = time.time_ns() // 1_000_000

    async def event(self, kind: EventType) -> int:
        self.seq += 1
        ts = time.time_ns() // 1_000_000
        body = msgspec.json.encode(DeviceEvent(v=1, seq=self.seq, ts=ts, type=kind))
        await self.client.publish(topic(self.device_id, "event"), body, qos=1)
        return ts

    async def telemetry(self) -> None:
        self.seq += 1
        body = msgspec.json.encode(
            Telemetry(v=1, seq=self.seq, ts=time.time_ns() // 1_000_000, hr=76, worn=True)
        )
        await self.client.publish(topic(self.device_id, "telemetry"), body, qos=1)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise TimeoutError(f"demo: gave up after {timeout:.0f}s waiting for {what}")


class Demo:
    def __init__(self, settings: Settings, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        self.s = settings
        self.conn = conn
        self.http = httpx.AsyncClient(timeout=5)
        self.fake = settings.aliyun_sms_endpoint.rsplit("/aliyun-sms/", 1)[0]

    async def rows(self, sql: str, *args: object) -> list[dict[str, Any]]:
        cur = await self.conn.execute(sql, args)
        return await cur.fetchall()

    async def records(self) -> list[dict[str, Any]]:
        data = (await self.http.get(f"{self.fake}/_records")).json()
        return list(data["records"] if isinstance(data, dict) else data)

    async def alert_for(self, elder_id: str, kind: str, since_ms: int) -> dict[str, Any] | None:
        found = await self.rows(
            "SELECT * FROM alerts WHERE elder_id = %s AND kind = %s"
            " AND device_time >= to_timestamp(%s / 1000.0) ORDER BY opened_at DESC LIMIT 1",
            elder_id,
            kind,
            since_ms,
        )
        return found[0] if found else None

    async def notifications(self, alert_id: object) -> list[dict[str, Any]]:
        return await self.rows(
            "SELECT step, purpose, channel, recipient_kind, recipient_name, address, status,"
            " sent_at, params FROM notifications WHERE alert_id = %s ORDER BY id",
            alert_id,
        )

    def print_notifications(self, rows: list[dict[str, Any]], t0_ms: int) -> None:
        for n in rows:
            at = (n["sent_at"].timestamp() * 1000 - t0_ms) / 1000 if n["sent_at"] else None
            when = f"+{at:6.2f}s" if at is not None else "   (not sent)"
            say(
                f"  {when}  step {n['step']}  {n['purpose']:<7} {n['channel']:<8} "
                f"{n['recipient_kind']:<12} {n['recipient_name']} {mask_phone(n['address'])}"
                f"  [{n['status']}]"
            )


async def _serve(app: Any, port: int, stop: asyncio.Event) -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


def demo_settings(settings: Settings, escalation_wait: float) -> Settings:
    # the demo owns its database (<name>_demo), recreated every run: it never touches yours
    dbname = psycopg.conninfo.conninfo_to_dict(settings.database_url).get("dbname") or "carewatch"
    return settings.model_copy(
        update={
            "database_url": psycopg.conninfo.make_conninfo(
                settings.database_url, dbname=f"{dbname}_demo"
            ),
            "escalation_wait_s": escalation_wait,
            "fall_confirm_window_s": 5.0,
            "sos_cancel_window_s": 5.0,
        }
    )


def recreate_database(dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        ident = psycopg.sql.Identifier(str(name))
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(ident))


def prepare(s: Settings) -> bool:
    """Logs to a file, schema, and a freshly generated street imported into the registry."""
    from registry.importer import import_files
    from simulators.street import generate_street, write_ledger

    OUT.mkdir(parents=True, exist_ok=True)
    log_file = OUT / "workers.log"
    handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]

    say(f"carewatch demo — a generated street in {DISTRICT} (worker logs: {log_file})")
    recreate_database(s.database_url)
    applied = migrate(s.database_url)
    name = psycopg.conninfo.conninfo_to_dict(s.database_url).get("dbname")
    say(f"[setup] fresh database {name} ({len(applied)} migrations)")
    plan = Path(str(resources.files("simulators") / "data" / "chongqing_facility_plan.csv"))
    street = generate_street(plan, DISTRICT, 60, 1)
    files = write_ledger(street, OUT / "ledger")
    report = import_files(s.database_url, files)
    if report.errors:
        for err in report.errors[:20]:
            say(f"[setup] ledger error: {err}")
        return False
    say(f"[setup] ledger imported from {OUT / 'ledger'}: {report}")
    from notifier.check import run_check

    check = asyncio.run(run_check(s, None, 7))  # what `carewatch notifier check` says
    verdict = "every elder reached" if check.ok else f"{len(check.unreached)} unreached"
    say(f"[setup] notifier check over the next 7 days: {verdict}")
    return True


async def run_demo(
    s: Settings, play: Callable[[Demo, Settings], Awaitable[T]], *, push_reports: bool = False
) -> T:
    """Every worker and the fake providers (pushing receipts with `push_reports`) in this
    process while `play` runs against them."""
    from carewatch.runall import run as run_all
    from simulators.fake_providers.server import create_app

    stop = asyncio.Event()
    fake_port = int(s.aliyun_sms_endpoint.split(":")[2].split("/")[0])
    app = create_app(s, OUT / "provider-requests.jsonl", push_reports=push_reports)
    tasks = [
        asyncio.create_task(_serve(app, fake_port, stop)),
        asyncio.create_task(run_all(s, stop)),
    ]
    try:
        async with await psycopg.AsyncConnection.connect(
            s.database_url, autocommit=True, row_factory=dict_row
        ) as conn:
            demo = Demo(s, conn)
            await wait_for(demo_ready(demo, fake_port), 30, "fake providers")
            return await play(demo, s)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def demo_ready(demo: Demo, port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await demo.http.get(f"http://127.0.0.1:{port}/_stats")
            return True
        except httpx.HTTPError:
            return False

    return check


async def await_ingest(demo: Demo, probe: Band) -> None:
    """Until ingest stores the probe band's telemetry (the workers are up)."""

    async def ingest_ready() -> bool:
        await probe.telemetry()
        rows = await demo.rows(
            "SELECT 1 FROM telemetry WHERE device_id = %s LIMIT 1", probe.device_id
        )
        return bool(rows)

    await wait_for(ingest_ready, 30, "ingest to store the first telemetry")


async def scenarios(demo: Demo, s: Settings) -> int:
    elders = await demo.rows(
        "SELECT e.id, e.name, d.id AS band FROM elders e JOIN devices d ON d.elder_id = e.id"
        " AND d.kind = 'wristband' ORDER BY e.id LIMIT 3"
    )
    async with aiomqtt.Client(
        s.mqtt_host, s.mqtt_port, identifier="carewatch-demo-devices"
    ) as mqtt:
        bands = {e["id"]: Band(mqtt, e["band"]) for e in elders}
        await await_ingest(demo, bands[elders[2]["id"]])
        say("[setup] workers running: ingest, rules, notifier, ack server; fake providers up")

        latencies = [await sos_scenario(demo, s, elders[0], bands[elders[0]["id"]])]
        await fall_cancel_scenario(demo, elders[1], bands[elders[1]["id"]])
        latencies.append(await fall_scenario(demo, s, elders[1], bands[elders[1]["id"]]))
    say()
    say("Latency, device press -> first SMS request at the provider:")
    say(f"  SOS:  {latencies[0]:.0f} ms")
    say(f"  fall: {latencies[1]:.0f} ms (includes the {s.fall_confirm_window_s:.0f} s window)")
    return 0


async def first_sms_ms(demo: Demo, address: str, after_ms: int) -> int:
    async def found() -> int | None:
        for r in await demo.records():
            if r["provider"] == "sms" and r["address"] == address and r["received_ms"] >= after_ms:
                return int(r["received_ms"])
        return None

    return int(await wait_for(found, 30, f"an SMS to {mask_phone(address)}"))


async def sos_scenario(demo: Demo, s: Settings, elder: dict[str, Any], band: Band) -> float:
    say()
    say(
        f"Scenario 1 — {elder['name']} presses SOS on wristband {band.device_id}; nobody answers at first"
    )
    t0 = await band.event("sos")
    alert = await wait_for(lambda: demo.alert_for(elder["id"], "sos", t0), 20, "the SOS alert")
    say(
        f"  alert {str(alert['id'])[:8]} opened: {alert['kind']} / {alert['severity']} (rule {alert['rule']})"
    )
    grid_worker = (
        await demo.rows(
            "SELECT gw.name, gw.phone FROM grid_workers gw JOIN elders e ON e.grid_id = gw.grid_id"
            " WHERE e.id = %s",
            elder["id"],
        )
    )[0]
    sms_ms = await first_sms_ms(demo, grid_worker["phone"], t0)
    text = next(r["text"] for r in await demo.records() if r["received_ms"] == sms_ms)
    say(f"  SMS received by the grid worker: {text}")

    async def step(n: int) -> bool:
        rows = await demo.notifications(alert["id"])
        return any(r["step"] >= n and r["status"] in ("sent", "delivered") for r in rows)

    await wait_for(lambda: step(1), s.escalation_wait_s + 20, "escalation step 1")
    link = link_at_end(text)
    if link is None:
        raise RuntimeError(f"no ack link at the end of the grid worker's SMS: {text}")
    say(f"  {grid_worker['name']} (grid worker) opens the link in the SMS and presses 我来处理")
    response = await demo.http.post(link, data={"action": "acknowledge"})
    say(f"  ack -> HTTP {response.status_code}")

    async def handled() -> bool:
        return any(
            r["purpose"] == "handled" and r["status"] in ("sent", "delivered")
            for r in await demo.notifications(alert["id"])
        )

    await wait_for(handled, 20, "the 'handled' messages")
    await asyncio.sleep(s.escalation_wait_s * 1.5)  # show that no further step fires
    demo.print_notifications(await demo.notifications(alert["id"]), t0)
    final = (
        await demo.rows("SELECT status, acknowledged_by FROM alerts WHERE id = %s", alert["id"])
    )[0]
    esc = await demo.rows(
        "SELECT step, stopped_reason FROM escalations WHERE alert_id = %s", alert["id"]
    )
    say(
        f"  alert is {final['status']} by {final['acknowledged_by']}; escalation stopped after "
        f"step {esc[0]['step'] if esc else '?'} ({esc[0]['stopped_reason'] if esc else '?'})"
    )
    replay = await demo.http.post(link, data={"action": "acknowledge"})
    say(f"  the same link replayed -> HTTP {replay.status_code} (refused)")
    return float(sms_ms - t0)


async def fall_cancel_scenario(demo: Demo, elder: dict[str, Any], band: Band) -> None:
    say()
    say(
        f"Scenario 2 — {elder['name']}'s wristband reports a fall; 'I'm OK' is pressed within the window"
    )
    t0 = await band.event("fall")
    alert = await wait_for(lambda: demo.alert_for(elder["id"], "fall", t0), 20, "the fall alert")
    say(f"  alert {str(alert['id'])[:8]} {alert['status']} (confirmation window)")
    await band.event("fall_cancel")

    async def cancelled() -> bool:
        rows = await demo.rows("SELECT status FROM alerts WHERE id = %s", alert["id"])
        return bool(rows[0]["status"] == "cancelled")

    await wait_for(cancelled, 20, "the cancellation")
    n = len(await demo.notifications(alert["id"]))
    say(f"  alert cancelled and recorded; notifications sent: {n}")


async def fall_scenario(demo: Demo, s: Settings, elder: dict[str, Any], band: Band) -> float:
    say()
    say(f"Scenario 3 — {elder['name']} falls and does not cancel")
    t0 = await band.event("fall")
    alert = await wait_for(lambda: demo.alert_for(elder["id"], "fall", t0), 20, "the fall alert")
    grid_worker = (
        await demo.rows(
            "SELECT gw.phone FROM grid_workers gw JOIN elders e ON e.grid_id = gw.grid_id"
            " WHERE e.id = %s",
            elder["id"],
        )
    )[0]
    sms_ms = await first_sms_ms(demo, grid_worker["phone"], t0)
    final = (await demo.rows("SELECT status, confirmed_at FROM alerts WHERE id = %s", alert["id"]))[
        0
    ]
    say(f"  confirmed after the {s.fall_confirm_window_s:.0f} s window; alert is {final['status']}")
    demo.print_notifications(await demo.notifications(alert["id"]), t0)
    return float(sms_ms - t0)


def ports_taken(s: Settings) -> list[str]:
    """The ports the demo must listen on that something else already holds, described
    for the user: with one taken, a server of the demo would fail in the background
    (its error only in workers.log) and the demo wait for it until a timeout."""
    fake_port = int(s.aliyun_sms_endpoint.split(":")[2].split("/")[0])
    wanted = [
        ("fake SMS/WeCom providers", "CAREWATCH_ALIYUN_SMS_ENDPOINT", "127.0.0.1", fake_port),
        ("ack server", "CAREWATCH_ACK_PORT", s.ack_host, s.ack_port),
        ("operator API", "CAREWATCH_OPERATOR_PORT", s.operator_host, s.operator_port),
        ("provider callbacks", "CAREWATCH_CALLBACKS_PORT", s.callbacks_host, s.callbacks_port),
        ("metrics", "CAREWATCH_METRICS_PORT", s.metrics_host, s.metrics_port),
    ]
    taken = []
    for what, setting, host, port in wanted:
        if not port:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                probe.bind((host, port))
            except OSError as exc:
                taken.append(
                    f"port {port} on {host} ({what}) is not free: {exc.strerror}. Stop what"
                    f" listens there (ss -ltnp 'sport = :{port}') or set {setting}."
                )
    return taken


def main(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "scenario", "street") == "night-sos":
        from simulators.demo_night import main as night_main

        return night_main(settings, args)
    s = demo_settings(settings, args.escalation_wait or 3.0)
    if not ports_free(s) or not prepare(s):
        return 1
    return asyncio.run(run_demo(s, scenarios))


def ports_free(s: Settings) -> bool:
    """Whether every port the demo listens on is free; says which is not."""
    taken = ports_taken(s)
    for problem in taken:
        say(f"[setup] {problem}")
    return not taken
