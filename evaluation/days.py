"""`carewatch eval days`: does the rules engine stay quiet on normal days, and does it
catch what is injected?

N simulated elders (mixed care profiles: some living alone with home sensors, some
cognitive, some with only a wristband) live D days (simulators.days), with injected
events (given, or a default set spread over the elders). Every message goes through
the worker's detectors in memory (`evaluation.sim_engine`). Figures:

- per alert kind, new alerts per elder-day on normal elder-days (no injection that day
  or in the 12 h before it, no decline under way): nothing happened, so each is a
  false alarm; and how many of them were critical (or escalated to critical);
- per injection, whether the expected alert kind opened (or went pending) between the
  injection's start and a grace period after its end, the delay from the injection to
  it, its severity, and for falls the delay to the confirmation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from carewatch.messages import AlertKind
from carewatch.settings import Settings, get_settings
from evaluation.sim_engine import AlertRecord, Counters, SimRulesEngine
from rules_engine.engine import default_engine
from simulators import geo
from simulators.days import SimElder, simulate
from simulators.injections import Injection, InjectionError, InjectionKind, parse

# Profiles in turn; the ones living alone (or at risk) have home sensors.
PROFILES = ("alone", "cognitive", "standard", "elderly_80plus", "disabled")
HOME_SENSORS = frozenset({"alone", "cognitive", "elderly_80plus", "disabled"})
RADAR_EVERY = 3  # every third elder with home sensors also has a radar
EXPECTED: dict[InjectionKind, tuple[AlertKind, ...]] = {
    "fall": ("fall",),
    "wander": ("geofence",),
    "charger": ("off_wrist",),
    "offline": ("device_offline",),
    "decline": ("inactivity", "water_none"),
}
MATCH_GRACE_MS = 10 * 60_000  # an alert this long after the injection ended still counts
SPILL_MS = 12 * 3600_000  # a day starting this soon after an injection is not normal
NEW_ALERT = frozenset({"opened", "pending"})
DEFAULT_RESPOND_AFTER_S = 1800.0  # also the default of --respond-after


@dataclass(frozen=True, slots=True)
class Caught:
    """One injection and what the engine made of it."""

    elder_id: str
    profile: str
    kind: InjectionKind
    options: tuple[str, ...]
    at: str  # local ISO time
    expected: tuple[AlertKind, ...]
    detected: bool
    alert_kind: str | None = None
    rule: str | None = None
    severity: str | None = None
    delay_s: float | None = None
    confirmed_delay_s: float | None = None  # pending alerts (falls): to 'open'


@dataclass(frozen=True, slots=True)
class KindFigures:
    kind: str
    normal_alerts: int
    per_elder_day: float
    critical: int
    injected_day_alerts: int
    notified: int = 0  # of the false alarms, those that reached 'open' (a carer is paged)


@dataclass
class DaysEvaluation:
    elders: int
    days: float
    seed: int
    normal_elder_days: int
    injected_elder_days: int
    kinds: list[KindFigures]
    injections: list[Caught]
    counters: Counters
    elapsed_s: float
    false_alarms: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "elders": self.elders,
            "days": self.days,
            "seed": self.seed,
            "normal_elder_days": self.normal_elder_days,
            "injected_elder_days": self.injected_elder_days,
            "kinds": [asdict(k) for k in self.kinds],
            "injections": [asdict(c) for c in self.injections],
            "false_alarms": self.false_alarms,
            "messages": self.counters.messages,
            "rejected": self.counters.rejected,
            "timers_fired": self.counters.timers_fired,
            "failed": self.counters.failed,
            "failures": self.counters.failures[:20],
            "elapsed_s": round(self.elapsed_s, 2),
        }


# --- the simulated fleet and its scenarios ----------------------------------------------


def make_elders(n: int) -> list[SimElder]:
    """n elders on a 300 m grid around the default centre, profiles in turn."""
    elders: list[SimElder] = []
    with_sensors = 0
    for i in range(n):
        profile = PROFILES[i % len(PROFILES)]
        elder_id = f"SIM-E{i:03d}"
        devices = {"wristband": f"{elder_id}-WB"}
        if profile in HOME_SENSORS:
            devices |= {"pir": f"{elder_id}-PIR", "door": f"{elder_id}-DOOR"}
            devices["water_meter"] = f"{elder_id}-WM"
            if with_sensors % RADAR_EVERY == 0:
                devices["radar"] = f"{elder_id}-RADAR"
            with_sensors += 1
        home = geo.offset(*geo.DEFAULT_CENTRE, north_m=300.0 * (i // 5), east_m=300.0 * (i % 5))
        elders.append(SimElder(elder_id, home, devices, profile))
    return elders


def default_scenarios(elders: Sequence[SimElder], days: int) -> dict[str, list[str]]:
    """Every other elder gets one injection (cognitive elders wander at night; the others
    fall, leave the band on the charger, lose it, or fall without the band's flag), on a
    day that moves along the run; with ten elders or more the last one declines."""
    later = max(days - 1, 1)
    others = (
        "fall@d{d}/14:05",
        "charger@d{d}/10:00+2h",
        "offline@d{d}/15:00+1h",
        "fall:noflag@d{d}/09:30",
    )
    specs: dict[str, list[str]] = {}
    injected = 0
    for i, elder in enumerate(elders):
        if len(elders) >= 10 and i == len(elders) - 1:
            specs[elder.elder_id] = [f"decline@d0/00:00+{days}d"]
            continue
        if i % 2 == 1 and elder.profile != "cognitive":
            continue
        day = (1 + injected % later) if days > 1 else 0
        if elder.profile == "cognitive":
            template = "wander@d{d}/02:30+90m"
        else:
            template = others[injected % len(others)]
        injected += 1
        specs[elder.elder_id] = [template.format(d=day)]
    return specs


# --- evaluation ------------------------------------------------------------------------


def evaluate(
    elders: Sequence[SimElder],
    start_ms: int,
    days: float,
    *,
    seed: int,
    injections: Mapping[str, Sequence[Injection]],
    settings: Settings,
    tz: ZoneInfo,
    respond_after_s: float | None = DEFAULT_RESPOND_AFTER_S,
) -> DaysEvaluation:
    started = time.perf_counter()
    end_ms = start_ms + round(days * 86_400_000)
    engine = SimRulesEngine(
        elders,
        settings,
        default_engine(settings),
        respond_after_s=respond_after_s,
        start_ms=start_ms,
    )
    stream = simulate(elders, start_ms, days * 86_400, seed=seed, injections=injections, tz=tz)
    engine.run(stream, end_ms)
    elapsed = time.perf_counter() - started

    normal_days = _normal_days(elders, start_ms, end_ms, injections, tz)
    n_normal = sum(len(d) for d in normal_days.values())
    n_all = sum(len(_local_days(start_ms, end_ms, tz)) for _ in elders)
    new = [r for r in engine.records if r.action in NEW_ALERT]
    criticals = _critical_alert_ids(engine.records)
    # a pending fall cancelled inside its window never reaches the notifier
    reached_open = {r.alert_id for r in engine.records if r.action in ("opened", "confirmed")}
    normal, injected_day = Counter[str](), Counter[str]()
    normal_critical, normal_notified = Counter[str](), Counter[str]()
    false_alarms: list[dict[str, object]] = []
    for r in new:
        if _local_date(r.at_ms, tz) in normal_days[r.elder_id]:
            normal[r.kind] += 1
            normal_critical[r.kind] += r.alert_id in criticals
            normal_notified[r.kind] += r.alert_id in reached_open
            false_alarms.append(_describe(r, tz, r.alert_id in criticals))
        else:
            injected_day[r.kind] += 1
    kinds = [
        KindFigures(
            kind,
            normal[kind],
            round(normal[kind] / n_normal, 4) if n_normal else 0.0,
            normal_critical[kind],
            injected_day[kind],
            normal_notified[kind],
        )
        for kind in sorted(set(normal) | set(injected_day))
    ]
    profiles = {e.elder_id: e.profile for e in elders}
    caught = [
        _caught(elder_id, profiles[elder_id], inj, engine.records, end_ms, tz)
        for elder_id, injs in sorted(injections.items())
        for inj in injs
    ]
    return DaysEvaluation(
        len(elders),
        days,
        seed,
        n_normal,
        n_all - n_normal,
        kinds,
        caught,
        engine.counters,
        elapsed,
        false_alarms,
    )


def _critical_alert_ids(records: Sequence[AlertRecord]) -> set[str]:
    return {r.alert_id for r in records if r.severity == "critical"}


def _describe(r: AlertRecord, tz: ZoneInfo, critical: bool) -> dict[str, object]:
    at = datetime.fromtimestamp(r.at_ms / 1000, tz).isoformat(timespec="seconds")
    return {"elder_id": r.elder_id, "kind": r.kind, "rule": r.rule, "at": at, "critical": critical}


def _caught(
    elder_id: str,
    profile: str,
    inj: Injection,
    records: Sequence[AlertRecord],
    end_ms: int,
    tz: ZoneInfo,
) -> Caught:
    expected = EXPECTED[inj.kind]
    until = end_ms if inj.kind == "decline" else inj.end_ms + MATCH_GRACE_MS
    at = datetime.fromtimestamp(inj.at_ms / 1000, tz).isoformat(timespec="minutes")
    base = Caught(elder_id, profile, inj.kind, tuple(sorted(inj.options)), at, expected, False)
    first = next(
        (
            r
            for r in records
            if r.elder_id == elder_id
            and r.kind in expected
            and r.action in NEW_ALERT
            and inj.at_ms <= r.at_ms <= until
        ),
        None,
    )
    if first is None:
        return base
    confirmed = next(
        (r for r in records if r.alert_id == first.alert_id and r.action == "confirmed"), None
    )
    escalated = any(r.alert_id == first.alert_id and r.severity == "critical" for r in records)
    return Caught(
        **{
            **asdict(base),
            "detected": True,
            "alert_kind": first.kind,
            "rule": first.rule,
            "severity": "critical" if escalated else first.severity,
            "delay_s": (first.at_ms - inj.at_ms) / 1000,
            "confirmed_delay_s": None
            if confirmed is None
            else (confirmed.at_ms - inj.at_ms) / 1000,
        }
    )


def _local_date(ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms / 1000, tz).date()


def _local_days(start_ms: int, end_ms: int, tz: ZoneInfo) -> list[tuple[date, int, int]]:
    """(date, start ms, end ms) of each local day the run covers in full."""
    out: list[tuple[date, int, int]] = []
    day = _local_date(start_ms, tz)
    while True:
        begin = datetime.combine(day, datetime.min.time(), tz)
        lo, hi = int(begin.timestamp() * 1000), int((begin + timedelta(days=1)).timestamp() * 1000)
        if lo >= end_ms:
            return out
        if lo >= start_ms and hi <= end_ms:
            out.append((day, lo, hi))
        day += timedelta(days=1)


def _normal_days(
    elders: Sequence[SimElder],
    start_ms: int,
    end_ms: int,
    injections: Mapping[str, Sequence[Injection]],
    tz: ZoneInfo,
) -> dict[str, set[date]]:
    """Each elder's local days with nothing injected in them or in the SPILL_MS before."""
    days = _local_days(start_ms, end_ms, tz)
    out: dict[str, set[date]] = {}
    for e in elders:
        injs = injections.get(e.elder_id, ())
        out[e.elder_id] = {
            day for day, lo, hi in days if not any(_touches(i, lo - SPILL_MS, hi) for i in injs)
        }
    return out


def _touches(inj: Injection, lo: int, hi: int) -> bool:
    end = 2**62 if inj.kind == "decline" else inj.end_ms  # a decline stays low afterwards
    return inj.at_ms < hi and end > lo


# --- output ----------------------------------------------------------------------------


def format_table(ev: DaysEvaluation) -> str:
    lines = [
        f"{ev.elders} elders x {ev.days:g} days (seed {ev.seed}): {ev.counters.messages} messages,"
        f" {ev.counters.timers_fired} timers fired, {ev.counters.rejected} rejected,"
        f" {ev.counters.failed} failed decisions, {ev.elapsed_s:.1f} s",
        "",
        f"Normal elder-days: {ev.normal_elder_days} (injected: {ev.injected_elder_days})",
        f"{'alert kind':<16}{'false alarms':>13}{'per elder-day':>15}{'critical':>10}"
        f"{'paged':>8}{'on injected days':>18}",
    ]
    for k in ev.kinds:
        lines.append(
            f"{k.kind:<16}{k.normal_alerts:>13}{k.per_elder_day:>15.3f}{k.critical:>10}"
            f"{k.notified:>8}{k.injected_day_alerts:>18}"
        )
    if not ev.kinds:
        lines.append("(no alert at all)")
    lines += ["", f"{'injection':<25}{'elder':<11}{'profile':<15}{'expected':<24}{'result'}"]
    for c in ev.injections:
        name = c.kind + (":" + ",".join(c.options) if c.options else "")
        what = f"{name}@{c.at[5:16].replace('T', ' ')}"
        if c.detected:
            result = f"{c.alert_kind} ({c.rule}, {c.severity}) after {_duration(c.delay_s)}"
            if c.confirmed_delay_s is not None:
                result += f", confirmed after {_duration(c.confirmed_delay_s)}"
        else:
            result = "MISSED"
        expected = "/".join(c.expected)
        lines.append(f"{what:<25}{c.elder_id:<11}{c.profile:<15}{expected:<24}{result}")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- command line ----------------------------------------------------------------------


def parse_injections(
    specs: Sequence[str], elders: Sequence[SimElder], start_ms: int, tz: ZoneInfo
) -> dict[str, list[Injection]]:
    """`ELDER=SPEC` (ELDER: an id, or its index in the fleet) into placed injections."""
    ids = [e.elder_id for e in elders]
    out: dict[str, list[Injection]] = {}
    for spec in specs:
        target, sep, text = spec.partition("=")
        if not sep:
            raise InjectionError(f"{spec!r}: expected ELDER=KIND@[dN/]HH:MM[+DURATION]")
        elder_id = ids[int(target)] if target.isdigit() and int(target) < len(ids) else target
        if elder_id not in ids:
            raise InjectionError(f"{spec!r}: no elder {target!r} (ids {ids[0]}..{ids[-1]})")
        out.setdefault(elder_id, []).append(parse(text).at(start_ms, tz))
    return out


def default_start_ms(tz: ZoneInfo) -> int:
    """A fixed local midnight, so that the same arguments give the same figures."""
    return int(datetime(2026, 11, 2, tzinfo=tz).timestamp() * 1000)


def cli_main(args: argparse.Namespace) -> int:
    settings = get_settings()
    tz = ZoneInfo(settings.timezone)
    if args.elders < 1 or args.days <= 0:
        print("carewatch eval days: --elders and --days must be positive", file=sys.stderr)
        return 2
    elders = make_elders(args.elders)
    start = default_start_ms(tz)
    try:
        if args.inject:
            injections = parse_injections(args.inject, elders, start, tz)
        else:
            specs = default_scenarios(elders, int(args.days))
            injections = {
                elder_id: [parse(s).at(start, tz) for s in texts]
                for elder_id, texts in specs.items()
            }
    except (InjectionError, ValueError) as exc:
        print(f"carewatch eval days: bad --inject: {exc}", file=sys.stderr)
        return 2
    respond = args.respond_after if args.respond_after > 0 else None
    evaluation = evaluate(
        elders,
        start,
        args.days,
        seed=args.seed,
        injections=injections,
        settings=settings,
        tz=tz,
        respond_after_s=respond,
    )
    print(format_table(evaluation))
    json_path: Path | None = getattr(args, "json", None)
    if json_path is not None:
        json_path.write_text(json.dumps(evaluation.as_dict(), indent=2), encoding="utf-8")
    return 0
