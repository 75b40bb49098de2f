"""Watch gateway under many connections: memory per connection, CPU at one LK a minute,
and SOS latency through the gateway next to a native MQTT press, in the same run.

    .venv/bin/python -m bench.gateway_watches --watches 10000 --seconds 60 --presses 10

Every worker is its own `carewatch` process (harness/pipeline.py), on private services.
The bench opens `--watches` TCP connections to `carewatch gateway watch-tcp`, each
logging in with LK; the gateway's RSS before and after gives memory per connection.
Then every watch sends one LK a minute (spread evenly) for `--seconds`, while SOS
presses alternate between a 3G watch (AL frame with the SOS bit, through the gateway)
and a native wristband (MQTT DeviceEvent), one a second, on distinct elders. Latency is
the bench's press time -> the fake SMS provider's receipt of the grid worker's SMS.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiomqtt
import msgspec
import psycopg

from bench.common import bench_env, percentile, seed_street, table, write_results
from bench.procstat import cpu_seconds, rss_mb
from bench.sos_latency import rows, wait_ready
from bench.traffic import fleet, register_fleet
from carewatch.messages import DeviceEvent
from carewatch.topics import topic
from harness.pipeline import Pipeline, with_fake_providers
from harness.services import free_port, wait_port, wait_until
from notifier.channels.aliyun_sms import out_id_for
from simulators.gateways import SOS_BIT, Watch3g

CONNECT_BATCH = 500


async def connect_all(port: int, imeis: list[str]) -> list[Watch3g]:
    watches: list[Watch3g] = []
    for start in range(0, len(imeis), CONNECT_BATCH):
        batch = [Watch3g(imei, "127.0.0.1", port) for imei in imeis[start : start + CONNECT_BATCH]]
        await asyncio.gather(*(w.connect() for w in batch))
        await asyncio.gather(*(w.heartbeat() for w in batch))
        await asyncio.gather(*(w.wait_for("LK", timeout=60) for w in batch))
        watches += batch
    return watches


async def heartbeats(watches: list[Watch3g], seconds: float) -> int:
    """Each watch one LK a minute, spread evenly; returns how many were sent."""
    per_s = len(watches) / 60
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while (now := loop.time()) - start < seconds:
        due = int((now - start) * per_s) + 1
        while sent < due:
            watch = watches[sent % len(watches)]
            await watch.heartbeat()
            watch.received.clear()
            sent += 1
        await asyncio.sleep(0.01)  # pacing the load, not waiting for anything
    return sent


async def presses(
    settings: Any, gateway_watches: list[Watch3g], native_bands: list[str], interval: float
) -> dict[str, tuple[str, float]]:
    """Alternate SOS presses; returns elder-side device id -> (path, press wall ms)."""
    pressed: dict[str, tuple[str, float]] = {}
    async with aiomqtt.Client("127.0.0.1", settings.mqtt_port, identifier="bench-native") as c:
        for watch, band in zip(gateway_watches, native_bands, strict=False):
            pressed[watch.device_id] = ("gateway", time.time() * 1000)
            await watch.alarm(SOS_BIT)
            await asyncio.sleep(interval / 2)
            now = time.time_ns() // 1_000_000
            pressed[band] = ("native", float(now))
            body = msgspec.json.encode(DeviceEvent(v=1, seq=now, ts=now, type="sos"))
            await c.publish(topic(band, "event"), body, qos=1)
            await asyncio.sleep(interval / 2)
    return pressed


async def load_phase(
    settings: Any,
    fleet_watches: list[Watch3g],
    sos_watches: list[Watch3g],
    native_bands: list[str],
    seconds: float,
) -> tuple[int, dict[str, tuple[str, float]]]:
    beat = asyncio.create_task(heartbeats(fleet_watches, seconds))
    pressed = await presses(settings, sos_watches, native_bands, 1.0)
    return await beat, pressed


def run(watches: int, seconds: float, n_presses: int) -> dict[str, Any]:
    with bench_env(escalation_wait_s=3600.0, log_level="WARNING") as env:
        settings = with_fake_providers(env.settings).model_copy(
            update={
                "gateway_watch_port": free_port(),
                "gateway_max_connections": watches + n_presses + 100,
                "gateway_serve": "watch-tcp",
            }
        )
        seed_street(settings, max(2 * n_presses, 20), env.workdir)
        register_fleet(settings.database_url, fleet(watches, prefix="G"))
        street = [
            r[0]
            for r in rows(
                settings,
                "SELECT id FROM devices WHERE kind = 'wristband' AND id NOT LIKE 'GW%%' ORDER BY id",
            )
        ]
        gateway_bands, native_bands = street[:n_presses], street[n_presses : 2 * n_presses]
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "UPDATE devices SET protocol = 'watch3g', imei = '9' || substr(id, 3)"
                " WHERE id LIKE 'GW%%'"
            )
            for i, band in enumerate(gateway_bands):
                conn.execute(
                    "UPDATE devices SET protocol = 'watch3g', imei = %s WHERE id = %s",
                    (f"77{i:08d}", band),
                )
        imeis = [f"9{i:06d}" for i in range(watches)]
        pipeline = Pipeline(settings, env.workdir)
        try:
            for name in ("fake-providers", "ack-server", "notifier", "rules", "ingest", "gateway"):
                pipeline.start(name)
            wait_port(settings.gateway_watch_port, 30)
            wait_ready(pipeline, street[: 2 * n_presses])
            gateway_pid = pipeline.procs["gateway"].pid
            idle_mb = rss_mb(gateway_pid)

            async def scenario() -> tuple[
                float, int, dict[str, tuple[str, float]], dict[str, float]
            ]:
                t0 = time.monotonic()
                fleet_watches = await connect_all(settings.gateway_watch_port, imeis)
                connect_s = time.monotonic() - t0
                sos = await connect_all(
                    settings.gateway_watch_port, [f"77{i:08d}" for i in range(n_presses)]
                )
                loaded["mb"] = rss_mb(gateway_pid)
                pids = {"gateway": gateway_pid, "ingest": pipeline.procs["ingest"].pid}
                cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
                t1 = time.monotonic()
                sent, pressed = await load_phase(
                    settings, fleet_watches, sos, native_bands, seconds
                )
                wall = time.monotonic() - t1
                cores.update(
                    {name: (cpu_seconds(pid) - cpu0[name]) / wall for name, pid in pids.items()}
                )
                cores["gateway_cpu_s"] = cpu_seconds(gateway_pid) - cpu0["gateway"]
                for w in fleet_watches + sos:
                    await w.close()
                return connect_s, sent, pressed, cores

            loaded: dict[str, float] = {}
            cores: dict[str, float] = {}
            connect_s, sent, pressed, _ = asyncio.run(scenario())
            by_device = {
                band: pressed[imei]
                for imei, band in zip(
                    [f"77{i:08d}" for i in range(n_presses)], gateway_bands, strict=True
                )
            }
            by_device |= {band: pressed[band] for band in native_bands if band in pressed}

            def all_sent() -> bool:
                n = rows(
                    settings,
                    "SELECT count(*) FROM notifications WHERE step = 0 AND channel = 'sms'"
                    " AND recipient_kind = 'grid_worker' AND status = 'sent'",
                )[0][0]
                return bool(n >= 2 * n_presses)

            wait_until(all_sent, 120, "every press's SMS")
            received = {
                str(r["out_id"]): int(r["received_ms"])  # type: ignore[call-overload]
                for r in pipeline.records()
                if r["provider"] == "sms" and r["outcome"] == "delivered"
            }
            latencies: dict[str, list[float]] = {"gateway": [], "native": []}
            in_order: list[tuple[float, str, float]] = []
            for key, device_id in rows(
                settings,
                "SELECT n.idempotency_key, a.device_id FROM notifications n"
                " JOIN alerts a ON a.id = n.alert_id WHERE n.step = 0 AND n.channel = 'sms'"
                " AND n.recipient_kind = 'grid_worker' AND n.status = 'sent'",
            ):
                sms_ms = received.get(out_id_for(key))
                if sms_ms is not None and device_id in by_device:
                    path, press_ms = by_device[device_id]
                    latencies[path].append(sms_ms - press_ms)
                    in_order.append((press_ms, path, sms_ms - press_ms))
        finally:
            pipeline.stop_all()
    return {
        "watches": watches,
        "connect_s": round(connect_s, 1),
        "gateway_rss_idle_mb": round(idle_mb, 1),
        "gateway_rss_connected_mb": round(loaded["mb"], 1),
        "kib_per_connection": round((loaded["mb"] - idle_mb) * 1024 / watches, 1),
        "lk_sent": sent,
        "lk_per_s": round(sent / seconds, 1),
        "cores": {k: round(v, 4) for k, v in cores.items() if k != "gateway_cpu_s"},
        # the gateway's CPU per LK (answer + publish as the device), and what one LK a
        # minute from 10,000 watches costs at that rate
        "gateway_cpu_ms_per_lk": round(cores["gateway_cpu_s"] * 1000 / max(sent, 1), 3),
        "gateway_cores_10k_watches_1_lk_per_min": round(
            cores["gateway_cpu_s"] / max(sent, 1) * 10_000 / 60, 3
        ),
        "presses_in_order_ms": [f"{path} {ms:.0f}" for _, path, ms in sorted(in_order)],
        "sos_ms": {
            path: {
                "n": len(v),
                "p50": percentile(v, 0.5),
                "p99": percentile(v, 0.99),
                "max": max(v, default=float("nan")),
            }
            for path, v in latencies.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watches", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--presses", type=int, default=10)
    args = parser.parse_args()
    result = run(args.watches, args.seconds, args.presses)
    write_results("gateway_watches", result)
    print(
        table(
            [
                (
                    "watches",
                    "KiB/conn",
                    "LK/s",
                    "gateway cores",
                    "CPU ms/LK",
                    "SOS p50 gw/native ms",
                    "p99 gw/native ms",
                ),
                (
                    str(result["watches"]),
                    str(result["kib_per_connection"]),
                    str(result["lk_per_s"]),
                    str(result["cores"].get("gateway")),
                    str(result["gateway_cpu_ms_per_lk"]),
                    f"{result['sos_ms']['gateway']['p50']:.0f}/{result['sos_ms']['native']['p50']:.0f}",
                    f"{result['sos_ms']['gateway']['p99']:.0f}/{result['sos_ms']['native']['p99']:.0f}",
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
