"""`carewatch eval homes LOG`: the inactivity rules on a real home's sensor log.

The log (layout of `../shared/data/homes/`, see simulators/home_log.py) is replayed as the
device messages its sensors would have published, through the worker's detectors in
memory (`SimRulesEngine`: ingest validation, `default_engine(settings)`, the store's semantics),
with the sensors registered in their rooms. The elder's home routine is learned the way
the worker learns it (`rules_engine.home_routine.learn`, from the signs of life of the
days before, relearned at every local midnight of the replay).

Figures:
- false alerts: every inactivity alert of the untouched log is one (the log is normal
  life), per resident-month (30 days), by rule, by time of day (day 07-17, evening
  17-22, night 22-07) and by the room of the last sign before it;
- incidents: a moment of normal activity is picked (seeded) and every event of the next
  `--window` hours is removed (the resident stopped moving: fell, fainted). Categories:
  `day` (09-17) and `evening` (17-22): a motion sign in a room; `bathroom`: a sign in the
  bathroom (07-22); `night`: asleep, the last sign in the bedroom (23-04); `night_exit`:
  a night bed exit (the first sign outside the bedroom after 30 min of bedroom only,
  23-05, with a bedroom sign within `WALK_MS` before it: seen getting up and going) after
  which the resident does not come back. Each incident is its own replay
  of the log up to the end of its window; caught = an inactivity alert opened within the
  window; the delay counts from the last sign (the chosen moment).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from carewatch.db.registry import DeviceInfo
from carewatch.settings import Settings, get_settings
from evaluation.sim_engine import AlertRecord, SimRulesEngine
from rules_engine.engine import Engine, default_engine
from rules_engine.home_routine import WALK_MS
from rules_engine.routine import percentile
from simulators.days import SimElder
from simulators.home_log import (
    BATHROOM,
    BEDROOM,
    ENTRANCE,
    LogError,
    LogEvent,
    Sensor,
    SensorMap,
    messages,
    read_log,
)

ELDER = "HOME-1"
HOME = (29.5630, 106.5516)
MONTH_DAYS = 30.0
CATEGORIES = ("day", "evening", "bathroom", "night", "night_exit")
SIGN_STATES = frozenset({"ON", "OPEN", "CLOSE"})  # what a person does (motion OFF is not)
BED_MIN_MS = 30 * 60_000
DEFAULT_WINDOW_H = 6.0
DEFAULT_RESPOND_AFTER_S = 1800.0


@dataclass(frozen=True, slots=True)
class Incident:
    category: str
    at_ms: int  # the last sign before the resident stopped
    room: str


@dataclass(frozen=True, slots=True)
class Outcome:
    category: str
    at: str
    room: str
    caught: bool
    rule: str | None = None
    delay_s: float | None = None


@dataclass(frozen=True, slots=True)
class FalseAlert:
    at: str
    rule: str
    period: str
    last_room: str
    since_last_sign_s: float
    critical: bool


@dataclass
class HomesEvaluation:
    log: str
    days: float
    events: int
    false_alerts: list[FalseAlert]
    outcomes: list[Outcome]
    window_h: float
    elapsed_s: float
    other_alerts: dict[str, int] = field(default_factory=dict)

    @property
    def months(self) -> float:
        return self.days / MONTH_DAYS

    def as_dict(self) -> dict[str, object]:
        return {
            "log": self.log,
            "days": round(self.days, 2),
            "events": self.events,
            "window_h": self.window_h,
            "false_alerts_per_resident_month": round(len(self.false_alerts) / self.months, 2),
            "false_alerts": [asdict(f) for f in self.false_alerts],
            "incidents": [asdict(o) for o in self.outcomes],
            "summary": summary(self),
            "other_alerts": self.other_alerts,
            "elapsed_s": round(self.elapsed_s, 1),
        }


# --- replay ----------------------------------------------------------------------------


def make_engine(sensors: Sequence[Sensor], settings: Settings, start_ms: int) -> SimRulesEngine:
    """The worker's detectors over one elder living alone with these sensors."""
    first: dict[str, str] = {}
    for s in sensors:
        first.setdefault(s.kind, s.device_id)
    elder = SimElder(ELDER, HOME, first, "alone")
    engine = SimRulesEngine(
        [elder],
        settings,
        default_engine(settings),
        respond_after_s=DEFAULT_RESPOND_AFTER_S,
        start_ms=start_ms,
    )
    for s in sensors:
        engine.registry[s.device_id] = DeviceInfo(s.device_id, ELDER, s.kind)
    _register_rooms(engine.engine, sensors)
    return engine


def _register_rooms(engine: Engine, sensors: Sequence[Sensor]) -> None:
    for detector in engine.detectors:
        rooms = getattr(detector, "rooms", None)
        if rooms is not None and hasattr(rooms, "put"):
            for s in sensors:
                rooms.put(s.device_id, s.room)


def replay(
    events: Sequence[LogEvent],
    sensors: Sequence[Sensor],
    settings: Settings,
    tz: ZoneInfo,
    end_ms: int,
) -> SimRulesEngine:
    """Feed `events` (up to end_ms) and run the timers to end_ms; relearn each midnight."""
    start_ms = events[0].at_ms
    engine = make_engine(sensors, settings, start_ms)
    learner = _Learner(engine.engine, sensors, tz)
    next_midnight = _next_midnight(start_ms, tz)
    for msg in messages((e for e in events if e.at_ms <= end_ms), sensors):
        while msg.device_time_ms >= next_midnight:
            engine.advance(next_midnight)
            learner.learn(next_midnight)
            next_midnight = _next_midnight(next_midnight + 1, tz)
        learner.saw(msg.device_id, msg.device_time_ms, msg.payload)
        engine.feed(msg)
    engine.advance(end_ms)
    return engine


class _Learner:
    """Relearns the elder's home routine from the replayed signs (the worker's refresh)."""

    def __init__(self, engine: Engine, sensors: Sequence[Sensor], tz: ZoneInfo) -> None:
        self.detector = next((d for d in engine.detectors if hasattr(d, "learn_from_signs")), None)
        self.tz = tz
        self.signs: list[tuple[int, str]] = []

    def saw(self, device_id: str, at_ms: int, payload: bytes) -> None:
        if self.detector is not None and b'"motion":false' not in payload:
            self.signs.append((at_ms, device_id))

    def learn(self, now_ms: int) -> None:
        if self.detector is not None:
            self.detector.learn_from_signs(ELDER, self.signs, now_ms)


def _next_midnight(ms: int, tz: ZoneInfo) -> int:
    local = datetime.fromtimestamp(ms / 1000, tz)
    nxt = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
    return int(nxt.timestamp() * 1000)


# --- incidents --------------------------------------------------------------------------


def _hour(ms: int, tz: ZoneInfo) -> float:
    local = datetime.fromtimestamp(ms / 1000, tz)
    return local.hour + local.minute / 60


def candidates(
    events: Sequence[LogEvent], rooms: Mapping[str, str], kinds: Mapping[str, str], tz: ZoneInfo
) -> dict[str, list[Incident]]:
    """Every moment of each category in the log (signs of motion in a room)."""
    out: dict[str, list[Incident]] = defaultdict(list)
    bedroom_since: int | None = None
    bedroom_last = -WALK_MS - 1
    for e in events:
        if e.state not in SIGN_STATES:
            continue
        room = rooms[e.device_id]
        h = _hour(e.at_ms, tz)
        night = h >= 23 or h < 5
        if kinds[e.device_id] == "pir" and room != ENTRANCE:
            if room == BEDROOM:
                if bedroom_since is None:
                    bedroom_since = e.at_ms
                bedroom_last = e.at_ms
                if (h >= 23 or h < 4) and e.at_ms - bedroom_since >= BED_MIN_MS:
                    out["night"].append(Incident("night", e.at_ms, room))
            else:
                if (
                    night
                    and room == BATHROOM
                    and bedroom_since is not None
                    and e.at_ms - bedroom_since >= BED_MIN_MS
                    and e.at_ms - bedroom_last <= WALK_MS  # seen getting up and going
                ):
                    out["night_exit"].append(Incident("night_exit", e.at_ms, room))
                bedroom_since = None
            if 9 <= h < 17:
                out["day"].append(Incident("day", e.at_ms, room))
            elif 17 <= h < 22:
                out["evening"].append(Incident("evening", e.at_ms, room))
            if room == BATHROOM and 7 <= h < 22:
                out["bathroom"].append(Incident("bathroom", e.at_ms, room))
        elif room != BEDROOM:
            bedroom_since = None
    return out


def choose(
    found: Mapping[str, list[Incident]],
    per_category: int,
    seed: int,
    first_ms: int,
    tz: ZoneInfo,
    skip_days: int,
) -> list[Incident]:
    """Per category, `per_category` moments on distinct days (after the first
    `skip_days`), days spread over the log, the moment within a day at random."""
    if per_category <= 0:
        return []
    rng = random.Random(seed)
    first_day = datetime.fromtimestamp(first_ms / 1000, tz).date()
    chosen: list[Incident] = []
    for category in CATEGORIES:
        by_day: dict[int, list[Incident]] = defaultdict(list)
        for inc in found.get(category, []):
            local = datetime.fromtimestamp(inc.at_ms / 1000, tz)
            # a night belongs to the day it started on
            day = (local.date() - first_day).days - (
                1 if local.hour < 12 and "night" in category else 0
            )
            if day >= skip_days:
                by_day[day].append(inc)
        days = sorted(by_day)
        if not days:
            continue
        step = max(len(days) / per_category, 1.0)
        picked = sorted({days[min(int(i * step), len(days) - 1)] for i in range(per_category)})
        for day in picked:
            chosen.append(rng.choice(by_day[day]))
    return chosen


def run_incident(
    inc: Incident,
    events: Sequence[LogEvent],
    sensors: Sequence[Sensor],
    settings: Settings,
    tz: ZoneInfo,
    window_ms: int,
) -> Outcome:
    end = inc.at_ms + window_ms
    kept = [e for e in events if e.at_ms <= inc.at_ms or e.at_ms > end]
    engine = replay(kept, sensors, settings, tz, end)
    first = next(
        (
            r
            for r in engine.records
            if r.kind == "inactivity" and r.action == "opened" and inc.at_ms <= r.at_ms <= end
        ),
        None,
    )
    at = datetime.fromtimestamp(inc.at_ms / 1000, tz).isoformat(timespec="minutes")
    if first is None:
        return Outcome(inc.category, at, inc.room, False)
    return Outcome(inc.category, at, inc.room, True, first.rule, (first.at_ms - inc.at_ms) / 1000)


def kill(
    events: Sequence[LogEvent], sensors: Sequence[Sensor], spec: str, tz: ZoneInfo
) -> list[LogEvent]:
    """`SENSOR[@DAY]`: the sensors whose id contains SENSOR die at the start of the log's
    day DAY (0: the first): their events from then on are removed (a dead battery)."""
    name, _, day = spec.partition("@")
    ids = {s.device_id for s in sensors if name.lower() in s.device_id.lower()}
    if not ids:
        raise LogError(f"--dead {spec}: no sensor id contains {name!r}")
    if day and not day.isdigit():
        raise LogError(f"--dead {spec}: DAY must be a whole number")
    first = datetime.fromtimestamp(events[0].at_ms / 1000, tz).date()
    start = datetime.combine(first + timedelta(days=int(day or 0)), datetime.min.time(), tz)
    from_ms = int(start.timestamp() * 1000)
    return [e for e in events if e.device_id not in ids or e.at_ms < from_ms]


# --- false alerts -----------------------------------------------------------------------


def period_of(ms: int, tz: ZoneInfo) -> str:
    h = _hour(ms, tz)
    return "day" if 7 <= h < 17 else "evening" if 17 <= h < 22 else "night"


def false_alerts(
    records: Sequence[AlertRecord],
    events: Sequence[LogEvent],
    rooms: Mapping[str, str],
    tz: ZoneInfo,
) -> list[FalseAlert]:
    signs = [(e.at_ms, rooms[e.device_id]) for e in events if e.state in SIGN_STATES]
    times = [t for t, _ in signs]
    critical = {r.alert_id for r in records if r.severity == "critical"}
    out: list[FalseAlert] = []
    import bisect

    for r in records:
        if r.kind != "inactivity" or r.action != "opened":
            continue
        i = bisect.bisect_right(times, r.at_ms) - 1
        last_ms, room = signs[i] if i >= 0 else (r.at_ms, "?")
        at = datetime.fromtimestamp(r.at_ms / 1000, tz).isoformat(timespec="minutes")
        out.append(
            FalseAlert(
                at,
                r.rule,
                period_of(r.at_ms, tz),
                room,
                (r.at_ms - last_ms) / 1000,
                r.alert_id in critical,
            )
        )
    return out


# --- the whole evaluation ---------------------------------------------------------------


def evaluate(
    path: Path,
    settings: Settings,
    tz: ZoneInfo,
    *,
    per_category: int = 10,
    seed: int = 0,
    window_h: float = DEFAULT_WINDOW_H,
    skip_days: int = 3,
    sensor_map: SensorMap | None = None,
    categories: Iterable[str] = CATEGORIES,
    dead: Sequence[str] = (),
) -> HomesEvaluation:
    started = time.perf_counter()
    events, sensors = read_log(path, tz, sensor_map)
    if not events:
        raise LogError(f"{path}: no events")
    for spec in dead:
        events = kill(events, sensors, spec, tz)
    rooms = {s.device_id: s.room for s in sensors}
    kinds = {s.device_id: s.kind for s in sensors}
    end_ms = events[-1].at_ms
    clean = replay(events, sensors, settings, tz, end_ms)
    fa = false_alerts(clean.records, events, rooms, tz)
    other = Counter[str](
        f"{r.kind} ({r.rule})"
        for r in clean.records
        if r.action == "opened" and r.kind != "inactivity"
    )
    wanted = set(categories)
    found = {c: v for c, v in candidates(events, rooms, kinds, tz).items() if c in wanted}
    chosen = choose(found, per_category, seed, events[0].at_ms, tz, skip_days)
    window_ms = round(window_h * 3_600_000)
    outcomes = [run_incident(i, events, sensors, settings, tz, window_ms) for i in chosen]
    return HomesEvaluation(
        str(path),
        (end_ms - events[0].at_ms) / 86_400_000,
        len(events),
        fa,
        outcomes,
        window_h,
        time.perf_counter() - started,
        dict(other),
    )


def _delays(outcomes: Sequence[Outcome]) -> dict[str, float | int | None]:
    delays = [o.delay_s for o in outcomes if o.caught and o.delay_s is not None]
    return {
        "incidents": len(outcomes),
        "caught": len(delays),
        "median_h": round(statistics.median(delays) / 3600, 2) if delays else None,
        "p90_h": round(percentile(delays, 0.9) / 3600, 2) if delays else None,
        "max_h": round(max(delays) / 3600, 2) if delays else None,
    }


def summary(ev: HomesEvaluation) -> dict[str, object]:
    by_cat: dict[str, dict[str, object]] = {}
    for category in CATEGORIES:
        outs = [o for o in ev.outcomes if o.category == category]
        if not outs:
            continue
        figures: dict[str, object] = dict(_delays(outs))
        figures["by_rule"] = dict(Counter(o.rule or "missed" for o in outs))
        by_cat[category] = figures
    per = ev.months
    return {
        "false_per_month": round(len(ev.false_alerts) / per, 2),
        "false_by_rule": {
            k: round(v / per, 2) for k, v in Counter(f.rule for f in ev.false_alerts).items()
        },
        "false_by_period": {
            k: round(v / per, 2) for k, v in Counter(f.period for f in ev.false_alerts).items()
        },
        "false_by_room": {
            k: round(v / per, 2) for k, v in Counter(f.last_room for f in ev.false_alerts).items()
        },
        "incidents": by_cat,
    }


def format_report(ev: HomesEvaluation) -> str:
    s = summary(ev)
    lines = [
        f"{ev.log}: {ev.days:.1f} days ({ev.months:.2f} resident-months), {ev.events} events,"
        f" {len(ev.outcomes)} incidents of {ev.window_h:g} h, {ev.elapsed_s:.0f} s",
        "",
        f"False inactivity alerts: {len(ev.false_alerts)} = {s['false_per_month']} per"
        " resident-month",
    ]
    for title, key in (("rule", "false_by_rule"), ("period", "false_by_period")):
        figures = s[key]
        assert isinstance(figures, dict)
        parts = ", ".join(f"{k} {v}" for k, v in sorted(figures.items()))
        lines.append(f"  by {title}: {parts or '-'}")
    rooms = s["false_by_room"]
    assert isinstance(rooms, dict)
    lines.append(
        f"  by last room: {', '.join(f'{k} {v}' for k, v in sorted(rooms.items())) or '-'}"
    )
    for f in ev.false_alerts:
        lines.append(
            f"    {f.at} {f.rule} ({f.period}, last sign {f.last_room}"
            f" {f.since_last_sign_s / 3600:.1f} h before{', critical' if f.critical else ''})"
        )
    if ev.other_alerts:
        lines.append(f"Other alerts: {', '.join(f'{k} {v}' for k, v in ev.other_alerts.items())}")
    lines += [
        "",
        f"{'incidents':<12}{'caught':>8}{'median':>9}{'p90':>8}{'max':>8}  by rule",
    ]
    incidents = s["incidents"]
    assert isinstance(incidents, dict)
    for category, fig in incidents.items():
        rules = ", ".join(f"{k} {v}" for k, v in sorted(fig["by_rule"].items()))
        lines.append(
            f"{category:<12}{fig['caught']:>4}/{fig['incidents']:<3}{_h(fig['median_h']):>9}"
            f"{_h(fig['p90_h']):>8}{_h(fig['max_h']):>8}  {rules}"
        )
    return "\n".join(lines)


def _h(v: object) -> str:
    return "-" if v is None else f"{v:.2f}h"


def cli_main(args: argparse.Namespace) -> int:
    settings = get_settings()
    tz = ZoneInfo(args.tz or settings.timezone)
    try:
        smap = SensorMap.from_csv(args.sensor_map) if args.sensor_map else None
        ev = evaluate(
            args.log,
            settings,
            tz,
            per_category=args.incidents,
            seed=args.seed,
            window_h=args.window,
            skip_days=args.skip_days,
            sensor_map=smap,
            dead=args.dead,
        )
    except (LogError, OSError) as exc:
        print(f"carewatch eval homes: {exc}", file=sys.stderr)
        return 2
    print(format_report(ev))
    if args.json is not None:
        args.json.write_text(json.dumps(ev.as_dict(), indent=2, ensure_ascii=False), "utf-8")
    return 0
