"""Alarms first between processes: ingest's lanes apart, the bulk one at a lower priority.

Real `carewatch ingest --lane ...`, `carewatch rules` and `carewatch run-all` processes on
a private Mosquitto, Redis and PostgreSQL. What is checked is the arrangement the kernel
schedules by (which process holds which lane's session, at which nice value) and that
the alarm path works without the bulk process; how much faster an SOS is under overload
is measured by bench.sos_latency (docs/benchmarks.md), never timed here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from carewatch.settings import Settings
from harness.pipeline import Pipeline, with_fake_providers
from harness.services import free_port, wait_until
from ingest.flusher import MAX_SEALED_BATCHES
from ingest.lease import lease_key
from ingest.worker import default_client_id, lane_client_ids
from registry.importer import import_files
from tests.chaos_support import Wristbands, band_id, query, write_many_elders
from tests.support.ingest import (
    Harness,
    database_down,
    eventually,
    insert_registry,
    sos,
    start_worker,
)

pytestmark = pytest.mark.slow

PRESSES = 10
PROBE = PRESSES + 1  # the elder whose band sends telemetry probes


def nice_of(pid: int) -> int:
    """The nice value of a process (field 19 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def bulk_nice_for_test(default: int) -> int:
    """The bulk lane's niceness for a test: the default, or above this process's own when
    the tests themselves run niced that much (`nice -n 10 ./run test`), since a process
    never lowers its niceness; no room left above it: skip."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    if mine >= 19:
        pytest.skip("the tests run at niceness 19: no lower priority is left for the bulk lane")
    return default if default > mine else min(19, mine + 5)


def lease_holder(s: Settings, lane: str) -> int | None:
    client_id = lane_client_ids(default_client_id(s))[lane]
    value = redis.Redis.from_url(s.redis_url).get(lease_key(s.namespace, client_id))
    if not value:
        return None
    holder = value.decode() if isinstance(value, bytes) else str(value)
    return int(holder.split(":")[1])


def sos_alerts(s: Settings) -> int:
    return int(str(query(s, "SELECT count(*) FROM alerts WHERE kind = 'sos'")[0][0]))


def probe_stored(p: Pipeline, bands: Wristbands) -> None:
    """Until a telemetry probe sent now is stored."""
    s = p.settings

    def seqs() -> set[int]:
        rows = query(s, "SELECT seq FROM telemetry WHERE device_id = %s", band_id(PROBE))
        return {int(str(r[0])) for r in rows}

    before = seqs()

    def stored() -> bool:
        p.assert_running()
        bands.send_telemetry(band_id(PROBE))
        return bool(seqs() - before)

    wait_until(stored, 30, "a telemetry probe stored")


def press(bands: Wristbands, first: int) -> None:
    bands.send([(band_id(n), "sos") for n in range(first, first + PRESSES // 2)])


def import_street(s: Settings, tmp_path: Path) -> None:
    assert not import_files(s.database_url, write_many_elders(tmp_path / "ledger", PROBE)).errors


def test_run_as_bulk_only_ever_lowers_the_priority() -> None:
    # in a child process: the test process keeps its own priority
    code = (
        "import os; from carewatch.alarm_priority import run_as_bulk;"
        " s = os.getpriority(os.PRIO_PROCESS, 0);"
        " print(s, run_as_bulk(0), run_as_bulk(s + 5), run_as_bulk(s + 2),"
        " os.getpriority(os.PRIO_PROCESS, 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    start, *results = map(int, out.stdout.split())
    # 0 leaves it; a higher niceness is taken; a lower one than the current is not
    assert results == [start, start + 5, start + 5, start + 5]


def test_lanes_in_their_own_processes_telemetry_niced_and_alarms_without_it(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"bulk_lane_nice": bulk_nice_for_test(10)})
    import_street(s, tmp_path)
    p = Pipeline(s, tmp_path)
    bands = Wristbands(s.mqtt_port)
    try:
        p.start("rules")
        events = p.start("ingest", ingest_lanes="events")
        bulk = p.start("ingest", instance=1, ingest_lanes="telemetry")
        probe_stored(p, bands)
        wait_until(lambda: lease_holder(s, "events") is not None, 30, "events lane held")
        # each lane's session is held by its own process, and only the bulk one is niced
        assert lease_holder(s, "telemetry") == bulk.pid
        assert lease_holder(s, "events") == events.pid
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice_of(events.pid) == mine
        assert nice_of(bulk.pid) == max(mine, s.bulk_lane_nice) > mine

        press(bands, 1)
        wait_until(lambda: sos_alerts(s) >= PRESSES // 2, 60, "SOS alerts")
        # the alarm path does not depend on the bulk process: without it, presses still
        # become alerts (telemetry waits in the broker for a telemetry lane)
        p.kill("ingest-1")
        press(bands, 1 + PRESSES // 2)
        wait_until(lambda: sos_alerts(s) >= PRESSES, 60, "SOS alerts without the bulk lane")
        assert sos_alerts(s) == PRESSES
        assert lease_holder(s, "events") == events.pid
    finally:
        p.stop_all()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def test_run_all_runs_the_telemetry_lane_in_a_niced_child_it_stops_with_it(
    settings: Settings, tmp_path: Path
) -> None:
    # run-all splits by default (CAREWATCH_BULK_LANE_NICE is 10 unless set)
    assert settings.bulk_lane_nice == 10
    s = with_fake_providers(settings).model_copy(
        update={"operator_port": free_port(), "bulk_lane_nice": bulk_nice_for_test(10)}
    )
    import_street(s, tmp_path)
    p = Pipeline(s, tmp_path)
    bands = Wristbands(s.mqtt_port)
    try:
        p.start("fake-providers")
        main = p.start("run-all")
        probe_stored(p, bands)
        wait_until(lambda: lease_holder(s, "events") is not None, 30, "events lane held")
        (child,) = [pid for pid in children_of(main.pid) if lease_holder(s, "telemetry") == pid]
        assert lease_holder(s, "events") == main.pid
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice_of(main.pid) == mine
        assert nice_of(child) == max(mine, s.bulk_lane_nice) > mine
        press(bands, 1)
        wait_until(lambda: sos_alerts(s) >= PRESSES // 2, 60, "SOS alerts")

        p.kill("run-all", signal.SIGTERM)  # SIGTERM: the child stops too, nothing is left running
        wait_until(lambda: not os.path.exists(f"/proc/{child}"), 30, "the child gone")
    finally:
        p.stop_all()


async def test_presses_reach_the_bus_through_a_database_outage_longer_than_a_few_batches(
    settings: Settings,
) -> None:
    """The events lane is never pushed back by a slow or absent database: every press
    is published (and so becomes an alert) while no row can be stored. Each press here
    is its own sealed batch (ingest_batch_ms=1), more than the telemetry lane's bound
    of sealed batches: with that bound the lane stopped at the sixth, unpublished."""
    s = settings.model_copy(update={"ingest_batch_ms": 1})
    insert_registry(s.database_url)
    stop, task = await start_worker(s)
    h = Harness(s)
    presses = MAX_SEALED_BATCHES + 6
    try:
        with database_down(s.database_url):
            for seq in range(1, presses + 1):
                await h.publish(sos(seq))
                await eventually(
                    lambda n=seq: sum(e.event == "sos" for e in h.bus_events()) == n,  # type: ignore[misc]
                    what=f"press {seq} on the bus while the database is down",
                )
        await eventually(
            lambda: h.telemetry_seqs() == list(range(1, presses + 1)),
            timeout=30,
            what="every press stored once the database is back",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
