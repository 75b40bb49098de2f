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

Rooms (docs/inactivity.md): with sensors placed in rooms (`RoomBook`, devices.room) and a
home routine learned from them (`HomeRoutineBook`), the deadline is the earliest of the
room's usual still period at that hour (`room_deadline`; the bedroom at night keeps the
night rules above), time in the bathroom beyond the usual stay, and a night bed exit with
no return to the bedroom within the usual time; a lone sign starts neither of the last
two (home_routine.moved). While the home routine rests on less than a week, a still
period is at least the learning floor. Where the elder was last seen (`Whereabouts`) is
this worker's memory of the signs, rebuilt from the stored signs the first time the
process hears from the elder (`recall`); the alert names the last room
(最后一次活动：卫生间 02:14) and any home sensor known broken (detectors/home_sensors.py).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from carewatch.messages import Event
from carewatch.rooms import BATHROOM, BEDROOM, ENTRANCE
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
from rules_engine.detectors.home_sensors import down_text, sensors_down
from rules_engine.detectors.memo import DeadlineMemo, LatestTimes, ValueMemo
from rules_engine.fields import is_integer, is_number
from rules_engine.home_routine import (
    HomeRoutine,
    HomeRoutineBook,
    LifeSign,
    RoomBook,
    Whereabouts,
    after_noon_h,
    learn,
    moved,
    replay_whereabouts,
)
from rules_engine.localtime import SITE_TZ, hour_of_day, hour_of_week, in_window, next_at_hour
from rules_engine.routine import WATER_USE_MIN_LPM, Routine, RoutineBook
from rules_engine.thresholds import Thresholds

Sign = Literal[
    "motion",
    "door",
    "bed_exit",
    "water",
    "steps",
    "in_bed",
    "contact",
    "switch",
    "appliance",
    "visit",  # a grid worker saw the elder at home (visits/, docs/visits.md)
]
Source = Literal[
    "routine", "floor", "ceiling", "wake", "room", "bathroom", "night_exit", "learning"
]

_DEFAULTS = Thresholds(sos_cancel_window_s=0.0, fall_confirm_window_s=0.0)
_DEFAULT_QUIET = (_DEFAULTS.quiet_start_h, _DEFAULTS.quiet_end_h)

DEADLINE = "inactivity"
AWAY = "inactivity-away"
ESCALATE = "inactivity-escalate"

NO_SIGN = "inactivity.no_sign_of_life"
BATHROOM_RULE = "inactivity.bathroom_too_long"
NIGHT_EXIT_RULE = "inactivity.night_no_return"

RISE_MARGIN_H = 1.0  # a bed exit this close to the usual getting-up time may be getting up
PLUG_ON_W = 10.0  # a plug drawing more is an appliance in use (a TV on standby draws less)
METER_STEP_W = 300.0  # a meter reading up this much on the last: a kettle, a cooker...


@dataclass(frozen=True, slots=True)
class Threshold:
    seconds: float
    source: Source
    floor_s: float  # the floor it was clamped to (day or night)


@dataclass(frozen=True, slots=True)
class Deadline:
    due_ms: int
    threshold: Threshold
    rule: str = NO_SIGN


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


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), max(high, low))


def room_deadline(
    at_ms: int,
    where: Whereabouts,
    th: Thresholds,
    home: HomeRoutine,
    fallback: Deadline,
    tz: ZoneInfo = SITE_TZ,
) -> Deadline:
    """The earliest of the rules by room for a gap that starts at `at_ms` with the elder
    last seen in `where`: the usual still period at that hour of the room the last sign
    came from (else `fallback`, the deadline without rooms), time in the bathroom, a night
    bed exit with no return. The bedroom at night keeps the night rules (`fallback`):
    asleep is not still. The bathroom and night-exit rules need the elder to have moved
    there (`Whereabouts.room`); a lone stray sign is judged by its room's still period.

    While the home routine rests on less than `inactivity_learning_days` of signs, a still
    period is never shorter than `inactivity_learning_floor_s`: a few days rarely show an
    elder's longest sittings (a call centre's first week: conservative, not blind)."""
    margin = th.inactivity_room_margin
    quiet = in_window(at_ms, th.quiet_start_h, th.quiet_end_h, tz)
    room = where.sign_room
    usual = home.usual_still_s(room, hour_of_day_int(at_ms, tz))
    learning = home.days < th.inactivity_learning_days
    candidates: list[Deadline] = []
    if usual is None:
        still = fallback
    else:
        floor = th.inactivity_room_floor_s
        seconds = _clamp(usual * margin, floor, th.inactivity_ceiling_s)
        due = at_ms + round(seconds * 1000)
        night_from = at_ms if quiet else next_at_hour(at_ms, th.quiet_start_h, tz)
        if room == BEDROOM and due > night_from:
            still = fallback  # in bed for the night
        else:
            still = Deadline(due, Threshold(seconds, "room", floor))
    if learning:
        still = learning_floor(at_ms, still, th)
    candidates.append(still)
    if where.room == BATHROOM and home.bathroom_stay_s is not None:
        floor = th.inactivity_bathroom_floor_s
        seconds = _clamp(home.bathroom_stay_s * margin, floor, th.inactivity_bathroom_ceiling_s)
        candidates.append(
            Deadline(
                where.since_ms + round(seconds * 1000),
                Threshold(seconds, "bathroom", floor),
                BATHROOM_RULE,
            )
        )
    if (
        where.exit_ms is not None
        and home.night_exit_s is not None
        and (home.rise_h is None or after_noon_h(where.exit_ms, tz) < home.rise_h - RISE_MARGIN_H)
    ):
        floor = th.inactivity_night_exit_floor_s
        seconds = _clamp(home.night_exit_s * margin, floor, th.inactivity_night_exit_ceiling_s)
        candidates.append(
            Deadline(
                where.exit_ms + round(seconds * 1000),
                Threshold(seconds, "night_exit", floor),
                NIGHT_EXIT_RULE,
            )
        )
    return min(candidates, key=lambda d: d.due_ms)


def learning_floor(at_ms: int, deadline: Deadline, th: Thresholds) -> Deadline:
    """`deadline`, or `inactivity_learning_floor_s` after the sign if that is later."""
    floor = th.inactivity_learning_floor_s
    if deadline.due_ms >= at_ms + round(floor * 1000):
        return deadline
    return Deadline(at_ms + round(floor * 1000), Threshold(floor, "learning", floor), deadline.rule)


def hour_of_day_int(ms: int, tz: ZoneInfo) -> int:
    return int(hour_of_day(ms, tz))


def last_seen_text(
    room: str, at_ms: int, tz: ZoneInfo, stray: tuple[str, int] | None = None
) -> str:
    """The alert's context for the people paged: 最后一次活动：卫生间 02:14, and a lone
    sign from another room after it: 最后一次活动：卧室 02:24（之后门口 03:51 有一次感应）."""
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    text = f"最后一次活动：{room} {local:%H:%M}"
    if stray is not None:
        later = datetime.fromtimestamp(stray[1] / 1000, tz)
        text += f"（之后{stray[0]} {later:%H:%M} 有一次感应）"
    return text


class SignsOfLife:
    """Which events are signs of life; steps count when they went up (per device)."""

    def __init__(self) -> None:
        self._steps: ValueMemo[int] = ValueMemo()
        self._power_w: ValueMemo[float] = ValueMemo()

    def _power(self, event: Event, watts: float) -> Sign | None:
        """A plug switched on or off (across PLUG_ON_W), or the home's meter stepping up
        by METER_STEP_W: somebody used an appliance. A fridge's cycles stay below both."""
        previous = self._power_w.swap(event.device_id, watts)
        if previous is None:
            return None
        if event.device_kind == "power_meter":
            return "appliance" if watts - previous >= METER_STEP_W else None
        return "appliance" if (watts > PLUG_ON_W) != (previous > PLUG_ON_W) else None

    def classify(self, event: Event) -> Sign | None:
        if event.type == "event":
            match event.event:
                case "door_open" | "door_close":
                    return "door"
                case "bed_exit":
                    return "bed_exit"
                case "contact_open" | "contact_close":
                    return "contact"
                case "switch_on" | "switch_off":
                    return "switch"
                case "visit_checkin":
                    return "visit"
            return None
        if event.type != "telemetry":
            return None
        data = event.data
        if data.get("motion") is True:
            return "motion"
        power = data.get("power_w")
        if is_number(power):
            return self._power(event, float(power))
        flow = data.get("water_flow")
        if is_number(flow) and flow > WATER_USE_MIN_LPM:
            return "water"
        steps = data.get("steps")
        if is_integer(steps):
            previous = self._steps.swap(event.device_id, steps)
            if previous is not None and steps > previous:
                return "steps"
        if data.get("presence") is True and event.device_kind == "radar":
            return "in_bed"  # only counts in quiet hours (decided with the profile)
        return None


def sign_time(event: Event) -> int:
    """Device time, but never later than receipt: a fast device clock must not
    push the deadline into the future."""
    return min(event.device_time_ms, event.received_ms)


DEADLINE_SLACK_MS = 10 * 60_000
MAX_ELDERS = 500_000
RECALL_PER_REFRESH = 20  # elders whose whereabouts are rebuilt per refresh
RECALL_BUFFER = 1000  # room changes kept per elder until then (a run in one room: 2)


@dataclass(frozen=True, slots=True)
class SignSeen:
    """A sign of life worth writing: the deadline it moves, planned when observed."""

    event: Event
    sign: Sign
    due_ms: int
    payload: Mapping[str, object]


def could_be_sign(event: Event) -> bool:
    """Pure: may `event` be a sign of life (SignsOfLife.classify decides, with memory)?"""
    if event.type == "event":
        return event.event in _SIGN_EVENTS
    if event.type != "telemetry":
        return False
    data = event.data
    if (
        data.get("motion") is True
        or is_number(data.get("power_w"))
        or is_integer(data.get("steps"))
    ):
        return True
    flow = data.get("water_flow")
    if is_number(flow) and flow > WATER_USE_MIN_LPM:
        return True
    return data.get("presence") is True and event.device_kind == "radar"


_SIGN_EVENTS = frozenset(
    {
        "door_open",
        "door_close",
        "bed_exit",
        "contact_open",
        "contact_close",
        "switch_on",
        "switch_off",
        "visit_checkin",  # carewatch-made: a grid worker saw the elder at home (visits/)
    }
)


class InactivityDetector(Detector[SignSeen]):
    timer_kinds = frozenset({DEADLINE, AWAY, ESCALATE})
    telemetry_fields = frozenset({"motion", "power_w", "water_flow", "steps", "presence"})

    def __init__(
        self,
        routines: RoutineBook | None = None,
        tz: ZoneInfo = SITE_TZ,
        rooms: RoomBook | None = None,
        homes: HomeRoutineBook | None = None,
    ) -> None:
        self.routines = routines or RoutineBook(tz)
        self.tz = tz
        self.rooms = rooms or RoomBook()
        self.homes = homes or HomeRoutineBook(tz)
        self._signs = SignsOfLife()
        # A deadline is rewritten only when a sign moves it by DEADLINE_SLACK_MS (or a tenth
        # of the threshold, if shorter) or more, so an active elder costs one database
        # write per slack, not one per message; a deadline left stale by that is re-armed
        # from the latest sign when it comes due.
        self._written = DeadlineMemo(slack_ms=DEADLINE_SLACK_MS, slack_fraction=0.1)
        self._door = LatestTimes()  # per elder: last door event
        self._inside = LatestTimes()  # per elder: last sign that can only come from inside
        self._any = LatestTimes()  # per elder: last sign of any kind
        self._where: dict[str, Whereabouts] = {}  # per elder: signs by room (bounded below)
        # Elders whose whereabouts began in this process (a restart, a new elder): the
        # signs by room seen here until `refresh` rebuilds the whereabouts from the stored
        # signs before them (RECALL_MS) followed by these.
        self._recall: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()
        self._replan: set[str] = set()  # rebuilt: the next sign rewrites the deadline

    def _note(self, elder_id: str, sign: Sign, at_ms: int, device_id: str) -> bool:
        """Remember the sign; True if it changed the elder's room or bed-exit state."""
        if sign != "in_bed":
            self._any.saw(elder_id, at_ms)
        if sign == "door":
            self._door.saw(elder_id, at_ms)
        elif sign != "steps":  # a band's steps come along when the elder goes out
            self._inside.saw(elder_id, at_ms)
        room = self.rooms.room(device_id) if sign != "in_bed" else None
        if room is None:
            return False
        before = self._where.get(elder_id)
        quiet = in_window(at_ms, *_DEFAULT_QUIET, self.tz)
        after = moved(before, room, at_ms, quiet)
        if len(self._where) >= MAX_ELDERS and elder_id not in self._where:
            self._where.clear()  # a worker's elders are far fewer; never unbounded
            self._recall.clear()
            self._replan.clear()
        self._where[elder_id] = after
        if before is None:
            self._recall.setdefault(elder_id, [])
        buffer = self._recall.get(elder_id)
        if buffer is not None and (not buffer or buffer[-1] != (at_ms, room)):
            if len(buffer) >= 2 and buffer[-1][1] == buffer[-2][1] == room:
                buffer[-1] = (at_ms, room)  # a run in one room: its first and last sign do
            elif len(buffer) >= RECALL_BUFFER:
                del self._recall[elder_id]  # never rebuilt: this worker's memory only
            else:
                buffer.append((at_ms, room))
        if elder_id in self._replan:
            return True  # rebuilt whereabouts: this sign rewrites the deadline
        return before is None or (before.room, before.exit_ms, before.stray_room) != (
            after.room,
            after.exit_ms,
            after.stray_room,
        )

    def _out_since(self, elder_id: str) -> int | None:
        """The door time if nothing inside was seen after it (this worker's knowledge)."""
        door, inside = self._door.get(elder_id), self._inside.get(elder_id)
        return door if door is not None and (inside is None or door > inside) else None

    def to_recall(self, limit: int = RECALL_PER_REFRESH) -> list[tuple[str, int | None]]:
        """(elder, first sign here) of elders first seen by this process (None: no sign
        with a room yet): their stored signs of the RECALL_MS before it (before now) are
        to be read (rules_engine.inputs) and handed to `recalled`."""
        return [
            (elder_id, buffer[0][0] if buffer else None)
            for elder_id, buffer in itertools.islice(self._recall.items(), limit)
        ]

    def recalled(self, elder_id: str, stored: Sequence[LifeSign]) -> None:
        """Rebuild the whereabouts of `elder_id` from its stored signs, then the signs seen
        here (which may have come in while the store was read)."""
        buffer = self._recall.pop(elder_id, None)
        if buffer is None:
            return
        signs = [(s.at_ms, s.room) for s in stored if s.room is not None]
        where = replay_whereabouts([*signs, *buffer], self.tz)
        if where is not None and elder_id in self._where:
            self._where[elder_id] = where
            self._replan.add(elder_id)

    def learn_from_signs(
        self, elder_id: str, signs: Sequence[tuple[int, str]], now_ms: int, days: int = 14
    ) -> None:
        """Learn the home routine from (time, device id) signs before now (the evaluation
        replays a log through this; the worker's refresh loads the signs from telemetry)."""
        since = now_ms - days * 86_400_000
        learned: list[LifeSign] = []
        for at_ms, device_id in signs:
            if since <= at_ms < now_ms:
                placed = self.rooms.get(device_id)
                room = placed.room if placed is not None else None
                door = placed is not None and placed.kind == "door"
                learned.append(LifeSign(at_ms, room, door))
        self.homes.put(elder_id, learn(learned, self.tz), now_ms)

    def _plan(
        self, elder_id: str, at: int, sign: Sign, th: Thresholds, now_ms: int
    ) -> tuple[Deadline, Whereabouts | None]:
        """The deadline of a gap starting with `sign` at `at`, by room where known."""
        routine = self.routines.get(elder_id, now_ms)
        deadline = inactivity_deadline(at, sign, th, routine, self.tz)
        where = self._where.get(elder_id)
        if where is None or sign in ("door", "in_bed"):
            return deadline, where
        home = self.homes.get(elder_id, now_ms)
        if home is None:
            return deadline, where
        return room_deadline(at, where, th, home, deadline, self.tz), where

    def _payload(
        self,
        deadline: Deadline,
        where: Whereabouts | None,
        sign: Sign,
        at: int,
        event_id: str | None,
        th: Thresholds,
    ) -> dict[str, object]:
        payload: dict[str, object] = {
            "sign": sign,
            "sign_ms": at,
            "event_id": event_id,
            "threshold_s": deadline.threshold.seconds,
            "source": deadline.threshold.source,
            "floor_s": deadline.threshold.floor_s,
        }
        if deadline.rule != NO_SIGN:
            payload["rule"] = deadline.rule
        if deadline.threshold.source == "wake":
            payload["morning_grace_s"] = th.inactivity_morning_grace_s
            payload["quiet_end_h"] = th.quiet_end_h
        if where is not None:
            payload["room"] = where.room
            payload["room_since_ms"] = where.since_ms
            payload["room_last_ms"] = where.last_ms
            if where.exit_ms is not None:
                payload["bed_exit_ms"] = where.exit_ms
            if where.stray_room is not None:
                payload["stray_room"] = where.stray_room
                payload["stray_ms"] = where.stray_ms
        return payload

    def wants(self, event: Event) -> bool:
        return could_be_sign(event)

    def uses_profile(self, event: Event) -> bool:
        return True  # the deadline a sign writes is the profile's

    def observe(self, event: Event, known: ElderView | None) -> SignSeen | None:
        """Note the sign; plan the deadline when it is worth writing (it moves the
        deadline by the slack or more, or the room, the door or a bed exit changed)."""
        sign = self._signs.classify(event)
        if sign is None or known is None:
            return None
        elder_id = event.elder_id
        at = sign_time(event)
        changed = self._note(elder_id, sign, at, event.device_id)
        if not (sign in ("door", "bed_exit") or changed):
            if sign == "in_bed" and not in_window(at, *_DEFAULT_QUIET, self.tz):
                # a radar reports presence all day: only the night's can move the deadline
                # (profiles with other quiet hours get bed presence within the default ones)
                return None
            if not self._written.worth_writing(elder_id, at):
                return None
        th = known.thresholds
        if sign == "in_bed" and not in_window(at, th.quiet_start_h, th.quiet_end_h, self.tz):
            return None  # lying still by day is what this rule is for
        deadline, where = self._plan(elder_id, at, sign, th, event.received_ms)
        self._written.wrote(elder_id, at, deadline.due_ms)
        self._replan.discard(elder_id)
        payload = self._payload(deadline, where, sign, at, event.id, th)
        out_since = self._out_since(elder_id)
        if sign in ("door", "steps") and out_since is not None:
            payload["out_since_ms"] = out_since  # walking outside: still out of home
        return SignSeen(event, sign, deadline.due_ms, payload)

    def decide(self, seen: SignSeen, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        event, sign = seen.event, seen.sign
        decisions: list[Decision] = [
            ScheduleTimer(
                f"{DEADLINE}:{elder.elder_id}", DEADLINE, seen.due_ms, seen.payload, replace=True
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

    def on_timer(self, timer: DueTimer, elder: ElderView, now_ms: int) -> Sequence[Decision]:
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
            renewed, where = self._plan(elder.elder_id, latest, "motion", th, now_ms)
            fresh = self._payload(renewed, where, "motion", latest, None, th)
            again = {**payload, **fresh, "event_id": payload.get("event_id")}
            if renewed.rule == NO_SIGN:
                again.pop("rule", None)
            for key in ("bed_exit_ms", "stray_room", "stray_ms"):  # not the old whereabouts'
                if key not in fresh:
                    again.pop(key, None)
            inside = self._inside.get(elder.elder_id)
            if inside is not None and inside >= latest:  # back inside since the door
                again.pop("out_since_ms", None)
                again["sign"] = "motion"
            elif payload.get("sign") != "door":
                again["sign"] = "steps"
            else:
                again["sign"] = "door"
            if renewed.due_ms > now_ms:
                return [
                    ScheduleTimer(timer.timer_id, DEADLINE, renewed.due_ms, again, replace=True)
                ]
            payload, sign_ms = again, latest  # already due: alert on the latest sign's terms
        threshold_s = _float(payload.get("threshold_s"), th.inactivity_floor_day_s)
        details: dict[str, object] = {
            "last_sign": payload.get("sign"),
            "last_sign_ms": sign_ms,
            "last_sign_event_id": payload.get("event_id"),
            "threshold_source": payload.get("source"),
        }
        room = payload.get("room")
        if isinstance(room, str):
            room_last = _int(payload.get("room_last_ms"), sign_ms)
            details["last_room"] = room
            details["last_room_ms"] = room_last
            stray = payload.get("stray_room")
            stray_ms = payload.get("stray_ms")
            lone = (
                (stray, int(stray_ms)) if isinstance(stray, str) and is_integer(stray_ms) else None
            )
            details["context"] = last_seen_text(room, room_last, self.tz, lone)
            if "bed_exit_ms" in payload:
                details["bed_exit_ms"] = payload["bed_exit_ms"]
            if lone is not None:
                details["stray_room"], details["stray_ms"] = lone
        down = sensors_down(elder)
        door_down = any(d.get("sensor_kind") == "door" for d in down)
        if down:
            details["sensors_down"] = down
            details["context"] = str(details.get("context", "")) + down_text(down)
        # out of home: the door was the last sign, or only the band's steps came after it;
        # with the door contact down, a gap that starts at the entrance may be an outing
        if timer.kind == DEADLINE and (
            payload.get("sign") == "door"
            or "out_since_ms" in payload
            or (door_down and room == ENTRANCE)
        ):
            out_since = _int(payload.get("out_since_ms"), sign_ms)
            away_due = out_since + round(th.inactivity_out_ceiling_s * 1000)
            away = {**payload, "out_ceiling_s": th.inactivity_out_ceiling_s}
            return [ScheduleTimer(f"{AWAY}:{elder.elder_id}", AWAY, away_due, away, replace=True)]
        if timer.kind == AWAY:
            rule = "inactivity.out_of_home_ceiling"
            threshold = {"inactivity_out_ceiling_s": th.inactivity_out_ceiling_s}
            details["threshold_source"] = "out_ceiling"
        else:
            named = payload.get("rule")
            rule = named if named in (BATHROOM_RULE, NIGHT_EXIT_RULE) else NO_SIGN
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
                now_ms + round(threshold_s * 1000),
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
