"""Inactivity by room: table tests with an injected clock (tests.detector_sim.Sim).

Local times are Chongqing; 23 Nov 2026 is a Monday. Sensors: P-BED (卧室), P-BATH (卫生间),
P-LR (客厅, over the armchair), P-KIT (厨房), P-DOOR (门口, motion by the door), D1 (the front
door contact, 门口). Quiet hours 22:00-07:00; default room floor 2 h, margin 1.25,
bathroom floor 30 min, night exit floor 30 min.
"""

from __future__ import annotations

import pytest

from carewatch.rooms import normalise_room
from rules_engine.decisions import OpenAlert
from rules_engine.detectors.base import DueTimer, ElderView
from rules_engine.detectors.inactivity import (
    BATHROOM_RULE,
    DEADLINE,
    NIGHT_EXIT_RULE,
    NO_SIGN,
    Whereabouts,
    moved,
)
from rules_engine.home_routine import (
    LifeSign,
    learn,
)
from tests.detector_sim import ELDER, TZ, local_ms
from tests.support.home_rooms import night_in_bed, opened, seen, sim

# --- the cases of the issue -------------------------------------------------------------


def test_armchair_afternoon_within_the_usual_is_quiet_and_beyond_it_alerts() -> None:
    s = sim()
    seen(s, "P-KIT", 24, 12, 30)
    seen(s, "P-LR", 24, 13, 0)  # sits down; no motion for 2 h 50 min (floor alone: 2 h)
    s.run_until(local_ms(24, 15, 50))
    assert opened(s) == []
    seen(s, "P-LR", 24, 15, 50)  # gets up: a normal afternoon
    s.run_until(local_ms(24, 19, 35))  # 3 h x 1.25 after 15:50 = 19:35
    [alert] = opened(s)
    assert alert.rule == NO_SIGN
    assert alert.device_time_ms == local_ms(24, 19, 35)
    assert alert.details["last_room"] == "客厅"
    assert alert.details["context"] == "最后一次活动：客厅 15:50"
    assert alert.details["threshold_source"] == "room"


def test_toilet_at_night_and_back_to_bed_is_quiet_until_morning() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BED", 25, 2, 13)  # gets up
    seen(s, "P-BATH", 25, 2, 14)  # a bed exit: 1 h 34 min of bedroom only before it
    seen(s, "P-BATH", 25, 2, 18)
    seen(s, "P-BED", 25, 2, 25)  # back in bed
    s.run_until(local_ms(25, 6, 30))
    assert opened(s) == []


def test_toilet_at_night_and_no_return_alerts_within_the_hour() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BED", 25, 2, 13)  # gets up
    seen(s, "P-BATH", 25, 2, 14)  # and nothing after: fell in the bathroom
    s.run_until(local_ms(25, 3, 14))
    [alert] = opened(s)
    assert alert.rule in (BATHROOM_RULE, NIGHT_EXIT_RULE)
    assert alert.device_time_ms <= local_ms(25, 2, 44)
    assert alert.details["context"] == "最后一次活动：卫生间 02:14"
    assert alert.details["bed_exit_ms"] == local_ms(25, 2, 14)


def test_night_exit_to_another_room_with_no_return_is_the_night_exit_rule() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BED", 25, 1, 59)  # gets up
    seen(s, "P-KIT", 25, 2, 0)  # a drink in the kitchen, then nothing
    s.run_until(local_ms(25, 3, 0))
    [alert] = opened(s)
    assert alert.rule == NIGHT_EXIT_RULE
    assert alert.device_time_ms == local_ms(25, 2, 30)  # 15 min x 1.25 -> the 30 min floor


def test_getting_up_at_the_usual_time_is_not_a_night_exit() -> None:
    s = sim()
    night_in_bed(s, 24)
    seen(s, "P-BED", 25, 5, 50)
    seen(s, "P-KIT", 25, 6, 40)  # up for the day (usual from 06:30), no return to bed
    s.run_until(local_ms(25, 8, 0))
    assert opened(s) == []


def test_outing_through_the_door_is_not_inactivity() -> None:
    s = sim()
    seen(s, "P-LR", 24, 9, 0)
    seen(s, "P-DOOR", 24, 9, 58)
    seen(s, "D1", 24, 10, 0)  # out: door, then nothing inside for 5 h
    s.run_until(local_ms(24, 15, 0))
    assert opened(s) == []
    seen(s, "D1", 24, 15, 0)
    seen(s, "P-LR", 24, 15, 5)
    assert opened(s) == []


def test_dead_door_contact_outing_from_the_entrance_is_judged_by_the_entrance_routine() -> None:
    s = sim()
    seen(s, "P-LR", 24, 9, 0)
    seen(s, "P-DOOR", 24, 10, 0)  # leaves; the dead contact sends nothing
    s.run_until(local_ms(24, 14, 30))  # 4.5 h out: within the entrance's usual 5 h
    assert opened(s) == []
    s.run_until(local_ms(24, 16, 15))  # 5 h x 1.25: nobody came back in
    [alert] = opened(s)
    assert alert.details["last_room"] == "门口"


def test_bathroom_by_day_beyond_the_usual_stay_alerts_even_with_motion() -> None:
    s = sim()
    seen(s, "P-LR", 24, 10, 0)
    for minute in range(5, 40, 5):  # in the bathroom from 10:05, moving
        seen(s, "P-BATH", 24, 10, minute)
    assert [a.rule for a in opened(s)] == [BATHROOM_RULE]  # at 10:35: 30 min floor
    [alert] = opened(s)
    assert alert.device_time_ms == local_ms(24, 10, 35)


def test_without_a_learned_home_routine_rooms_change_nothing() -> None:
    s = sim(home=None)
    seen(s, "P-BATH", 24, 10, 0)
    s.run_until(local_ms(24, 11, 59))
    assert opened(s) == []
    s.run_until(local_ms(24, 12, 0))  # the day floor, as before rooms
    assert [a.rule for a in opened(s)] == [NO_SIGN]


# --- whereabouts and learning -----------------------------------------------------------


def test_whereabouts_tracks_room_entry_and_night_bed_exits() -> None:
    bed = moved(None, "卧室", local_ms(25, 0, 0), quiet=True)
    bed = moved(bed, "卧室", local_ms(25, 1, 59), quiet=True)
    out = moved(bed, "卫生间", local_ms(25, 2, 0), quiet=True)  # walked from the bed
    assert out == Whereabouts("卫生间", local_ms(25, 2, 0), local_ms(25, 2, 0), None, out.exit_ms)
    assert out.exit_ms == local_ms(25, 2, 0)
    still_out = moved(out, "卫生间", local_ms(25, 2, 5), quiet=True)
    assert (still_out.since_ms, still_out.exit_ms) == (local_ms(25, 2, 0), local_ms(25, 2, 0))
    back = moved(still_out, "卧室", local_ms(25, 2, 10), quiet=True)
    assert back.exit_ms is None
    brief = moved(moved(None, "卧室", local_ms(25, 3, 0), True), "厨房", local_ms(25, 3, 5), True)
    assert brief.exit_ms is None  # five minutes in the bedroom is not having been in bed
    assert moved(back, "厨房", local_ms(25, 2, 9), True) == back  # older: ignored


def test_learn_pools_days_and_neighbouring_hours() -> None:
    signs: list[LifeSign] = []
    for day in (23, 24, 25):
        signs += [
            LifeSign(local_ms(day, 8, 0), "厨房"),
            LifeSign(local_ms(day, 8, 1), "卫生间"),
            LifeSign(local_ms(day, 8, 11), "客厅"),
            LifeSign(local_ms(day, 13, 0), "客厅"),  # 13:00 -> 15:30 in the armchair
            LifeSign(local_ms(day, 15, 30), "厨房"),
            LifeSign(local_ms(day, 16, 0), "门口", door=True),  # out until 19:00: no still
            LifeSign(local_ms(day, 19, 0), "客厅"),
        ]
    home = learn(signs, TZ)
    assert home.usual_still_s("客厅", 14) == pytest.approx(2.5 * 3600, rel=0.02)
    assert home.usual_still_s("厨房", 14) == home.usual_still_s("客厅", 14)  # day rooms pool
    assert home.usual_still_s("客厅", 3) is None  # never seen around 03:00
    assert home.bathroom_stay_s == pytest.approx(600.0)
    assert home.night_exit_s is None  # no nights in bed: nothing learned


def test_room_names_are_normalised() -> None:
    assert normalise_room(" 洗手间 ") == "卫生间"
    assert normalise_room("Living Room") == "客厅"
    assert normalise_room("储物间") == "储物间"  # unknown: kept as given


# --- more signs of life -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "readings", "wanted"),
    [
        ("plug", [0.5, 85.0], [False, True]),  # a TV switched on
        ("plug", [85.0, 86.0, 0.5], [False, False, True]),  # running, then off
        ("power_meter", [120.0, 240.0], [False, False]),  # the fridge's compressor
        ("power_meter", [120.0, 1900.0], [False, True]),  # a kettle
    ],
)
def test_appliance_power_is_a_sign_of_life_when_somebody_switches_it(
    kind: str, readings: list[float], wanted: list[bool]
) -> None:
    s = sim(home=None)
    got = []
    for watts in readings:
        s.clock.advance(60)
        got.append(s.send(s.event("PW1", kind, power_w=watts)))
    # the first reading has nothing to compare with; the deadline memo may also skip
    # a sign within the write slack, so only the switching readings are asked for
    assert [g for g, w in zip(got, wanted, strict=True) if w] == [True] * sum(wanted)
    assert not any(g for g, w in zip(got, wanted, strict=True) if not w)


@pytest.mark.parametrize(
    ("kind", "event"),
    [("contact", "contact_open"), ("contact", "contact_close"), ("switch", "switch_on")],
)
def test_contacts_and_light_switches_are_signs_of_life(kind: str, event: str) -> None:
    s = sim(home=None)
    assert s.send(s.event("C1", kind, event=event))  # type: ignore[arg-type]
    assert s.pending(f"{DEADLINE}:{ELDER}") is not None


# --- the re-armed deadline --------------------------------------------------------------


def test_a_rearmed_deadline_already_due_alerts_on_the_latest_sign() -> None:
    s = sim(home=None)
    seen(s, "P-LR", 24, 9, 0)  # deadline 11:00 stored
    s.clock.advance(9 * 60)
    assert not s.send(s.event("P-LR", "pir", motion=True))  # 09:09: within the slack
    stored = s.pending(f"{DEADLINE}:{ELDER}")
    assert stored is not None
    # the timer loop was held up: the stored deadline fires at 12:00, past 09:09 + 2 h
    s.clock.advance((2 * 60 + 51) * 60)
    assert s.clock.now_ms() == local_ms(24, 12, 0)
    timer = DueTimer(f"{DEADLINE}:{ELDER}", DEADLINE, ELDER, stored.due_ms, stored.payload)
    decisions = s.detector.on_timer(timer, ElderView(ELDER, s.th), s.clock.now_ms())
    [alert] = [d for d in decisions if isinstance(d, OpenAlert)]
    assert alert.details["last_sign_ms"] == local_ms(24, 9, 9)
    assert alert.details["threshold_source"] == "floor"
