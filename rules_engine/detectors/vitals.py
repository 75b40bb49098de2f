"""Vital signs out of range for a sustained period: heart rate, SpO2, body temperature.

One sample out of range is usually the sensor (a loose band, a cold finger), so a sign
fires only when every sample of a run is out of range for the sign's sustain time (run
length in device time, first to last sample, inclusive: exactly the sustain time fires).
A normal sample ends the run; so does a hole in the data longer than vitals_max_gap_s,
because nobody knows what the sign did meanwhile. One alert kind "vitals": warning,
critical when a sample of the run is beyond the sign's critical limit (a warning
already open is escalated to critical then); the details say which sign, the rule is
"vitals.{sign}" and the threshold records the limits used.

Cheap path: most samples are normal. A sample inside the screening band (normal under
any care profile) ends its run in `observe()` without needing the profile; a sample
outside it is judged against the elder's profile limits (the engine's known profile,
at most 10 min old) and extends its run there; only a run that reached its sustain time
reaches the database. So a profile may widen the limits freely but not narrow them
inside the screening band (the effective limit is clamped to it). Samples from a wristband that says it is not
worn are ignored.

Runs live in this worker's memory (one owner per events shard): a restart starts every
run again, which delays an alert by at most one sustain time; the alternative, a
database round trip per sample, is what the screening band is there to avoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from carewatch.messages import Event, Severity
from rules_engine.decisions import Decision, OpenAlert
from rules_engine.detectors.base import Detector, ElderView, open_or_repeat
from rules_engine.detectors.escalation import escalation
from rules_engine.fields import is_number
from rules_engine.thresholds import Thresholds


@dataclass(frozen=True, slots=True)
class Sign:
    name: str  # telemetry field
    low: str | None  # Thresholds field names of the limits, None: no such limit
    high: str | None
    sustain: str
    critical_low: str | None
    critical_high: str | None
    screen_low: float | None  # a value in [screen_low, screen_high] is normal for anyone
    screen_high: float | None

    def limits(self, th: Thresholds) -> tuple[float | None, float | None]:
        low = _get(th, self.low)
        high = _get(th, self.high)
        if low is not None and self.screen_low is not None:
            low = min(low, self.screen_low)
        if high is not None and self.screen_high is not None:
            high = max(high, self.screen_high)
        return low, high

    def screened_normal(self, value: float) -> bool:
        return (self.screen_low is None or value >= self.screen_low) and (
            self.screen_high is None or value <= self.screen_high
        )

    def extreme(self, value: float, th: Thresholds) -> bool:
        low, high = _get(th, self.critical_low), _get(th, self.critical_high)
        return (low is not None and value < low) or (high is not None and value > high)


def _get(th: Thresholds, name: str | None) -> float | None:
    return None if name is None else float(getattr(th, name))


# Screening bands: resting heart rate of an elder is 60-100 (50 for those on beta
# blockers); SpO2 below 94 and a temperature over 37.5 are already worth a look.
SIGNS: tuple[Sign, ...] = (
    Sign(
        "hr",
        "vitals_hr_low",
        "vitals_hr_high",
        "vitals_hr_sustain_s",
        "vitals_hr_critical_low",
        "vitals_hr_critical_high",
        50.0,
        110.0,
    ),
    Sign(
        "spo2",
        "vitals_spo2_low",
        None,
        "vitals_spo2_sustain_s",
        "vitals_spo2_critical_low",
        None,
        94.0,
        None,
    ),
    Sign(
        "temp",
        None,
        "vitals_temp_high",
        "vitals_temp_sustain_s",
        None,
        "vitals_temp_critical_high",
        None,
        37.5,
    ),
)


@dataclass(frozen=True, slots=True)
class VitalsSeen:
    """The signs whose run reached its sustain time with this sample."""

    event: Event
    sustained: tuple[Sustained, ...]


@dataclass(slots=True)
class Run:
    """Consecutive out-of-range samples of one sign from one device (device time)."""

    start_ms: int
    last_ms: int
    extreme: bool


@dataclass(frozen=True, slots=True)
class Sustained:
    sign: Sign
    value: float
    run: Run  # a copy: the detector's run goes on changing


_SIGN_NAMES = tuple(sign.name for sign in SIGNS)


def readings(event: Event) -> dict[str, float]:
    """The vital signs a sample carries (0 is 'no reading' on these sensors)."""
    if event.type != "telemetry" or event.data.get("worn") is False:
        return {}
    found: dict[str, float] = {}
    for sign in SIGNS:
        value = event.data.get(sign.name)
        if is_number(value) and value > 0:
            found[sign.name] = float(value)
    return found


class VitalsDetector(Detector[VitalsSeen]):
    telemetry_fields = frozenset(_SIGN_NAMES)

    def __init__(self) -> None:
        # device -> sign -> run: a device without a run (nearly all) costs one lookup
        self._runs: dict[str, dict[str, Run]] = {}

    def wants(self, event: Event) -> bool:
        """Cheap: a sample naming a vital sign (observe() reads the values)."""
        if event.type != "telemetry":
            return False
        data = event.data
        return "hr" in data or "spo2" in data or "temp" in data  # _SIGN_NAMES

    def uses_profile(self, event: Event) -> bool:
        values = readings(event)
        return any(
            not sign.screened_normal(values[sign.name]) for sign in SIGNS if sign.name in values
        )

    def observe(self, event: Event, known: ElderView | None) -> VitalsSeen | None:
        data = event.data
        if event.type != "telemetry" or data.get("worn") is False:
            return None  # no readings()
        runs = self._runs.get(event.device_id)
        sustained: list[Sustained] = []
        for sign in SIGNS:
            raw = data.get(sign.name)
            if not (is_number(raw) and raw > 0):
                continue  # not one of readings()
            value = float(raw)
            if sign.screened_normal(value):
                if runs is not None:
                    self._end_run(event, sign)
                continue
            if known is None:
                raise ValueError("vitals: a sample outside the screening band needs the profile")
            th = known.thresholds
            low, high = sign.limits(th)
            if not ((low is not None and value < low) or (high is not None and value > high)):
                self._end_run(event, sign)
                continue
            run = self._extend_run(event, sign, sign.extreme(value, th), th)
            if run is not None and run.last_ms - run.start_ms >= _ms(th, sign.sustain):
                copy = Run(run.start_ms, run.last_ms, run.extreme)
                sustained.append(Sustained(sign, value, copy))
        return VitalsSeen(event, tuple(sustained)) if sustained else None

    def decide(self, seen: VitalsSeen, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        event, sustained = seen.event, list(seen.sustained)
        th = elder.thresholds
        # one alert kind: the most serious sign names it, the details list them all
        worst = max(sustained, key=lambda s: (s.run.extreme, s.run.last_ms - s.run.start_ms))
        severity: Severity = "critical" if any(s.run.extreme for s in sustained) else "warning"
        decision = open_or_repeat(
            event,
            elder,
            kind="vitals",
            severity=severity,
            status="open",
            rule=decision_rule(worst),
            threshold=_threshold(worst.sign, th),
        )
        details = _details(worst, sustained)
        if isinstance(decision, OpenAlert):
            return [replace(decision, details=details)]
        raised = escalation(
            elder, "vitals", severity, rule=decision_rule(worst), cause=event.id, details=details
        )
        return [decision, *raised]

    def _end_run(self, event: Event, sign: Sign) -> None:
        runs = self._runs.get(event.device_id)
        run = runs.get(sign.name) if runs is not None else None
        if runs is not None and run is not None and event.device_time_ms > run.last_ms:
            del runs[sign.name]
            if not runs:
                del self._runs[event.device_id]

    def _extend_run(self, event: Event, sign: Sign, extreme: bool, th: Thresholds) -> Run | None:
        """The run this sample belongs to (None for a sample older than its run)."""
        t = event.device_time_ms
        runs = self._runs.get(event.device_id)
        run = runs.get(sign.name) if runs is not None else None
        if run is not None and run.start_ms <= t <= run.last_ms:
            return run  # late inside the run
        if run is not None and t < run.start_ms:
            return None
        if run is None or t - run.last_ms > _ms(th, "vitals_max_gap_s"):
            run = self._runs.setdefault(event.device_id, {})[sign.name] = Run(t, t, extreme)
            return run
        run.last_ms, run.extreme = t, run.extreme or extreme
        return run


def decision_rule(worst: Sustained) -> str:
    return f"vitals.{worst.sign.name}"


def _ms(th: Thresholds, name: str) -> int:
    return round(float(getattr(th, name)) * 1000)


def _threshold(sign: Sign, th: Thresholds) -> dict[str, float]:
    low, high = sign.limits(th)
    out = {sign.sustain: float(getattr(th, sign.sustain)), "vitals_max_gap_s": th.vitals_max_gap_s}
    if low is not None and sign.low is not None:
        out[sign.low] = low
    if high is not None and sign.high is not None:
        out[sign.high] = high
    for name in (sign.critical_low, sign.critical_high):
        if name is not None:
            out[name] = float(getattr(th, name))
    return out


def _details(worst: Sustained, sustained: list[Sustained]) -> dict[str, object]:
    return {
        "sign": worst.sign.name,
        "value": worst.value,
        "since_ms": worst.run.start_ms,
        "duration_s": (worst.run.last_ms - worst.run.start_ms) / 1000,
        "extreme": worst.run.extreme,
        "signs": {s.sign.name: s.value for s in sustained},
    }
