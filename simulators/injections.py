"""Events injected into simulated days: what the detectors exist to catch.

- fall: a fall on the wrist accelerometer (impact, turn, stillness), the band's own fall
  flag unless the option `noflag` is given, then the elder lies still on the floor for
  the duration (no PIR motion, no steps, radar presence without motion).
- wander: the elder leaves (door), at night typically, and walks away from home, far
  beyond the geofence, and is brought back at the end.
- decline: activity (steps, outings, motion at home) falls day over day over the
  duration, to DECLINE_DEPTH below the usual by its end, and stays there.
- charger: the band lies on the charger at home: worn=false, battery rising, no steps,
  no vital signs, no accelerometer, while the home sensors see the elder as usual.
- offline: the band stops publishing; the broker publishes its last will shortly after;
  it comes back online at the end.

Written on the command line as `KIND[:OPTION,...]@[dN/]HH:MM[+DURATION]`, e.g.
`fall@14:05`, `fall:noflag@14:05+2h`, `wander@d1/02:30+90m`, `decline@00:00+14d`.
The time is local; without `dN/` it is the first such time at or after the start of the
simulation, with it the time on day N (day 0 is the start's date).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

InjectionKind = Literal["fall", "wander", "decline", "charger", "offline"]
KINDS: tuple[InjectionKind, ...] = ("fall", "wander", "decline", "charger", "offline")
OPTIONS: dict[InjectionKind, frozenset[str]] = {
    "fall": frozenset({"noflag"}),
    "wander": frozenset(),
    "decline": frozenset(),
    "charger": frozenset(),
    "offline": frozenset(),
}
DEFAULT_DURATION_S: dict[InjectionKind, float] = {
    "fall": 3600.0,  # lying on the floor until somebody comes
    "wander": 2 * 3600.0,
    "decline": 14 * 86_400.0,
    "charger": 2 * 3600.0,
    "offline": 3600.0,
}
DECLINE_DEPTH = 0.6  # activity at the end of a decline: 40 % of the usual
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_SPEC_RE = re.compile(
    r"^(?P<kind>[a-z]+)(?::(?P<opts>[a-z,]+))?@(?:d(?P<day>\d+)/)?(?P<hh>\d{1,2}):(?P<mm>\d{2})"
    r"(?:\+(?P<dur>\d+(?:\.\d+)?)(?P<unit>[smhd]))?$"
)


class InjectionError(ValueError):
    """A spec that cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class Injection:
    kind: InjectionKind
    at_ms: int  # device time it starts
    duration_s: float
    options: frozenset[str] = frozenset()

    @property
    def end_ms(self) -> int:
        return self.at_ms + round(self.duration_s * 1000)

    def covers(self, t_ms: float) -> bool:
        return self.at_ms <= t_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class InjectionSpec:
    """A parsed spec, not yet placed in time."""

    kind: InjectionKind
    hour: int
    minute: int
    day: int | None
    duration_s: float
    options: frozenset[str]

    def at(self, start_ms: int, tz: ZoneInfo) -> Injection:
        start = datetime.fromtimestamp(start_ms / 1000, tz)
        if self.day is not None:
            local = (start + timedelta(days=self.day)).replace(
                hour=self.hour, minute=self.minute, second=0, microsecond=0
            )
        else:
            local = start.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
            if local < start:
                local += timedelta(days=1)
        return Injection(self.kind, int(local.timestamp() * 1000), self.duration_s, self.options)


def parse(spec: str) -> InjectionSpec:
    match = _SPEC_RE.match(spec.strip())
    if match is None:
        raise InjectionError(f"{spec!r}: expected KIND[:OPTION,...]@[dN/]HH:MM[+DURATION]")
    kind = match["kind"]
    if kind not in KINDS:
        raise InjectionError(f"{spec!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    known: InjectionKind = kind
    options = frozenset(o for o in (match["opts"] or "").split(",") if o)
    unknown = options - OPTIONS[known]
    if unknown:
        raise InjectionError(f"{spec!r}: unknown option(s) {', '.join(sorted(unknown))}")
    hour, minute = int(match["hh"]), int(match["mm"])
    if hour > 23 or minute > 59:
        raise InjectionError(f"{spec!r}: no such time of day")
    duration = DEFAULT_DURATION_S[known]
    if match["dur"] is not None:
        duration = float(match["dur"]) * _UNITS[match["unit"]]
        if duration <= 0:
            raise InjectionError(f"{spec!r}: the duration must be positive")
    day = int(match["day"]) if match["day"] is not None else None
    return InjectionSpec(known, hour, minute, day, duration, options)


def activity_scale(injections: list[Injection], t_ms: int) -> float:
    """How active the elder is at t (1 = usual) after any decline that has begun."""
    scale = 1.0
    for inj in injections:
        if inj.kind == "decline" and t_ms >= inj.at_ms:
            progress = min(1.0, (t_ms - inj.at_ms) / (inj.duration_s * 1000))
            scale = min(scale, 1.0 - DECLINE_DEPTH * progress)
    return scale


def active(injections: list[Injection], kind: InjectionKind, t_ms: float) -> Injection | None:
    """The injection of that kind under way at t, if any."""
    return next((i for i in injections if i.kind == kind and i.covers(t_ms)), None)
