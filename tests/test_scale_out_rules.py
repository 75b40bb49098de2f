"""Scale-out on real processes: two ingest and two rules workers share the load.

The rules workers split the events shards between them (one owner per shard, leases in
Redis); SOS presses of many elders each open exactly one alert; after one rules worker
is killed with SIGKILL, the other takes its shards over, and presses on those shards,
including the ones made before the takeover, still open exactly one alert each.
"""

from __future__ import annotations

import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from carewatch.bus import shard_of
from carewatch.settings import Settings
from harness.pipeline import Pipeline
from harness.services import start_mosquitto, wait_until
from registry.importer import import_files
from rules_engine.shards import KEY_PREFIX
from tests.chaos_support import Wristbands, band_id, elder_id, query, write_many_elders

pytestmark = pytest.mark.slow

ELDERS = 32
LEASE_MS = 1500


def rules_owner(pid: int) -> str:
    return f"rules-{socket.gethostname()}-{pid}"  # rules_engine.worker.worker_id()


def shard_owners(settings: Settings) -> list[str | None]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        values = client.mget([f"{KEY_PREFIX}:shard:{s}" for s in range(settings.bus_shards)])
    finally:
        client.close()
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def alerts_per_elder(settings: Settings) -> Counter[str]:
    rows = query(settings, "SELECT elder_id FROM alerts WHERE kind = 'sos'")
    return Counter(str(r[0]) for r in rows)


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    # A broker of its own: the persistent sessions of ingest instances 1 and 2 stay in the
    # shared subscription after the test, and Mosquitto keeps routing a share of every
    # uplink to offline members (docs/reliability.md): they would starve later tests.
    mosquitto = start_mosquitto(tmp_path / "mosquitto")
    s = settings.model_copy(update={"rules_shard_lease_ms": LEASE_MS, "mqtt_port": mosquitto.port})
    report = import_files(s.database_url, write_many_elders(tmp_path / "ledger", ELDERS))
    assert not report.errors, report.errors
    p = Pipeline(s, tmp_path)
    for i in (1, 2):
        p.start("rules", instance=i)
        p.start("ingest", instance=i)
    yield p
    p.stop_all()
    mosquitto.stop()


def test_two_rules_workers_split_shards_and_survive_a_kill(pipeline: Pipeline) -> None:
    s = pipeline.settings
    bands = Wristbands(s.mqtt_port)
    rules = {i: rules_owner(pipeline.procs[f"rules-{i}"].pid) for i in (1, 2)}

    def split_evenly() -> bool:
        pipeline.assert_running()
        owners = shard_owners(s)
        return Counter(owners) == {rules[1]: 4, rules[2]: 4}

    wait_until(split_evenly, 20, "the 8 shards split 4/4 between the two rules workers")

    def ingest_ready() -> bool:
        pipeline.assert_running()
        bands.send_telemetry(band_id(ELDERS))
        rows = query(s, "SELECT 1 FROM telemetry WHERE device_id = %s", band_id(ELDERS))
        return bool(rows)

    wait_until(ingest_ready, 30, "ingest to store a probe")

    first = range(1, 17)
    bands.send([(band_id(n), "sos") for n in first])
    wait_until(lambda: len(alerts_per_elder(s)) == len(first), 20, "an alert per elder")
    assert alerts_per_elder(s) == {elder_id(n): 1 for n in first}

    # kill rules worker 1; presses on its shards are made before anyone took them over
    owners = shard_owners(s)
    orphaned = {shard for shard, o in enumerate(owners) if o == rules[1]}
    pipeline.kill("rules-1", signal.SIGKILL)
    before, after = range(17, 25), range(25, ELDERS + 1)
    bands.send([(band_id(n), "sos") for n in before])

    wait_until(
        lambda: shard_owners(s) == [rules[2]] * s.bus_shards,
        20,
        "the surviving rules worker to own every shard",
    )
    bands.send([(band_id(n), "sos") for n in after])
    everyone = range(1, ELDERS + 1)
    wait_until(lambda: len(alerts_per_elder(s)) == len(everyone), 30, "an alert per elder")
    assert alerts_per_elder(s) == {elder_id(n): 1 for n in everyone}
    # the test proves something only if presses landed on the dead worker's shards
    late = {shard_of(elder_id(n), s.bus_shards) for n in (*before, *after)}
    assert late & orphaned
    # each alert opened once and never repeated in its timeline: no press applied twice
    timeline = query(
        s,
        "SELECT e.action, count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
        " WHERE a.kind = 'sos' AND e.action IN ('opened', 'repeated') GROUP BY 1",
    )
    assert timeline == [("opened", ELDERS)]
