"""Realistic simulated days: every sensor of every elder, firing from the elder's routine.

`simulate()` turns a set of elders, a simulated period and injected events into one
time-ordered stream of `SimMessage` (device id, topic kind, payload bytes, device time),
each payload exactly what the device would publish (schema v1, per-device sequence
numbers counting up). Nothing here does I/O or reads a clock: time is simulated, so a
whole day comes out in well under a second, and the same (elders, start, seed,
injections) always gives the same bytes. `simulators.replay` publishes a stream live.

What fires, from the activity of the moment (simulators.routine):
- wristband, every minute: heart rate, SpO2, steps (a counter from local midnight),
  battery, worn; skin temperature every 5 min; a GPS fix every 5 min at home and every
  minute out of it. Accelerometer windows (1 s at 50 Hz, from simulators.accel_trials)
  only around notable movements: getting up, sitting down, setting off, clapping at
  the TV, and a fall. When the battery is low at bedtime it charges overnight.
- PIR: motion=true in minutes with movement in the home, a heartbeat every 15 min.
- door contact: door_open / door_close when going out and coming back, hourly heartbeat.
- water meter: flow (L/min) while cooking, washing in the morning, flushing the toilet;
  a 0 when the flow stops, and every 30 min.
- radar (if fitted): presence and motion every 5 min, bed_exit when getting up.
- contact on the fridge, bathroom light switch, TV plug, electricity meter (if fitted):
  at meals, night toilet trips, television; the meter every 15 min as well.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from carewatch.messages import EventType
from carewatch.topics import TopicKind
from simulators import geo
from simulators.accel_trials import HZ as TRIAL_HZ
from simulators.accel_trials import FloatArray, generate_trial
from simulators.device import SimDevice
from simulators.injections import Injection, InjectionKind, active, activity_scale
from simulators.routine import (
    AWAY,
    DAY_S,
    IN_BED,
    Activity,
    ActivityKind,
    ElderTraits,
    activity_at,
    day_rng,
    paint,
    plan_day,
)

SITE_TZ = ZoneInfo("Asia/Shanghai")  # the routine follows local time (settings.timezone)
ACCEL_HZ = 50
ACCEL_WINDOW_S = 1.0
FALL_STILL_S = 10.0  # accelerometer windows of lying still sent after a fall
LAST_WILL_AFTER_S = 45.0  # keepalive 30 s x 1.5: when the broker gives up on a band
BATTERY_DRAIN_PER_MIN = 100 / (5 * 1440)  # a charge lasts about five days
CHARGE_PER_MIN = 1.0
# Below this at bedtime the band goes on the charger for the night (by day it stays on
# the wrist: off the wrist by day is what the off_wrist alert is for).
CHARGE_BELOW = 30.0

# Per activity: steps a minute, heart rate over resting, chance of PIR / radar motion.
STEPS: dict[ActivityKind, float] = {
    "sleep": 0, "home": 4, "meal": 2, "toilet": 5, "tv": 1,
    "nap": 0, "out": 12, "wander": 70, "floor": 0,
}  # fmt: skip
WALKING_STEPS = 75.0  # a minute of walking to or from somewhere
WALK_SPEED = 0.7  # m/s
HR_DELTA: dict[ActivityKind, float] = {
    "sleep": -8, "home": 4, "meal": 6, "toilet": 5, "tv": 0,
    "nap": -5, "out": 14, "wander": 20, "floor": 15,
}  # fmt: skip
PIR_P: dict[ActivityKind, float] = {
    "sleep": 0.0, "home": 0.55, "meal": 0.7, "toilet": 0.9, "tv": 0.15,
    "nap": 0.03, "out": 0.0, "wander": 0.0, "floor": 0.0,
}  # fmt: skip
RADAR_MOTION_P: dict[ActivityKind, float] = {
    "sleep": 0.1, "home": 0.7, "meal": 0.6, "toilet": 0.5, "tv": 0.3,
    "nap": 0.1, "out": 0.0, "wander": 0.0, "floor": 0.0,
}  # fmt: skip
PAINTED: dict[InjectionKind, ActivityKind] = {"fall": "floor", "wander": "wander"}
DeviceKindName = Literal[
    "wristband", "pir", "door", "water_meter", "radar", "contact", "switch", "plug", "power_meter"
]
ROUTINE_KINDS: tuple[DeviceKindName, ...] = ("wristband", "pir", "door", "water_meter", "radar")
# More signs of life a home may have (docs/inactivity.md), from changes of activity only:
# the fridge door at meals, the bathroom light on a night toilet trip, the TV's plug, the
# electricity meter stepping up while cooking (and its quarter-hourly reading).
HOME_KINDS: tuple[DeviceKindName, ...] = ("contact", "switch", "plug", "power_meter")
TV_W, STANDBY_W, COOKING_W, BASE_W = 85.0, 0.8, 1800.0, 150.0


class SimMessage(NamedTuple):
    """One MQTT message: publish `payload` on cw/v1/dev/{device_id}/{kind}."""

    device_id: str
    kind: TopicKind
    payload: bytes
    device_time_ms: int


@dataclass(frozen=True, slots=True)
class SimElder:
    elder_id: str
    home: tuple[float, float]
    devices: Mapping[str, str]  # device kind -> device id (the first of each kind)
    profile: str = "standard"


def elders_from_devices(
    devices: Iterable[SimDevice], profiles: Mapping[str, str] | None = None
) -> list[SimElder]:
    """Group registered devices by elder (the kinds without a routine model, smoke, gas
    and leak detectors, stay quiet here)."""
    grouped: dict[str, dict[str, str]] = {}
    homes: dict[str, tuple[float, float]] = {}
    for d in devices:
        grouped.setdefault(d.elder_id, {}).setdefault(d.kind, d.device_id)
        if d.home is not None:
            homes.setdefault(d.elder_id, d.home)
    profiles = profiles or {}
    return [
        SimElder(e, homes.get(e, geo.DEFAULT_CENTRE), kinds, profiles.get(e, "standard"))
        for e, kinds in sorted(grouped.items())
    ]


def simulate(
    elders: Sequence[SimElder],
    start_ms: int,
    duration_s: float,
    *,
    seed: int = 0,
    injections: Mapping[str, Sequence[Injection]] | None = None,
    tz: ZoneInfo = SITE_TZ,
) -> Iterator[SimMessage]:
    """Every device message of `elders` in [start_ms, start_ms + duration_s), in device
    time order. Generated lazily, an hour of one elder at a time."""
    end_ms = start_ms + round(duration_s * 1000)
    injections = injections or {}
    streams = [
        _ElderDays(e, seed, list(injections.get(e.elder_id, ())), tz).messages(start_ms, end_ms)
        for e in elders
    ]
    return heapq.merge(*streams, key=lambda m: m.device_time_ms)


def day_plan(
    elder: SimElder,
    day: date,
    *,
    seed: int = 0,
    injections: Sequence[Injection] = (),
    tz: ZoneInfo = SITE_TZ,
) -> list[Activity]:
    """What `elder` does on local `day` in `simulate()` with the same seed and injections
    (for inspection and tests: the sensors fire from exactly this)."""
    return _ElderDays(elder, seed, list(injections), tz).plan(day)[0]


# ------------------------------------------------------------------------------------
# One elder
# ------------------------------------------------------------------------------------

Body = dict[str, object] | EventType | Literal["online", "offline"]


@dataclass(frozen=True, slots=True)
class _Rec:
    """A message before it gets its sequence number."""

    t_ms: int
    device: DeviceKindName
    topic: TopicKind
    body: Body


class _StampClock:
    """The device time of the message being stamped (SimDevice reads its clock)."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


@dataclass
class _Band:
    """Wristband state carried from day to day."""

    battery: float
    charging: bool = False
    steps: int = 0


@dataclass
class _Day:
    """What one local day's generation needs."""

    midnight_ms: int
    plan: list[Activity]
    scale: float
    rng: random.Random
    recs: list[_Rec] = field(default_factory=list)
    off_wrist: set[int] = field(default_factory=set)  # minutes the band was off the wrist
    battery: list[int] = field(default_factory=list)  # the band's, minute by minute
    bursts: list[tuple[float, float]] = field(default_factory=list)  # accelerometer windows

    def claim(self, start_s: float, end_s: float) -> bool:
        """Reserve a stretch of accelerometer signal; False if it overlaps one already
        sent (the wrist makes one movement at a time)."""
        if any(start_s < e and s < end_s for s, e in self.bursts):
            return False
        self.bursts.append((start_s, end_s))
        return True

    def at(self, t_s: float) -> int:
        return self.midnight_ms + round(t_s * 1000)

    def take(self) -> list[_Rec]:
        """The records made since the last take."""
        recs, self.recs = self.recs, []
        return recs

    def add(self, t_s: float, device: DeviceKindName, topic: TopicKind, body: Body) -> None:
        # never before midnight: the previous day has been sent already (nothing is made
        # more than a minute before the hour being generated, see _hours)
        self.recs.append(_Rec(self.at(max(0.0, t_s)), device, topic, body))


class _ElderDays:
    def __init__(self, elder: SimElder, seed: int, injections: list[Injection], tz: ZoneInfo):
        self.elder = elder
        self.seed = seed
        self.injections = injections
        self.tz = tz
        self.traits = ElderTraits.of(elder.elder_id, seed, elder.profile)
        setup = random.Random(f"setup:{seed}:{elder.elder_id}")
        self.phase_s = {kind: setup.uniform(0, 59) for kind in ROUTINE_KINDS}
        self.sensor_battery = {kind: setup.randint(70, 100) for kind in ROUTINE_KINDS}
        self.band = _Band(battery=setup.uniform(40, 100))
        self.subject = int.from_bytes(hashlib.sha256(elder.elder_id.encode()).digest()[:2]) + 1
        self.prev_kind: ActivityKind = "sleep"
        self.kinds = [k for k in (*ROUTINE_KINDS, *HOME_KINDS) if k in elder.devices]
        # the home kinds' phases come from a stream of their own: adding them to a home
        # leaves every other sensor's readings as they were
        home = random.Random(f"setup-home:{seed}:{elder.elder_id}")
        self.phase_s |= {kind: home.uniform(0, 59) for kind in HOME_KINDS}

    # -- stream ------------------------------------------------------------------------

    def messages(self, start_ms: int, end_ms: int) -> Iterator[SimMessage]:
        clock = _StampClock(start_ms)
        devices = {
            k: SimDevice(self.elder.devices[k], k, self.elder.elder_id, clock=clock)
            for k in self.kinds
        }
        for kind in self.kinds:
            yield _stamp(devices[kind], clock, _Rec(start_ms, kind, "status", "online"))
        day = datetime.fromtimestamp(start_ms / 1000, self.tz).date()
        # Generated an hour at a time; a record may lie past its hour (a burst of
        # accelerometer windows, a fall at 23:59:55), so it waits here until its time.
        pending: list[tuple[int, int, _Rec]] = []
        order = itertools.count()
        while _midnight_ms(day, self.tz) < end_ms:
            for until_ms, recs in self._hours(day):
                for rec in recs:
                    heapq.heappush(pending, (rec.t_ms, next(order), rec))
                while pending and pending[0][0] < until_ms:
                    rec = heapq.heappop(pending)[2]
                    if rec.device not in devices or self._band_silent(rec):
                        continue  # a sensor this home does not have; a band gone silent
                    if start_ms <= rec.t_ms < end_ms:
                        yield _stamp(devices[rec.device], clock, rec)
                if until_ms >= end_ms:
                    return
            day += timedelta(days=1)

    def plan(self, day: date) -> tuple[list[Activity], float]:
        """The day's activities, injected ones included, and its activity scale."""
        midnight = _midnight_ms(day, self.tz)
        scale = activity_scale(self.injections, midnight)
        rng = day_rng(self.seed, self.elder.elder_id, day.toordinal())
        return self._with_injections(plan_day(self.traits, rng, scale), midnight), scale

    def _hours(self, day: date) -> Iterator[tuple[int, list[_Rec]]]:
        """The day's records an hour at a time: (end of the hour, records made in it)."""
        plan, scale = self.plan(day)
        midnight = _midnight_ms(day, self.tz)
        d = _Day(
            midnight,
            plan,
            scale,
            random.Random(f"sensors:{self.seed}:{self.elder.elder_id}:{day.toordinal()}"),
        )
        self._charge(d)
        self._offline_statuses(d)
        wake_s = next((a.end_s for a in plan if a.kind == "sleep" and a.start_s == 0), 0.0)
        flowing = False
        segments = iter(plan)
        seg = next(segments, None)
        for hour in range(24):
            for minute in range(hour * 60, hour * 60 + 60):
                flowing = self._minute(d, minute, wake_s, flowing)
            # changes of activity a minute ahead: some of what they send comes just before
            # them (the door opens as the elder gets back), and must not miss its hour
            while seg is not None and seg.start_s < (hour + 1) * 3600 + 60:
                self._segment(d, seg)
                seg = next(segments, None)
            yield midnight + (hour + 1) * 3_600_000, d.take()
        self.band.steps = 0  # the step counter restarts at midnight

    def _with_injections(self, plan: list[Activity], midnight: int) -> list[Activity]:
        for inj in self.injections:
            kind = PAINTED.get(inj.kind)
            if kind is not None:
                start_s, end_s = (inj.at_ms - midnight) / 1000, (inj.end_ms - midnight) / 1000
                plan = paint(plan, Activity(start_s, end_s, kind))
        return plan

    # -- events at changes of activity ------------------------------------------------

    def _segment(self, d: _Day, seg: Activity) -> None:
        if seg.kind != self.prev_kind:
            self._transition(d, self.prev_kind, seg)
        if seg.kind == "tv" and d.rng.random() < 0.15:  # clapping along to a show
            self._accel(d, seg.start_s + d.rng.uniform(0, seg.duration_s), "D20")
        self.prev_kind = seg.kind

    def _transition(self, d: _Day, prev: ActivityKind, seg: Activity) -> None:
        t, rng = seg.start_s, d.rng
        if prev in IN_BED and seg.kind not in IN_BED:
            d.add(t + 2, "radar", "event", "bed_exit")
        if seg.kind == "floor":
            self._fall(d, t)
            return
        if prev in IN_BED and seg.kind not in IN_BED:
            self._accel(d, t + 1, "D15")  # sitting up and getting out of bed
        if seg.kind in AWAY and prev not in AWAY:
            d.add(t + 3, "door", "event", "door_open")
            d.add(t + rng.uniform(8, 25), "door", "event", "door_close")
            self._accel(d, t + 30, "D01")
        elif prev in AWAY and seg.kind not in AWAY:
            d.add(t - 20, "door", "event", "door_open")
            d.add(t - 5, "door", "event", "door_close")
        if seg.kind in ("meal", "tv") or (seg.kind == "toilet" and rng.random() < 0.5):
            self._accel(d, t + 5, "D08")  # sitting down
        self._home_signs(d, prev, seg)

    def _home_signs(self, d: _Day, prev: ActivityKind, seg: Activity) -> None:
        """Contacts, switches, plugs and the meter at a change of activity (no randomness
        drawn: the other sensors' streams stay the same)."""
        t = seg.start_s
        if prev == "tv":
            d.add(t, "plug", "telemetry", {"power_w": STANDBY_W})
        if seg.kind == "tv":
            d.add(t + 20, "plug", "telemetry", {"power_w": TV_W})
        if seg.kind == "meal":
            d.add(t + 30, "contact", "event", "contact_open")
            d.add(t + 45, "contact", "event", "contact_close")
            d.add(t + 90, "power_meter", "telemetry", {"power_w": COOKING_W})
            d.add(t + 90 + min(900.0, seg.duration_s / 2), "power_meter", "telemetry",
                  {"power_w": BASE_W})  # fmt: skip
        if seg.kind == "toilet" and prev in IN_BED:
            d.add(t + 4, "switch", "event", "switch_on")
            d.add(seg.end_s - 4, "switch", "event", "switch_off")

    def _on_charger(self, t_ms: int) -> bool:
        return active(self.injections, "charger", t_ms) is not None

    def _worn_at(self, d: _Day, t_s: float) -> bool:
        return int(t_s // 60) not in d.off_wrist

    def _band_silent(self, rec: _Rec) -> bool:
        if rec.device != "wristband" or rec.topic == "status":  # the broker's will speaks
            return False
        return active(self.injections, "offline", rec.t_ms) is not None

    def _accel(self, d: _Day, t_s: float, code: str) -> None:
        if "wristband" not in self.elder.devices or not self._worn_at(d, t_s):
            return
        trial = generate_trial(code, self.subject, d.at(t_s) // 1000, self.seed)
        self._windows(d, t_s, trial[:: TRIAL_HZ // ACCEL_HZ])

    def _fall(self, d: _Day, t_s: float) -> None:
        """The fall trial placed so its impact is at t, then lying still."""
        if "wristband" not in self.elder.devices or not self._worn_at(d, t_s):
            return
        code = d.rng.choice(("F01", "F02", "F03"))
        trial = generate_trial(code, self.subject, d.at(t_s) // 1000, self.seed)[
            :: TRIAL_HZ // ACCEL_HZ
        ]
        impact_s = float(np.argmax(np.linalg.norm(trial, axis=1))) / ACCEL_HZ
        lying = trial[-ACCEL_HZ // 2 :].mean(axis=0)
        still_n = round(FALL_STILL_S * ACCEL_HZ)
        noise = np.random.default_rng([self.seed, self.subject, d.at(t_s)]).normal(
            0, 0.01, (still_n, 3)
        )
        sent = self._windows(d, t_s - impact_s, np.vstack([trial, lying + noise]))
        inj = active(self.injections, "fall", d.at(t_s))
        if sent and inj is not None and "noflag" not in inj.options:
            d.add(t_s + 3, "wristband", "event", "fall")  # the band's own fall flag

    def _windows(self, d: _Day, t_s: float, acc: FloatArray) -> bool:
        if not d.claim(t_s, t_s + len(acc) / ACCEL_HZ):
            return False
        n = round(ACCEL_WINDOW_S * ACCEL_HZ)
        for k in range(0, len(acc) - n + 1, n):
            chunk = np.round(acc[k : k + n], 3)
            window = {"hz": ACCEL_HZ, "x": chunk[:, 0].tolist(), "y": chunk[:, 1].tolist(),
                      "z": chunk[:, 2].tolist()}  # fmt: skip
            d.add(t_s + k / ACCEL_HZ, "wristband", "telemetry", {"accel": window})
        return True

    # -- minute by minute ---------------------------------------------------------------

    def _minute(self, d: _Day, minute: int, wake_s: float, flowing: bool) -> bool:
        """Every device's reading of one minute; returns whether water is flowing."""
        t = minute * 60.0
        self._wristband(d, minute, activity_at(d.plan, t + self.phase_s["wristband"]))
        self._pir(d, minute, activity_at(d.plan, t + self.phase_s["pir"]))
        flowing = self._water(d, minute, activity_at(d.plan, t), wake_s, flowing)
        if minute % 5 == 0:
            self._radar(d, minute, activity_at(d.plan, t + self.phase_s["radar"]))
        if minute % 60 == 0:
            d.add(t + self.phase_s["door"], "door", "telemetry", self._heartbeat("door"))
        if minute % 15 == 0 and "power_meter" in self.elder.devices:
            cooking = activity_at(d.plan, t).kind == "meal"
            d.add(t + self.phase_s["power_meter"], "power_meter", "telemetry",
                  {"power_w": COOKING_W if cooking else BASE_W})  # fmt: skip
        return flowing

    def _charge(self, d: _Day) -> None:
        """The band's battery over the day, and when it is on the charger: below
        CHARGE_BELOW at bedtime it charges overnight, back on the wrist on getting up
        (or on wandering off: it is a watch too)."""
        band = self.band
        for minute in range(round(DAY_S / 60)):
            t = minute * 60 + self.phase_s["wristband"]
            kind = activity_at(d.plan, t).kind
            if kind == "sleep" and t >= DAY_S / 2 and band.battery < CHARGE_BELOW:
                band.charging = True
            elif band.charging and kind not in ("sleep", "toilet", "floor"):
                band.charging = False
            if band.charging or self._on_charger(d.at(t)):
                d.off_wrist.add(minute)
                band.battery = min(100.0, band.battery + CHARGE_PER_MIN)
            else:
                band.battery = max(0.0, band.battery - BATTERY_DRAIN_PER_MIN)
            d.battery.append(round(band.battery))

    def _heartbeat(self, kind: DeviceKindName) -> dict[str, object]:
        return {"battery": self.sensor_battery[kind]}

    def _wristband(self, d: _Day, minute: int, seg: Activity) -> None:
        t = minute * 60 + self.phase_s["wristband"]
        band, rng, traits = self.band, d.rng, self.traits
        home = self.elder.home
        if minute in d.off_wrist:
            fields: dict[str, object] = {"battery": d.battery[minute], "worn": False}
            fields["steps"] = band.steps
            if minute % 5 == 0:
                fields |= _fix(home, 0.0, 0.0, rng)
            d.add(t, "wristband", "telemetry", fields)
            return
        scale = d.scale if seg.kind in ("home", "out", "meal", "toilet") else 1.0
        walking = seg.kind == "out" and _out_distance(seg, t) not in (0.0, seg.distance_m)
        rate = WALKING_STEPS if walking else STEPS[seg.kind]
        band.steps += round(rate * scale * rng.uniform(0.6, 1.4))
        hr = traits.resting_hr + HR_DELTA[seg.kind] + rng.gauss(0, 2.5)
        spo2 = traits.spo2 - (0.8 if seg.kind in IN_BED else 0.0) + rng.gauss(0, 0.6)
        fields = {
            "hr": round(min(150.0, max(45.0, hr))),
            "spo2": round(min(99.0, max(92.0, spo2))),
            "steps": band.steps,
            "battery": d.battery[minute],
            "worn": True,
        }
        if minute % 5 == 0:
            fields["temp"] = round(traits.skin_temp + rng.gauss(0, 0.1), 1)
        if seg.kind in AWAY:
            north, east = self._away_offset(d, seg, t)
            fields |= _fix(home, north, east, rng)
        elif minute % 5 == 0:
            fields |= _fix(home, 0.0, 0.0, rng)
        d.add(t, "wristband", "telemetry", fields)

    def _away_offset(self, d: _Day, seg: Activity, t_s: float) -> tuple[float, float]:
        """Metres north and east of home while out or wandering."""
        if seg.kind == "wander":
            inj = active(self.injections, "wander", d.at(t_s))
            if inj is not None:
                return _wander_offset(inj, d.at(t_s), self.seed)
        dist = _out_distance(seg, t_s)
        rad = math.radians(seg.bearing_deg)
        return dist * math.cos(rad), dist * math.sin(rad)

    def _pir(self, d: _Day, minute: int, seg: Activity) -> None:
        t = minute * 60 + self.phase_s["pir"]
        p = PIR_P[seg.kind] * (d.scale if seg.kind in ("home", "meal", "tv") else 1.0)
        if d.rng.random() < p:
            d.add(t, "pir", "telemetry", {"motion": True} | self._heartbeat("pir"))
        elif minute % 15 == 0:
            d.add(t, "pir", "telemetry", {"motion": False} | self._heartbeat("pir"))

    def _water(self, d: _Day, minute: int, seg: Activity, wake_s: float, flowing: bool) -> bool:
        t, rng = minute * 60.0, d.rng
        flow = 0.0
        if seg.kind == "meal" and t < seg.start_s + 0.7 * seg.duration_s and rng.random() < 0.45:
            flow = rng.uniform(3, 8)  # rinsing, cooking, washing up
        elif seg.kind == "toilet" and t + 60 >= seg.end_s:
            flow = rng.uniform(6, 9)  # the flush refills the cistern
        elif wake_s <= t < wake_s + 240 and seg.kind not in IN_BED | AWAY:
            flow = rng.uniform(4, 7)  # morning wash
        if flow > 0 or flowing or minute % 30 == 0:
            d.add(t + self.phase_s["water_meter"], "water_meter", "telemetry",
                  {"water_flow": round(flow, 2)})  # fmt: skip
        return flow > 0

    def _radar(self, d: _Day, minute: int, seg: Activity) -> None:
        present = seg.kind not in AWAY
        moving = present and d.rng.random() < RADAR_MOTION_P[seg.kind]
        d.add(minute * 60 + self.phase_s["radar"], "radar", "telemetry",
              {"presence": present, "motion": moving})  # fmt: skip

    def _offline_statuses(self, d: _Day) -> None:
        """The broker's last will after the band falls silent; 'online' when it is back."""
        day_end = d.midnight_ms + round(DAY_S * 1000)
        for inj in self.injections:
            if inj.kind != "offline":
                continue
            if d.midnight_ms <= inj.at_ms < day_end:
                will_ms = inj.at_ms + round(LAST_WILL_AFTER_S * 1000)
                d.recs.append(_Rec(will_ms, "wristband", "status", "offline"))
            if d.midnight_ms <= inj.end_ms < day_end:
                d.recs.append(_Rec(inj.end_ms, "wristband", "status", "online"))


# ------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------


def _midnight_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tz).timestamp() * 1000)


def _out_distance(seg: Activity, t_s: float) -> float:
    """How far from home an outing has got: walking there at an elder's pace, staying
    (the market, the park, a neighbour), walking back."""
    walk_s = min(0.35 * seg.duration_s, seg.distance_m / WALK_SPEED)
    if walk_s <= 0:
        return 0.0
    gone_s, left_s = t_s - seg.start_s, seg.end_s - t_s
    return seg.distance_m * max(0.0, min(1.0, gone_s / walk_s, left_s / walk_s))


def _fix(
    home: tuple[float, float], north_m: float, east_m: float, rng: random.Random
) -> dict[str, object]:
    """A GPS/LBS fix with ~10 m of noise."""
    lat, lon = geo.offset(home[0], home[1], north_m + rng.gauss(0, 8), east_m + rng.gauss(0, 8))
    return {"lat": round(lat, 6), "lon": round(lon, 6)}


def _wander_offset(inj: Injection, t_ms: int, seed: int) -> tuple[float, float]:
    """Walking away for 70 % of the time along a slowly turning heading, then brought
    home for the rest: metres north and east of home."""
    rng = random.Random(f"wander:{seed}:{inj.at_ms}")
    heading, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.7, 1.0)  # m/s
    elapsed = (t_ms - inj.at_ms) / 1000
    away_s = 0.7 * inj.duration_s
    dist = speed * min(elapsed, away_s)
    if elapsed > away_s:
        dist *= max(0.0, 1 - (elapsed - away_s) / (inj.duration_s - away_s))
    bearing = heading + 0.4 * math.sin(elapsed / 600)
    return dist * math.cos(bearing), dist * math.sin(bearing)


def _stamp(device: SimDevice, clock: _StampClock, rec: _Rec) -> SimMessage:
    clock.now = rec.t_ms
    if rec.topic == "status":
        if rec.body == "offline":  # published by the broker: no seq, no ts
            will = device.last_will().payload
            assert isinstance(will, bytes)
            return SimMessage(device.device_id, "status", will, rec.t_ms)
        pub = device.status("online")
    elif rec.topic == "event":
        pub = device.event(rec.body)  # type: ignore[arg-type]
    else:
        pub = device.telemetry(rec.body)  # type: ignore[arg-type]
    return SimMessage(device.device_id, rec.topic, pub.payload, rec.t_ms)
