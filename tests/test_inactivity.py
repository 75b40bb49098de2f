"""Inactivity detector: pure table tests, a ManualClock playing an elder's day.

Local times are Chongqing (Asia/Shanghai); 23 Nov 2026 is a Monday. Defaults: day
floor 2 h, night floor 8 h in quiet hours 22:00-07:00, ceiling 12 h, out of home 10 h.
"""

from __future__ import annotations

import pytest

from rules_engine.detectors.inactivity import (
    InactivityDetector,
    inactivity_deadline,
    threshold_at,
)
from rules_engine.localtime import hour_of_week
from rules_engine.routine import Routine, RoutineBook, learn_routine, percentile
from tests.detector_sim import ELDER, TZ, Sim, local_ms, thresholds

H = 3_600_000
MIN = 60_000


def sim(routine: Routine | None = None, **overrides: float) -> Sim:
    book = RoutineBook(TZ)
    if routine is not None:
        book.put(ELDER, routine, local_ms(23, 0))
    return Sim(InactivityDetector(book, TZ), thresholds(**overrides))


def motion(s: Sim, day: int, hour: int, minute: int = 0) -> bool:
    return s.at(local_ms(day, hour, minute), "P1", "pir", motion=True)


def every_day_at(hour: int, gap_s: float) -> Routine:
    """A routine where the gap starting at `hour` is `gap_s` on each day of the week."""
    return Routine({d * 24 + hour: gap_s for d in range(7)})


# --- the threshold --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "usual_s", "expected_s", "source"),
    [
        (10, None, 2 * 3600, "floor"),  # no routine yet: the day floor
        (23, None, 8 * 3600, "floor"),  # quiet hours: the night floor
        (3, None, 8 * 3600, "floor"),
        (10, 3600.0, 2 * 3600, "floor"),  # a busy routine never goes below the floor
        (10, 3 * 3600.0, 3 * 3600, "routine"),
        (10, 20 * 3600.0, 12 * 3600, "ceiling"),  # nor above the ceiling
        (23, 10 * 3600.0, 10 * 3600, "routine"),
    ],
)
def test_threshold_is_the_routine_clamped_between_floor_and_ceiling(
    hour: int, usual_s: float | None, expected_s: float, source: str
) -> None:
    at = local_ms(24, hour)
    routine = None if usual_s is None else Routine({hour_of_week(at, TZ): usual_s})
    got = threshold_at(at, thresholds(), routine, TZ)
    assert (got.seconds, got.source) == (expected_s, source)


def test_profile_floor_and_ceiling_clamp_the_routine() -> None:
    at = local_ms(24, 10)
    routine = Routine({hour_of_week(at, TZ): 5 * 3600.0})
    strict = thresholds(inactivity_ceiling_s=4 * 3600.0)
    assert threshold_at(at, strict, routine, TZ).seconds == 4 * 3600
    lax = thresholds(inactivity_floor_day_s=6 * 3600.0)
    assert threshold_at(at, lax, routine, TZ).seconds == 6 * 3600


def test_a_gap_that_runs_into_quiet_hours_is_judged_by_the_night_threshold() -> None:
    at = local_ms(24, 21)  # last seen at 21:00; 2 h would alarm at 23:00 in bed
    routine = every_day_at(21, 9 * 3600.0)  # learned: in bed from 21:00 for 9 h
    deadline = inactivity_deadline(at, "motion", thresholds(), routine, TZ)
    assert deadline.due_ms == at + 9 * H
    assert deadline.threshold.source == "routine"


# The misfire `carewatch eval days` found: a new elder (no routine) asleep at 21:15 and
# up at 05:15+ was warned at 05:15, the night floor counted from the last sign before bed.
@pytest.mark.parametrize(
    ("last_sign", "overrides", "due", "source"),
    [
        # evening / night gaps: until quiet hours end (07:00) + the 2 h grace
        ((24, 21, 15), {}, (25, 9, 0), "wake"),
        ((24, 22, 30), {}, (25, 9, 0), "wake"),
        ((25, 0, 40), {}, (25, 9, 0), "wake"),  # a night toilet visit
        ((24, 20, 30), {}, (25, 8, 30), "wake"),  # never past the 12 h ceiling
        ((25, 5, 0), {}, (25, 13, 0), "floor"),  # up at 05:00: the night floor is later
        # the day is unchanged: still for 2 h by day is an alarm
        ((24, 14, 0), {}, (24, 16, 0), "floor"),
        ((24, 19, 30), {}, (24, 21, 30), "floor"),
        # all of it from the profile: quiet 21-06, a 1 h grace, an 6 h night floor
        (
            (24, 21, 15),
            {
                "quiet_start_h": 21.0,
                "quiet_end_h": 6.0,
                "inactivity_morning_grace_s": 3600.0,
                "inactivity_floor_night_s": 6 * 3600.0,
            },
            (25, 7, 0),
            "wake",
        ),
        ((24, 21, 15), {"inactivity_morning_grace_s": 0.0}, (25, 7, 0), "wake"),
    ],
)
def test_a_night_gap_without_routine_lasts_until_quiet_hours_end_plus_grace(
    last_sign: tuple[int, int, int],
    overrides: dict[str, float],
    due: tuple[int, int, int],
    source: str,
) -> None:
    at = local_ms(*last_sign)
    deadline = inactivity_deadline(at, "motion", thresholds(**overrides), None, TZ)
    assert (deadline.due_ms, deadline.threshold.source) == (local_ms(*due), source)
    assert deadline.threshold.seconds == (deadline.due_ms - at) / 1000


def test_an_early_sleeper_without_radar_is_not_alarmed_before_waking() -> None:
    s = sim()
    motion(s, 24, 21, 15)  # asleep at 21:15
    s.run_until(local_ms(25, 7, 9))  # the old rule alarmed at 05:15
    assert s.changes == []
    motion(s, 25, 7, 10)  # up
    s.run_until(local_ms(25, 9, 9))
    assert s.changes == []
    s.run_until(local_ms(25, 9, 10))  # and still by day 2 h after getting up: the alarm
    assert [c.rule for c in s.changes] == ["inactivity.no_sign_of_life"]


def test_an_elder_who_never_gets_up_is_alarmed_and_the_alert_says_why() -> None:
    s = sim()
    motion(s, 24, 21, 15)
    s.run_until(local_ms(25, 9))
    [opened] = s.changes
    assert opened.at_ms == local_ms(25, 9)
    alert = s.opened[opened.alert_id]
    assert alert.details["threshold_source"] == "wake"
    assert alert.threshold == {
        "inactivity_s": 11.75 * 3600,
        "floor_s": 8 * 3600.0,
        "ceiling_s": 12 * 3600.0,
        "morning_grace_s": 2 * 3600.0,
        "quiet_end_h": 7.0,
    }


def test_bed_presence_defers_no_later_than_the_day_floor_after_quiet_hours() -> None:
    at = local_ms(25, 6, 50)  # still in bed at 06:50: up by 09:00 or an alert
    deadline = inactivity_deadline(at, "in_bed", thresholds(), None, TZ)
    assert deadline.due_ms == local_ms(25, 9)


# --- a day of the elder's life ------------------------------------------------------------


def test_no_sign_of_life_opens_a_warning_that_escalates_to_critical() -> None:
    s = sim()
    motion(s, 24, 9)
    s.run_until(local_ms(24, 11) - 1)
    assert s.changes == []
    s.run_until(local_ms(24, 11))
    [opened] = s.changes
    assert (opened.what, opened.severity, opened.rule) == (
        "opened",
        "warning",
        "inactivity.no_sign_of_life",
    )
    alert = s.opened[opened.alert_id]
    assert alert.threshold == {"inactivity_s": 7200.0, "floor_s": 7200.0, "ceiling_s": 43200.0}
    assert alert.details["threshold_source"] == "floor"
    assert alert.details["last_sign"] == "motion"
    # unanswered one more threshold: critical, as a change the notifier gets
    s.run_until(local_ms(24, 13))
    assert s.whats("inactivity") == ["opened", "escalated"]
    assert s.changes[-1].severity == "critical"
    assert s.active["inactivity"].severity == "critical"


def test_a_sign_of_life_resolves_the_alert_and_stops_the_escalation() -> None:
    s = sim()
    motion(s, 24, 9)
    s.run_until(local_ms(24, 11, 30))
    assert s.whats("inactivity") == ["opened"]
    assert s.at(local_ms(24, 11, 40), "W1", "wristband", event="bed_exit")
    assert s.whats("inactivity") == ["opened", "resolved"]
    s.run_until(local_ms(24, 13, 30))  # no escalation of a resolved alert; new deadline 13:40
    assert s.whats("inactivity") == ["opened", "resolved"]
    s.run_until(local_ms(24, 13, 40))
    assert s.whats("inactivity") == ["opened", "resolved", "opened"]


def test_door_opened_then_no_motion_means_out_of_home_not_inactive() -> None:
    s = sim()
    motion(s, 24, 9)
    assert s.at(local_ms(24, 9, 30), "D1", "door", event="door_open")
    s.run_until(local_ms(24, 18))  # out all day: no alert
    assert s.changes == []
    assert s.pending(f"inactivity-away:{ELDER}") is not None
    # the out-of-home ceiling passes (10 h after the door): now it is an alert
    s.run_until(local_ms(24, 19, 30))
    [opened] = s.changes
    assert opened.rule == "inactivity.out_of_home_ceiling"
    assert s.opened[opened.alert_id].details["threshold_source"] == "out_ceiling"


def test_walking_outside_with_the_band_is_still_out_of_home() -> None:
    s = sim()
    motion(s, 24, 9)
    s.at(local_ms(24, 9, 30), "D1", "door", event="door_open")
    for i, steps in enumerate(range(1000, 3000, 200)):  # a walk to the market
        s.at(local_ms(24, 10) + i * 6 * MIN, "W1", "wristband", steps=steps)
    s.run_until(local_ms(24, 19))  # sitting in the teahouse all afternoon: no alert
    assert s.changes == []
    s.run_until(local_ms(24, 19, 30))  # 10 h after the door
    assert [c.rule for c in s.changes] == ["inactivity.out_of_home_ceiling"]


def test_steps_after_coming_back_inside_are_judged_at_home() -> None:
    s = sim()
    s.at(local_ms(24, 9, 30), "D1", "door", event="door_open")
    motion(s, 24, 11)  # back inside
    s.at(local_ms(24, 11, 10), "W1", "wristband", steps=100)
    s.at(local_ms(24, 11, 20), "W1", "wristband", steps=300)
    s.run_until(local_ms(24, 13, 20))
    assert [(c.rule, c.at_ms) for c in s.changes] == [
        ("inactivity.no_sign_of_life", local_ms(24, 13, 20))
    ]


def test_coming_back_through_the_door_ends_the_out_of_home_wait() -> None:
    s = sim()
    s.at(local_ms(24, 9, 30), "D1", "door", event="door_open")
    s.run_until(local_ms(24, 12))
    s.at(local_ms(24, 15), "D1", "door", event="door_open")  # back home
    motion(s, 24, 15, 1)
    assert s.pending(f"inactivity-away:{ELDER}") is None
    s.run_until(local_ms(24, 17))
    assert s.whats("inactivity") == []
    s.run_until(local_ms(24, 17, 1))  # and inactive at home is judged normally again
    assert s.whats("inactivity") == ["opened"]


def test_a_normal_night_in_bed_raises_nothing() -> None:
    s = sim()
    for hour, minute in [(20, 0), (21, 30), (22, 45), (23, 0)]:
        motion(s, 24, hour, minute)
    t = local_ms(24, 23, 10)
    while t < local_ms(25, 6, 30):  # the radar sees somebody in bed all night
        s.at(t, "R1", "radar", presence=True)
        t += 10 * MIN
    assert s.at(local_ms(25, 6, 30), "R1", "radar", event="bed_exit")
    motion(s, 25, 6, 35)
    s.run_until(local_ms(25, 8))
    assert s.changes == []


def test_a_night_without_a_radar_raises_nothing_either() -> None:
    s = sim()
    motion(s, 24, 23)  # no motion 23:00-06:30: 7 h 30 min, under the night floor
    motion(s, 25, 6, 30)
    s.run_until(local_ms(25, 8))
    assert s.changes == []


def test_lying_still_by_day_is_not_excused_by_bed_presence() -> None:
    s = sim()
    motion(s, 24, 10)
    for minute in range(0, 180, 10):
        s.at(local_ms(24, 10) + minute * MIN, "R1", "radar", presence=True)
    assert s.whats("inactivity") == ["opened"]  # at 12:00, presence or not
    assert s.changes[0].at_ms == local_ms(24, 12)
    # and the radar's day-long presence reports never reach the database
    assert not s.at(local_ms(24, 13), "R1", "radar", presence=True)
    assert s.at(local_ms(24, 23), "R1", "radar", presence=True)
    assert s.whats("inactivity") == ["opened", "escalated"]  # presence resolves nothing


def test_learned_afternoon_nap_makes_the_threshold_longer() -> None:
    nap = every_day_at(13, 3 * 3600 + 15 * 60)  # naps 13:00-16:00, p95 of 3 h 15 min
    napper, newcomer = sim(nap), sim()
    for s in (napper, newcomer):
        motion(s, 24, 13)
        s.run_until(local_ms(24, 16))
        motion(s, 24, 16)
    assert napper.changes == []
    assert newcomer.whats("inactivity") == ["opened", "resolved"]
    assert newcomer.changes[0].at_ms == local_ms(24, 15)  # the 2 h floor
    # when the napper does not get up, the alert comes at the routine's threshold
    late_sleeper = sim(nap)
    motion(late_sleeper, 25, 13)
    late_sleeper.run_until(local_ms(25, 17))
    [late] = late_sleeper.changes
    assert late.at_ms == local_ms(25, 16, 15)
    alert = late_sleeper.opened[late.alert_id]
    assert alert.details["threshold_source"] == "routine"
    assert alert.threshold["inactivity_s"] == 3 * 3600 + 15 * 60


@pytest.mark.parametrize(
    ("steps", "is_sign"),
    [
        ([100, 100], [False, False]),
        ([100, 150], [False, True]),
        ([100, 150, 20], [False, True, False]),
    ],
)
def test_wristband_steps_count_only_when_they_go_up(steps: list[int], is_sign: list[bool]) -> None:
    s = sim()
    got = []
    for i, n in enumerate(steps):
        got.append(s.at(local_ms(24, 9) + i * 10 * MIN, "W1", "wristband", steps=n))
    assert got == is_sign


def test_hot_telemetry_that_moves_the_deadline_by_under_the_slack_skips_the_database() -> None:
    s = sim()
    assert motion(s, 24, 9)  # first: written
    s.clock.advance(5 * 60)
    assert not s.send(s.event("P1", "pir", motion=True))  # 5 min later: not worth a write
    s.clock.advance(6 * 60)
    written = s.event("P1", "pir", motion=True)
    assert s.send(written)  # 11 min: written
    # the same event delivered again (its transaction failed and is retried): observed
    # once, the engine answers with the same observation, so it is decided again
    assert s.send(written)
    s.clock.advance(1)
    assert s.send(s.event("D1", "door", event="door_open"))  # doors always count


def test_a_deadline_left_stale_by_the_write_slack_is_rearmed_not_alarmed() -> None:
    s = sim()
    motion(s, 24, 9)  # deadline 11:00 stored
    s.clock.advance(9 * 60)
    assert not s.send(s.event("P1", "pir", motion=True))  # 09:09: within the slack
    s.run_until(local_ms(24, 11, 8))  # the stored deadline passed: re-armed from 09:09
    assert s.whats("inactivity") == []
    s.run_until(local_ms(24, 11, 10))  # two hours after the real last sign
    assert s.whats("inactivity") == ["opened"]


def test_routine_learning_needs_enough_weeks_and_takes_the_95th_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    slots = [(13, 3 * 3600.0), (13, 3.5 * 3600.0), (13, 2.5 * 3600.0), (9, 9000.0), (9, 9000.0)]
    routine = learn_routine(slots, min_weeks=3)
    assert routine.usual_gap_s(13) == pytest.approx(percentile([10800, 12600, 9000], 0.95))
    assert routine.usual_gap_s(9) is None  # two weeks only: not a routine yet


def test_routine_book_queues_missing_and_stale_elders() -> None:
    book = RoutineBook(TZ, refresh_every_s=3600)
    assert book.get("E9", 0) is None
    book.put("E9", Routine({1: 9000.0}), 0)
    assert book.get("E9", 1000) == Routine({1: 9000.0})
    assert book.get("E9", 3_600_000) == Routine({1: 9000.0})  # stale: still used, requeued
