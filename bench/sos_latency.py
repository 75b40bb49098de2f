"""End-to-end SOS latency: device time of the press -> the fake SMS provider's request.

    .venv/bin/python -m bench.sos_latency --presses 100 --load 0,1000,5000,10000

Every worker runs as its own `carewatch` process (as deployed); an optional background
load of wristband telemetry runs at fixed rates while SOS presses of distinct elders are
injected one every `--interval` seconds. Reports p50/p99/max per load level and the
highest level whose p99 stays under 100 ms.

    .venv/bin/python -m bench.sos_latency --presses 100 --load 0,10000 --noisy 1 --saturate

`--noisy N` runs N busy processes beside the workers (bench/noisy.py) for every level, as a
neighbour's job on a shared server would. `--saturate` first finds the highest telemetry
rate the pipeline stores (the load offered far above it for a few seconds; what ingest
stored per second is the saturation rate), then measures at that rate and at 1.5 times it
too. At every level the telemetry backlog (published by the load, not yet stored) when the
load stops, and the time it takes to drain, are reported: telemetry may lag, never vanish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import psycopg
import redis

from bench.common import RESULTS, bench_env, percentile, seed_street, table, write_results
from bench.load import Load
from bench.noisy import NoisyNeighbour
from bench.procstat import CpuUse, nice
from bench.profile import _py_spy as py_spy
from bench.profile import start_profiler, stop_profiler, summarise
from carewatch import bus
from carewatch.bus_batch_reader import entry_body
from carewatch.messages import DeviceEvent, Telemetry, decode_alert_change, decode_event
from carewatch.settings import Settings
from carewatch.topics import topic
from harness.pipeline import Pipeline, with_fake_providers
from harness.services import free_port, wait_until
from notifier.channels.aliyun_sms import out_id_for

SMS_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 180.0  # how long the telemetry backlog may take to drain after a level
SATURATION_OFFER = 200_000.0  # msg/s offered while finding the saturation rate
# The load's seqs are microsecond clocks (~1.7e15), presses' milliseconds (~1.7e12) and
# the readiness probes' 1: so the load's own rows in `telemetry` are the ones above this.
LOAD_SEQ_MIN = 10**14


def rows(settings: Settings, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, args).fetchall()


async def press_all(settings: Settings, bands: list[str], interval: float) -> None:
    async with aiomqtt.Client("127.0.0.1", settings.mqtt_port, identifier="bench-sos") as client:
        seq = time.time_ns() // 1_000_000
        for band in bands:
            seq += 1
            body = msgspec.json.encode(
                DeviceEvent(v=1, seq=seq, ts=time.time_ns() // 1_000_000, type="sos")
            )
            await client.publish(topic(band, "event"), body, qos=1)
            await asyncio.sleep(interval)


# Where each press's time went: every hop's timestamp is recorded by the system itself
# (PostgreSQL's now() at each transaction's start, the fake provider's receipt), all
# read against the one system clock the bench's device times come from.
STAGES = (
    ("broker+ingest", "press -> ingest received it"),
    ("ingest publish", "ingest received -> on the events stream (XADD)"),
    ("bus->rules", "on the events stream -> rules transaction began"),
    ("rules decide", "rules transaction began -> alert change on the alerts stream (XADD)"),
    ("bus->notifier", "on the alerts stream -> notifier transaction began"),
    ("notifier+provider", "notifier transaction began -> SMS provider request"),
)

_STAGE_TIMES = """
SELECT n.idempotency_key, a.source_event_id,
       (extract(epoch FROM a.device_time) * 1000)::bigint,
       (SELECT (extract(epoch FROM t.received_at) * 1000)::bigint FROM telemetry t
         WHERE t.device_id = a.device_id AND t.ts = a.device_time
           AND a.source_event_id LIKE t.device_id || ':' || t.seq || ':%%' LIMIT 1),
       (SELECT (extract(epoch FROM s.seen_at) * 1000)::bigint FROM rules_seen_events s
         WHERE s.event_id = a.source_event_id),
       a.id::text,
       (SELECT (extract(epoch FROM min(i.processed_at)) * 1000)::bigint FROM notifier_inbox i
         WHERE i.alert_id = a.id)
  FROM notifications n JOIN alerts a ON a.id = n.alert_id
 WHERE n.step = 0 AND n.channel = 'sms' AND n.recipient_kind = 'grid_worker'
   AND n.status IN ('sent', 'delivered')
"""


def event_stream_times(settings: Settings) -> dict[str, int]:
    """Event id -> when ingest appended it to its events stream: Redis's own clock, in
    the entry id (milliseconds-sequence)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        times = {}
        for shard in range(settings.bus_shards):
            entries: Any = client.xrange(bus.events_stream(shard))
            for entry_id, fields in entries:
                times[decode_event(entry_body(fields)).id] = int(entry_id.split(b"-")[0])
        return times
    finally:
        client.close()


def alert_stream_times(settings: Settings) -> dict[str, int]:
    """Alert id -> when its first "open" change was appended to the alerts stream: Redis's
    own clock, in the entry id. (rules_outbox.published_at is set by a statement after
    the append, so it is later by a database round trip, and by any wait for a pooled
    connection: a hop measured from it mixes the rules worker's time into the notifier's.)"""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        times: dict[str, int] = {}
        entries: Any = client.xrange(bus.ALERTS_STREAM)
        for entry_id, fields in entries:
            change = decode_alert_change(entry_body(fields))
            if change.status == "open":
                times.setdefault(change.alert_id, int(entry_id.split(b"-")[0]))
        return times
    finally:
        client.close()


def measure(
    pipeline: Pipeline, bands: list[str], interval: float
) -> tuple[list[float], dict[str, list[float]]]:
    s = pipeline.settings
    asyncio.run(press_all(s, bands, interval))
    expected = len(bands)

    def all_sent() -> bool:
        pipeline.assert_running()
        n = rows(
            s,
            "SELECT count(*) FROM notifications WHERE step = 0 AND channel = 'sms'"
            " AND recipient_kind = 'grid_worker' AND status IN ('sent', 'delivered')",
        )[0][0]
        return bool(n >= expected)

    # not sustained at this load: report what did arrive (and how many did not)
    with contextlib.suppress(AssertionError):
        wait_until(all_sent, SMS_TIMEOUT_S + expected * interval, f"{expected} step-0 SMS")
    received = {
        str(r["out_id"]): int(r["received_ms"])  # type: ignore[call-overload]
        for r in pipeline.records()
        if r["provider"] == "sms" and r["outcome"] == "delivered"
    }
    latencies: list[float] = []
    stages: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    on_bus = event_stream_times(s)
    on_alerts = alert_stream_times(s)
    for key, event_id, pressed, received_ms, seen, alert_id, handled in rows(s, _STAGE_TIMES):
        sms_ms = received.get(out_id_for(key))
        if sms_ms is None:
            continue
        latencies.append(float(sms_ms - pressed))
        points = [
            pressed,
            received_ms,
            on_bus.get(event_id),
            seen,
            on_alerts.get(alert_id),
            handled,
            sms_ms,
        ]
        if None not in points:
            for (name, _), start, end in zip(STAGES, points, points[1:], strict=False):
                stages[name].append(float(end - start))
    return latencies, stages


def stacks(pid: int) -> str:
    """Where a worker's threads are now (py-spy dump), or why that is not known."""
    try:
        dump = subprocess.run(
            [py_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, SystemExit, subprocess.TimeoutExpired) as exc:
        return f"no py-spy dump: {exc}"
    return dump.stdout[-4000:]


def dedup_states(settings: Settings) -> dict[str, int]:
    """How many of ingest's dedup keys are claimed (in flight) and how many done."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        states: dict[str, int] = {}
        keys = list(client.scan_iter(f"{settings.namespace}:dedup:*", count=10_000))
        for i in range(0, len(keys), 1000):
            for value in client.mget(keys[i : i + 1000]):
                state = "done" if value == b"done" else "claimed"
                states[state] = states.get(state, 0) + 1
        return states
    finally:
        client.close()


def load_rows_stored(settings: Settings) -> int:
    return int(rows(settings, "SELECT count(*) FROM telemetry WHERE seq > %s", LOAD_SEQ_MIN)[0][0])


def drain(settings: Settings, published: int) -> tuple[int, float | None]:
    """(backlog when the load stopped, seconds until every row the broker acknowledged
    to the load was stored, or None if it had not drained within DRAIN_TIMEOUT_S)."""
    started = time.monotonic()
    backlog = max(0, published - load_rows_stored(settings))
    if backlog == 0:
        return 0, 0.0
    drained = False

    def stored_all() -> bool:
        nonlocal drained
        drained = load_rows_stored(settings) >= published
        return drained

    with contextlib.suppress(AssertionError):
        wait_until(stored_all, DRAIN_TIMEOUT_S, f"{published} telemetry rows stored")
    return backlog, (time.monotonic() - started) if drained else None


# The CPU priorities the systemd units give the alarm path (infra/deploy/systemd:
# CPUWeight 1000 for ingest's events lane and the notifier, 300 for the rules worker,
# against 100 for any other unit such as the noisy neighbour's), as nice values of about
# the same weight ratios (nice -10: 9.3x, -5: 3x the weight of nice 0), since the bench's
# processes share one cgroup. Ingest's telemetry lane keeps the default weight there (as
# the noisy neighbour, Mosquitto and Redis do), so here it does not lower its own priority
# (CAREWATCH_BULK_LANE_NICE=0; its default, 10, is for run-all and a lane started by hand).
# Raising a priority needs root; without it the processes keep nice 0.
#
# The fake providers stand in for Aliyun's and WeCom's servers, which do not share the
# district server's CPU: they run at the notifier's priority, so that the time the fake
# takes to get to a request it has been sent (its handler stamps the SMS) is not counted
# as the system's latency. At nice 0 on the busy machine, that queue alone took seconds.
ALARM_PATH_NICE = {"ingest": -10, "notifier": -10, "rules": -5, "fake-providers": -10}


def renice(pid: int, nice: int) -> None:
    """Every thread of `pid` (on Linux a nice value is per thread) to `nice`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)


@contextlib.contextmanager
def running_pipeline(
    elders: int, lanes_apart: bool = True
) -> Iterator[tuple[Pipeline, list[str], dict[str, int]]]:
    """A seeded street with every worker running and ready: (pipeline, bands, watched pids).

    As deployed (infra/deploy/systemd): ingest's two lanes in processes of their own, the
    provider callbacks app taking the fake's delivery reports; `lanes_apart=False`: one
    ingest process with both lanes (the `carewatch-ingest@` unit)."""
    with bench_env(escalation_wait_s=3600.0, log_level="WARNING") as env:
        settings = with_fake_providers(env.settings).model_copy(
            update={"callbacks_port": free_port()}
        )
        seed_street(settings, max(elders, 100), env.workdir)
        bands = [
            r[0]
            for r in rows(settings, "SELECT id FROM devices WHERE kind = 'wristband' ORDER BY id")
        ]
        pipeline = Pipeline(settings, env.workdir)
        try:
            for name in ("fake-providers", "provider-callbacks", "ack-server", "notifier", "rules"):
                pipeline.start(name)
            if lanes_apart:
                # the alarm lane and the bulk lane in processes of their own, the bulk one
                # at the lower CPU priority its unit gives it
                pipeline.start("ingest", ingest_lanes="events")
                pipeline.start("ingest", instance=1, ingest_lanes="telemetry", bulk_lane_nice=0)
            else:
                pipeline.start("ingest")
            wait_ready(pipeline, bands)
            # Each level starts with what earlier levels (and the saturation search) left
            # PostgreSQL to write out already written: a spread checkpoint of a few
            # hundred thousand rows otherwise runs through the next level, and its I/O
            # slowed the alarm path's commits by up to ~170 ms even at no load.
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            watched = {name: proc.pid for name, proc in pipeline.procs.items()}
            for name, nice in ALARM_PATH_NICE.items():
                if name != "ingest" or lanes_apart:  # one ingest process: its unit's weight
                    renice(watched[name], nice)
            watched |= {"mosquitto": env.mosquitto.popen.pid, "redis": env.redis.popen.pid}
            yield pipeline, bands, watched
        finally:
            pipeline.stop_all()


def find_saturation(seconds: float, noisy: int, lanes_apart: bool = True) -> float:
    """The telemetry rate (msg/s) the running pipeline stores when offered far more."""
    with running_pipeline(100, lanes_apart) as (pipeline, bands, _), NoisyNeighbour(noisy):
        s = pipeline.settings
        with Load(s.mqtt_port, bands, SATURATION_OFFER):
            # the first seconds fill buffers and start-up caches: measure after them
            time.sleep(min(3.0, seconds / 2))
            t0, n0 = time.monotonic(), load_rows_stored(s)
            time.sleep(seconds)
            t1, n1 = time.monotonic(), load_rows_stored(s)
        return (n1 - n0) / (t1 - t0)


def pipeline_cores(cores: dict[str, float]) -> float:
    return sum(n for name, n in cores.items() if not name.startswith(("noisy", "fake")))


PROFILED = (
    "ingest",
    "ingest-1",  # the telemetry lane
    "rules",
    "notifier",
    "provider-callbacks",
    "fake-providers",  # not the system, but on its CPU in the bench
)


def run_level(
    presses: int,
    rate: float,
    interval: float,
    noisy: int = 0,
    profile: bool = False,
    lanes_apart: bool = True,
) -> dict[str, Any]:
    with (
        running_pipeline(presses, lanes_apart) as (pipeline, bands, watched),
        NoisyNeighbour(noisy) as hog,
    ):
        settings = pipeline.settings
        spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        with Load(settings.mqtt_port, bands, rate) as load:
            cpu = CpuUse(watched | hog.pids)
            nices = {name: nice(pid) for name, pid in (watched | hog.pids).items()}
            if profile:
                for name in PROFILED:
                    if name in watched:
                        out = RESULTS / f"sos_profile_{name}_{rate:.0f}.txt"
                        spies[name] = (start_profiler(watched[name], out), out)
            latencies, stages = measure(pipeline, bands[:presses], interval)
            cores = cpu.cores()
            for spy, _ in spies.values():
                stop_profiler(spy)
        backlog, drain_s = drain(settings, int(load.acked.value))
        not_drained: dict[str, Any] = {}
        if drain_s is None:  # say why: which worker stopped, what it logged last
            not_drained = {
                "rows_missing": int(load.acked.value) - load_rows_stored(settings),
                "exited": {
                    n: p.returncode for n, p in pipeline.procs.items() if p.poll() is not None
                },
                "ingest_log_tails": {
                    n: pipeline.tail(n, 15) for n in ("ingest", "ingest-1") if n in pipeline.procs
                },
                "dedup_keys": dedup_states(settings),
                "telemetry_lane_stacks": stacks(
                    pipeline.procs["ingest-1" if lanes_apart else "ingest"].pid
                ),
            }
            print(f"  not drained: {not_drained}", flush=True)
        return {
            "not_drained": not_drained,
            "profile": {name: summarise(out, top=25) for name, (_, out) in spies.items()},
            "load_target_msg_s": rate,
            "load_achieved_msg_s": round(load.rate_achieved),
            "noisy_processes": noisy,
            "presses": presses,
            "delivered": len(latencies),
            "sustained": len(latencies) == presses,
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies, default=float("nan")),
            # telemetry published by the load but not yet stored when it stopped,
            # and how long storing it took (None: not drained in DRAIN_TIMEOUT_S)
            "telemetry_published": int(load.sent.value),
            "telemetry_acknowledged": int(load.acked.value),
            # PUBACKed but routed to no session (or refused): dropped by the broker, not
            # owed; 0 once ingest's telemetry session is subscribed (wait_ready)
            "telemetry_unrouted": int(load.unrouted.value),
            "telemetry_backlog": backlog,
            "telemetry_drain_s": drain_s,
            # CPU cores each process kept busy while the presses were measured
            "cores": cores,
            "nice": nices,
            # the whole pipeline's CPU per telemetry message: every process of the system
            # (broker, ingest, bus, rules, notifier; not the load, the fake providers, the
            # noisy neighbour or the shared PostgreSQL) over the rate achieved
            "pipeline_cores": round(pipeline_cores(cores), 2),
            "cpu_us_per_msg": round(pipeline_cores(cores) / load.rate_achieved * 1e6, 1)
            if load.rate_achieved
            else None,
            "stages_ms": {
                name: {
                    "p50": percentile(v, 0.5),
                    "p99": percentile(v, 0.99),
                    "max": max(v, default=float("nan")),
                }
                for name, v in stages.items()
            },
        }


def wait_ready(pipeline: Pipeline, bands: list[str]) -> None:
    """Until ingest stores and the rules worker consumes every shard's event lane, and
    ingest's telemetry session is subscribed.

    A rules worker takes its shards over a few lease rounds, starting a consumer for
    each: presses measured before that waited ~100-300 ms for their shard (the slowest
    presses of a level), which is start-up, not latency under load. So one door event
    per shard goes through first (seq 1: never a press's or the load's seq).

    The telemetry session of a fresh broker exists only once ingest's telemetry lane
    subscribed: the broker drops what is published before (PUBACK "no matching
    subscribers"). With the lanes in separate processes the telemetry one may start
    after the events lane is ready, so one telemetry sample must be stored too; before
    this check, a load started then lost its first seconds and the bench took them for
    a backlog that never drained."""
    s = pipeline.settings
    by_shard: dict[int, str] = {}
    for band, elder in rows(
        s, "SELECT id, elder_id FROM devices WHERE id = ANY(%s) ORDER BY id", bands
    ):
        by_shard.setdefault(bus.shard_of(elder, s.bus_shards), band)
    probes = sorted(by_shard.values())

    async def probe() -> None:
        async with aiomqtt.Client("127.0.0.1", s.mqtt_port, identifier="bench-probe") as c:
            for band in probes:
                body = msgspec.json.encode(
                    DeviceEvent(v=1, seq=1, ts=time.time_ns() // 1_000_000, type="door_open")
                )
                await c.publish(topic(band, "event"), body, qos=1)
            sample = Telemetry(v=1, seq=1, ts=time.time_ns() // 1_000_000, battery=80)
            await c.publish(topic(probes[0], "telemetry"), msgspec.json.encode(sample), qos=1)

    def consumed() -> bool:
        pipeline.assert_running()
        asyncio.run(probe())
        stored = rows(
            s, "SELECT count(*) FROM telemetry WHERE device_id = %s AND seq = 1", probes[0]
        )
        if not stored[0][0]:
            return False
        # a message id is (device, seq, device time): any probe of a band counts
        seen = rows(
            s,
            "SELECT count(DISTINCT split_part(event_id, ':', 1)) FROM rules_seen_events"
            " WHERE event_id LIKE ANY(%s)",
            [f"{band}:1:%" for band in probes],
        )
        return bool(seen[0][0] == len(probes))

    wait_until(consumed, 60, "ingest's two lanes and the rules worker's shards ready")


def run(
    presses: int,
    levels: list[float],
    interval: float,
    noisy: int = 0,
    saturate_s: float = 0.0,
    profile: bool = False,
    lanes_apart: bool = True,
) -> dict[str, Any]:
    saturation = None
    if saturate_s > 0:
        print(f"finding the saturation rate ({saturate_s:.0f} s of overload) ...", flush=True)
        saturation = round(find_saturation(saturate_s, noisy, lanes_apart))
        print(f"  the pipeline stores {saturation} msg/s at most", flush=True)
        levels = sorted({*levels, float(saturation), float(round(saturation * 1.5))})
    results = []
    for rate in levels:
        print(f"load {rate:.0f} msg/s, {noisy} noisy: {presses} SOS presses ...", flush=True)
        # profiled: the highest level only (py-spy takes some CPU of its own)
        profiled = profile and rate == max(levels)
        results.append(run_level(presses, rate, interval, noisy, profiled, lanes_apart))
        print(f"  {results[-1]}", flush=True)
    # what telemetry itself costs: the pipeline's cores over those of the presses alone
    # (the notifier, the callbacks app and the rules worker's alarm work are busy at no
    # load too), per telemetry message
    idle = next((r["pipeline_cores"] for r in results if r["load_achieved_msg_s"] == 0), None)
    for r in results:
        rate = r["load_achieved_msg_s"]
        r["cpu_us_per_msg_marginal"] = (
            round((r["pipeline_cores"] - idle) / rate * 1e6, 1)
            if idle is not None and rate
            else None
        )
    ok = [r["load_achieved_msg_s"] for r in results if r["sustained"] and r["p99_ms"] < 100]
    summary = {
        "levels": results,
        "noisy_processes": noisy,
        "saturation_msg_s": saturation,
        "highest_load_with_p99_under_100ms": max(ok) if ok else None,
    }
    write_results("sos_latency", summary)
    return summary


def level_table(summary: dict[str, Any]) -> str:
    return table(
        [
            (
                "load target",
                "achieved",
                "presses",
                "SMS sent",
                "p50 ms",
                "p99 ms",
                "max ms",
                "telemetry backlog",
                "drain s",
            )
        ]
        + [
            (
                f"{r['load_target_msg_s']:.0f}",
                str(r["load_achieved_msg_s"]),
                str(r["presses"]),
                str(r["delivered"]),
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                str(r["telemetry_backlog"]),
                "not drained"
                if r["telemetry_drain_s"] is None
                else f"{r['telemetry_drain_s']:.1f}",
            )
            for r in summary["levels"]
        ]
    )


def stage_table(summary: dict[str, Any]) -> str:
    """p50/p99/max of each hop, one column per load level."""
    levels = summary["levels"]
    return table(
        [("stage (ms, p50/p99/max)", *(f"{r['load_achieved_msg_s']} msg/s" for r in levels))]
        + [
            (
                f"{name}: {what}",
                *("{p50:.0f}/{p99:.0f}/{max:.0f}".format(**r["stages_ms"][name]) for r in levels),
            )
            for name, what in STAGES
        ]
    )


def cores_table(summary: dict[str, Any]) -> str:
    """CPU cores each process kept busy, one column per load level."""
    levels = summary["levels"]
    return table(
        [("CPU cores busy", *(f"{r['load_achieved_msg_s']} msg/s" for r in levels))]
        + [
            (name, *(f"{r['cores'][name]:.2f}" for r in levels))
            for name in sorted(levels[0]["cores"], key=lambda n: -levels[-1]["cores"][n])
        ]
        + [
            ("pipeline (no load, noisy, fakes)", *(f"{r['pipeline_cores']:.2f}" for r in levels)),
            (
                "pipeline CPU us per telemetry msg",
                *(
                    "-" if r["cpu_us_per_msg"] is None else f"{r['cpu_us_per_msg']:.0f}"
                    for r in levels
                ),
            ),
            (
                "  of which telemetry (over no load)",
                *(
                    "-"
                    if r.get("cpu_us_per_msg_marginal") is None
                    else f"{r['cpu_us_per_msg_marginal']:.0f}"
                    for r in levels
                ),
            ),
        ]
    )


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            f"SOS press -> SMS request, load {r['load_achieved_msg_s']} msg/s",
            f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
            + ("" if r["sustained"] else f" ({r['delivered']}/{r['presses']} sent)"),
            "100 ms (p99 target)",
            f"{r['p99_ms'] / 100:.2f}",
        )
        for r in summary["levels"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--load", default="0", help="comma-separated background rates, msg/s")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between presses")
    parser.add_argument(
        "--noisy", type=int, default=0, help="busy processes beside the workers (0: none)"
    )
    parser.add_argument(
        "--saturate",
        type=float,
        default=0.0,
        nargs="?",
        const=10.0,
        metavar="SECONDS",
        help="first find the saturation rate over SECONDS of overload (default 10) and add"
        " it and 1.5 times it to the levels",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the workers with py-spy at the highest level and print where their"
        " time goes (bench/results/sos_profile_*.txt)",
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="run ingest's two lanes in one process (the carewatch-ingest@ unit) instead of"
        " one process per lane, as the deployment's units do",
    )
    args = parser.parse_args()
    summary = run(
        args.presses,
        [float(x) for x in args.load.split(",")],
        args.interval,
        args.noisy,
        args.saturate,
        args.profile,
        not args.one_process,
    )
    print(level_table(summary))
    print(stage_table(summary))
    print(cores_table(summary))
    for r in summary["levels"]:
        for name, lines in r["profile"].items():
            print(f"profile of {name} at {r['load_achieved_msg_s']} msg/s:")
            for line in lines:
                print("  ", line)
    if summary["saturation_msg_s"] is not None:
        print(f"saturation: the pipeline stores {summary['saturation_msg_s']} msg/s at most")
    print(
        "highest sustained load with p99 < 100 ms:"
        f" {summary['highest_load_with_p99_under_100ms']} msg/s"
    )


if __name__ == "__main__":
    main()
