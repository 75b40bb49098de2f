"""Private, throw-away service instances for tests: real servers on free loopback ports.

Each test session starts its own Mosquitto and Redis from a temporary directory, and a
fresh PostgreSQL database (cloned from a migrated template) for every test, so tests
never reconfigure or pollute the machine's shared services.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from carewatch.db.migrate import migrate

ADMIN_DSN = os.environ.get(
    "CAREWATCH_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# Issue 18's night calls (voice in the quiet hours) and repeat-until-ack off: what a test
# or a benchmark sees must not depend on the local time of day it runs at. The tests that
# exercise them turn them on themselves.
TIME_OF_DAY_INDEPENDENT: dict[str, object] = {
    "voice_quiet_start": "00:00",
    "voice_quiet_end": "00:00",
    "escalation_repeat_count": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def await_until(
    cond: Callable[[], Awaitable[object]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_mosquitto(workdir: Path, extra_conf: str = "", port: int | None = None) -> Proc:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    # as root, Mosquitto drops to its own user, which cannot read a pytest temp dir
    run_as = "user root\n" if os.geteuid() == 0 else ""
    listener = "" if "listener " in extra_conf else f"listener {port} 127.0.0.1\n"
    conf.write_text(
        listener + run_as + "persistence true\n"
        f"persistence_location {workdir}/\n"
        "max_queued_messages 1000000\n"
        "max_inflight_messages 1000\n"
        + ("allow_anonymous true\n" if "allow_anonymous" not in extra_conf else "")
        + extra_conf
    )
    popen = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb")
    )
    wait_port(port)
    return Proc("mosquitto", port, popen, workdir)


SHIPPED_MOSQUITTO_CONF = Path(__file__).resolve().parents[1] / "infra/mosquitto/mosquitto.conf"


def start_shipped_mosquitto(workdir: Path, auth_dir: Path) -> tuple[Proc, int]:
    """Mosquitto with the shipped config (infra/mosquitto/mosquitto.conf), its two
    listeners moved to free loopback ports and its credentials read from `auth_dir`
    (carewatch.mqtt_auth.write_broker_files). Returns the broker (`port`: the device
    listener) and the service listener's port."""
    device_port, service_port = free_port(), free_port()
    lines = []
    for line in SHIPPED_MOSQUITTO_CONF.read_text().splitlines():
        if line.startswith("persistence_location"):
            continue  # start_mosquitto puts it in workdir
        if line == "listener 1883":
            line = f"listener {device_port} 127.0.0.1"
        elif line == "listener 1884":
            line = f"listener {service_port} 127.0.0.1"
        lines.append(line.replace("/etc/mosquitto/carewatch", str(auth_dir)))
    proc = start_mosquitto(workdir, "\n".join(lines) + "\n", port=device_port)
    wait_port(service_port)
    return proc, service_port


def start_redis(workdir: Path, port: int | None = None, *, durable: bool = False) -> Proc:
    """A private Redis. durable: as the bus should run in production, every write in the
    append-only file before it is acknowledged, so a restart loses no stream entry."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    popen = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence,
         "--dir", str(workdir)],
        stdout=open(workdir / "log", "ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_port(port)
    return Proc("redis", port, popen, workdir)


class Databases:
    """A migrated template database and cheap per-test clones of it."""

    def __init__(self, admin_dsn: str = ADMIN_DSN) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = f"cwtest_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_tmpl"
        self._created: list[str] = []
        self._create(self.template, None)
        migrate(self.dsn(self.template))

    def dsn(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_dsn, dbname=name)

    def _create(self, name: str, template: str | None) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            conn.execute(stmt)
        self._created.append(name)

    def clone(self) -> str:
        name = f"{self.prefix}_{len(self._created)}"
        self._create(name, self.template)
        return self.dsn(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in reversed(self._created):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
