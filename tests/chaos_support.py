"""Helpers of the scale-out, NATS and chaos tests: a ledger of many elders, wristbands that
keep retrying until the broker has their press (as real ones buffer), services a test
may restart (a durable Redis, a private PostgreSQL cluster), and read-backs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import msgspec
import psycopg

from carewatch.messages import DeviceEvent, Telemetry
from carewatch.settings import Settings
from carewatch.topics import topic
from harness.services import Proc, free_port, start_redis
from tests.ledger import ELDERS, OFFICERS, STATIONS

GRID_WORKER_PHONE = "13700000001"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def elder_id(n: int) -> str:
    return f"E{n:04d}"


def band_id(n: int) -> str:
    return f"WB{n:04d}"


def family_phone(n: int) -> str:
    return f"136{n:08d}"


def write_many_elders(folder: Path, count: int) -> list[Path]:
    """The e2e ledger's stations and officers, with `count` elders E0001.. wearing WB0001..,
    all in grid G01 (grid worker 13700000001), each with one family contact of its own."""
    header = ELDERS.splitlines()[0]
    rows = [
        f"{elder_id(n)},老人{n},138{n:08d},渝中区,七星岗街道,七星岗街道金汤街{n}号,29.5585,"
        f"106.5625,G01,金汤街网格,GW01,李建国,{GRID_WORKER_PHONE},gw_li,alone,true,{band_id(n)},,"
        f"家属{n},儿子,{family_phone(n)},fam_{n},,,,"
        for n in range(1, count + 1)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (
        ("stations", STATIONS),
        ("duty_officers", OFFICERS),
        ("elders", "\n".join([header, *rows]) + "\n"),
    ):
        path = folder / f"{name}.csv"
        path.write_text(text, encoding="utf-8")
        files.append(path)
    return files


class Wristbands:
    """Device events as wristbands send them: per-device seq, QoS 1, and a retry until the
    broker acknowledged (a band keeps a press while it has no connection)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._seq: dict[str, int] = {}

    def payload(self, device_id: str, kind: str) -> bytes:
        seq = self._seq.get(device_id, time.time_ns() // 1_000_000) + 1
        self._seq[device_id] = seq
        event = DeviceEvent(v=1, seq=seq, ts=time.time_ns() // 1_000_000, type=kind)  # type: ignore[arg-type]
        return msgspec.json.encode(event)

    def send(self, events: Sequence[tuple[str, str]], timeout: float = 60.0) -> None:
        """Publish (device_id, kind) events in order; returns once the broker has them all."""
        messages = [(topic(d, "event"), self.payload(d, kind)) for d, kind in events]
        asyncio.run(self._publish(messages, timeout))

    def last_seq(self, device_id: str) -> int:
        return self._seq[device_id]

    def send_telemetry(self, device_id: str) -> None:
        seq = self._seq.get(device_id, time.time_ns() // 1_000_000) + 1
        self._seq[device_id] = seq
        body = Telemetry(v=1, seq=seq, ts=time.time_ns() // 1_000_000, hr=72, battery=80, worn=True)
        asyncio.run(self._publish([(topic(device_id, "telemetry"), msgspec.json.encode(body))], 10))

    async def _publish(self, messages: list[tuple[str, bytes]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        done = 0
        while done < len(messages):
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=f"bands-{os.getpid()}", timeout=5
                ) as client:
                    for mqtt_topic, body in messages[done:]:
                        await client.publish(mqtt_topic, body, qos=1)
                        done += 1
            except aiomqtt.MqttError:
                # the same bytes go again: ingest dedups by (device, seq)
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


def query(settings: Settings, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
        return conn.execute(sql, args).fetchall()


def try_query(settings: Settings, sql: str, *args: object) -> list[tuple[object, ...]] | None:
    """None while the database is unreachable (during a fault)."""
    try:
        return query(settings, sql, *args)
    except psycopg.OperationalError:
        return None


def start_durable_redis(workdir: Path, port: int | None = None) -> Proc:
    """Redis as the bus should run in production (append-only file, fsync always)."""
    return start_redis(workdir, port, durable=True)


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb + pg_ctl) on a free port, which a test may
    stop and start. It runs as the `postgres` OS user when the test runs as root."""

    datadir: Path
    port: int

    @classmethod
    def create(cls) -> PrivatePostgres:
        # not under pytest's tmp dir: the postgres user cannot enter root's
        base = Path(tempfile.mkdtemp(prefix="cw-chaos-pg-"))
        cluster = cls(base / "data", free_port())
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        cluster._run(PG_BIN / "initdb", "-D", str(cluster.datadir), "-U", "postgres", "-A", "trust")
        cluster.start()
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE carewatch")
        return cluster

    def dsn(self, dbname: str = "carewatch") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: object) -> None:
        cmd = [str(a) for a in argv]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir.parent} -c listen_addresses=127.0.0.1"
        self._run(
            PG_BIN / "pg_ctl", "-D", self.datadir, "-o", options, "-w", "-t", "30",
            "-l", self.datadir.parent / "log", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already down
            self.stop("immediate")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)
