"""Ingest's MQTT sessions lose no press when the broker restarts or an instance leaves.

Each ingest lane reads one persistent session with a plain subscription; its client id
belongs to the deployment, and a lease in Redis lets one instance at a time hold it
(ingest.lease). Real workers (`carewatch ingest`, `carewatch rules` subprocesses), a real
Mosquitto, Redis and PostgreSQL: every press must become an alert.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from carewatch.settings import Settings
from ingest.lease import lease_key
from ingest.worker import default_client_id, lane_client_ids
from registry.importer import import_files
from tests.chaos_support import Wristbands, band_id, query, write_many_elders
from tests.pipeline import Pipeline
from tests.services import start_mosquitto, wait_until

pytestmark = pytest.mark.slow

PRESSES = 20
PROBE = PRESSES + 1  # the elder whose band sends telemetry probes


def sos_alerts(settings: Settings) -> int:
    rows = query(settings, "SELECT count(*) FROM alerts WHERE kind = 'sos'")
    return int(str(rows[0][0]))


def start(settings: Settings, tmp_path: Path, ingest_instances: int = 1) -> Pipeline:
    assert not import_files(
        settings.database_url, write_many_elders(tmp_path / "ledger", PROBE)
    ).errors
    p = Pipeline(settings, tmp_path)
    p.start("rules")
    for n in range(1, ingest_instances + 1):
        p.start("ingest", instance=n if ingest_instances > 1 else None)
    return p


def wait_for_probe(p: Pipeline, bands: Wristbands) -> None:
    """Until a telemetry probe sent now is stored: ingest is subscribed and working."""
    s = p.settings
    before = {
        int(str(r[0]))
        for r in query(s, "SELECT seq FROM telemetry WHERE device_id = %s", band_id(PROBE))
    }

    def stored() -> bool:
        p.assert_running()
        bands.send_telemetry(band_id(PROBE))
        rows = query(s, "SELECT seq FROM telemetry WHERE device_id = %s", band_id(PROBE))
        return bool({int(str(r[0])) for r in rows} - before)

    wait_until(stored, 30, "ingest to store a probe")


def press_all(bands: Wristbands) -> None:
    """One SOS from each of PRESSES elders (the band retries until the broker has it)."""
    bands.send([(band_id(n), "sos") for n in range(1, PRESSES + 1)])


def test_presses_during_and_right_after_a_broker_restart_all_become_alerts(
    settings: Settings, tmp_path: Path
) -> None:
    mosquitto = start_mosquitto(tmp_path / "mosquitto")
    s = settings.model_copy(update={"mqtt_port": mosquitto.port})
    p = start(s, tmp_path)
    bands = Wristbands(mosquitto.port)
    try:
        wait_for_probe(p, bands)
        mosquitto.stop()
        # The bands press while the broker is down (each retries until it is back) and
        # right after it is back, before ingest has reconnected (its backoff is 0.2 s+).
        mosquitto = start_mosquitto(mosquitto.workdir, port=mosquitto.port)
        press_all(bands)
        wait_until(lambda: sos_alerts(s) >= PRESSES, 60, f"{PRESSES} SOS alerts")
        assert sos_alerts(s) == PRESSES
        # and ingest is back on its session, not only on messages queued before
        p.assert_running()
    finally:
        p.stop_all()
        mosquitto.stop()


def test_presses_while_ingest_and_the_broker_both_restart_become_alerts(
    settings: Settings, tmp_path: Path
) -> None:
    """The case Mosquitto 2.0.11 loses with `$share` subscriptions (it does not restore
    them from persistence): ingest is down while the broker restarts, the bands press
    before ingest is back. The plain subscription of ingest's session was restored."""
    mosquitto = start_mosquitto(tmp_path / "mosquitto")
    s = settings.model_copy(update={"mqtt_port": mosquitto.port})
    p = start(s, tmp_path)
    bands = Wristbands(mosquitto.port)
    try:
        wait_for_probe(p, bands)
        p.kill("ingest")
        mosquitto.stop()
        mosquitto = start_mosquitto(mosquitto.workdir, port=mosquitto.port)
        press_all(bands)  # acknowledged by the broker while no ingest is connected
        p.start("ingest")
        wait_until(lambda: sos_alerts(s) >= PRESSES, 60, f"{PRESSES} SOS alerts")
        assert sos_alerts(s) == PRESSES
    finally:
        p.stop_all()
        mosquitto.stop()


def holder_pid(s: Settings, lane: str) -> int | None:
    client_id = lane_client_ids(default_client_id(s))[lane]
    value = redis.Redis.from_url(s.redis_url).get(lease_key(s.namespace, client_id))
    return int(value.decode().split(":")[1]) if value else None


def test_an_instance_that_leaves_for_good_leaves_every_press_delivered(
    settings: Settings, tmp_path: Path
) -> None:
    """Two instances of ingest on one host; the one holding the events session is killed
    (-9) and never comes back. Every press, including those sent before the other
    instance took the session over, becomes an alert; and the two never share a session
    (the standby does not connect while the holder lives)."""
    s = settings.model_copy(update={"ingest_lease_ms": 1500})
    p = start(s, tmp_path, ingest_instances=2)
    bands = Wristbands(s.mqtt_port)
    try:
        wait_for_probe(p, bands)
        wait_until(lambda: holder_pid(s, "events") is not None, 10, "an events lease")
        pids = {p.procs[name].pid: name for name in ("ingest-1", "ingest-2")}
        holder = pids[holder_pid(s, "events")]  # type: ignore[index]
        standby = next(name for name in pids.values() if name != holder)
        p.assert_running()
        if holder_pid(s, "telemetry") == holder_pid(s, "events"):
            # a pure standby: it never connected, so it never kicked the holder off
            assert "mqtt connected" not in p.tail(standby, 1000)

        killed_at = time.monotonic()
        p.kill(holder)  # leaves for good
        press_all(bands)  # at once: the session waits for the standby to take it
        wait_until(lambda: sos_alerts(s) >= PRESSES, 60, f"{PRESSES} SOS alerts")
        print(f"\nholder killed -> {PRESSES} alerts: {time.monotonic() - killed_at:.2f} s")
        assert sos_alerts(s) == PRESSES
        assert holder_pid(s, "events") == p.procs[standby].pid
        assert holder_pid(s, "telemetry") == p.procs[standby].pid

        wait_for_probe(p, bands)  # and telemetry goes through the survivor too
    finally:
        p.stop_all()


def test_a_stopped_holder_hands_its_session_over_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    """A graceful stop (SIGTERM: drain, acknowledge, give the lease back) lets the
    standby take the session without waiting for the lease to run out."""
    s = settings.model_copy(update={"ingest_lease_ms": 60_000})  # a lapse would take 60 s
    p = start(s, tmp_path, ingest_instances=2)
    bands = Wristbands(s.mqtt_port)
    try:
        wait_for_probe(p, bands)
        pids = {p.procs[name].pid: name for name in ("ingest-1", "ingest-2")}
        holder = pids[holder_pid(s, "events")]  # type: ignore[index]
        p.kill(holder, signal.SIGTERM)
        press_all(bands)
        wait_until(lambda: sos_alerts(s) >= PRESSES, 40, f"{PRESSES} SOS alerts")
        assert sos_alerts(s) == PRESSES
    finally:
        p.stop_all()
