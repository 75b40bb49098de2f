"""Inactivity: no sign of life for longer than the elder's threshold.

It fires on the absence of events, so it lives in a durable timer: every sign of life
moves the elder's deadline `inactivity:{elder_id}` (an upsert; hot telemetry that
would move it by under a minute skips the database, see memo.DeadlineMemo). When the
deadline passes:
- the last sign was the door (opened/closed, then nothing inside), or only wristband
  steps came after the door (a walk outside): the elder is out; no alert, but
  `inactivity-away:{elder_id}` waits until the out-of-home ceiling after the door
  (cancelled by the next sign of life, e.g. the door on the way back in). Whether
  steps came after the door is this worker's memory: after a restart, steps count
  as at home until the next door event (an alert rather than none);
- otherwise a 'warning' alert opens, and `inactivity-escalate:{alert_id}` raises it to
  'critical' if it is still unanswered one threshold later (an 'escalated' change).
A sign of life while the alert is active resolves it (the condition cleared); bed
presence does not (somebody in bed may be the elder who needs help).

Threshold of a gap that starts at t: the routine's usual gap for t's hour of the week
(routine.py), clamped to [floor, ceiling]; the floor is the night one in quiet hours,
and a gap that runs into quiet hours is judged by the night threshold too. Without a
learned routine (a new elder: ~3 weeks) a night gap may also last until quiet hours end
plus the morning grace (source "wake"; never past the ceiling): sleep ends in the
morning, not 8 h after the last sign before bed (asleep at 21:15 is not an alarm at
05:15). Bed presence (radar) counts as a sign of life in quiet hours only, and then no
later than the day floor after quiet hours end: asleep, not gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock
from carewatch.messages import Event
from carewatch.settings import Settings
from rules_engine.decisions import (
    CancelTimer,
    Decision,
    OpenAlert,
    RenotifyAlert,
    ScheduleTimer,
    alert_id_for,
)
from rules_engine.detectors.base import Detector, DueTimer, ElderView
from rules_engine.detectors.clearing import resolve_if_active
from rules_engine.detectors.memo import DeadlineMemo, LatestTimes, ValueMemo
from rules_engine.fields import is_integer, is_number
from rules_engine.localtime import SITE_TZ, hour_of_week, in_window, next_at_hour
from rules_engine.routine import WATER_USE_MIN_LPM, Routine, RoutineBook
from rules_engine.thresholds import Thresholds

Sign = Literal["motion", "door", "bed_exit", "water", "steps", "in_bed"]
Source = Literal["routine", "floor", "ceiling", "wake"]

_DEFAULTS = Thresholds(sos_cancel_window_s=0.0, fall_confirm_window_s=0.0)
_DEFAULT_QUIET = (_DEFAULTS.quiet_start_h, _DEFAULTS.quiet_end_h)

DEADLINE = "inactivity"
AWAY = "inactivity-away"
ESCALATE = "inactivity-escalate"


@dataclass(frozen=True, slots=True)
class Threshold:
    seconds: float
    source: Source
    floor_s: float  # the floor it was clamped to (day or night)


@dataclass(frozen=True, slots=True)
class Deadline:
    due_ms: int
    threshold: Threshold


def threshold_at(
    at_ms: int, th: Thresholds, routine: Routine | None, tz: ZoneInfo = SITE_TZ
) -> Threshold:
    quiet = in_window(at_ms, th.quiet_start_h, th.quiet_end_h, tz)
    floor = th.inactivity_floor_night_s if quiet else th.inactivity_floor_day_s
    ceiling = max(th.inactivity_ceiling_s, floor)  # a misconfigured ceiling never wins
    usual = routine.usual_gap_s(hour_of_week(at_ms, tz)) if routine is not None else None
    if usual is None or usual <= floor:
        return Threshold(floor, "floor", floor)
    if usual >= ceiling:
        return Threshold(ceiling, "ceiling", floor)
    return Threshold(usual, "routine", floor)


def inactivity_deadline(
    at_ms: int, sign: Sign, th: Thresholds, routine: Routine | None, tz: ZoneInfo = SITE_TZ
) -> Deadline:
    """When a gap that starts with `sign` at `at_ms` becomes alarming."""
    threshold = threshold_at(at_ms, th, routine, tz)
    due = at_ms + round(threshold.seconds * 1000)
    night_from: int | None = None  # when the gap's quiet hours begin
    if in_window(at_ms, th.quiet_start_h, th.quiet_end_h, tz):
        night_from = at_ms
    else:
        quiet_start = next_at_hour(at_ms, th.quiet_start_h, tz)
        if due > quiet_start:
            night_from = quiet_start
            night = threshold_at(quiet_start, th, routine, tz)  # the gap runs into the night
            if at_ms + round(night.seconds * 1000) > due:
                threshold = night
                due = at_ms + round(night.seconds * 1000)
    if night_from is not None and threshold.source == "floor":
        # no routine to say when this elder gets up: the end of quiet hours + the grace
        wake_by = next_at_hour(night_from, th.quiet_end_h, tz) + round(
            th.inactivity_morning_grace_s * 1000
        )
        ceiling_at = at_ms + round(max(th.inactivity_ceiling_s, threshold.floor_s) * 1000)
        wake_due = min(wake_by, ceiling_at)
        if wake_due > due:
            due = wake_due
            threshold = Threshold((due - at_ms) / 1000, "wake", threshold.floor_s)
    if sign == "in_bed":
        wake_by = next_at_hour(at_ms, th.quiet_end_h, tz) + round(th.inactivity_floor_day_s * 1000)
        due = min(due, wake_by)
    return Deadline(due, threshold)


class SignsOfLife:
    """Which events are signs of life; steps count when they went up (per device)."""

    def __init__(self) -> None:
        self._steps: ValueMemo[int] = ValueMemo()

    def classify(self, event: Event) -> Sign | None:
        if event.type == "event":
            if event.event in ("door_open", "door_close"):
                return "door"
            return "bed_exit" if event.event == "bed_exit" else None
        if event.type != "telemetry":
            return None
        data = event.data
        if data.get("motion") is True:
            return "motion"
        flow = data.get("water_flow")
        if is_number(flow) and flow > WATER_USE_MIN_LPM:
            return "water"
        steps = data.get("steps")
        if is_integer(steps):
            seen = self._steps.observe(event.device_id, steps, event.id)
            if seen.previous is not None and steps > seen.previous:
                return "steps"
        if data.get("presence") is True and event.device_kind == "radar":
            return "in_bed"  # only counts in quiet hours (decided with the profile)
        return None


def sign_time(event: Event) -> int:
    """Device time, but never later than receipt: a fast device clock must not
    push the deadline into the future."""
    return min(event.device_time_ms, event.received_ms)


DEADLINE_SLACK_MS = 10 * 60_000


class InactivityDetector(Detector):
    timer_kinds = frozenset({DEADLINE, AWAY, ESCALATE})

    def __init__(self, routines: RoutineBook | None = None, tz: ZoneInfo = SITE_TZ) -> None:
        self.routines = routines or RoutineBook(tz)
        self.tz = tz
        self._signs = SignsOfLife()
        # A deadline is rewritten only when a sign moves it by DEADLINE_SLACK_MS (or a tenth
        # of the threshold, if shorter) or more, so an active elder costs one database
        # write per slack, not one per message; a deadline left stale by that is re-armed
        # from the latest sign when it comes due.
        self._written = DeadlineMemo(slack_ms=DEADLINE_SLACK_MS, slack_fraction=0.1)
        self._door = LatestTimes()  # per elder: last door event
        self._inside = LatestTimes()  # per elder: last sign that can only come from inside
        self._any = LatestTimes()  # per elder: last sign of any kind

    def _note(self, elder_id: str, sign: Sign, at_ms: int) -> None:
        if sign != "in_bed":
            self._any.saw(elder_id, at_ms)
        if sign == "door":
            self._door.saw(elder_id, at_ms)
        elif sign != "steps":  # a band's steps come along when the elder goes out
            self._inside.saw(elder_id, at_ms)

    def _out_since(self, elder_id: str) -> int | None:
        """The door time if nothing inside was seen after it (this worker's knowledge)."""
        door, inside = self._door.get(elder_id), self._inside.get(elder_id)
        return door if door is not None and (inside is None or door > inside) else None

    async def refresh(self, pool: AsyncConnectionPool, settings: Settings, clock: Clock) -> None:
        await self.routines.refresh(pool, clock)

    def wants(self, event: Event) -> bool:
        sign = self._signs.classify(event)
        if sign is None:
            return False
        self._note(event.elder_id, sign, sign_time(event))
        if sign in ("door", "bed_exit"):
            return True  # rare, and the door decides whether the elder is out
        at = sign_time(event)
        if sign == "in_bed" and not in_window(at, *_DEFAULT_QUIET, self.tz):
            # a radar reports presence all day: only the night's can move the deadline
            # (profiles with other quiet hours get bed presence within the default ones)
            return False
        return self._written.worth_writing(event.elder_id, at, event.id)

    def on_event(self, event: Event, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        sign = self._signs.classify(event)
        if sign is None:
            return ()
        th = elder.thresholds
        at = sign_time(event)
        self._note(elder.elder_id, sign, at)
        if sign == "in_bed" and not in_window(at, th.quiet_start_h, th.quiet_end_h, self.tz):
            return ()  # lying still by day is what this rule is for
        routine = self.routines.get(elder.elder_id, clock.now_ms())
        deadline = inactivity_deadline(at, sign, th, routine, self.tz)
        self._written.wrote(elder.elder_id, event.id, at, deadline.due_ms)
        payload: dict[str, object] = {
            "sign": sign,
            "sign_ms": at,
            "event_id": event.id,
            "threshold_s": deadline.threshold.seconds,
            "source": deadline.threshold.source,
            "floor_s": deadline.threshold.floor_s,
        }
        if deadline.threshold.source == "wake":
            payload["morning_grace_s"] = th.inactivity_morning_grace_s
            payload["quiet_end_h"] = th.quiet_end_h
        out_since = self._out_since(elder.elder_id)
        if sign in ("door", "steps") and out_since is not None:
            payload["out_since_ms"] = out_since  # walking outside: still out of home
        decisions: list[Decision] = [
            ScheduleTimer(
                f"{DEADLINE}:{elder.elder_id}", DEADLINE, deadline.due_ms, payload, replace=True
            ),
            CancelTimer(f"{AWAY}:{elder.elder_id}"),
        ]
        if sign == "in_bed":
            return decisions  # somebody in bed is not a sign the alert can be closed on
        resolved = resolve_if_active(
            elder,
            "inactivity",
            "inactivity.sign_of_life",
            event.id,
            details={"sign": sign, "device_id": event.device_id},
        )
        if resolved:
            decisions += [
                *resolved,
                CancelTimer(f"{ESCALATE}:{elder.active['inactivity'].alert_id}"),
            ]
        return decisions

    def on_timer(self, timer: DueTimer, elder: ElderView, clock: Clock) -> Sequence[Decision]:
        if timer.kind == ESCALATE:
            return self._escalate(timer, elder)
        if "inactivity" in elder.active:
            return ()  # already alerted (a deadline armed again meanwhile)
        th = elder.thresholds
        payload = timer.payload
        sign_ms = _int(payload.get("sign_ms"), timer.due_ms)
        latest = self._any.get(elder.elder_id)
        if timer.kind == DEADLINE and latest is not None and latest > sign_ms:
            # signs within the write slack did not move the stored deadline: re-arm it from
            # the latest one instead of alerting (a restarted worker has no such memory and
            # fires at most one slack early, against thresholds of hours)
            routine = self.routines.get(elder.elder_id, clock.now_ms())
            renewed = inactivity_deadline(latest, "motion", th, routine, self.tz)
            if renewed.due_ms > clock.now_ms():
                again = {
                    **payload,
                    "sign_ms": latest,
                    "threshold_s": renewed.threshold.seconds,
                    "source": renewed.threshold.source,
                }
                inside = self._inside.get(elder.elder_id)
                if inside is not None and inside >= latest:  # back inside since the door
                    again.pop("out_since_ms", None)
                    again["sign"] = "motion"
                elif again.get("sign") != "door":
                    again["sign"] = "steps"
                return [
                    ScheduleTimer(timer.timer_id, DEADLINE, renewed.due_ms, again, replace=True)
                ]
        threshold_s = _float(payload.get("threshold_s"), th.inactivity_floor_day_s)
        details: dict[str, object] = {
            "last_sign": payload.get("sign"),
            "last_sign_ms": sign_ms,
            "last_sign_event_id": payload.get("event_id"),
            "threshold_source": payload.get("source"),
        }
        # out of home: the door was the last sign, or only the band's steps came after it
        if timer.kind == DEADLINE and (payload.get("sign") == "door" or "out_since_ms" in payload):
            out_since = _int(payload.get("out_since_ms"), sign_ms)
            away_due = out_since + round(th.inactivity_out_ceiling_s * 1000)
            away = {**payload, "out_ceiling_s": th.inactivity_out_ceiling_s}
            return [ScheduleTimer(f"{AWAY}:{elder.elder_id}", AWAY, away_due, away, replace=True)]
        if timer.kind == AWAY:
            rule = "inactivity.out_of_home_ceiling"
            threshold = {"inactivity_out_ceiling_s": th.inactivity_out_ceiling_s}
            details["threshold_source"] = "out_ceiling"
        else:
            rule = "inactivity.no_sign_of_life"
            threshold = {
                "inactivity_s": threshold_s,
                "floor_s": _float(payload.get("floor_s"), th.inactivity_floor_day_s),
                "ceiling_s": th.inactivity_ceiling_s,
            }
            for key in ("morning_grace_s", "quiet_end_h"):  # a "wake" deadline's inputs
                if key in payload:
                    threshold[key] = _float(payload[key], 0.0)
        source_id = f"{timer.timer_id}@{timer.due_ms}"
        alert_id = alert_id_for("inactivity", source_id)
        return [
            OpenAlert(
                alert_id=alert_id,
                kind="inactivity",
                severity="warning",
                status="open",
                rule=rule,
                threshold=threshold,
                confidence=None,
                device_id=None,
                source_event_id=source_id,
                device_time_ms=timer.due_ms,
                details=details,
            ),
            ScheduleTimer(
                f"{ESCALATE}:{alert_id}",
                ESCALATE,
                clock.now_ms() + round(threshold_s * 1000),
                {"alert_id": alert_id, "after_s": threshold_s},
            ),
        ]

    def _escalate(self, timer: DueTimer, elder: ElderView) -> Sequence[Decision]:
        active = elder.active.get("inactivity")
        if (
            active is None
            or active.alert_id != timer.payload.get("alert_id")
            or active.severity != "warning"
        ):
            return ()
        return [
            RenotifyAlert(
                active.alert_id,
                "inactivity",
                "escalated",
                "inactivity.escalate",
                timer.timer_id,
                severity="critical",
                details={"after_s": timer.payload.get("after_s")},
            )
        ]


def _float(raw: object, default: float) -> float:
    return float(raw) if is_number(raw) else default


def _int(raw: object, default: int) -> int:
    return int(raw) if is_number(raw) else default
