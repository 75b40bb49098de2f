"""`carewatch simulate fleet|scenario`: devices from the registry, published over MQTT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from datetime import UTC, datetime
from functools import partial

import psycopg

from carewatch.settings import Settings
from simulators.device import SimDevice, mqtt_client
from simulators.fleet import run_fleet
from simulators.scenarios import (
    FALL_OK_DELAY_S,
    SCENARIOS,
    SOS_CANCEL_DELAY_S,
    Scenario,
    Sent,
    fall_cancel,
    sos_cancel,
)


def load_devices(dsn: str) -> list[SimDevice]:
    """Every registered device, placed at its elder's home."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT d.id, d.kind, d.elder_id, e.lat, e.lon"
            " FROM devices d JOIN elders e ON e.id = d.elder_id ORDER BY d.id"
        ).fetchall()
    return [SimDevice(r[0], r[1], r[2], home=(r[3], r[4])) for r in rows]


def find_wristband(dsn: str, elder_id: str) -> SimDevice | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT d.id, e.lat, e.lon FROM devices d JOIN elders e ON e.id = d.elder_id"
            " WHERE d.elder_id = %s AND d.kind = 'wristband' ORDER BY d.id LIMIT 1",
            [elder_id],
        ).fetchone()
    return None if row is None else SimDevice(row[0], "wristband", elder_id, home=(row[1], row[2]))


async def _fleet(settings: Settings, devices: list[SimDevice], args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = await run_fleet(settings, devices, args.rate, args.duration, stop)
    print(
        f"{stats.devices} device(s) over {stats.connections} connection(s) in "
        f"{stats.duration_s:.1f} s: {stats.telemetry} telemetry, {stats.events} events, "
        f"{stats.statuses} statuses, {stats.errors} errors, {stats.reconnects} reconnects"
    )
    return 0 if stats.published else 1


def scenarios_for(settings: Settings) -> dict[str, Scenario]:
    """The scenarios, cancelling well inside the configured windows (or the rules engine
    would rightly not treat the cancel as one)."""
    return {
        **SCENARIOS,
        "sos-cancel": partial(
            sos_cancel, delay_s=min(SOS_CANCEL_DELAY_S, settings.sos_cancel_window_s / 2)
        ),
        "fall-cancel": partial(
            fall_cancel, delay_s=min(FALL_OK_DELAY_S, settings.fall_confirm_window_s / 2)
        ),
    }


async def run_scenario(settings: Settings, name: str, device: SimDevice) -> list[Sent]:
    async with mqtt_client(settings, f"carewatch-sim-scenario-{os.getpid()}") as client:
        return await scenarios_for(settings)[name](client, device)


def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.sim_cmd == "fleet":
        devices = load_devices(settings.database_url)
        if not devices:
            print("no devices registered: import a ledger first (carewatch registry import)")
            return 1
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_fleet(settings, devices, args))
        return 0
    device = find_wristband(settings.database_url, args.elder)
    if device is None:
        print(f"elder {args.elder!r} has no registered wristband")
        return 1
    for sent in asyncio.run(run_scenario(settings, args.name, device)):
        at = datetime.fromtimestamp(sent.device_time_ms / 1000, UTC).isoformat(
            timespec="milliseconds"
        )
        print(
            f"{sent.event}: device {device.device_id} seq {sent.seq} "
            f"device_time_ms {sent.device_time_ms} ({at})"
        )
    return 0
