"""Escalation policies as data, and the pure function that plans one step.

A policy is an ordered list of steps; each step names who to notify (target kinds),
on which channels, and how long to wait for an acknowledgement before the next step.
Nothing here does I/O: the escalation loop feeds in the alert severity, the step and
an injected clock. POLICIES is the built-in table; policies imported per district or
care profile (notifier.policy_ledger, docs/policies.md) are chosen by select_policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time
from typing import Literal

from carewatch.clock import Clock
from carewatch.messages import Severity

TargetKind = Literal["grid_worker", "family_first", "family_all", "nearest_station", "duty_officer"]
ChannelName = Literal["sms", "wecom", "voice"]

BOTH_CHANNELS: tuple[ChannelName, ...] = ("sms", "wecom")


@dataclass(frozen=True, slots=True)
class Step:
    targets: tuple[TargetKind, ...]
    channels: tuple[ChannelName, ...] = BOTH_CHANNELS
    wait_s: float | None = None  # None: settings.escalation_wait_s


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    steps: tuple[Step, ...]


POLICIES: dict[Severity, Policy] = {
    # Critical: the two people most likely to be close get it at once.
    "critical": Policy(
        "critical",
        (
            Step(("grid_worker", "family_first")),
            Step(("family_all", "nearest_station")),
            Step(("duty_officer",)),
        ),
    ),
    "warning": Policy(
        "warning",
        (
            Step(("grid_worker",)),
            Step(("family_first",)),
            Step(("nearest_station",)),
        ),
    ),
    # Information is not pushed: it is on the alert timeline and the operators' pages
    # (a daily digest is on the roadmap, docs/architecture.md).
    "info": Policy("info", ()),
}


def policy_for(severity: Severity) -> Policy:
    """The built-in policy of a severity (the default when no policy ledger applies)."""
    return POLICIES[severity]


TARGET_KINDS: tuple[TargetKind, ...] = (
    "grid_worker",
    "family_first",
    "family_all",
    "nearest_station",
    "duty_officer",
)
CHANNEL_NAMES: tuple[ChannelName, ...] = ("sms", "wecom", "voice")
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")


@dataclass(frozen=True, slots=True)
class ScopedPolicy:
    """An imported policy (notifier.policy_ledger): the steps of one severity for one
    district and/or care profile; None matches any."""

    severity: Severity
    district: str | None
    care_profile: str | None
    steps: tuple[Step, ...]

    @property
    def name(self) -> str:
        """'critical@渝中区/alone'; '*' where the policy matches any."""
        return f"{self.severity}@{self.district or '*'}/{self.care_profile or '*'}"

    def as_policy(self) -> Policy:
        return Policy(self.name, self.steps)


def select_policy(
    imported: Sequence[ScopedPolicy],
    severity: Severity,
    district: str | None,
    care_profile: str | None,
) -> Policy:
    """The policy for an alert of `severity` of an elder in `district` with
    `care_profile` (pure). The most specific imported policy wins: district and care
    profile, then care profile alone, then district alone, then one for any elder; the
    built-in policy when none matches (or nothing was imported)."""
    ranked: list[tuple[int, ScopedPolicy]] = []
    for p in imported:
        if p.severity != severity:
            continue
        if p.district is not None and p.district != district:
            continue
        if p.care_profile is not None and p.care_profile != care_profile:
            continue
        rank = (2 if p.care_profile is not None else 0) + (1 if p.district is not None else 0)
        ranked.append((rank, p))
    if not ranked:
        return policy_for(severity)
    return max(ranked, key=lambda item: item[0])[1].as_policy()


def policy_named(name: str, imported: Sequence[ScopedPolicy]) -> Policy | None:
    """A policy by the name an escalation recorded (pure); None when it is gone (a
    re-import dropped it)."""
    if name in POLICIES:
        return POLICIES[name]
    return next((p.as_policy() for p in imported if p.name == name), None)


@dataclass(frozen=True, slots=True)
class StepPlan:
    step: int
    targets: tuple[TargetKind, ...]
    channels: tuple[ChannelName, ...]
    next_due_ms: int | None  # when the following step is due; None after the last step
    repeat: int = 0  # 1, 2, ...: a repeat of the policy's last step (repeat-until-ack)


def plan_step(
    policy: Policy,
    step: int,
    clock: Clock,
    default_wait_s: float,
    repeats: int = 0,
    repeat_interval_s: float = 0.0,
) -> StepPlan | None:
    """What step `step` of `policy` does if carried out now; None when there is no such step.

    With `repeats`, the last step is carried out again that many times (steps numbered on
    past the policy's end), repeat_interval_s apart, until someone acknowledges."""
    last = len(policy.steps) - 1
    if step < 0 or step > last + max(repeats, 0):
        return None
    spec = policy.steps[min(step, last)]
    if step == last + max(repeats, 0):
        next_due = None
    elif step >= last:
        next_due = clock.now_ms() + int(repeat_interval_s * 1000)
    else:
        wait_s = default_wait_s if spec.wait_s is None else spec.wait_s
        next_due = clock.now_ms() + int(wait_s * 1000)
    return StepPlan(step, spec.targets, spec.channels, next_due, max(0, step - last))


def parse_hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


def in_quiet_hours(at: time, start: str, end: str) -> bool:
    """Whether local time `at` is in the night window [start, end) (HH:MM; a window past
    midnight wraps; start == end: no night window) (pure)."""
    begin, finish = parse_hhmm(start), parse_hhmm(end)
    if begin == finish:
        return False
    if begin < finish:
        return begin <= at < finish
    return at >= begin or at < finish


def step_channels(
    plan: StepPlan, severity: str, at: time, *, voice: bool, quiet_start: str, quiet_end: str
) -> tuple[ChannelName, ...]:
    """The step's channels, plus a call for a critical alert at night and in every repeat
    of the last step (pure)."""
    calls = (
        voice
        and severity == "critical"
        and (plan.repeat > 0 or in_quiet_hours(at, quiet_start, quiet_end))
    )
    if calls and "voice" not in plan.channels:
        return (*plan.channels, "voice")
    return plan.channels


# --- after an acknowledgement: watching the person handling it --------------------------

HandlerAction = Literal["remind", "escalate"]
# Who an alert goes to when the person who acknowledged it does not arrive.
HANDLER_ESCALATION_TARGETS: tuple[TargetKind, ...] = ("nearest_station", "duty_officer")


@dataclass(frozen=True, slots=True)
class HandlerCheck:
    action: HandlerAction | None  # what to do now; None: nothing
    stage: int  # the stage after it (0 nothing sent, 1 reminded, 2 escalated)
    next_check_ms: int | None  # when to look again; None: never


def handler_check(
    acknowledged_ms: int,
    arrived: bool,
    stage: int,
    clock: Clock,
    remind_after_s: float,
    escalate_after_s: float,
) -> HandlerCheck:
    """Whether the person who acknowledged an alert needs a reminder (no 已到达 after
    remind_after_s) or others need to be alerted (none after escalate_after_s) (pure)."""
    if arrived or stage >= 2:
        return HandlerCheck(None, stage, None)
    remind_at = acknowledged_ms + int(remind_after_s * 1000)
    escalate_at = acknowledged_ms + int(max(escalate_after_s, remind_after_s) * 1000)
    now = clock.now_ms()
    if now >= escalate_at:
        return HandlerCheck("escalate", 2, None)
    if stage == 0 and now >= remind_at:
        return HandlerCheck("remind", 1, escalate_at)
    return HandlerCheck(None, stage, remind_at if stage == 0 else escalate_at)


def pass_on_press(last_notified_ms: int | None, clock: Clock, min_interval_s: float) -> bool:
    """Whether a new press on an acknowledged alert is passed on to the handler now: at most
    one message per min_interval_s, however often a frightened elder presses (pure)."""
    if last_notified_ms is None:
        return True
    return clock.now_ms() - last_notified_ms >= min_interval_s * 1000
