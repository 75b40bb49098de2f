"""`carewatch notifier check`: is there an elder some alert would reach nobody for?

For every elder and every severity whose policy pushes anything, the check walks the
coming days moment by moment (every time a shift, a station's hours or the night window
begins or ends, and every midnight) and asks who the whole policy would reach then: the
grid workers on duty or their substitutes, family, the nearest station on duty, the duty
officers, each on a channel their preferences allow and that has an address. An elder
with a moment when nobody is reached is listed (exit code 1). Grids with no grid worker
on duty and no substitute are listed too, as gaps the other targets may cover.

The decisions are pure (`Snapshot`, `find_gaps`) over what `load_snapshot` reads. Who a
target reaches (a grid's cover, an elder's station) is decided by the functions the
escalation uses (notifier.targets.grid_cover, station_for), never a copy of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from carewatch.clock import SystemClock
from carewatch.messages import Severity
from carewatch.settings import Settings
from notifier import duty_db, sql, targets
from notifier.policies import (
    ChannelName,
    Policy,
    ScopedPolicy,
    StepPlan,
    TargetKind,
    parse_hhmm,
    select_policy,
    step_channels,
)
from notifier.rosters import ChannelPreference, Roster, allowed_channels
from notifier.sql import Conn
from notifier.targets import (
    Elder,
    Recipient,
    Station,
    grid_cover,
    reachable_stations,
    station_for,
)

CHECKED_SEVERITIES: tuple[Severity, ...] = ("critical", "warning")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the check reads, as plain records."""

    elders: Sequence[Elder]
    grid_workers: dict[str, list[Recipient]]  # grid id -> its grid workers, by id
    people: dict[tuple[str, str], Recipient]  # (kind, id) -> grid workers, duty officers
    family: dict[str, list[Recipient]]  # elder id -> contacts by priority
    stations: Sequence[Station]
    officers: dict[str, list[Recipient]]  # district -> duty officers
    roster: Roster = field(default_factory=Roster)
    preferences: dict[str, ChannelPreference] = field(default_factory=dict)
    policies: Sequence[ScopedPolicy] = ()
    voice: bool = True
    quiet: tuple[str, str] = ("22:00", "07:00")


class _Reach:
    """Who the snapshot reaches at moments, with what does not depend on the elder
    computed once per moment (grid cover, each pool's stations reachable)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        # stand-ins from other grids are looked up among all grid workers
        self._workers = {pid: p for (kind, pid), p in snap.people.items() if kind == "grid_worker"}
        self._grids: dict[tuple[datetime, str], list[Recipient]] = {}
        self._reachable: dict[tuple[time | datetime, str | None], list[Station]] = {}

    def grid(self, grid_id: str, at: datetime) -> list[Recipient]:
        key = (at, grid_id)
        if key not in self._grids:
            workers = self.snap.grid_workers.get(grid_id, [])
            self._grids[key] = grid_cover(workers, self.snap.roster, at, self._workers)
        return self._grids[key]

    def reachable(
        self,
        stations: Sequence[Station],
        roster: Roster,
        district: str | None,
        local: time | datetime,
    ) -> list[Station]:
        """targets.reachable_stations, once per moment and pool (`stations` and `roster`
        are always the snapshot's)."""
        key = (local, district)
        if key not in self._reachable:
            self._reachable[key] = reachable_stations(stations, roster, district, local)
        return self._reachable[key]

    def station(self, elder: Elder, at: datetime) -> Station | None:
        return station_for(self.snap.stations, self.snap.roster, elder, at, self.reachable)

    def targets(self, elder: Elder, kind: TargetKind, at: datetime) -> list[Recipient]:
        """What notifier.targets.resolve finds for one target kind (pure)."""
        if kind == "grid_worker":
            return self.grid(elder.grid_id, at)
        if kind in ("family_first", "family_all"):
            family = self.snap.family.get(elder.id, [])
            return family[:1] if kind == "family_first" else family
        if kind == "nearest_station":
            found = self.station(elder, at)
            return [found.as_recipient()] if found else []
        return self.snap.officers.get(elder.district, [])

    def reached(
        self, elder: Elder, policy: Policy, severity: Severity, at: datetime, first: bool = False
    ) -> list[tuple[Recipient, ChannelName]]:
        """Everyone every step of `policy` would reach at `at`, with a channel; with
        `first`, only the first found (pure)."""
        snap = self.snap
        out: list[tuple[Recipient, ChannelName]] = []
        for number, step in enumerate(policy.steps):
            plan = StepPlan(number, step.targets, step.channels, None)
            channels = step_channels(
                plan,
                severity,
                at.time(),
                voice=snap.voice,
                quiet_start=snap.quiet[0],
                quiet_end=snap.quiet[1],
            )
            for kind in step.targets:
                for r in self.targets(elder, kind, at):
                    for channel in allowed_channels(channels, severity, r.phone, snap.preferences):
                        if r.address(channel):
                            out.append((r, channel))
                            if first:
                                return out
        return out


def moments(snap: Snapshot, start: date, days: int, tz: str) -> list[datetime]:
    """Every moment in [start, start + days) at which who is on duty may change (pure)."""
    times = {time(0, 0), parse_hhmm(snap.quiet[0]), parse_hhmm(snap.quiet[1])}
    times |= {s.start for s in snap.roster.shifts} | {s.end for s in snap.roster.shifts}
    times |= {s.duty_start for s in snap.stations} | {s.duty_end for s in snap.stations}
    zone = ZoneInfo(tz)
    return [
        datetime.combine(start + timedelta(days=d), t, zone)
        for d in range(days)
        for t in sorted(times)
    ]


@dataclass(frozen=True, slots=True)
class Window:
    start: str  # local ISO date-time
    end: str


@dataclass
class ElderGap:
    elder_id: str
    elder_name: str
    grid_id: str
    severity: str
    policy: str
    windows: list[Window] = field(default_factory=list)


@dataclass
class GridGap:
    grid_id: str
    windows: list[Window] = field(default_factory=list)


@dataclass
class CheckResult:
    start: str
    days: int
    elders_checked: int
    unreached: list[ElderGap] = field(default_factory=list)
    grids_without_cover: list[GridGap] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unreached


def _windows(at: Sequence[datetime], bad: Sequence[bool], end: datetime) -> list[Window]:
    """Runs of consecutive bad moments as [start, end) windows."""
    out: list[Window] = []
    run_start: datetime | None = None
    for i, (moment, is_bad) in enumerate(zip(at, bad, strict=True)):
        if is_bad and run_start is None:
            run_start = moment
        following = at[i + 1] if i + 1 < len(at) else end
        if run_start is not None and (i + 1 == len(at) or not bad[i + 1]):
            out.append(
                Window(
                    run_start.isoformat(timespec="minutes"), following.isoformat(timespec="minutes")
                )
            )
            run_start = None
    return out


def find_gaps(snap: Snapshot, start: date, days: int, tz: str) -> CheckResult:
    """Every elder some severity would reach nobody for, and every grid with no grid
    worker on duty and no substitute, over [start, start + days) (pure)."""
    at = moments(snap, start, days, tz)
    end = datetime.combine(start + timedelta(days=days), time(0, 0), ZoneInfo(tz))
    result = CheckResult(start.isoformat(), days, len(snap.elders))
    reach = _Reach(snap)
    for grid_id in sorted(snap.grid_workers):
        bad = [not reach.grid(grid_id, m) for m in at]
        if any(bad):
            result.grids_without_cover.append(GridGap(grid_id, _windows(at, bad, end)))
    for elder in snap.elders:
        for severity in CHECKED_SEVERITIES:
            policy = select_policy(snap.policies, severity, elder.district, elder.care_profile)
            if not policy.steps:
                continue
            bad = [not reach.reached(elder, policy, severity, m, first=True) for m in at]
            if any(bad):
                gap = ElderGap(
                    elder.id,
                    elder.name,
                    elder.grid_id,
                    severity,
                    policy.name,
                    _windows(at, bad, end),
                )
                result.unreached.append(gap)
    return result


# --- the edge ---------------------------------------------------------------------------


async def load_snapshot(conn: Conn, settings: Settings) -> Snapshot:
    """Everything the check reads, through the loaders of notifier.targets and
    notifier.duty_db the escalation reads the same rows with. The elders first: on a
    database that was never migrated, their table is the one the error names."""
    elders = await targets.load_elders(conn)
    by_grid = await targets.people_by_owner(conn, "grid_worker")
    for g in await sql.rows(conn, "SELECT id FROM grids ORDER BY id"):
        by_grid.setdefault(g["id"], [])
    people = {(p.kind, p.id): p for ps in by_grid.values() for p in ps}
    return Snapshot(
        elders=elders,
        grid_workers=by_grid,
        people=cast(dict[tuple[str, str], Recipient], people),
        family=await targets.people_by_owner(conn, "family"),
        stations=await targets.load_stations(conn),
        officers=await targets.people_by_owner(conn, "duty_officer"),
        roster=await duty_db.load_roster(conn),
        preferences=await duty_db.load_preferences(conn),
        policies=await duty_db.load_policies(conn),
        voice=settings.voice_enabled,
        quiet=(settings.voice_quiet_start, settings.voice_quiet_end),
    )


async def run_check(settings: Settings, start: date | None, days: int) -> CheckResult:
    tz = settings.timezone
    if start is None:
        start = datetime.fromtimestamp(SystemClock().now_ms() / 1000, ZoneInfo(tz)).date()
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, row_factory=dict_row
    ) as conn:
        snap = await load_snapshot(conn, settings)
    return find_gaps(snap, start, days, tz)


NO_ELDERS = (
    "nothing checked: the ledger has no elders; import it first (carewatch registry import FILE)"
)


def format_result(result: CheckResult) -> str:
    lines = [f"checked {result.elders_checked} elder(s), {result.days} day(s) from {result.start}"]
    if result.grids_without_cover:
        lines.append(
            f"grids with no grid worker on duty and no substitute: "
            f"{len(result.grids_without_cover)}"
        )
        for g in result.grids_without_cover:
            spans = ", ".join(f"{w.start} → {w.end}" for w in g.windows[:4])
            more = f" (+{len(g.windows) - 4} more)" if len(g.windows) > 4 else ""
            lines.append(f"  grid {g.grid_id}: {spans}{more}")
    if result.elders_checked == 0:
        lines.append(NO_ELDERS)
        return "\n".join(lines)
    if result.ok:
        lines.append("ok: every severity reaches someone for every elder at every moment")
        return "\n".join(lines)
    lines.append(f"UNREACHED: {len(result.unreached)} elder/severity pair(s) reach nobody")
    for e in result.unreached:
        spans = ", ".join(f"{w.start} → {w.end}" for w in e.windows[:4])
        more = f" (+{len(e.windows) - 4} more)" if len(e.windows) > 4 else ""
        lines.append(
            f"  {e.elder_id} {e.elder_name} (grid {e.grid_id}) {e.severity}"
            f" [{e.policy}]: {spans}{more}"
        )
    return "\n".join(lines)


def cli_check(settings: Settings, args: argparse.Namespace) -> int:
    """`carewatch notifier check [--json] [--from DAY] [--days N]`: 1 when someone is
    unreached or the ledger has no elders, 2 on bad arguments."""
    import asyncio

    try:
        start = date.fromisoformat(args.start) if args.start else None
    except ValueError:
        print(f"--from: '{args.start}' is not a date YYYY-MM-DD", file=sys.stderr)
        return 2
    if args.days < 1:
        print("--days must be at least 1", file=sys.stderr)
        return 2
    result = asyncio.run(run_check(settings, start, args.days))
    ok = result.ok and result.elders_checked > 0  # an empty ledger proves nothing
    if args.json:
        print(json.dumps(asdict(result) | {"ok": ok}, ensure_ascii=False, indent=2))
    else:
        print(format_result(result))
    return 0 if ok else 1
