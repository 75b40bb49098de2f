"""Helpers for the simulated-day tests: elders with devices, and decoding their stream."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time

import msgspec

from carewatch.messages import DeviceEvent, Telemetry
from simulators.days import SITE_TZ, SimElder, SimMessage

HOME = (29.5564, 106.5685)
SUFFIX = {"wristband": "WB", "pir": "PIR", "door": "DOOR", "water_meter": "WM", "radar": "RAD"}
KIND_OF = {v: k for k, v in SUFFIX.items()}


def elder(tag: str, *, radar: bool = False, profile: str = "alone", alone: bool = True) -> SimElder:
    """An elder with a wristband and, living alone, the home sensors."""
    kinds = ["wristband"] + (["pir", "door", "water_meter"] if alone else [])
    kinds += ["radar"] if radar else []
    return SimElder(tag, HOME, {k: f"{tag}-{SUFFIX[k]}" for k in kinds}, profile)


def midnight_ms(day: date) -> int:
    return int(datetime.combine(day, time(0), SITE_TZ).timestamp() * 1000)


def local_h(ms: int) -> float:
    """Local hour of the day of a device time, as a float."""
    t = datetime.fromtimestamp(ms / 1000, SITE_TZ)
    return t.hour + t.minute / 60 + t.second / 3600 + t.microsecond / 3.6e9


@dataclass(frozen=True, slots=True)
class Decoded:
    device_id: str
    device_kind: str
    device_time_ms: int
    telemetry: Telemetry | None = None
    event: str | None = None

    @property
    def pir_motion(self) -> bool:
        return (
            self.device_kind == "pir" and self.telemetry is not None and bool(self.telemetry.motion)
        )

    @property
    def water_flow(self) -> float | None:
        return self.telemetry.water_flow if self.telemetry is not None else None

    @property
    def steps(self) -> int | None:
        return self.telemetry.steps if self.telemetry is not None else None

    @property
    def fix(self) -> tuple[float, float] | None:
        t = self.telemetry
        return (t.lat, t.lon) if t is not None and t.lat is not None and t.lon is not None else None


def decode_all(msgs: Iterable[SimMessage]) -> list[Decoded]:
    out = []
    for m in msgs:
        kind = KIND_OF[m.device_id.rsplit("-", 1)[1]]
        if m.kind == "telemetry":
            t = msgspec.json.decode(m.payload, type=Telemetry)
            out.append(Decoded(m.device_id, kind, m.device_time_ms, telemetry=t))
        elif m.kind == "event":
            e = msgspec.json.decode(m.payload, type=DeviceEvent)
            out.append(Decoded(m.device_id, kind, m.device_time_ms, event=e.type))
        else:
            out.append(Decoded(m.device_id, kind, m.device_time_ms))
    return out
