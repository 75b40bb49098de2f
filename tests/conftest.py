from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from carewatch.settings import Settings
from harness.services import (
    TIME_OF_DAY_INDEPENDENT,
    Databases,
    Proc,
    free_port,
    start_mosquitto,
    start_redis,
    wait_port,
)


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    dbs = Databases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_redis(tmp_path_factory.mktemp("redis"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    workdir = tmp_path_factory.mktemp("nats")
    port = free_port()
    popen = subprocess.Popen(
        [exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "log", "wb"),
    )
    wait_port(port)
    proc = Proc("nats", port, popen, workdir)
    yield proc
    proc.stop()


@pytest.fixture
def db_dsn(databases: Databases) -> str:
    """A fresh, migrated database for one test."""
    return databases.clone()


@pytest.fixture
def settings(db_dsn: str, redis_server: Proc, mosquitto: Proc, tmp_path: Path) -> Settings:
    """Settings pointing every component at this test's private services."""
    redis.Redis(port=redis_server.port).flushall()
    return Settings(
        database_url=db_dsn,
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
        mqtt_host="127.0.0.1",
        mqtt_port=mosquitto.port,
        # ingest's sessions (one per lane and namespace) outlive a test on the shared
        # broker: a namespace per test keeps them apart, a short expiry lets them go
        namespace=f"t{uuid.uuid4().hex[:12]}",
        mqtt_session_expiry_s=120,
        ack_secret="test-secret",  # type: ignore[arg-type]
        **TIME_OF_DAY_INDEPENDENT,  # type: ignore[arg-type]
        metrics_port=0,
        log_json=False,
        _env_file=None,  # type: ignore[call-arg]
    )


# Fixtures that start or reach a server (Mosquitto, Redis, NATS, PostgreSQL): a test
# using any of them, directly or through another fixture, is marked `server`.
SERVER_FIXTURES = frozenset(
    {"databases", "db_dsn", "settings", "redis_server", "mosquitto", "nats_server"}
)
# Modules whose tests start servers, worker processes or a browser themselves.
SERVER_MODULES = frozenset(
    {
        "test_bench_load",
        "test_chaos",
        "test_code_quality",  # runs mypy, ruff and the CLI over the whole tree
        "test_docs",  # runs the CLI in a subprocess
        "test_hostile_fuzz_targets",
        "test_infra_deploy",
        "test_infra_grafana",
        "test_infra_prometheus",
        "test_infra_smoke",
        "test_operator_phone_page",
    }
)


# Calls that start a server in a test's body: their module's tests are all `server`.
STARTS_SERVER = ("start_mosquitto(", "start_redis(", "Pipeline(")


def _starts_servers(module: object) -> bool:
    path = getattr(module, "__file__", None)
    return path is not None and any(call in Path(path).read_text("utf-8") for call in STARTS_SERVER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test `unit` (no server: `./run test -m unit`) or `server`."""
    starting: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__ if module is not None else ""
        if name not in starting:
            starting[name] = _starts_servers(module)
        needs_server = (
            bool(set(getattr(item, "fixturenames", ())) & SERVER_FIXTURES)
            or name.rsplit(".", 1)[-1] in SERVER_MODULES
            or starting[name]
        )
        item.add_marker(pytest.mark.server if needs_server else pytest.mark.unit)
