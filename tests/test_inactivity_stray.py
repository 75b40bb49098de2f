"""Lone signs that start no fast rule, and the first week's floor: table tests with an
injected clock (tests.detector_sim.Sim), on the home of tests/test_inactivity_rooms.py.

The cases are the three false alerts the 30-day CASAS home showed (docs/inactivity.md):
a lone bathroom sign at 23:53 after 9 min of stillness in bed and then an hour of
silence (back in bed, unseen); a lone entrance sign at 03:52, 5 min after the last
movement in bed, and 52 min of silence; and a 2 h sitting at the work table on the
second and sixth days, while the routine was still being learned.
"""

from __future__ import annotations

import dataclasses

from rules_engine.detectors.inactivity import (
    BATHROOM_RULE,
    NIGHT_EXIT_RULE,
    NO_SIGN,
    InactivityDetector,
)
from rules_engine.home_routine import WALK_MS, LifeSign, learn, moved, replay_whereabouts
from tests.detector_sim import ELDER, TZ, local_ms
from tests.support.home_rooms import HOME, night_in_bed, opened, seen, sim

H = 3_600_000
MIN = 60_000


def test_a_lone_bathroom_sign_in_the_night_starts_no_bathroom_rule() -> None:
    s = sim()
    night_in_bed(s, 24)  # last bedroom sign 00:40
    seen(s, "P-BATH", 25, 1, 0)  # 20 min after any movement in bed: nobody was seen go
    s.run_until(local_ms(25, 2, 0))  # an hour of silence: back in bed, lying still
    assert opened(s) == []
    seen(s, "P-BED", 25, 2, 0)
    s.run_until(local_ms(25, 6, 30))
    assert opened(s) == []


def test_a_lone_entrance_sign_in_the_night_is_not_a_bed_exit() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BED", 25, 3, 46)
    seen(s, "P-DOOR", 25, 3, 52)  # 6 min after the last movement in bed, then nothing
    s.run_until(local_ms(25, 4, 43))
    assert opened(s) == []
    seen(s, "P-BED", 25, 4, 43)
    s.run_until(local_ms(25, 6, 30))
    assert opened(s) == []


def test_the_same_entrance_sign_right_after_getting_up_is_a_bed_exit() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BED", 25, 3, 51)  # gets up
    seen(s, "P-DOOR", 25, 3, 52)  # walks to the door, then nothing: fell in the hall
    s.run_until(local_ms(25, 4, 52))
    [alert] = opened(s)
    assert alert.rule == NIGHT_EXIT_RULE
    assert alert.device_time_ms == local_ms(25, 4, 22)  # the 30 min floor
    assert alert.details["bed_exit_ms"] == local_ms(25, 3, 52)


def test_a_second_bathroom_sign_confirms_the_arrival_from_the_first() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BATH", 25, 2, 10)  # lone: the walk from bed was not seen
    seen(s, "P-BATH", 25, 2, 12)  # there after all; then nothing
    s.run_until(local_ms(25, 3, 12))
    [alert] = opened(s)
    assert alert.rule in (BATHROOM_RULE, NIGHT_EXIT_RULE)
    assert alert.device_time_ms == local_ms(25, 2, 40)  # 30 min from the first sign
    assert alert.details["bed_exit_ms"] == local_ms(25, 2, 10)


def test_a_lone_sign_ends_a_bathroom_stay() -> None:
    s = sim()
    seen(s, "P-LR", 24, 10, 0)
    seen(s, "P-BATH", 24, 10, 1)
    seen(s, "P-BATH", 24, 10, 5)
    seen(s, "P-LR", 24, 10, 15)  # 10 min after the last bathroom sign: out, unseen walk
    s.run_until(local_ms(24, 11, 0))
    assert [a.rule for a in opened(s)] == []  # the bathroom rule would have been 10:31


def test_the_alert_names_a_lone_sign_after_the_last_room() -> None:
    s = sim()
    seen(s, "P-KIT", 24, 21, 30)
    seen(s, "P-BED", 24, 21, 31)
    seen(s, "P-BED", 24, 22, 40)  # in bed from 21:31
    seen(s, "P-BATH", 24, 23, 0)  # lone, then nothing until the morning rule
    s.run_until(local_ms(25, 9, 30))
    [alert] = opened(s)
    assert alert.rule == NO_SIGN
    assert alert.details["last_room"] == "卧室"
    assert alert.details["stray_room"] == "卫生间"
    assert alert.details["context"] == "最后一次活动：卧室 22:40（之后卫生间 23:00 有一次感应）"


def test_moved_takes_a_lone_sign_apart_until_confirmed_or_dropped() -> None:
    bed = moved(None, "卧室", local_ms(25, 0, 0), quiet=True)
    bed = moved(bed, "卧室", local_ms(25, 1, 0), quiet=True)
    stray = moved(bed, "门口", local_ms(25, 1, 10), quiet=True)
    assert (stray.room, stray.stray_room, stray.exit_ms) == ("卧室", "门口", None)
    assert stray.sign_room == "门口" and stray.seen_ms == local_ms(25, 1, 10)
    assert moved(stray, "门口", local_ms(25, 1, 10), quiet=True) == stray  # the same sign
    back = moved(stray, "卧室", local_ms(25, 1, 40), quiet=True)
    assert (back.stray_room, back.bedroom_since_ms) == (None, local_ms(25, 0, 0))
    there = moved(stray, "门口", local_ms(25, 1, 11), quiet=True)
    at = local_ms(25, 1, 10)
    assert (there.room, there.since_ms, there.exit_ms) == ("门口", at, at)  # from the first
    walked = moved(stray, "厨房", local_ms(25, 1, 10) + WALK_MS, quiet=True)
    assert (walked.room, walked.exit_ms) == ("厨房", local_ms(25, 1, 12))
    day = moved(moved(None, "客厅", local_ms(24, 9, 0), False), "厨房", local_ms(24, 10, 0), False)
    assert day.room == "厨房"  # nothing hangs on a move between day rooms


def test_learning_ignores_lone_signs_for_stays_and_night_exits() -> None:
    signs: list[LifeSign] = []
    for day in (23, 24, 25, 26):
        signs += [
            LifeSign(local_ms(day, 22, 0), "卧室"),
            LifeSign(local_ms(day, 23, 0), "卧室"),
            LifeSign(local_ms(day, 23, 53), "卫生间"),  # lone: an hour later, back in bed
            LifeSign(local_ms(day + 1, 0, 53), "卧室"),
            LifeSign(local_ms(day + 1, 2, 0), "卧室"),
            LifeSign(local_ms(day + 1, 2, 1), "卫生间"),  # a real visit: 6 min
            LifeSign(local_ms(day + 1, 2, 4), "卫生间"),
            LifeSign(local_ms(day + 1, 2, 7), "卧室"),
            LifeSign(local_ms(day + 1, 7, 30), "卧室"),
            LifeSign(local_ms(day + 1, 7, 31), "厨房"),
        ]
    home = learn(signs, TZ)
    assert home.bathroom_stay_s == 6 * 60.0
    assert home.night_exit_s == 6 * 60.0


# --- the first week ---------------------------------------------------------------------

SHORT = dataclasses.replace(
    HOME,
    still_s={
        **HOME.still_s,
        **{(room, h): 1200.0 for room in ("客厅", "厨房", "卫生间") for h in range(7, 22)},
    },
)


def test_in_the_first_week_a_still_period_waits_for_the_learning_floor() -> None:
    s = sim(dataclasses.replace(SHORT, days=2.0))  # 20 min sittings seen in two days
    seen(s, "P-KIT", 24, 15, 0)
    seen(s, "P-LR", 24, 15, 1)  # sits down at 15:01
    s.run_until(local_ms(24, 18, 0))
    assert opened(s) == []  # not at 2 h: a second day does not show the long sittings
    s.run_until(local_ms(24, 18, 1))
    [alert] = opened(s)
    assert alert.rule == NO_SIGN
    assert alert.details["threshold_source"] == "learning"
    assert alert.threshold["inactivity_s"] == 3 * 3600.0


def test_after_a_week_the_room_floor_applies_again() -> None:
    s = sim(dataclasses.replace(SHORT, days=7.0))
    seen(s, "P-KIT", 24, 15, 0)
    seen(s, "P-LR", 24, 15, 1)
    s.run_until(local_ms(24, 17, 1))
    [alert] = opened(s)
    assert alert.details["threshold_source"] == "room"
    assert alert.device_time_ms == local_ms(24, 17, 1)


def test_in_the_first_week_the_fast_rules_are_not_held_back() -> None:
    s = sim(dataclasses.replace(SHORT, days=2.0))
    seen(s, "P-LR", 24, 10, 0)
    seen(s, "P-BATH", 24, 10, 1)  # then nothing: fell in the bathroom
    s.run_until(local_ms(24, 11, 0))
    [alert] = opened(s)
    assert alert.rule == BATHROOM_RULE
    assert alert.device_time_ms == local_ms(24, 10, 31)


def test_the_learning_floor_never_shortens_the_night() -> None:
    s = sim(dataclasses.replace(SHORT, days=2.0))
    night_in_bed(s, 24)
    s.run_until(local_ms(25, 6, 30))  # asleep: the night rules, not 3 h after 00:40
    assert opened(s) == []


# --- what is kept for the rebuild after a restart -----------------------------------------


def test_the_signs_kept_for_the_rebuild_are_the_room_changes() -> None:
    s = sim()
    detector = s.detector
    assert isinstance(detector, InactivityDetector)
    for minute in range(0, 60, 2):
        seen(s, "P-LR", 24, 10, minute)  # an hour in the armchair: 30 signs
    seen(s, "P-KIT", 24, 11, 0)
    seen(s, "P-KIT", 24, 11, 1)
    seen(s, "P-KIT", 24, 11, 2)
    assert detector._recall[ELDER] == [
        (local_ms(24, 10, 0), "客厅"),
        (local_ms(24, 10, 58), "客厅"),
        (local_ms(24, 11, 0), "厨房"),
        (local_ms(24, 11, 2), "厨房"),
    ]
    full = [(local_ms(24, 10, m), "客厅") for m in range(0, 60, 2)]
    full += [(local_ms(24, 11, m), "厨房") for m in range(3)]
    assert replay_whereabouts(detector._recall[ELDER], TZ) == replay_whereabouts(full, TZ)
