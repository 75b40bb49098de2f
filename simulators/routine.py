"""An elder's day as a timeline of activities: pure, deterministic per elder, seed and day.

Each elder has traits (usual wake and bed times, how often they go out, whether they get
up at night to use the toilet...) drawn once from (seed, elder id). Each day is then
planned from those traits with its own jitter: sleep, breakfast, lunch, dinner (with
water use), toilet visits (more at night for some), a nap, TV, going out. The timeline
covers the whole local day, [0, 86400) seconds since local midnight, with no gaps and no
overlaps; the sensors (simulators.days) fire from it.

`activity` (0..1] scales how active the elder is that day (1 = their usual self): a
slow decline shrinks outings and walking and lengthens naps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

DAY_S = 86_400.0
H = 3600.0
MIN = 60.0

ActivityKind = Literal[
    "sleep",  # in bed at night
    "home",  # about the house
    "meal",  # cooking and eating (kitchen water, motion)
    "toilet",  # bathroom visit (motion, a flush)
    "tv",  # sitting in front of the TV (presence, little motion)
    "nap",  # in bed by day
    "out",  # out of the house (shopping, a walk), back the same way
    "wander",  # out at night, walking away (injected)
    "floor",  # lying on the floor after a fall (injected)
]
IN_BED: frozenset[ActivityKind] = frozenset({"sleep", "nap"})
AWAY: frozenset[ActivityKind] = frozenset({"out", "wander"})


@dataclass(frozen=True, slots=True)
class Activity:
    start_s: float  # seconds since local midnight
    end_s: float
    kind: ActivityKind
    bearing_deg: float = 0.0  # out/wander: which way from home
    distance_m: float = 0.0  # out: how far the destination is

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class ElderTraits:
    """What stays the same for an elder from day to day."""

    wake_h: float
    bed_h: float
    night_toilet: tuple[int, ...]  # choices for the number of night-time visits
    outgoing: float  # chance of a morning outing (an afternoon one is rarer)
    walk_m: float  # usual distance to the market / park
    nap_chance: float
    resting_hr: float
    spo2: float
    skin_temp: float

    @classmethod
    def of(cls, elder_id: str, seed: int, profile: str = "standard") -> ElderTraits:
        rng = random.Random(f"traits:{seed}:{elder_id}")
        frail = profile in ("disabled", "elderly_80plus")
        nocturia = rng.random() < (0.6 if profile in ("cognitive", "elderly_80plus") else 0.35)
        return cls(
            wake_h=rng.uniform(5.5, 7.5),
            bed_h=rng.uniform(21.0, 22.5),
            night_toilet=(1, 2, 2, 3) if nocturia else (0, 0, 1),
            outgoing=rng.uniform(0.2, 0.5) if frail else rng.uniform(0.6, 0.95),
            walk_m=_usual_walk_m(rng, profile),
            nap_chance=rng.uniform(0.4, 0.9),
            resting_hr=rng.uniform(62, 78),
            spo2=rng.uniform(95.5, 98.0),
            skin_temp=rng.uniform(36.0, 36.6),
        )


def _usual_walk_m(rng: random.Random, profile: str) -> float:
    """How far the elder usually goes out. Elders with dementia (cognitive) go out
    accompanied, near home: inside the 500 m home geofence of the rules, so their normal
    days raise no wandering alarm."""
    if profile == "cognitive":
        return rng.uniform(100, 330)
    if profile in ("disabled", "elderly_80plus"):
        return rng.uniform(150, 400)
    return rng.uniform(300, 900)


def day_rng(seed: int, elder_id: str, day: int) -> random.Random:
    """The randomness of one elder's day (`day`: proleptic ordinal of the local date)."""
    return random.Random(f"day:{seed}:{elder_id}:{day}")


def activity_at(timeline: list[Activity], t_s: float) -> Activity:
    """The activity at a time of day (the last one for t past the end)."""
    for a in timeline:
        if a.start_s <= t_s < a.end_s:
            return a
    return timeline[-1]


def paint(
    timeline: list[Activity],
    new: Activity,
    over: frozenset[ActivityKind] | None = None,
) -> list[Activity]:
    """The timeline with `new` laid over [new.start_s, new.end_s); with `over`, only
    where the timeline was one of those kinds (a toilet visit interrupts sleep or TV,
    not an outing). Neighbours of one kind with the same parameters are merged."""
    start, end = max(0.0, new.start_s), min(DAY_S, new.end_s)
    if end <= start:
        return timeline
    out: list[Activity] = []
    for seg in timeline:
        if seg.end_s <= start or seg.start_s >= end or (over is not None and seg.kind not in over):
            out.append(seg)
            continue
        if seg.start_s < start:
            out.append(replace(seg, end_s=start))
        out.append(replace(new, start_s=max(seg.start_s, start), end_s=min(seg.end_s, end)))
        if seg.end_s > end:
            out.append(replace(seg, start_s=end))
    return _merged(out)


def _merged(timeline: list[Activity]) -> list[Activity]:
    merged: list[Activity] = []
    for seg in timeline:
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.end_s == seg.start_s
            and replace(last, start_s=0, end_s=0) == replace(seg, start_s=0, end_s=0)
        ):
            merged[-1] = replace(last, end_s=seg.end_s)
        else:
            merged.append(seg)
    return merged


def plan_day(traits: ElderTraits, rng: random.Random, activity: float = 1.0) -> list[Activity]:
    """One day's timeline. Deterministic for a given rng state."""
    a = max(0.05, min(1.0, activity))
    wake = (traits.wake_h + rng.gauss(0, 0.3)) * H
    bed = (traits.bed_h + rng.gauss(0, 0.3)) * H
    day = [Activity(0, wake, "sleep"), Activity(wake, bed, "home"), Activity(bed, DAY_S, "sleep")]

    breakfast = Activity(wake + rng.uniform(15, 40) * MIN, 0, "meal")
    breakfast = replace(breakfast, end_s=breakfast.start_s + rng.uniform(20, 35) * MIN)
    lunch_at = (11.75 + rng.gauss(0, 0.25)) * H
    lunch = Activity(lunch_at, lunch_at + rng.uniform(25, 40) * MIN, "meal")
    dinner_at = (17.75 + rng.gauss(0, 0.3)) * H
    dinner = Activity(dinner_at, dinner_at + rng.uniform(30, 45) * MIN, "meal")

    tv_at = (19.0 + rng.gauss(0, 0.3)) * H
    day = paint(
        day, Activity(tv_at, bed - rng.uniform(10, 30) * MIN, "tv"), over=frozenset({"home"})
    )
    nap_end = lunch.end_s
    if rng.random() < min(0.95, traits.nap_chance + (1 - a) * 0.5):
        nap_at = lunch.end_s + rng.uniform(20, 60) * MIN
        nap_end = nap_at + rng.uniform(30, 80) * MIN * (2 - a)
        day = paint(day, Activity(nap_at, nap_end, "nap"))
    if rng.random() < 0.5 + (1 - a) * 0.4:  # afternoon TV, more of it on slow days
        afternoon = max(nap_end, 15 * H) + rng.uniform(0, 30) * MIN
        day = paint(day, Activity(afternoon, afternoon + rng.uniform(40, 90) * MIN, "tv"))
    for meal in (breakfast, lunch, dinner):
        day = paint(day, meal)

    outings = (
        (traits.outgoing, breakfast.end_s + rng.uniform(15, 60) * MIN, lunch.start_s - 10 * MIN),
        (
            traits.outgoing * 0.6,
            max(nap_end, 15 * H) + rng.uniform(0, 30) * MIN,
            dinner_at - 15 * MIN,
        ),
    )
    for chance, leave, latest in outings:
        if rng.random() >= chance * a:
            continue
        back = min(latest, leave + rng.uniform(60, 150) * MIN * a**0.5)
        if back - leave < 20 * MIN:
            continue
        where = Activity(
            leave,
            back,
            "out",
            bearing_deg=rng.uniform(0, 360),
            distance_m=traits.walk_m * rng.uniform(0.5, 1.2) * a,
        )
        day = paint(day, where, over=frozenset({"home", "tv", "nap"}))

    t = wake + rng.uniform(20, 60) * MIN  # daytime toilet visits, every two to three hours
    while t < bed - 30 * MIN:
        day = paint(day, Activity(t, t + rng.uniform(3, 6) * MIN, "toilet"), over=_HOMELY)
        t += rng.uniform(100, 180) * MIN
    for _ in range(rng.choice(traits.night_toilet)):
        at = rng.choice((rng.uniform(0, wake - 30 * MIN), rng.uniform(bed + 30 * MIN, DAY_S)))
        day = paint(day, Activity(at, at + rng.uniform(3, 7) * MIN, "toilet"), over=_SLEEP)
    return day


_HOMELY: frozenset[ActivityKind] = frozenset({"home", "tv"})
_SLEEP: frozenset[ActivityKind] = frozenset({"sleep"})
