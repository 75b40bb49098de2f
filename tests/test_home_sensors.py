"""Home-sensor health: silent or stuck door contacts and motion sensors become device
alerts, and the inactivity rule says so while they are down (injected clock).

Local times are Chongqing; 23 Nov 2026 is a Monday. Sensors as in test_inactivity_rooms.
"""

from __future__ import annotations

from rules_engine.detectors.device_health import REMINDER, DeviceHealthDetector
from rules_engine.detectors.home_sensors import (
    BACK_RULE,
    SILENT_RULE,
    STUCK_RULE,
    HomeSensorHealthDetector,
    Report,
    troubles,
)
from rules_engine.detectors.inactivity import InactivityDetector
from rules_engine.engine import Engine
from rules_engine.home_routine import HomeRoutine, HomeRoutineBook, RoomBook
from rules_engine.routine import RoutineBook
from tests.detector_sim import ELDER, TZ, Sim, local_ms, thresholds

H = 3_600_000
ROOMS = {"P-BED": "卧室", "P-LR": "客厅", "P-KIT": "厨房", "P-DOOR": "门口", "D1": "门口"}
HOME = HomeRoutine(
    still_s={(room, h): 2 * 3600.0 for room in ("客厅", "厨房", "门口") for h in range(24)},
    days=14,
)


def sim(home: HomeRoutine | None = HOME) -> Sim:
    rooms = RoomBook()
    for device, room in ROOMS.items():
        rooms.put(device, room, "door" if device == "D1" else "pir")
    homes = HomeRoutineBook(TZ)
    if home is not None:
        homes.put(ELDER, home, local_ms(20, 0))
    engine = Engine(
        [
            InactivityDetector(RoutineBook(TZ), TZ, rooms, homes),
            DeviceHealthDetector(TZ),
            HomeSensorHealthDetector(rooms),
        ]
    )
    return Sim(engine, thresholds(), clock=_clock(local_ms(20, 0)))


def _clock(ms: int) -> object:
    from carewatch.clock import ManualClock

    return ManualClock(ms)


def motion(s: Sim, device: str, ms: int, on: bool = True) -> None:
    s.at(ms, device, "pir", motion=on)


def door(s: Sim, ms: int, event: str = "door_open") -> None:
    s.at(ms, "D1", "door", event=event)


def ordinary_day(s: Sim, day: int, *, with_door: bool = True) -> None:
    """Up in the bedroom, kitchen, living room, a walk out (door) and back, bed."""
    for hour, device in ((7, "P-BED"), (8, "P-KIT"), (10, "P-LR"), (11, "P-LR")):
        motion(s, device, local_ms(day, hour))
        motion(s, device, local_ms(day, hour, 1), on=False)
    if with_door:
        door(s, local_ms(day, 11, 30))
        door(s, local_ms(day, 11, 31), "door_close")
        door(s, local_ms(day, 13, 0))
        door(s, local_ms(day, 13, 1), "door_close")
    for hour, device in ((13, "P-KIT"), (15, "P-LR"), (17, "P-KIT"), (19, "P-LR"), (21, "P-BED")):
        motion(s, device, local_ms(day, hour, 5))
        motion(s, device, local_ms(day, hour, 6), on=False)


def device_alerts(s: Sim) -> list[tuple[str, str]]:
    return [
        (c.rule, c.what) for c in s.changes if c.kind == "device_offline" and c.what != "reminder"
    ]


def test_expected_patterns_by_kind() -> None:
    now = local_ms(25, 12)
    reports = {
        "P-LR": ("pir", Report(now - 49 * H, False, "a")),  # silent 49 h
        "P-KIT": ("pir", Report(now - 5 * H, True, "b")),  # motion on, then 5 h nothing
        "P-BED": ("pir", Report(now - 20 * H, False, "c")),  # a quiet day: fine
        "D1": ("door", Report(now - 13 * H, True, "d")),  # open 13 h
        "S1": ("switch", Report(now - 30 * 24 * H, True, "e")),  # a lamp: no expectation
    }
    found = {(t.device_id, t.rule) for t in troubles(reports, now, "P-DOOR")}
    assert found == {("P-LR", SILENT_RULE), ("P-KIT", STUCK_RULE), ("D1", STUCK_RULE)}
    # the reporting sensor is never judged by its own report
    assert troubles(reports, now, "P-LR") != [] and all(
        t.device_id != "P-LR" for t in troubles(reports, now, "P-LR")
    )


def test_dead_door_contact_is_a_device_alert_with_reminders_and_clears_when_heard() -> None:
    s = sim()
    ordinary_day(s, 21)
    for day in (22, 23, 24, 25):
        ordinary_day(s, day, with_door=False)  # the contact died after the 21st
    opened = [c for c in s.changes if c.kind == "device_offline" and c.what == "opened"]
    assert [c.rule for c in opened] == [SILENT_RULE]
    alert = s.opened[opened[0].alert_id]
    assert alert.device_id == "D1"
    assert alert.details["room"] == "门口" and alert.details["sensor_kind"] == "door"
    # 72 h after the last door event (21st 13:01), found by the next other sensor's report
    assert local_ms(24, 13, 1) < opened[0].at_ms <= local_ms(24, 15, 10)
    assert any(t.kind == REMINDER for t in s.timers.values())
    assert "reminder" in s.whats("device_offline")
    door(s, local_ms(25, 22, 0))  # repaired: heard again
    assert device_alerts(s) == [(SILENT_RULE, "opened"), (BACK_RULE, "resolved")]


def test_while_the_door_contact_is_down_an_outing_from_the_entrance_is_not_fired_blind() -> None:
    s = sim()
    ordinary_day(s, 21)
    for day in (22, 23, 24):
        ordinary_day(s, day, with_door=False)
    assert device_alerts(s) == [(SILENT_RULE, "opened")]
    motion(s, "P-BED", local_ms(25, 7, 0))
    motion(s, "P-LR", local_ms(25, 8, 30))
    motion(s, "P-DOOR", local_ms(25, 9, 30))  # goes out; the dead contact says nothing
    s.run_until(local_ms(25, 15, 0))  # 5.5 h: beyond the entrance's 2 h x 1.25
    assert s.whats("inactivity") == []  # judged as a possible outing (out ceiling 10 h)
    s.run_until(local_ms(25, 19, 31))
    [alert] = [a for a in s.opened.values() if a.kind == "inactivity"]
    assert alert.rule == "inactivity.out_of_home_ceiling"
    assert alert.details["sensors_down"] == [
        {"device_id": "D1", "sensor_kind": "door", "room": "门口", "rule": SILENT_RULE}
    ]
    assert alert.details["context"] == "最后一次活动：门口 09:30（门口门磁可能失效）"


def test_stuck_motion_sensor_is_found_and_named_in_inactivity_alerts() -> None:
    s = sim()
    motion(s, "P-KIT", local_ms(21, 8, 0))  # motion on ... and never off again
    motion(s, "P-LR", local_ms(21, 10, 0))
    assert device_alerts(s) == []
    motion(s, "P-LR", local_ms(21, 11, 30))
    motion(s, "P-LR", local_ms(21, 12, 30))  # 4.5 h on: stuck
    assert device_alerts(s) == [(STUCK_RULE, "opened")]
    s.run_until(local_ms(21, 15, 10))  # the living room's 2 h x 1.25 after 12:30
    [alert] = [a for a in s.opened.values() if a.kind == "inactivity"]
    assert alert.rule == "inactivity.no_sign_of_life"
    assert alert.details["context"] == "最后一次活动：客厅 12:30（厨房人体感应器可能失效）"


def test_a_quiet_home_alone_never_flags_its_sensors() -> None:
    s = sim(home=None)
    motion(s, "P-LR", local_ms(21, 10, 0))
    motion(s, "P-LR", local_ms(21, 10, 1), on=False)
    motion(s, "P-LR", local_ms(24, 10, 0))  # three days with one sensor only: no others
    assert device_alerts(s) == []
