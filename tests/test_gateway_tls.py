"""Ingest and the gateways reach the broker over TLS: a private Mosquitto with a TLS
listener whose certificate comes from a CA generated for this test."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from carewatch.mqtt_tls import client_context
from carewatch.settings import Settings
from gateways.ledger import import_files as import_gateway_files
from gateways.run import run as run_gateways
from harness.services import Proc, await_until, free_port, start_mosquitto
from ingest.mqtt_client import ConnectOptions, MqttConnection
from ingest.worker import run as run_ingest
from registry.importer import import_files
from simulators.gateways import Watch3g
from tests import ledger


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
            str(ca), "-days", "2", "-subj", "/CN=carewatch test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    work = tmp_path_factory.mktemp("mosquitto-tls")
    ca, cert, key = make_ca(work / "pki")
    port = free_port()
    proc = start_mosquitto(
        work,
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
        port=port,
    )
    yield proc, ca
    proc.stop()


def tls_settings(settings: Settings, broker: tuple[Proc, Path]) -> Settings:
    proc, ca = broker
    return settings.model_copy(
        update={
            "mqtt_port": proc.port,
            "mqtt_tls": True,
            "mqtt_ca_file": str(ca),
            "mqtt_share_group": f"ingest-{uuid.uuid4().hex[:8]}",
            "gateway_watch_port": free_port(),
        }
    )


async def test_the_broker_is_verified_against_the_configured_ca(
    settings: Settings, tls_broker: tuple[Proc, Path]
) -> None:
    s = tls_settings(settings, tls_broker)
    conn, connack = await MqttConnection.open(
        ConnectOptions("127.0.0.1", s.mqtt_port, "tls-probe", 30, True, ssl=client_context(s)),
        lambda _: None,
        5,
    )
    assert connack.reason_code == 0
    await conn.close()
    # the system's CAs do not know the test CA: refused
    untrusted = s.model_copy(update={"mqtt_ca_file": None})
    with pytest.raises(ssl.SSLCertVerificationError):
        await MqttConnection.open(
            ConnectOptions(
                "127.0.0.1", s.mqtt_port, "tls-probe-2", 30, True, ssl=client_context(untrusted)
            ),
            lambda _: None,
            5,
        )


async def test_ingest_and_the_gateway_work_over_tls(
    settings: Settings, tls_broker: tuple[Proc, Path], tmp_path: Path
) -> None:
    s = tls_settings(settings, tls_broker)
    assert import_files(s.database_url, ledger.write_ledger(tmp_path / "ledger")).ok
    devices = tmp_path / "gateway_devices.csv"
    devices.write_text("device_id,protocol,imei,product\nWB0001,watch3g,8800000001,\n")
    assert import_gateway_files(s.database_url, [devices]).ok

    stop = asyncio.Event()
    ingest_ready, gateway_ready = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(run_ingest(s, stop, client_id="ingest-tls", ready=ingest_ready)),
        asyncio.create_task(run_gateways(s, stop, ["watch-tcp"], gateway_ready)),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(ingest_ready.wait(), gateway_ready.wait()), 30)
        watch = Watch3g("8800000001", "127.0.0.1", s.gateway_watch_port)
        await watch.connect()
        await watch.heartbeat(battery=42)
        await watch.wait_for("LK")

        async def stored() -> bool:
            with psycopg.connect(s.database_url) as conn:
                row = conn.execute(
                    "SELECT data->>'battery' FROM telemetry WHERE device_id = 'WB0001'"
                ).fetchone()
            return row == ("42",)

        await await_until(stored, 15, "the watch's heartbeat stored through the TLS broker")
        await watch.close()
        # a plain (non-TLS) client gets nowhere on the TLS listener
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", s.mqtt_port, timeout=2):
                pass
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
