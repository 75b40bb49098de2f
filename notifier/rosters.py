"""Duty rosters, leave with a named substitute, and contact channel preferences (pure).

Who of a grid's grid workers, or which stations, can be reached at a given local time,
and on which channels a person may be reached. Plain functions over typed records and
a local datetime the caller takes from its injected clock; the records are loaded from
the database by notifier.duty_db and imported by notifier.policy_ledger.

- A member (grid worker or station) with no shift rows keeps its old hours: a grid
  worker is always on duty, a station within its duty_start..duty_end.
- With shift rows, a member is on duty when one covers the moment: its weekday (1 =
  Monday ... 7 = Sunday) and [start, end); a shift past midnight (22:00-08:00) belongs
  to the weekday it starts on; start == end is the whole day.
- A member on leave (the day falls in [first_day, last_day]) is not on duty; its
  substitute takes over the shifts it would have worked. A substitute on leave
  themselves passes on to their own substitute (never round in a circle).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal

from carewatch.messages import Severity
from carewatch.phones import is_landline
from notifier.policies import ChannelName

MemberKind = Literal["grid_worker", "station"]
MEMBER_KINDS: tuple[MemberKind, ...] = ("grid_worker", "station")
MAX_SUBSTITUTE_CHAIN = 5


@dataclass(frozen=True, slots=True)
class Shift:
    member_kind: MemberKind
    member_id: str
    weekdays: frozenset[int]  # 1 = Monday ... 7 = Sunday
    start: time
    end: time  # == start: the whole day


@dataclass(frozen=True, slots=True)
class Leave:
    member_kind: MemberKind
    member_id: str
    first_day: date
    last_day: date
    substitute_id: str | None  # same kind; None: nobody stands in


@dataclass(frozen=True, slots=True)
class Cover:
    """Who is reached for a member: the member itself, or its substitute."""

    member_id: str
    standing_in_for: str | None = None


@dataclass(frozen=True, slots=True)
class Roster:
    shifts: tuple[Shift, ...] = ()
    leaves: tuple[Leave, ...] = ()
    _by_member: dict[tuple[str, str], tuple[Shift, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        grouped: dict[tuple[str, str], list[Shift]] = {}
        for s in self.shifts:
            grouped.setdefault((s.member_kind, s.member_id), []).append(s)
        self._by_member.update({k: tuple(v) for k, v in grouped.items()})

    def shifts_of(self, kind: MemberKind, member_id: str) -> tuple[Shift, ...]:
        return self._by_member.get((kind, member_id), ())

    def leave_of(self, kind: MemberKind, member_id: str, day: date) -> Leave | None:
        return next(
            (
                lv
                for lv in self.leaves
                if lv.member_kind == kind
                and lv.member_id == member_id
                and lv.first_day <= day <= lv.last_day
            ),
            None,
        )


def shift_covers(shift: Shift, at: datetime) -> bool:
    """Whether `shift` covers local time `at` (pure)."""
    now = at.time().replace(tzinfo=None)
    weekday = at.isoweekday()
    if shift.start == shift.end:
        return weekday in shift.weekdays
    if shift.start < shift.end:
        return weekday in shift.weekdays and shift.start <= now < shift.end
    # past midnight: the evening part on its own weekday, the morning part on the next
    if now >= shift.start:
        return weekday in shift.weekdays
    yesterday = (at - timedelta(days=1)).isoweekday()
    return now < shift.end and yesterday in shift.weekdays


def scheduled(
    roster: Roster, kind: MemberKind, member_id: str, at: datetime, default: bool
) -> bool:
    """Whether the member's shifts cover `at`, leave aside; `default` for a member
    without shifts (pure)."""
    shifts = roster.shifts_of(kind, member_id)
    if not shifts:
        return default
    return any(shift_covers(s, at) for s in shifts)


def cover_for(
    roster: Roster,
    kind: MemberKind,
    member_id: str,
    at: datetime,
    default: bool | Mapping[str, bool] = True,
) -> Cover | None:
    """Who is reached for `member_id` at `at`: the member on duty, its substitute when the
    member is on leave during a shift it would have worked, or nobody (pure).

    `default`: whether a member without shifts is on duty (per member id as a mapping)."""

    def default_of(mid: str) -> bool:
        return default.get(mid, False) if isinstance(default, Mapping) else default

    if not scheduled(roster, kind, member_id, at, default_of(member_id)):
        return None
    day = at.date()
    current, seen = member_id, {member_id}
    for _ in range(MAX_SUBSTITUTE_CHAIN):
        leave = roster.leave_of(kind, current, day)
        if leave is None:
            return Cover(current, None if current == member_id else member_id)
        if leave.substitute_id is None or leave.substitute_id in seen:
            return None
        current = leave.substitute_id
        seen.add(current)
    return None


def covers(
    roster: Roster,
    kind: MemberKind,
    member_ids: Iterable[str],
    at: datetime,
    default: bool | Mapping[str, bool] = True,
) -> list[Cover]:
    """Who is reached for these members at `at`, each person once, in member order (pure)."""
    found: dict[str, Cover] = {}
    for member_id in member_ids:
        cover = cover_for(roster, kind, member_id, at, default)
        if cover is not None:
            found.setdefault(cover.member_id, cover)
    return list(found.values())


# --- contact channel preferences ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelPreference:
    """The channels a phone number's owner accepts (imported; keyed by the number)."""

    phone: str
    channels: frozenset[ChannelName]
    voice_for_all: bool = False  # True: calls for warnings too, not only critical alerts


def allowed_channels(
    channels: Sequence[ChannelName],
    severity: Severity | str,
    phone: str | None,
    preferences: Mapping[str, ChannelPreference],
) -> tuple[ChannelName, ...]:
    """The channels of `channels` a person with `phone` may be reached on (pure):

    - no SMS to a landline (it cannot receive one);
    - a call only for a critical alert, unless their preference says otherwise;
    - only the channels their preference lists, when they have one."""
    pref = preferences.get(phone) if phone else None
    out: list[ChannelName] = []
    for channel in channels:
        if channel == "sms" and phone and is_landline(phone):
            continue
        if channel == "voice" and severity != "critical" and not (pref and pref.voice_for_all):
            continue
        if pref is not None and channel not in pref.channels:
            continue
        out.append(channel)
    return tuple(out)
