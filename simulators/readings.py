"""What each simulated device kind measures over a day: pure models, no I/O.

Each model keeps the state of one device (heart-rate drift, step counter, battery) and
returns, for a local time and the seconds since its previous reading, the telemetry
fields and device events to publish. The fleet turns them into MQTT messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from carewatch.messages import EventType

# Daily routine, in local hours.
WAKE_HOUR = 6.5
SLEEP_HOUR = 22.0
MEALS = ((7.0, 8.0), (11.5, 12.5), (17.5, 18.5))
BATTERY_DAYS = 5.0  # a wristband charge lasts about five days


@dataclass
class Reading:
    telemetry: dict[str, object] = field(default_factory=dict)
    events: list[EventType] = field(default_factory=list)


class DeviceModel(Protocol):
    def step(self, local: datetime, dt_s: float) -> Reading: ...


def _hour(local: datetime) -> float:
    return local.hour + local.minute / 60 + local.second / 3600


def awake(local: datetime) -> bool:
    return WAKE_HOUR <= _hour(local) < SLEEP_HOUR


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


class _Battery:
    """Drains over BATTERY_DAYS; below 10 % the elder charges it (the device is off
    the wrist meanwhile), at 1 % a minute."""

    def __init__(self, rng: random.Random, days: float = BATTERY_DAYS) -> None:
        self.level = rng.uniform(40, 100)
        self.days = days
        self.charging = False

    def step(self, dt_s: float) -> int:
        if self.charging:
            self.level = min(100.0, self.level + dt_s / 60)
            self.charging = self.level < 100
        else:
            self.level = max(0.0, self.level - 100 * dt_s / (self.days * 86400))
            self.charging = self.level < 10
        return round(self.level)


class WristbandModel:
    def __init__(self, rng: random.Random, home_lat: float, home_lon: float) -> None:
        self.rng = rng
        self.home = (home_lat, home_lon)
        self.resting_hr = rng.uniform(62, 80)
        self.hr = self.resting_hr
        self.spo2_base = rng.uniform(95.5, 98.0)
        self.steps = 0
        self.day = -1
        self.battery = _Battery(rng)

    def step(self, local: datetime, dt_s: float) -> Reading:
        r = self.rng
        if local.toordinal() != self.day:  # the step counter restarts at midnight
            self.day, self.steps = local.toordinal(), 0
        day = awake(local)
        # mean-reverting random walk: drifts, but stays around the resting rate
        target = self.resting_hr + (8 if day else -6)
        self.hr = _clamp(self.hr + 0.2 * (target - self.hr) + r.gauss(0, 2.5), 55, 100)
        if day:
            self.steps += int(r.uniform(0, 40) * dt_s / 60)
        battery = self.battery.step(dt_s)
        lat, lon = self.home
        if day and r.random() < 0.2:  # out for a walk or shopping, a few hundred metres
            lat, lon = lat + r.uniform(-0.003, 0.003), lon + r.uniform(-0.003, 0.003)
        else:  # GPS/LBS jitter at home
            lat, lon = lat + r.uniform(-0.0002, 0.0002), lon + r.uniform(-0.0002, 0.0002)
        return Reading(
            {
                "hr": round(self.hr),
                "spo2": round(_clamp(self.spo2_base + r.gauss(0, 0.8), 94, 99)),
                "steps": self.steps,
                "battery": battery,
                "worn": not self.battery.charging,
                "lat": round(lat, 6),
                "lon": round(lon, 6),
            }
        )


class PirModel:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.battery = _Battery(rng, days=365)

    def step(self, local: datetime, dt_s: float) -> Reading:
        p_motion = 0.6 if awake(local) else 0.05  # a night-time trip to the toilet
        return Reading({"motion": self.rng.random() < p_motion, "battery": self.battery.step(dt_s)})


class RadarModel:
    """Bed/presence mmWave radar: someone is home most of the time, moving by day."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def step(self, local: datetime, dt_s: float) -> Reading:
        day = awake(local)
        present = self.rng.random() < (0.85 if day else 0.98)
        return Reading(
            {"presence": present, "motion": present and self.rng.random() < (0.7 if day else 0.1)}
        )


class DoorModel:
    """A door contact: a heartbeat with the battery level, and now and then (mostly by
    day) the door opens and closes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.battery = _Battery(rng, days=365)

    def step(self, local: datetime, dt_s: float) -> Reading:
        per_hour = 0.8 if awake(local) else 0.02
        events: list[EventType] = []
        if self.rng.random() < per_hour * dt_s / 3600:
            events = ["door_open", "door_close"]
        return Reading({"battery": self.battery.step(dt_s)}, events)


class WaterMeterModel:
    """Flow at meal times and the odd toilet flush or hand wash while awake."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def step(self, local: datetime, dt_s: float) -> Reading:
        hour, r = _hour(local), self.rng
        if any(start <= hour < end for start, end in MEALS) and r.random() < 0.5:
            flow = r.uniform(3, 8)
        elif awake(local) and r.random() < 0.08:
            flow = r.uniform(4, 9)
        else:
            flow = 0.0
        return Reading({"water_flow": round(flow, 2)})


class HeartbeatModel:
    """Smoke, gas and leak detectors: quiet, a battery heartbeat only."""

    def __init__(self, rng: random.Random) -> None:
        self.battery = _Battery(rng, days=3 * 365)

    def step(self, local: datetime, dt_s: float) -> Reading:
        return Reading({"battery": self.battery.step(dt_s)})


def model_for(kind: str, rng: random.Random, home: tuple[float, float]) -> DeviceModel:
    if kind == "wristband":
        return WristbandModel(rng, *home)
    if kind == "pir":
        return PirModel(rng)
    if kind == "radar":
        return RadarModel(rng)
    if kind == "door":
        return DoorModel(rng)
    if kind == "water_meter":
        return WaterMeterModel(rng)
    return HeartbeatModel(rng)
