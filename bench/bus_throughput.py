"""Bus throughput: raw Redis Streams vs the rules engine consuming its telemetry lanes.

    .venv/bin/python -m bench.bus_throughput --events 50000

N telemetry Events (ingest's own validation of realistic wristband payloads) are put on
the telemetry.{shard} streams by ingest's BusPublisher (FastStream framing, one round
trip per 500, each shard's telemetry of a call in batch entries as ingest publishes
them: docs/adr/0006-telemetry-batches-on-the-bus.md). Then:

(a) raw limit: redis-py XADD of the same bodies (pipelined, 500 per round trip), and a
    consumer group reading them back with XREADGROUP (COUNT 500) + pipelined XACK;
(b) the rules worker (`carewatch rules`, its own process) consuming the N events in
    group "rules": from the first sample (50 ms polling of the groups in Redis) where it
    has read an entry until every shard's group has no lag and nothing pending.
    Deliveries beyond N (carewatch_rules_events_total in its /metrics, read at the end)
    are redeliveries (XAUTOCLAIM of entries that waited longer than the reclaim time in
    the worker): counted and reported. This is a cold
    start: every device is new to the worker, so its detectors want most first messages
    (learning zones, arming deadlines);
(c) then N more messages of the same devices, published while the worker runs (by
    BusPublisher, in a thread) and measured the same way: the warm, steady state,
    where detectors want few messages. If the worker keeps up with the publisher, this
    measures the publisher; the worker's msg per CPU-second still tells its cost.
    `--warm-rate R` publishes them at R msg/s instead: the steady state at a production
    rate, where the worker reads small batches and lingers between them.

With --profile, py-spy records the worker in each phase apart: cold in
bench/results/rules_profile.txt, warm in rules_profile_warm.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import RESULTS, BenchEnv, bench_env, counter_total, table, write_results
from bench.procstat import CpuTrace
from bench.profile import start_profiler, stop_profiler, summarise
from bench.traffic import fleet, messages_for, register_fleet
from carewatch.bus import STREAM_MAXLEN, make_bus, shard_of, shard_streams
from carewatch.db.registry import DeviceInfo
from carewatch.messages import Event, encode
from harness.pipeline import Pipeline
from harness.services import free_port
from ingest.publisher import BusPublisher
from ingest.validate import Accepted, validate

BATCH = 500
TIMEOUT_S = 300.0


def make_events(devices: int, count: int) -> list[Event]:
    members = fleet(devices)
    registry = {d.device_id: DeviceInfo(d.device_id, d.elder_id, "wristband") for d in members}
    events = []
    for m in messages_for(members, count):
        result = validate(
            m.topic, m.payload, registry, received_ms=m.ts_ms + 300, max_payload_bytes=65536
        )
        assert isinstance(result, Accepted), result
        events.append(result.event)
    return events


async def faststream_publish(env: BenchEnv, events: list[Event], rate: float = 0.0) -> float:
    """Publish as fast as BusPublisher goes or, with `rate`, at that many msg/s (in
    steps of 10 ms, as ingest flushes a steady load)."""
    bus = make_bus(env.settings)
    await bus.start()
    try:
        publisher = BusPublisher(
            bus, env.settings.bus_shards, env.settings.bus_telemetry_per_message
        )
        step = max(1, min(BATCH, round(rate / 100))) if rate else BATCH
        started = time.perf_counter()
        for i in range(0, len(events), step):
            await publisher.publish([(e, time.monotonic()) for e in events[i : i + step]])
            if rate:
                ahead = started + (i + step) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return len(events) / (time.perf_counter() - started)
    finally:
        await bus.stop()


def raw_streams(env: BenchEnv, events: list[Event]) -> dict[str, float]:
    """XADD the same bodies to raw.{shard}, then read them back in a consumer group."""
    r = redis.Redis.from_url(env.settings.redis_url)
    shards = env.settings.bus_shards
    streams = [f"raw.{shard_of(e.elder_id, shards)}" for e in events]
    bodies = [encode(e) for e in events]
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        pipe = r.pipeline(transaction=False)
        for stream, body in zip(streams[i : i + BATCH], bodies[i : i + BATCH], strict=True):
            pipe.xadd(stream, {"__data__": body}, maxlen=STREAM_MAXLEN)
        pipe.execute()
    xadd_s = time.perf_counter() - started
    names = sorted(set(streams))
    for name in names:
        r.xgroup_create(name, "raw", id="0")
    consumed = 0
    started = time.perf_counter()
    while consumed < len(events):
        reply: Any = r.xreadgroup("raw", "c1", dict.fromkeys(names, ">"), count=BATCH, block=1000)
        pipe = r.pipeline(transaction=False)
        for stream, entries in reply:
            if entries:
                pipe.xack(stream, "raw", *[entry_id for entry_id, _ in entries])
                consumed += len(entries)
        pipe.execute()
    consume_s = time.perf_counter() - started
    r.close()
    return {"xadd_msg_s": len(events) / xadd_s, "consume_msg_s": len(events) / consume_s}


def _consumed(metrics_url: str) -> float:
    return counter_total(metrics_url, "carewatch_rules_events_total")


def group_drained(r: redis.Redis, shards: int) -> bool:
    for stream in (s for shard in range(shards) for s in shard_streams(shard)):
        if not r.exists(stream):
            continue
        groups: Any = r.xinfo_groups(stream)
        for group in groups:
            if group["name"] == b"rules" and (group["pending"] or group.get("lag")):
                return False
    return True


def rules_consume(
    env: BenchEnv,
    count: int,
    warm: list[Event] | None = None,
    profile: Path | None = None,
    warm_rate: float = 0.0,
) -> dict[str, Any]:
    """The worker drains the `count` events already on the streams (cold: every device
    is new to it); then, if given, `warm` is published while it runs and drained too
    (its detectors have seen every device: the steady state)."""
    port = free_port()
    settings = env.settings.model_copy(update={"metrics_port": port})
    pipeline = Pipeline(settings, env.workdir)
    r = redis.Redis.from_url(settings.redis_url)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        proc = pipeline.start("rules")
        trace = CpuTrace(proc.pid)
        spy = start_profiler(proc.pid, profile) if profile else None
        cold = _drain(pipeline, r, trace, url, settings.bus_shards, (0.0, 0), count)
        if spy is not None:
            stop_profiler(spy)
        result: dict[str, Any] = dict(cold)
        if warm:
            # the steady state apart: the cold phase's database reads would swamp it
            spy = start_profiler(proc.pid, warm_profile_path(profile)) if profile else None
            publisher = threading.Thread(
                target=lambda: asyncio.run(faststream_publish(env, warm, warm_rate)), daemon=True
            )
            publisher.start()
            base = (cold["deliveries"], int(cold["read"]))
            result["warm"] = _drain(
                pipeline, r, trace, url, settings.bus_shards, base, len(warm), publisher
            )
            publisher.join()
            if spy is not None:
                stop_profiler(spy)
        return result
    finally:
        pipeline.stop_all()
        r.close()


def warm_profile_path(cold: Path) -> Path:
    return cold.with_name(f"{cold.stem}_warm{cold.suffix}")


def _progress(r: redis.Redis, shards: int) -> tuple[int, int]:
    """Entries (a telemetry entry holds a batch of events) group "rules" has read, and
    of those acknowledged, on every shard's streams. Read from Redis, so sampling costs
    the worker nothing: answering a /metrics scrape every 50 ms took ~3 % of its busy
    samples while it consumed, against one every 15 s or more in production."""
    read = acked = 0
    for stream in (s for shard in range(shards) for s in shard_streams(shard)):
        if not r.exists(stream):
            continue
        groups: Any = r.xinfo_groups(stream)
        for group in groups:
            if group["name"] == b"rules":
                entries_read = int(group.get("entries-read") or 0)
                read += entries_read
                acked += entries_read - int(group["pending"])
    return read, acked


def _drain(
    pipeline: Pipeline,
    r: redis.Redis,
    trace: CpuTrace,
    url: str,
    shards: int,
    base: tuple[float, int],
    count: int,
    publisher: threading.Thread | None = None,
) -> dict[str, float]:
    """Sample the worker until the `count` events past `base` (deliveries so far, entries
    read so far) are handled: `publisher` (if any) has finished and every group is
    drained. Telemetry travels in batches (several events per entry), so progress is
    sampled in entries: the rate counts from the first sample where the worker had read
    an entry past `base` (a read can hold thousands of events: its acknowledgement comes
    too late to start the clock). Deliveries (events, redeliveries included) are read
    from the worker's /metrics once at the end."""
    base_deliveries, base_read = base
    samples: list[tuple[float, int, int]] = []
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        pipeline.assert_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"rules read {samples[-1:]} entries past {base_read}")
        read, acked = _progress(r, shards)
        trace.sample()
        samples.append((trace.walls[-1], read - base_read, acked - base_read))
        published = publisher is None or not publisher.is_alive()
        # drained, and every event handled (a group not yet created, or a publisher
        # that died, would look drained): the metrics are scraped only then
        if (
            read > base_read
            and published
            and group_drained(r, shards)
            and _consumed(url) - base_deliveries >= count
        ):
            break
        time.sleep(0.05)
    first_wall, _, first_acked = next(s for s in samples if s[1] > 0)
    last_wall, entries, _ = samples[-1]
    before_first = first_acked * count / entries  # events already handled at the first sample
    wall = last_wall - first_wall
    cpu = trace.at(last_wall) - trace.at(first_wall)
    deliveries = _consumed(url)
    return {
        "msg_s": (count - before_first) / wall,
        "deliveries": deliveries,
        "read": base_read + entries,
        "events_per_entry": count / entries,
        "redelivered": deliveries - base_deliveries - count,
        "seconds": wall,
        "worker_cpu_s": cpu,
        "worker_cores": cpu / wall,
        "msg_per_cpu_s": (count - before_first) / cpu if cpu > 0 else float("nan"),
    }


def run(
    events: int = 50_000, devices: int = 5_000, profile: bool = False, warm_rate: float = 0.0
) -> dict[str, Any]:
    profile_path = RESULTS / "rules_profile.txt" if profile else None
    # the same fleet twice over: the second half are the devices' later messages
    evts = make_events(devices, 2 * events)
    cold, warm = evts[:events], evts[events:]
    with bench_env(log_level="WARNING") as env:
        register_fleet(env.settings.database_url, fleet(devices))
        publish = asyncio.run(faststream_publish(env, cold))
        raw = raw_streams(env, cold)
        rules = rules_consume(env, events, warm, profile_path, warm_rate)
    result = {
        "events": events,
        "warm_rate": warm_rate,
        "shards": 8,
        "raw": raw,
        "faststream_publish_msg_s": publish,
        "rules": rules,
        "ratio_consume": rules["msg_s"] / raw["consume_msg_s"],
        "ratio_consume_warm": rules["warm"]["msg_s"] / raw["consume_msg_s"],
        "ratio_publish": publish / raw["xadd_msg_s"],
    }
    if profile_path is not None:
        result["profile_top"] = summarise(profile_path)
        result["profile_top_warm"] = summarise(warm_profile_path(profile_path))
    write_results("bus_throughput", result)
    return result


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "bus: rules engine consuming telemetry, cold (batch reader)",
            f"{r['rules']['msg_s']:.0f} msg/s",
            f"{r['raw']['consume_msg_s']:.0f} msg/s (XREADGROUP+XACK)",
            f"{r['ratio_consume']:.3f}",
        ),
        (
            "bus: rules engine consuming telemetry, warm (batch reader)",
            f"{r['rules']['warm']['msg_s']:.0f} msg/s",
            f"{r['raw']['consume_msg_s']:.0f} msg/s (XREADGROUP+XACK)",
            f"{r['ratio_consume_warm']:.3f}",
        ),
        (
            "bus: ingest BusPublisher (framed XADDs, one script call per batch)",
            f"{r['faststream_publish_msg_s']:.0f} msg/s",
            f"{r['raw']['xadd_msg_s']:.0f} msg/s (XADD pipelined)",
            f"{r['ratio_publish']:.2f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=5_000)
    parser.add_argument("--profile", action="store_true", help="record the rules worker (py-spy)")
    parser.add_argument(
        "--warm-rate",
        type=float,
        default=0.0,
        help="publish the warm phase at this many msg/s (default: as fast as it goes)",
    )
    args = parser.parse_args()
    r = run(args.events, args.devices, args.profile, args.warm_rate)
    print(table([("what", "measured", "limit (same run)", "ratio"), *summary_rows(r)]))
    for phase, figures in (("cold", r["rules"]), ("warm", r["rules"]["warm"])):
        print(
            f"rules worker, {phase}: {figures['msg_per_cpu_s']:.0f} msg per CPU-second,"
            f" {figures['worker_cores']:.2f} cores busy while consuming;"
            f" {figures['redelivered']:.0f} redeliveries"
        )
    for phase, key in (("cold", "profile_top"), ("warm", "profile_top_warm")):
        for line in r.get(key, []):
            print(f"  profile ({phase}):", line)


if __name__ == "__main__":
    main()
