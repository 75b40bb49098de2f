"""Two deployments on one Mosquitto and one Redis server do not cross-talk.

Each has its own namespace (CAREWATCH_NAMESPACE: ingest's MQTT sessions and Redis keys),
its own pair of listeners with a `mount_point` on the shared broker (the shipped
config's listeners, repeated), its own Redis database and its own PostgreSQL database.
Each runs an SOS; each sees its own and nothing of the other's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from carewatch.mqtt_auth import device_password, write_broker_files
from carewatch.settings import Settings
from registry.importer import import_files
from tests.chaos_support import query, write_many_elders
from tests.pipeline import CAREWATCH, Pipeline, settings_env
from tests.services import (
    SHIPPED_MOSQUITTO_CONF,
    Databases,
    free_port,
    start_mosquitto,
    wait_port,
    wait_until,
)

pytestmark = pytest.mark.slow

SECRET = "provisioning-secret-for-tests"


def ledger(folder: Path, band_prefix: str) -> list[Path]:
    """Two elders whose wristbands are {band_prefix}0001 and {band_prefix}0002: device ids
    are client ids on the broker, so they must be unique across the deployments."""
    files = write_many_elders(folder, 2)
    for path in files:
        path.write_text(path.read_text(encoding="utf-8").replace("WB0", band_prefix + "0"))
    return files


def two_deployment_conf(auth: dict[str, Path], ports: dict[str, tuple[int, int]]) -> str:
    """The shipped config with its two listeners once per deployment; the second one's
    topics are mounted under its name."""
    text = SHIPPED_MOSQUITTO_CONF.read_text()
    head, listeners = text.split("\nlistener 1883\n", 1)
    head = "\n".join(line for line in head.splitlines() if "persistence_location" not in line)
    out = [head]
    for name, (device_port, service_port) in ports.items():
        block = "listener 1883\n" + listeners
        block = block.replace("listener 1883", f"listener {device_port} 127.0.0.1")
        block = block.replace("listener 1884", f"listener {service_port} 127.0.0.1")
        block = block.replace("/etc/mosquitto/carewatch", str(auth[name]))
        if name != "a":
            block = block.replace("127.0.0.1\n", f"127.0.0.1\nmount_point {name}/\n")
        out.append(block)
    return "\n".join(out) + "\n"


def test_two_namespaces_on_one_broker_and_one_redis_each_get_their_own_sos(
    settings: Settings, databases: Databases, tmp_path: Path
) -> None:
    bands = {"a": "WA", "b": "WB"}
    ports = {name: (free_port(), free_port()) for name in bands}
    auth = {name: tmp_path / f"auth-{name}" for name in bands}
    for name, prefix in bands.items():
        write_broker_files(
            auth[name],
            SECRET,
            [f"{prefix}0001", f"{prefix}0002"],
            {"ingest": f"test-ingest-{name}"},
            mount_point="" if name == "a" else f"{name}/",
        )
    broker = start_mosquitto(
        tmp_path / "broker", two_deployment_conf(auth, ports), port=ports["a"][0]
    )
    deployments: dict[str, Settings] = {}
    pipelines: dict[str, Pipeline] = {}
    try:
        for db, (name, prefix) in enumerate(bands.items()):
            wait_port(ports[name][1])
            s = settings.model_copy(
                update={
                    "namespace": f"site-{name}",
                    "database_url": settings.database_url if db == 0 else databases.clone(),
                    "redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{db}",
                    "mqtt_port": ports[name][1],
                    "mqtt_username": "ingest",
                    "mqtt_password": SecretStr(f"test-ingest-{name}"),
                    "mqtt_mount_point": "" if name == "a" else f"{name}/",
                }
            )
            assert not import_files(s.database_url, ledger(tmp_path / name, prefix)).errors
            (tmp_path / f"logs-{name}").mkdir()
            p = Pipeline(s, tmp_path / f"logs-{name}")
            p.start("rules")
            p.start("ingest")
            deployments[name], pipelines[name] = s, p
        for p in pipelines.values():
            wait_until(lambda p=p: "mqtt connected" in p.tail("ingest", 200), 30, "ingest")

        for name, prefix in bands.items():
            device = f"{prefix}0001"
            subprocess.run(
                ["mosquitto_pub", "-p", str(ports[name][0]), "-u", device,
                 "-P", device_password(SECRET, device), "-V", "mqttv5", "-q", "1",
                 "-t", f"cw/v1/dev/{device}/event",
                 "-m", '{"v":1,"seq":1,"ts":1764000000000,"type":"sos"}'],
                check=True, timeout=10,
            )  # fmt: skip

        for name, s in deployments.items():
            p = pipelines[name]

            def alerts(s: Settings = s, p: Pipeline = p) -> list[tuple[object, ...]]:
                p.assert_running()
                return query(s, "SELECT device_id, kind FROM alerts")

            wait_until(lambda alerts=alerts: bool(alerts()), 30, f"the SOS of {name}")
            assert alerts() == [(f"{bands[name]}0001", "sos")]
            # nothing of the other deployment reached this one, not even as a rejection
            assert query(s, "SELECT count(*) FROM dead_letters") == [(0,)]
            stored = [(f"{bands[name]}0001",)]
            wait_until(
                lambda s=s, stored=stored: (
                    query(s, "SELECT DISTINCT device_id FROM telemetry") == stored
                ),
                10,
                "the press's row",
            )

        # a deployment pointed at the other's Redis database refuses to start
        wrong = deployments["b"].model_copy(update={"redis_url": deployments["a"].redis_url})
        refused = subprocess.run(
            [CAREWATCH, "ingest"], env=settings_env(wrong), capture_output=True, timeout=60
        )
        assert refused.returncode != 0
        assert b"bus of deployment 'site-a'" in refused.stdout + refused.stderr
    finally:
        for p in pipelines.values():
            p.stop_all()
        broker.stop()
