"""Simulated device payloads and sequence numbers; daily models of each device kind."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from carewatch.clock import ManualClock
from carewatch.messages import DeviceEvent, DeviceStatus, Telemetry
from simulators.device import SimDevice
from simulators.readings import (
    DoorModel,
    PirModel,
    WaterMeterModel,
    WristbandModel,
)

CST = timezone(timedelta(hours=8))


def test_payloads_decode_with_the_schema_and_seq_counts_up() -> None:
    clock = ManualClock()
    device = SimDevice("WB-1", "wristband", "E-1", clock=clock)

    t = device.telemetry({"hr": 72, "spo2": 97, "worn": True})
    clock.advance(1)
    e = device.event("sos")
    s = device.status("online")

    telemetry = msgspec.json.decode(t.payload, type=Telemetry)
    event = msgspec.json.decode(e.payload, type=DeviceEvent)
    status = msgspec.json.decode(s.payload, type=DeviceStatus)
    assert (t.topic, e.topic, s.topic) == (
        "cw/v1/dev/WB-1/telemetry",
        "cw/v1/dev/WB-1/event",
        "cw/v1/dev/WB-1/status",
    )
    assert (telemetry.hr, telemetry.spo2, telemetry.worn) == (72, 97, True)
    assert [telemetry.seq, event.seq, status.seq] == [t.seq, t.seq + 1, t.seq + 2]
    assert event.ts == e.ts_ms == clock.now_ms()
    assert status.state == "online" and s.retain
    will = device.last_will()
    assert isinstance(will.payload, bytes) and will.retain
    assert msgspec.json.decode(will.payload, type=DeviceStatus).state == "offline"


def test_a_restarted_device_never_reuses_a_sequence_number() -> None:
    clock = ManualClock()
    first_run = SimDevice("WB-1", "wristband", "E-1", clock=clock)
    last = [first_run.event("sos").seq for _ in range(50)][-1]
    clock.advance(0.1)  # restarted 100 ms later, after 50 messages

    second_run = SimDevice("WB-1", "wristband", "E-1", clock=clock)

    assert second_run.event("sos").seq > last


def test_out_of_range_telemetry_is_refused_before_it_is_sent() -> None:
    device = SimDevice("WB-1", "wristband", "E-1")
    with pytest.raises(msgspec.ValidationError):
        device.telemetry({"hr": 500})


def _num(reading: dict[str, object], key: str) -> float:
    value = reading[key]
    assert isinstance(value, int | float)
    return value


def _day(hour: float) -> datetime:
    return datetime(2026, 11, 25, tzinfo=CST) + timedelta(hours=hour)


def test_wristband_vitals_stay_in_range_steps_grow_by_day_battery_drains() -> None:
    model = WristbandModel(random.Random(1), 29.55, 106.57)
    readings = [model.step(_day(h / 60), 60).telemetry for h in range(24 * 60)]

    assert all(55 <= _num(r, "hr") <= 100 for r in readings)
    assert all(94 <= _num(r, "spo2") <= 99 for r in readings)
    steps = [_num(r, "steps") for r in readings]
    assert steps[3 * 60] == 0  # asleep at 03:00
    assert steps[20 * 60] > 1000  # a day's walking by 20:00
    assert steps == sorted(steps)
    # from 40-100 % it cannot run flat within a day (10 % per 5-day charge): it drains
    assert _num(readings[-1], "battery") < _num(readings[0], "battery")
    assert all(abs(_num(r, "lat") - 29.55) < 0.004 for r in readings)


def test_home_sensors_follow_the_daily_routine() -> None:
    rng = random.Random(2)
    pir, water, door = PirModel(rng), WaterMeterModel(rng), DoorModel(rng)
    day_motion = sum(bool(pir.step(_day(10), 60).telemetry["motion"]) for _ in range(400))
    night_motion = sum(bool(pir.step(_day(3), 60).telemetry["motion"]) for _ in range(400))
    lunch_flow = sum(_num(water.step(_day(12), 60).telemetry, "water_flow") > 0 for _ in range(400))
    night_flow = sum(_num(water.step(_day(2), 60).telemetry, "water_flow") > 0 for _ in range(400))
    door_events = [e for _ in range(200) for e in door.step(_day(9), 600).events]

    assert day_motion > 4 * night_motion
    assert lunch_flow > 4 * max(night_flow, 1)
    assert door_events and door_events[:2] == ["door_open", "door_close"]
