"""The watch gateways on real sockets, Mosquitto and PostgreSQL (no other worker):
what they publish as the device, and the limits that keep hostile input harmless."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from carewatch.messages import DeviceEvent, DeviceStatus, Telemetry
from carewatch.settings import Settings
from gateways.ledger import import_files as import_gateway_files
from gateways.metrics import CONNECTIONS, REJECTS
from gateways.run import run
from harness.services import await_until, free_port
from registry.importer import import_files
from simulators.gateways import FALL_BIT, SOS_BIT, IwWatch, Watch3g
from tests import ledger

WATCH = "8800000001"
IW_IMEI = "353456789012345"


def rejects(protocol: str, reason: str) -> float:
    value: float = REJECTS.labels(protocol, reason)._value.get()
    return value


@contextlib.asynccontextmanager
async def gateway(
    settings: Settings, tmp_path: Path, **overrides: object
) -> AsyncIterator[Settings]:
    s = settings.model_copy(
        update={"gateway_watch_port": free_port(), "gateway_iw_port": free_port(), **overrides}
    )
    report = import_files(s.database_url, ledger.write_ledger(tmp_path / "ledger"))
    assert report.ok, report.errors
    devices = tmp_path / "gateway_devices.csv"
    devices.write_text(
        f"device_id,protocol,imei,product\nWB0001,watch3g,{WATCH},\nWB0002,iw,{IW_IMEI},\n"
    )
    assert import_gateway_files(s.database_url, [devices]).ok
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(s, stop, ["watch-tcp", "iw-tcp"], ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield s
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def watch_for(s: Settings) -> Watch3g:
    watch = Watch3g(WATCH, "127.0.0.1", s.gateway_watch_port)
    await watch.connect()
    await watch.heartbeat()
    await watch.wait_for("LK")
    return watch


@contextlib.asynccontextmanager
async def device_topics(
    s: Settings, device_id: str
) -> AsyncIterator[asyncio.Queue[tuple[str, bytes]]]:
    """What is published on the device's uplink topics, as a queue of (kind, payload)."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    async with aiomqtt.Client(
        "127.0.0.1", s.mqtt_port, identifier=f"t-{os.getpid()}-{device_id}"
    ) as c:
        await c.subscribe(f"cw/v1/dev/{device_id}/+", qos=1)

        async def pump() -> None:
            async for m in c.messages:
                queue.put_nowait((str(m.topic).rsplit("/", 1)[1], bytes(m.payload)))

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def next_of(queue: asyncio.Queue[tuple[str, bytes]], kind: str) -> bytes:
    while True:
        got_kind, payload = await asyncio.wait_for(queue.get(), 10)
        if got_kind == kind:
            return payload


async def test_alarm_bits_are_published_in_the_device_contract(
    settings: Settings, tmp_path: Path
) -> None:
    async with gateway(settings, tmp_path) as s, device_topics(s, "WB0001") as seen:
        watch = await watch_for(s)
        beat = msgspec.json.decode(await next_of(seen, "telemetry"), type=Telemetry)
        assert beat.battery == 90 and beat.steps == 1200

        await watch.alarm(SOS_BIT)  # no fix
        sos = msgspec.json.decode(await next_of(seen, "event"), type=DeviceEvent)
        assert sos.type == "sos"
        await watch.wait_for("AL")

        await watch.alarm(FALL_BIT | (1 << 20), lat=29.5585, lon=106.5625)
        fall = msgspec.json.decode(await next_of(seen, "event"), type=DeviceEvent)
        where = msgspec.json.decode(await next_of(seen, "telemetry"), type=Telemetry)
        assert fall.type == "fall" and fall.seq != sos.seq
        assert (where.lat, where.lon, where.worn) == (29.5585, 106.5625, False)

        await watch.alarm(1 << 14)  # power cut
        off = msgspec.json.decode(await next_of(seen, "status"), type=DeviceStatus)
        assert off.state == "offline"
        await watch.close()


async def test_iw_login_is_required_and_bound(settings: Settings, tmp_path: Path) -> None:
    async with gateway(settings, tmp_path) as s, device_topics(s, "WB0002") as seen:
        early = IwWatch(IW_IMEI, "127.0.0.1", s.gateway_iw_port)
        await early.connect()
        before = rejects("iw", "not_logged_in")
        await early.send(b"IWAP03,06000908000102,5555,30#")  # before IWAP00
        await early.login()
        assert rejects("iw", "not_logged_in") == before + 1
        assert await early.heartbeat() == b"IWBP03"
        beat = msgspec.json.decode(await next_of(seen, "telemetry"), type=Telemetry)
        assert beat.battery == 80
        # a second login as another IMEI on the same connection is refused
        await early.send(b"IWAP00353456789099999#")
        with pytest.raises(ConnectionError):
            await early.wait_for(b"IWBP00", timeout=10)
        await early.close()


async def test_garbage_and_half_open_connections_never_stop_the_gateway(
    settings: Settings, tmp_path: Path
) -> None:
    async with gateway(
        settings, tmp_path, gateway_login_timeout_s=0.5, gateway_max_frame_bytes=512
    ) as s:
        garbage_before = rejects("watch3g", "too_much_garbage")
        idle_before = rejects("watch3g", "idle_timeout")
        oversized_before = rejects("watch3g", "oversized")
        floods = []
        for i in range(5):
            flood = Watch3g(WATCH, "127.0.0.1", s.gateway_watch_port)
            await flood.connect()
            await flood.send_raw(os.urandom(300).replace(b"[", b"x") + b"][][*]" * 30 + bytes([i]))
            floods.append(flood)
        silent = Watch3g(WATCH, "127.0.0.1", s.gateway_watch_port)
        await silent.connect()  # never says anything: a half-open connection
        big = Watch3g(WATCH, "127.0.0.1", s.gateway_watch_port)
        await big.connect()
        await big.send_raw(b"[3G*8800000001*FFFF*UD," + b"1" * 2000)
        for conn in [*floods, silent]:
            assert await conn.closed_by_server(10)
        assert rejects("watch3g", "too_much_garbage") >= garbage_before + 5
        assert rejects("watch3g", "idle_timeout") >= idle_before + 1
        assert rejects("watch3g", "oversized") >= oversized_before + 1
        # a watch that behaves is served as before
        watch = await watch_for(s)
        await watch.close()
        for conn in [*floods, silent, big]:
            await conn.close()


async def test_connections_over_the_limit_are_closed_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    async with gateway(settings, tmp_path, gateway_max_connections=2) as s:
        before = rejects("watch3g", "too_many_connections")
        first, second = await watch_for(s), await watch_for(s)
        third = Watch3g(WATCH, "127.0.0.1", s.gateway_watch_port)
        await third.connect()
        assert await third.closed_by_server(5)
        assert rejects("watch3g", "too_many_connections") == before + 1
        await first.close()

        async def one_left() -> bool:
            return bool(CONNECTIONS.labels("watch3g")._value.get() < 2)

        await await_until(one_left, 10, "the gateway to see the closed connection")
        fourth = await watch_for(s)  # a place is free again once a connection ends
        for conn in (second, third, fourth):
            await conn.close()
