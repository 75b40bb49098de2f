"""A home of rooms for the inactivity table tests (tests/test_inactivity_rooms.py,
tests/test_inactivity_stray.py): sensors and their rooms, a learned home routine, and the
steps of a night, on the detector harness with an injected clock (tests.detector_sim).

Local times are Chongqing; 23 Nov 2026 is a Monday. Sensors: P-BED (卧室), P-BATH (卫生间),
P-LR (客厅, over the armchair), P-KIT (厨房), P-DOOR (门口, motion by the door), D1 (the front
door contact, 门口).
"""

from __future__ import annotations

from rules_engine.decisions import OpenAlert
from rules_engine.detectors.inactivity import InactivityDetector
from rules_engine.home_routine import HomeRoutine, HomeRoutineBook, RoomBook
from rules_engine.routine import RoutineBook
from tests.detector_sim import ELDER, TZ, Sim, local_ms, thresholds

H = 3_600_000
MIN = 60_000

ROOMS = {
    "P-BED": "卧室",
    "P-BATH": "卫生间",
    "P-LR": "客厅",
    "P-KIT": "厨房",
    "P-DOOR": "门口",
    "D1": "门口",
}

# Learned: the armchair afternoon is up to 3 h; the entrance (outings the door contact
# missed) up to 5 h; the bathroom stay up to 12 min; a night exit up to 15 min; gets up
# from 06:30 (18.5 h after noon).
HOME = HomeRoutine(
    still_s={
        **{(room, h): 3 * 3600.0 for room in ("客厅", "厨房", "卫生间") for h in range(7, 22)},
        **{("门口", h): 5 * 3600.0 for h in range(24)},
        **{("卧室", h): 4 * 3600.0 for h in range(24)},
    },
    bathroom_stay_s=12 * 60.0,
    night_exit_s=15 * 60.0,
    rise_h=18.5,
    days=14,
)


def sim(home: HomeRoutine | None = HOME) -> Sim:
    rooms = RoomBook()
    for device, room in ROOMS.items():
        rooms.put(device, room, "door" if device == "D1" else "pir")
    homes = HomeRoutineBook(TZ)
    if home is not None:
        homes.put(ELDER, home, local_ms(23, 0))
    return Sim(InactivityDetector(RoutineBook(TZ), TZ, rooms, homes), thresholds())


def seen(s: Sim, device: str, day: int, hour: int, minute: int = 0) -> None:
    if device == "D1":
        s.at(local_ms(day, hour, minute), device, "door", event="door_open")
    else:
        s.at(local_ms(day, hour, minute), device, "pir", motion=True)


def opened(s: Sim) -> list[OpenAlert]:
    return [a for a in s.opened.values() if a.kind == "inactivity"]


def night_in_bed(s: Sim, day: int) -> None:
    """In the bedroom from 21:30, moving in bed now and then until 01:00."""
    for hour, minute in ((21, 30), (22, 10), (23, 0), (23, 50), (0 + 24, 40)):
        d, h = (day + 1, hour - 24) if hour >= 24 else (day, hour)
        seen(s, "P-BED", d, h, minute)
