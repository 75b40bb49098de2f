"""`carewatch simulate fleet|day|scenario`: devices from the registry, published over MQTT.

`fleet` publishes readings at a fixed rate (or, with --realistic, every elder's
simulated days); `day` replays one elder's days with injected events, over MQTT or into
a JSON-lines file; `scenario` sends one scripted emergency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from carewatch.settings import Settings
from simulators.days import SimElder, SimMessage, elders_from_devices, simulate
from simulators.device import SimDevice, mqtt_client
from simulators.fleet import FleetStats, run_fleet
from simulators.injections import Injection, InjectionError, parse
from simulators.replay import replay
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


def load_elders(dsn: str, elder_id: str | None = None) -> list[SimElder]:
    """Registered elders (or the one) with their devices and care profile."""
    devices = load_devices(dsn)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, coalesce(care_profile_id, 'standard') FROM elders")
        profiles = {r[0]: r[1] for r in rows}
    chosen = [d for d in devices if elder_id is None or d.elder_id == elder_id]
    return elders_from_devices(chosen, profiles)


def start_ms(text: str | None, tz: ZoneInfo, now: datetime | None = None) -> int:
    """Simulated start: now, HH:MM today (local) or an ISO time (local if naive)."""
    now = now or datetime.now(tz)
    if text is None:
        at = now
    elif len(text) <= 5 and ":" in text:
        hour, minute = (int(p) for p in text.split(":"))
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    else:
        at = datetime.fromisoformat(text)
        at = at if at.tzinfo else at.replace(tzinfo=tz)
    return int(at.timestamp()) * 1000


def injections_for(
    specs: Iterable[str], start: int, tz: ZoneInfo, elder_id: str | None = None
) -> dict[str, list[Injection]]:
    """`KIND@...` specs for one elder, or `ELDER_ID=KIND@...` for a fleet."""
    out: dict[str, list[Injection]] = {}
    for spec in specs:
        target, sep, text = spec.partition("=")
        if not sep:
            if elder_id is None:
                raise InjectionError(f"{spec!r}: say which elder, ELDER_ID=KIND@HH:MM")
            target, text = elder_id, spec
        out.setdefault(target, []).append(parse(text).at(start, tz))
    return out


def _write_jsonl(out: Path, messages: Iterable[SimMessage]) -> int:
    count = 0
    with out.open("w", encoding="utf-8") as f:
        for m in messages:
            record = {
                "device_id": m.device_id,
                "kind": m.kind,
                "device_time_ms": m.device_time_ms,
                "payload": json.loads(m.payload),
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


async def _replay(
    settings: Settings, messages: Iterable[SimMessage], start: int, args: argparse.Namespace
) -> FleetStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    wall = args.duration if args.sim_cmd == "fleet" else 0.0  # fleet: its wall-clock cap
    return await replay(settings, messages, start, args.speed, stop, max_wall_s=wall)


def _realistic(settings: Settings, elders: list[SimElder], args: argparse.Namespace) -> int:
    tz = ZoneInfo(settings.timezone)
    start = start_ms(args.start, tz)
    elder_id = elders[0].elder_id if args.sim_cmd == "day" else None
    try:
        injections = injections_for(args.inject, start, tz, elder_id)
    except (InjectionError, ValueError) as exc:
        print(f"bad --inject: {exc}")
        return 2
    unknown = sorted(set(injections) - {e.elder_id for e in elders})
    if unknown:
        print(f"--inject for unknown elder(s): {', '.join(unknown)}")
        return 2
    for elder_injections in injections.values():
        for inj in elder_injections:
            at = datetime.fromtimestamp(inj.at_ms / 1000, tz).isoformat(timespec="minutes")
            print(f"inject {inj.kind} at {at} for {inj.duration_s:.0f} s")
    messages = simulate(
        elders, start, args.hours * 3600, seed=args.seed, injections=injections, tz=tz
    )
    out: Path | None = getattr(args, "out", None)
    if out is not None:
        print(f"{_write_jsonl(out, messages)} messages written to {out}")
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        stats = asyncio.run(_replay(settings, messages, start, args))
        print(
            f"{stats.devices} device(s) replayed at x{args.speed:g} in {stats.duration_s:.1f} s: "
            f"{stats.telemetry} telemetry, {stats.events} events, {stats.statuses} statuses, "
            f"{stats.errors} errors, {stats.reconnects} reconnects"
        )
        return 0 if stats.published else 1
    return 0


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
    if args.sim_cmd == "day" or (args.sim_cmd == "fleet" and args.realistic):
        elders = load_elders(settings.database_url, args.elder if args.sim_cmd == "day" else None)
        if not elders:
            print("no such elder with devices: import a ledger first (carewatch registry import)")
            return 1
        return _realistic(settings, elders, args)
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
