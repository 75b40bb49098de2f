"""Geofence (防走失): an elder at risk of wandering leaves the safe area.

At risk: the care profile is 'cognitive' (认知障碍), or the elder has zones defined
(geofence_zones, migration 009). Without zones the safe area is a circle around home of
geofence_home_radius_m. A wristband fix outside every zone counts; the alert opens only
after geofence_confirm_fixes consecutive fixes outside (default 2), so one GPS/LBS fix
thrown across the fence by multipath or a cell-tower position does not call anybody.
Severity: warning by day, critical in the profile's quiet hours (local time of the fix,
settings.timezone), when an elder outside alone is in real danger. Further fixes
outside update the alert's last known position (and escalate a day-time warning to
critical once night falls); the first fix back inside after an
alert is recorded in its timeline (a human still closes it: somebody should check).

Cheap path: the zones of each elder come from the engine's known profile (learned from
a view, refreshed every ten minutes of device time), so fixes of elders not at risk, and fixes inside, stay out of
the database. The outside streak per device is in memory (one owner per shard); a
restart forgets at most one fix outside, delaying an alert by one fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from carewatch.messages import Event, Severity
from rules_engine.decisions import Annotate, Decision, OpenAlert, UpdateAlert
from rules_engine.detectors.base import Detector, ElderView, open_or_repeat
from rules_engine.detectors.escalation import escalation
from rules_engine.fields import is_number
from rules_engine.geo import LatLon, Zone, distance_m, inside_any
from rules_engine.thresholds import Thresholds

RULE_EXIT = "geofence.exit"
AT_RISK_PROFILES = frozenset({"cognitive"})


@dataclass(frozen=True, slots=True)
class Fence:
    zones: tuple[Zone, ...]  # empty: the elder is not at risk, nothing to check
    confirm_fixes: int


def fence_of(elder: ElderView) -> Fence:
    th = elder.thresholds
    confirm = max(1, round(th.geofence_confirm_fixes))
    if elder.zones:
        return Fence(elder.zones, confirm)
    if elder.profile_id in AT_RISK_PROFILES and elder.home is not None:
        home = Zone("home", centre=elder.home, radius_m=th.geofence_home_radius_m)
        return Fence((home,), confirm)
    return Fence((), confirm)


@dataclass(frozen=True, slots=True)
class Fix:
    """One position and where it leaves the device's streak of fixes outside."""

    at: LatLon
    inside: bool
    streak: int  # consecutive fixes outside, this one included
    before: int  # the streak before this fix


def position(event: Event) -> LatLon | None:
    if event.type != "telemetry":
        return None
    lat, lon = event.data.get("lat"), event.data.get("lon")
    if not (is_number(lat) and is_number(lon)):
        return None
    return LatLon(float(lat), float(lon))


def is_night(device_ms: int, th: Thresholds, tz: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(device_ms / 1000, tz)
    hour = local.hour + local.minute / 60
    start, end = th.quiet_start_h, th.quiet_end_h
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end  # quiet hours across midnight, e.g. 22-7


@dataclass(frozen=True, slots=True)
class GeoSeen:
    """A fix worth a decision: a confirmed exit, or the first fix back inside."""

    event: Event
    fix: Fix
    fence: Fence


class GeofenceDetector(Detector[GeoSeen]):
    telemetry_fields = frozenset({"lat", "lon"})  # position()

    def __init__(self, timezone: str = "Asia/Shanghai") -> None:
        self._tz = ZoneInfo(timezone)
        self._fences: dict[str, tuple[ElderView, Fence]] = {}  # per elder, from its profile
        self._streaks: dict[str, tuple[int, int]] = {}  # device -> (device ms, streak)

    def wants(self, event: Event) -> bool:
        """position(event) is not None, without building the position."""
        if event.type != "telemetry":
            return False
        data = event.data
        return is_number(data.get("lat")) and is_number(data.get("lon"))

    def uses_profile(self, event: Event) -> bool:
        return True  # the zones

    def _fence(self, known: ElderView) -> Fence:
        derived = self._fences.get(known.elder_id)
        if derived is None or derived[0] is not known:
            derived = self._fences[known.elder_id] = (known, fence_of(known))
        return derived[1]

    def observe(self, event: Event, known: ElderView | None) -> GeoSeen | None:
        if known is None:
            return None
        fence = self._fence(known)
        if not fence.zones:
            return None
        at = position(event)
        if at is None:
            return None
        fix = self._fix(event, at, fence)
        if fix is None or not _worth_deciding(fix, fence.confirm_fixes):
            return None
        return GeoSeen(event, fix, fence)

    def decide(self, seen: GeoSeen, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        event, fix, fence = seen.event, seen.fix, seen.fence
        at = fix.at
        active = elder.active.get("geofence")
        last_fix: dict[str, object] = {
            "lat": at.lat,
            "lon": at.lon,
            "device_id": event.device_id,
            "device_time_ms": event.device_time_ms,
        }
        if fix.inside:
            if active is None or fix.before == 0:
                return []
            return [Annotate(active.alert_id, "returned_inside", last_fix)]
        if fix.streak < fence.confirm_fixes:
            return []
        th = elder.thresholds
        night = is_night(event.device_time_ms, th, self._tz)
        severity: Severity = "critical" if night else "warning"
        decision = open_or_repeat(
            event,
            elder,
            kind="geofence",
            severity=severity,
            status="open",
            rule=RULE_EXIT,
            threshold={
                "geofence_confirm_fixes": float(fence.confirm_fixes),
                "geofence_home_radius_m": th.geofence_home_radius_m,
                "quiet_start_h": th.quiet_start_h,
                "quiet_end_h": th.quiet_end_h,
            },
        )
        if not isinstance(decision, OpenAlert):
            moved = UpdateAlert(decision.alert_id, "outside", None, {"last_fix": last_fix})
            night_fell = escalation(
                elder, "geofence", severity, rule=RULE_EXIT, cause=event.id, details=last_fix
            )
            return [decision, moved, *night_fell]
        details: dict[str, object] = {
            "last_fix": last_fix,
            "night": night,
            "zones": [z.name for z in fence.zones],
            "fixes_outside": fix.streak,
        }
        if elder.home is not None:
            details["distance_from_home_m"] = round(distance_m(elder.home, at))
        return [replace(decision, details=details)]

    def _fix(self, event: Event, at: LatLon, fence: Fence) -> Fix | None:
        """Judge a fix against the fence and advance the device's streak
        (None: a late fix, older than the last one judged, which changes nothing)."""
        last_ms, before = self._streaks.get(event.device_id, (None, 0))
        if last_ms is not None and event.device_time_ms <= last_ms:
            return None
        inside = inside_any(fence.zones, at)
        streak = 0 if inside else before + 1
        self._streaks[event.device_id] = (event.device_time_ms, streak)
        return Fix(at, inside, streak, before)


def _worth_deciding(fix: Fix | None, confirm_fixes: int) -> bool:
    """A confirmed exit, or the first fix back inside after a confirmed exit."""
    if fix is None:
        return False
    if fix.inside:
        return fix.before >= confirm_fixes
    return fix.streak >= confirm_fixes
