"""The visit list: a grid worker's elders ranked by risk, each with the reasons in Chinese.
Pure: VisitInputs in (loaded by visits.store), VisitItem out.

Points, added up (the reasons list what scored, largest first):

| what | points |
| --- | --- |
| lives alone (独居, the flag or the care profile) | 3 |
| care profile 失能 / 认知障碍 3, 空巢 / 高龄 2, 留守 1 | |
| alerts in the last 30 days (not false alarms) | 2 each, at most 6 |
| false alarms in the last 30 days (a device misunderstood, or misused) | 1 each, at most 3 |
| devices offline 2 each, low battery 1 each | at most 4 |
| no sign of life for 12 h or more | 2, 5 from 24 h |
| slow decline (visits.decline) | 4 + 6 x the largest drop |
| days since the last visit (visited or phoned) | 1 a week, at most 4; never visited 4 |

A visit or a phone call resets the days since the last visit; "not at home" does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from visits.decline import DayActivity, Decline, decline

PROFILE_POINTS: dict[str, tuple[float, str]] = {
    "disabled": (3.0, "失能"),
    "cognitive": (3.0, "认知障碍"),
    "empty_nest": (2.0, "空巢"),
    "elderly_80plus": (2.0, "高龄"),
    "left_behind": (1.0, "留守"),
}
LIVES_ALONE_POINTS = 3.0
ALERT_POINTS, ALERT_CAP = 2.0, 6.0
FALSE_ALARM_POINTS, FALSE_ALARM_CAP = 1.0, 3.0
OFFLINE_POINTS, LOW_BATTERY_POINTS, DEVICE_CAP = 2.0, 1.0, 4.0
SILENT_HOURS, SILENT_POINTS = 12.0, 2.0
LONG_SILENT_HOURS, LONG_SILENT_POINTS = 24.0, 5.0
DECLINE_POINTS, DECLINE_PER_DROP = 4.0, 6.0
WEEK_POINTS, VISIT_CAP = 1.0, 4.0


@dataclass(frozen=True, slots=True)
class VisitInputs:
    elder_id: str
    name: str
    grid_id: str
    address: str | None = None
    care_profile_id: str | None = None
    lives_alone: bool = False
    alerts_30d: int = 0  # opened in the last 30 days, false alarms excluded
    false_alarms_30d: int = 0
    devices_offline: tuple[str, ...] = ()  # Chinese kind labels (手环, 门磁...)
    devices_low_battery: tuple[str, ...] = ()
    last_sign_of_life: datetime | None = None
    last_visit: datetime | None = None  # last check-in visited or phoned
    activity: Mapping[date, DayActivity] = field(default_factory=dict)  # local days


@dataclass(frozen=True, slots=True)
class Reason:
    points: float
    text: str


@dataclass(frozen=True, slots=True)
class VisitItem:
    elder_id: str
    name: str
    grid_id: str
    address: str | None
    score: float
    reasons: tuple[Reason, ...]  # largest first
    decline: Decline | None
    days_since_visit: int | None  # None: never visited

    @property
    def reason_text(self) -> str:
        return "；".join(r.text for r in self.reasons)


def _profile(elder: VisitInputs) -> list[Reason]:
    found = []
    if elder.lives_alone or elder.care_profile_id == "alone":
        found.append(Reason(LIVES_ALONE_POINTS, "独居"))
    if elder.care_profile_id in PROFILE_POINTS:
        points, label = PROFILE_POINTS[elder.care_profile_id]
        found.append(Reason(points, label))
    return found


def _alerts(elder: VisitInputs) -> list[Reason]:
    found = []
    if elder.alerts_30d:
        points = min(ALERT_CAP, ALERT_POINTS * elder.alerts_30d)
        found.append(Reason(points, f"近30天告警{elder.alerts_30d}次"))
    if elder.false_alarms_30d:
        points = min(FALSE_ALARM_CAP, FALSE_ALARM_POINTS * elder.false_alarms_30d)
        found.append(Reason(points, f"近30天误报{elder.false_alarms_30d}次"))
    return found


def _devices(elder: VisitInputs) -> list[Reason]:
    points = OFFLINE_POINTS * len(elder.devices_offline)
    points += LOW_BATTERY_POINTS * len(elder.devices_low_battery)
    if not points:
        return []
    parts = []
    if elder.devices_offline:
        parts.append("设备离线：" + "、".join(elder.devices_offline))
    if elder.devices_low_battery:
        parts.append("电量低：" + "、".join(elder.devices_low_battery))
    return [Reason(min(DEVICE_CAP, points), "，".join(parts))]


def _silence(elder: VisitInputs, now: datetime) -> list[Reason]:
    if elder.last_sign_of_life is None:
        return [Reason(LONG_SILENT_POINTS, "暂无活动记录")]
    hours = (now - elder.last_sign_of_life).total_seconds() / 3600
    if hours >= LONG_SILENT_HOURS:
        return [Reason(LONG_SILENT_POINTS, f"已{int(hours)}小时无活动信号")]
    if hours >= SILENT_HOURS:
        return [Reason(SILENT_POINTS, f"已{int(hours)}小时无活动信号")]
    return []


def _last_visit(
    elder: VisitInputs, today: date, tz_now: datetime
) -> tuple[list[Reason], int | None]:
    if elder.last_visit is None:
        return [Reason(VISIT_CAP, "从未走访")], None
    days = (today - elder.last_visit.astimezone(tz_now.tzinfo).date()).days
    points = min(VISIT_CAP, WEEK_POINTS * (days // 7))
    reasons = [Reason(points, f"距上次走访{days}天")] if points else []
    return reasons, days


def visit_item(elder: VisitInputs, now: datetime) -> VisitItem:
    """Score one elder at `now` (aware; its time zone is the site's: days are local days)."""
    today = now.date()
    reasons = [*_profile(elder), *_alerts(elder), *_devices(elder), *_silence(elder, now)]
    found = decline(elder.activity, today)
    if found is not None:
        reasons.append(Reason(DECLINE_POINTS + DECLINE_PER_DROP * found.drop, found.reason()))
    visit_reasons, days = _last_visit(elder, today, now)
    reasons.extend(visit_reasons)
    ordered = tuple(sorted(reasons, key=lambda r: -r.points))  # stable: ties keep the order
    return VisitItem(
        elder_id=elder.elder_id,
        name=elder.name,
        grid_id=elder.grid_id,
        address=elder.address,
        score=round(sum(r.points for r in ordered), 2),
        reasons=ordered,
        decline=found,
        days_since_visit=days,
    )


def rank_visits(elders: Sequence[VisitInputs], now: datetime) -> list[VisitItem]:
    """The visit list, highest risk first (ties: longest since the last visit, then id).
    `now` is aware and in the site's time zone: "today" and the activity days are its
    local days."""
    items = [visit_item(e, now) for e in elders]
    never = 10**6
    return sorted(
        items,
        key=lambda i: (
            -i.score,
            -(never if i.days_since_visit is None else i.days_since_visit),
            i.elder_id,
        ),
    )
