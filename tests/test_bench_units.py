"""The benchmarks' pure parts: traffic they send, how they read CPU time and profiles.

No figures are asserted here (performance comes from `./run bench` only); these check
that the benchmarks measure what they claim to.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.memory import fit
from bench.procstat import CpuTrace, cpu_seconds, rss_mb
from bench.profile import summarise
from bench.traffic import fleet, messages_for
from carewatch.db.registry import DeviceInfo
from ingest.validate import Accepted, validate


def test_bench_traffic_is_valid_wristband_telemetry_of_registered_devices() -> None:
    members = fleet(3)
    registry = {d.device_id: DeviceInfo(d.device_id, d.elder_id, "wristband") for d in members}
    messages = messages_for(members, 7)  # three simulated minutes, the last one partial
    assert [m.seq for m in messages] == [1, 1, 1, 2, 2, 2, 3]
    assert len({(m.device_id, m.seq) for m in messages}) == 7  # nothing a dedup would drop
    for m in messages:
        result = validate(m.topic, m.payload, registry, received_ms=m.ts_ms, max_payload_bytes=4096)
        assert isinstance(result, Accepted), result
        assert {"hr", "spo2", "steps", "battery", "worn", "lat", "lon"} <= set(result.event.data)


def test_cpu_trace_interpolates_between_samples() -> None:
    trace = CpuTrace(os.getpid())
    trace.walls, trace.cpus = [10.0, 12.0, 14.0], [1.0, 2.0, 4.0]
    assert trace.at(11.0) == 1.5
    assert trace.at(13.5) == 3.5
    assert trace.at(5.0) == 1.0 and trace.at(20.0) == 4.0


def test_proc_readings_of_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert 10 < rss_mb(os.getpid()) < 4096


def test_profile_summary_counts_a_function_once_per_stack(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (t);outer (/work/main/ingest/a.py:1);inner (/x/site-packages/p/b.py:2) 3\n"
        "thread (t);outer (/work/main/ingest/a.py:1);outer (/work/main/ingest/a.py:9) 1\n"
    )
    lines = summarise(raw)
    assert lines[0].endswith("outer (ingest/a.py)") and lines[0].startswith("100.0% incl")
    assert "25.0% self" in lines[0]  # self only where it is the innermost frame
    assert lines[1] == " 75.0% incl  75.0% self  inner (p/b.py)"


def test_memory_fit_gives_megabytes_per_10k_devices() -> None:
    points = [
        {"devices": 1_000.0, "x": 51.0},
        {"devices": 10_000.0, "x": 60.0},
        {"devices": 100_000.0, "x": 150.0},
    ]
    f = fit(points, "x")
    assert abs(f["mb_per_10k"] - 10.0) < 1e-6
    assert abs(f["base_mb"] - 50.0) < 1e-6
