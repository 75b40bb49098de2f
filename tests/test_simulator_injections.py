"""Injected events in simulated days (simulators.injections, simulators.days), and one
simulated hour replayed over a real (private) Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime

import aiomqtt
import msgspec
import numpy as np
import pytest

from carewatch.messages import AccelWindow, DeviceEvent, DeviceStatus, Telemetry
from carewatch.settings import Settings
from harness.services import Proc, await_until
from rules_engine.detectors.fall.signal_model import FallSignalModel
from simulators import geo
from simulators.cli import injections_for, start_ms
from simulators.days import SITE_TZ, SimElder, SimMessage, day_plan, simulate
from simulators.injections import Injection, InjectionError, parse
from simulators.replay import replay
from tests.sim_days_support import Decoded, decode_all, elder, local_h, midnight_ms

DAY = date(2026, 11, 25)
HOME_RADIUS_M = 500.0  # geofence_home_radius_m, the rules' default safe circle


def _at(spec: str, start_ms: int | None = None) -> Injection:
    return parse(spec).at(midnight_ms(DAY) if start_ms is None else start_ms, SITE_TZ)


def _run(e: SimElder, specs: list[str], seed: int = 1, days: float = 1) -> list[Decoded]:
    injections = {e.elder_id: [_at(s) for s in specs]}
    msgs = simulate([e], midnight_ms(DAY), days * 86_400, seed=seed, injections=injections)
    return decode_all(msgs)


def _between(msgs: list[Decoded], start_h: float, end_h: float) -> list[Decoded]:
    return [m for m in msgs if start_h <= local_h(m.device_time_ms) < end_h]


def _band(msgs: list[Decoded]) -> list[Telemetry]:
    return [
        m.telemetry
        for m in msgs
        if m.device_kind == "wristband" and m.telemetry is not None and m.telemetry.accel is None
    ]


def _accel(msgs: list[Decoded]) -> list[tuple[int, np.ndarray]]:
    out = []
    for m in msgs:
        if m.telemetry is not None and m.telemetry.accel is not None:
            a = m.telemetry.accel
            out.append((m.device_time_ms, np.column_stack([a.x, a.y, a.z])))
    return out


# ------------------------------------------------------------------------------------
# Specs
# ------------------------------------------------------------------------------------


def test_specs_parse_and_land_on_the_first_such_local_time() -> None:
    start = midnight_ms(DAY) + 15 * 3_600_000  # 15:00
    fall = parse("fall@14:05").at(start, SITE_TZ)
    assert fall.kind == "fall" and fall.duration_s == 3600 and not fall.options
    assert datetime.fromtimestamp(fall.at_ms / 1000, SITE_TZ) == datetime(
        2026, 11, 26, 14, 5, tzinfo=SITE_TZ
    ), "14:05 has passed at a 15:00 start: the next day's"
    wander = parse("wander@d0/02:30+90m").at(start, SITE_TZ)
    assert datetime.fromtimestamp(wander.at_ms / 1000, SITE_TZ).day == 25
    assert wander.duration_s == 5400
    assert parse("fall:noflag@08:00+2h").options == frozenset({"noflag"})
    assert parse("decline@00:00+14d").duration_s == 14 * 86_400


@pytest.mark.parametrize(
    "bad",
    ["fall", "fall@25:00", "jump@10:00", "fall:loud@10:00", "fall@10:00+0m", "fall@10:00+3y"],
)
def test_bad_specs_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(InjectionError) as refused:
        parse(bad)
    assert repr(bad) in str(refused.value)


def test_command_line_start_and_injections_per_elder() -> None:
    now = datetime(2026, 11, 25, 16, 40, 12, tzinfo=SITE_TZ)
    assert start_ms(None, SITE_TZ, now) == int(now.timestamp()) * 1000
    assert start_ms("06:30", SITE_TZ, now) == midnight_ms(DAY) + 6 * 3_600_000 + 1_800_000
    assert start_ms("2026-11-24T23:00", SITE_TZ, now) == midnight_ms(DAY) - 3_600_000
    start = midnight_ms(DAY)
    one = injections_for(["fall@14:05", "charger@17:00"], start, SITE_TZ, elder_id="E1")
    assert [i.kind for i in one["E1"]] == ["fall", "charger"]
    fleet = injections_for(["E1=fall@14:05", "E2=wander@02:30"], start, SITE_TZ)
    assert sorted(fleet) == ["E1", "E2"] and fleet["E2"][0].kind == "wander"
    with pytest.raises(InjectionError, match="which elder"):
        injections_for(["fall@14:05"], start, SITE_TZ)


# ------------------------------------------------------------------------------------
# Fall
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fall_is_an_impact_then_stillness_then_nobody_moves(seed: int) -> None:
    e = elder("FALL", radar=True)
    msgs = _run(e, ["fall@14:05+1h"], seed)
    fall_h = 14 + 5 / 60
    windows = _accel(_between(msgs, fall_h - 10 / 3600, fall_h + 30 / 3600))
    signal = np.vstack([w for _, w in windows])
    magnitude = np.linalg.norm(signal, axis=1)
    peak = int(np.argmax(magnitude))
    assert magnitude[peak] > 2.5
    impact_ms = windows[0][0] + peak * 20  # 50 Hz
    assert abs(impact_ms - (midnight_ms(DAY) + round(fall_h * 3_600_000))) < 100
    after = signal[peak + 4 * 50 :]  # from 4 s after the impact: lying still
    assert len(after) >= 5 * 50 and float(np.var(after, axis=0).sum()) < 0.005

    detector = FallSignalModel()
    found = [d for t, w in windows if (d := detector.feed(_window(w), t)) is not None]
    assert len(found) == 1 and abs(found[0].impact_ms - impact_ms) < 100

    flags = [m for m in msgs if m.event == "fall"]
    assert len(flags) == 1 and 0 < local_h(flags[0].device_time_ms) - fall_h < 10 / 3600
    lying = _between(msgs, fall_h + 1 / 60, fall_h + 1)
    assert not any(m.pir_motion for m in lying)
    steps = {t.steps for t in _band(lying)}
    assert len(steps) == 1, "no steps while on the floor"
    radar = [m.telemetry for m in lying if m.device_kind == "radar" and m.telemetry is not None]
    assert radar and all(t.presence and not t.motion for t in radar)
    assert not _accel(_between(msgs, fall_h + 1 / 60, fall_h + 1))


def test_fall_without_the_band_flag() -> None:
    msgs = _run(elder("FALL"), ["fall:noflag@14:05"])
    assert not any(m.event == "fall" for m in msgs)
    windows = _accel(_between(msgs, 14 + 4 / 60, 14 + 6 / 60))
    assert max(float(np.linalg.norm(w, axis=1).max()) for _, w in windows) > 2.5


@pytest.mark.parametrize("seed", [0, 4, 6])  # the next day's sensors speak within seconds
def test_a_fall_just_before_midnight_spills_into_the_next_day_in_order(seed: int) -> None:
    e = elder("LATE")
    midnight = midnight_ms(DAY) + 86_400_000
    fall = Injection("fall", midnight - 5_000, 3600)  # its windows run past midnight
    injections = {"LATE": [fall, _at("wander@d1/23:30+1h")]}
    msgs = list(simulate([e], midnight_ms(DAY), 3 * 86_400, seed=seed, injections=injections))
    times = [m.device_time_ms for m in msgs]
    assert times == sorted(times)
    windows = _accel(decode_all(m for m in msgs if abs(m.device_time_ms - midnight) < 60_000))
    assert windows[0][0] < midnight - 1000 and windows[-1][0] >= midnight + 5000
    detector = FallSignalModel()
    found = [d for t, w in windows if (d := detector.feed(_window(w), t)) is not None]
    assert len(found) == 1 and abs(found[0].impact_ms - fall.at_ms) < 100
    seqs = [msgspec.json.decode(m.payload)["seq"] for m in msgs if m.device_id == "LATE-WB"]
    assert seqs == sorted(set(seqs))


def _window(xyz: np.ndarray) -> AccelWindow:
    return AccelWindow(hz=50, x=xyz[:, 0].tolist(), y=xyz[:, 1].tolist(), z=xyz[:, 2].tolist())


# ------------------------------------------------------------------------------------
# Wandering
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_wandering_at_night_walks_out_of_the_geofence_and_back(seed: int) -> None:
    e = elder("WANDER", radar=True, profile="cognitive")
    msgs = _run(e, ["wander@02:30+2h"], seed)
    start_h, end_h = 2.5, 4.5
    doors = [m.event for m in _between(msgs, start_h, start_h + 1 / 60) if m.event]
    assert doors[-2:] == ["door_open", "door_close"]
    fixes = [
        (local_h(m.device_time_ms), geo.distance_m(*e.home, *fix))
        for m in _between(msgs, start_h, end_h)
        if m.device_kind == "wristband" and (fix := m.fix) is not None
    ]
    assert len(fixes) >= 100, "a fix every minute while out"
    outside = [d for _, d in fixes if d > HOME_RADIUS_M]
    assert len(outside) >= 30 and max(outside) > 2 * HOME_RADIUS_M
    assert fixes[-1][1] < 150, "brought home at the end"
    assert not any(m.pir_motion for m in _between(msgs, start_h + 0.05, end_h - 0.05))
    returning = [m.event for m in _between(msgs, end_h - 1 / 60, end_h) if m.event]
    assert returning == ["door_open", "door_close"]


# ------------------------------------------------------------------------------------
# Band on the charger, band offline
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_charger_band_off_the_wrist_charging_while_the_home_sees_the_elder(seed: int) -> None:
    e = elder("CHARGE")
    msgs = _run(e, ["charger@17:00+2h"], seed)
    during = _between(msgs, 17, 19)
    band = _band(during)
    assert len(band) >= 110
    assert all(t.worn is False for t in band)
    battery = [t.battery for t in band if t.battery is not None]
    assert battery == sorted(battery) and battery[-1] >= min(100, battery[0] + 100)
    assert len({t.steps for t in band}) == 1
    assert all(t.hr is None and t.spo2 is None and t.temp is None for t in band)
    assert not _accel(during)
    assert any(m.pir_motion for m in during), "dinner at home goes on"
    assert all(t.worn for t in _band(_between(msgs, 19.02, 20)))


def test_offline_band_falls_silent_with_a_last_will_and_comes_back() -> None:
    e = elder("OFF")
    msgs = list(
        simulate(
            [e], midnight_ms(DAY), 86_400, seed=1, injections={"OFF": [_at("offline@13:00+1h")]}
        )
    )
    band = [m for m in msgs if m.device_id == "OFF-WB"]
    silent = [m for m in band if 13 <= local_h(m.device_time_ms) < 14]
    assert [(m.kind, msgspec.json.decode(m.payload, type=DeviceStatus)) for m in silent] == [
        ("status", DeviceStatus(v=1, state="offline"))
    ]
    assert 13 < local_h(silent[0].device_time_ms) < 13 + 1 / 60
    back = [m for m in band if 14 <= local_h(m.device_time_ms) < 14.1]
    assert back[0].kind == "status"
    assert msgspec.json.decode(back[0].payload, type=DeviceStatus).state == "online"
    assert sum(m.kind == "telemetry" for m in back) >= 5
    assert any(m.device_id == "OFF-PIR" for m in msgs if 13 <= local_h(m.device_time_ms) < 14)


# ------------------------------------------------------------------------------------
# Slow decline
# ------------------------------------------------------------------------------------


def test_slow_decline_shows_in_daily_steps_and_motion() -> None:
    e = elder("DECLINE", profile="standard")
    days = 12
    msgs = _run(e, ["decline@d1/00:00+10d"], seed=4, days=days)
    midnight = midnight_ms(DAY)
    steps = [0] * days
    motion = [0] * days
    for m in msgs:
        day = (m.device_time_ms - midnight) // 86_400_000
        if m.telemetry is not None and m.device_kind == "wristband" and m.telemetry.steps:
            steps[day] = max(steps[day], m.telemetry.steps)
        motion[day] += m.pir_motion
    slope = np.polyfit(range(days), steps, 1)[0]
    assert slope < 0, steps
    assert np.mean(steps[-3:]) < 0.6 * np.mean(steps[:3]), steps
    assert np.mean(motion[-3:]) < 0.8 * np.mean(motion[:3]), motion
    plans = [day_plan(e, date.fromordinal(DAY.toordinal() + k), seed=4) for k in (0, days - 1)]
    assert plans[0] != plans[1]


# ------------------------------------------------------------------------------------
# Live over MQTT
# ------------------------------------------------------------------------------------


async def test_a_simulated_hour_replayed_over_mqtt_arrives_and_decodes(mosquitto: Proc) -> None:
    tag = f"R{uuid.uuid4().hex[:8]}"
    e = elder(tag, radar=True)
    start = midnight_ms(DAY) + 14 * 3_600_000
    injections = {tag: [_at("fall@14:20+20m", start)]}
    expected: list[SimMessage] = list(simulate([e], start, 3600, seed=5, injections=injections))
    got: list[tuple[str, str, bytes]] = []
    ready = asyncio.Event()

    async def watch() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"w-{tag}") as client:
            await client.subscribe("cw/v1/dev/+/+", qos=1)
            ready.set()
            async for message in client.messages:
                _, _, _, device_id, kind = message.topic.value.split("/")
                if device_id.startswith(tag) and isinstance(message.payload, bytes):
                    got.append((device_id, kind, message.payload))

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(ready.wait(), timeout=10)
    settings = Settings(mqtt_port=mosquitto.port, _env_file=None)
    stats = await replay(settings, expected, start, 3600 / 3, asyncio.Event())  # 1 h in 3 s

    n = len(expected) + len(e.devices)  # and a goodbye per device

    async def all_arrived() -> bool:
        return len(got) >= n

    await await_until(all_arrived, timeout=20, what=f"{n} messages")
    watcher.cancel()
    assert stats.errors == 0 and stats.published == n
    assert [(m.device_id, m.kind, m.payload) for m in expected] == got[: len(expected)]
    decoders = {"telemetry": Telemetry, "event": DeviceEvent, "status": DeviceStatus}
    for device_id, kind, payload in got:
        decoded = msgspec.json.decode(payload, type=decoders[kind])
        assert device_id.startswith(tag)
        if isinstance(decoded, Telemetry | DeviceEvent):
            assert start <= decoded.ts < start + 3_600_000, "simulated device time kept"
    assert any(kind == "event" and b'"fall"' in payload for _, kind, payload in got)
