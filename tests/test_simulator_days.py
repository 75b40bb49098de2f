"""Simulated normal days (simulators.days): pure, no servers.

Each test reads what the sensors sent back through the same decoders ingest uses, and
checks it against the routine the day was generated from (days.day_plan)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from datetime import date, datetime

import msgspec
import pytest

from carewatch.db.registry import DeviceInfo
from carewatch.messages import DeviceEvent, DeviceStatus, Telemetry
from carewatch.settings import Settings
from ingest.validate import Accepted, validate
from rules_engine.detectors.fall.signal_model import FallSignalModel
from simulators import geo
from simulators.days import SITE_TZ, SimElder, SimMessage, day_plan, simulate
from simulators.routine import Activity
from tests.sim_days_support import Decoded, decode_all, elder, local_h, midnight_ms

DAY = date(2026, 11, 25)
SEEDS = (1, 2, 3)


def _day(e: SimElder, seed: int) -> list[SimMessage]:
    return list(simulate([e], midnight_ms(DAY), 86_400, seed=seed))


def _within(msgs: Iterable[Decoded], start_h: float, end_h: float) -> list[Decoded]:
    return [m for m in msgs if start_h <= local_h(m.device_time_ms) < end_h]


def _plan(e: SimElder, seed: int) -> list[Activity]:
    return day_plan(e, DAY, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_message_is_one_ingest_accepts(seed: int) -> None:
    e = elder("ALONE", radar=True)
    registry = {d: DeviceInfo(d, e.elder_id, kind) for kind, d in e.devices.items()}
    limit = Settings(_env_file=None).max_payload_bytes
    msgs = _day(e, seed)
    seen_seq: dict[str, int] = {}
    for m in msgs:
        topic = f"cw/v1/dev/{m.device_id}/{m.kind}"
        result = validate(
            topic, m.payload, registry, received_ms=m.device_time_ms, max_payload_bytes=limit
        )
        assert isinstance(result, Accepted), (m, result)
        if m.kind != "status" or b'"seq"' in m.payload:
            seq = msgspec.json.decode(m.payload)["seq"]
            assert seq > seen_seq.get(m.device_id, -1), "sequence numbers count up per device"
            seen_seq[m.device_id] = seq
            assert msgspec.json.decode(m.payload)["ts"] == m.device_time_ms
    assert [m.device_time_ms for m in msgs] == sorted(m.device_time_ms for m in msgs)
    assert set(seen_seq) == set(e.devices.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_nights_are_asleep_in_bed_without_motion(seed: int) -> None:
    e = elder("ALONE", radar=True)
    msgs = decode_all(_day(e, seed))
    plan = _plan(e, seed)
    wake_h = max(a.end_s for a in plan if a.kind == "sleep" and a.end_s < 12 * 3600) / 3600
    assert plan[0].kind == "sleep" and 4.5 < wake_h < 9
    assert {a.kind for a in plan if a.end_s <= wake_h * 3600} <= {"sleep", "toilet"}

    motion_h = sorted(local_h(m.device_time_ms) for m in msgs if m.pir_motion)
    marks = [0.0, *(h for h in motion_h if h < wake_h), wake_h]
    quiet = [b - a for a, b in itertools.pairwise(marks)]
    assert max(quiet) >= 2.0, f"no quiet stretch of 2 h before waking at {wake_h:.1f}: {quiet}"
    night_radar = [
        m.telemetry
        for m in _within(msgs, 0, wake_h)
        if m.device_kind == "radar" and m.telemetry is not None
    ]
    assert len(night_radar) >= 12 * 4 and all(t.presence for t in night_radar)
    bed_exits = [m for m in msgs if m.event == "bed_exit"]
    assert any(abs(local_h(m.device_time_ms) - wake_h) < 0.01 for m in bed_exits)
    # and in the day the home is alive
    assert len([h for h in motion_h if 9 <= h < 21]) > 60


@pytest.mark.parametrize("seed", SEEDS)
def test_meals_use_water_with_motion_in_the_home(seed: int) -> None:
    e = elder("ALONE")
    msgs = decode_all(_day(e, seed))
    meals = [a for a in _plan(e, seed) if a.kind == "meal"]
    assert len(meals) >= 3  # breakfast, lunch, dinner (a toilet visit may split one)
    for meal in meals:
        if meal.duration_s < 15 * 60:
            continue
        during = _within(msgs, meal.start_s / 3600, meal.end_s / 3600)
        assert any(m.water_flow for m in during), f"no water during the meal at {meal.start_s}"
        assert any(m.pir_motion for m in during)
    # a flow always ends with a reading of 0, or the rules would see a tap left running
    flows = [m.water_flow for m in msgs if m.water_flow is not None]
    assert flows[-1] == 0 and any(f > 0 for f in flows)


def test_going_out_opens_the_door_leaves_the_home_still_and_moves_the_band_away() -> None:
    outings = 0
    for seed in SEEDS:
        e = elder("ALONE")
        msgs = decode_all(_day(e, seed))
        for out in (a for a in _plan(e, seed) if a.kind == "out"):
            outings += 1
            start_h, end_h = out.start_s / 3600, out.end_s / 3600
            doors = [m for m in msgs if m.event in ("door_open", "door_close")]
            assert [m.event for m in _within(doors, start_h, start_h + 0.01)] == [
                "door_open",
                "door_close",
            ]
            assert [m.event for m in _within(doors, end_h - 0.01, end_h)] == [
                "door_open",
                "door_close",
            ]
            inside = _within(msgs, start_h + 0.02, end_h - 0.02)
            assert not any(m.pir_motion for m in inside), "nobody moves in an empty home"
            far = max(geo.distance_m(*e.home, *fix) for m in inside if (fix := m.fix) is not None)
            assert far > 0.8 * out.distance_m
            steps = [m.steps for m in inside if m.steps is not None]
            assert steps[-1] - steps[0] > 300
    assert outings >= 2


@pytest.mark.parametrize("seed", SEEDS)
def test_accelerometer_windows_only_around_movements_and_none_looks_like_a_fall(seed: int) -> None:
    e = elder("ALONE")
    msgs = decode_all(_day(e, seed))
    windows = [m for m in msgs if m.telemetry is not None and m.telemetry.accel is not None]
    assert 20 <= len(windows) <= 400  # bursts of ~6 one-second windows, not a stream
    detector = FallSignalModel()
    for m in windows:
        assert m.telemetry is not None and m.telemetry.accel is not None
        assert m.telemetry.accel.hz == 50 and len(m.telemetry.accel.x) == 50
        assert detector.feed(m.telemetry.accel, m.device_time_ms) is None


def test_same_seed_same_bytes_other_seed_other_day() -> None:
    e = elder("ALONE", radar=True)
    first, again, other = _day(e, 7), _day(e, 7), _day(e, 8)
    assert first == again
    assert first != other
    # and one elder's day does not depend on who else is simulated
    together = list(simulate([e, elder("OTHER")], midnight_ms(DAY), 86_400, seed=7))
    assert [m for m in together if m.device_id in e.devices.values()] == first


def test_a_day_for_ten_elders_generates_quickly_and_in_time_order() -> None:
    elders = [elder(f"E{i}", radar=i % 2 == 0) for i in range(10)]
    began = time.perf_counter()
    msgs = list(simulate(elders, midnight_ms(DAY) + 3_600_000, 6 * 3600, seed=1))
    elapsed = time.perf_counter() - began
    times = [m.device_time_ms for m in msgs]
    assert times == sorted(times)
    assert times[0] >= midnight_ms(DAY) + 3_600_000 and times[-1] < midnight_ms(DAY) + 7 * 3_600_000
    assert {m.device_id for m in msgs} == {d for e in elders for d in e.devices.values()}
    print(f"{len(msgs)} messages for 10 elder-quarter-days in {elapsed:.2f} s")


def test_statuses_first_then_the_day() -> None:
    e = elder("ALONE")
    msgs = _day(e, 1)
    first = msgs[: len(e.devices)]
    assert {m.kind for m in first} == {"status"}
    for m in first:
        assert msgspec.json.decode(m.payload, type=DeviceStatus).state == "online"
    assert all(
        isinstance(msgspec.json.decode(m.payload, type=DeviceEvent), DeviceEvent)
        for m in msgs
        if m.kind == "event"
    )
    assert datetime.fromtimestamp(msgs[-1].device_time_ms / 1000, SITE_TZ).date() == DAY
    assert all(
        msgspec.json.decode(m.payload, type=Telemetry).ts == m.device_time_ms
        for m in msgs
        if m.kind == "telemetry"
    )


def test_a_week_the_band_charges_overnight_and_never_runs_flat() -> None:
    e = elder("WEEK")
    msgs = decode_all(simulate([e], midnight_ms(DAY), 8 * 86_400, seed=3))
    band = [m for m in msgs if m.device_kind == "wristband" and m.telemetry is not None]
    battery = [m.telemetry.battery for m in band if m.telemetry and m.telemetry.battery]
    assert min(battery) >= 5
    off = [local_h(m.device_time_ms) for m in band if m.telemetry and m.telemetry.worn is False]
    assert len(off) >= 60, "charged at least one night"
    assert all(not 9 <= h < 21 for h in off), "off the wrist by day would be an alert"


def test_cognitive_elders_normal_outings_stay_inside_the_home_geofence() -> None:
    for k in range(4):
        e = elder(f"COG{k}", profile="cognitive")
        msgs = decode_all(simulate([e], midnight_ms(DAY), 3 * 86_400, seed=k))
        far = max(geo.distance_m(*e.home, *fix) for m in msgs if (fix := m.fix) is not None)
        assert 50 < far < 500  # they do go out, but not as far as the fence
