"""Escalation policies as data, and the pure function that plans one step.

A policy is an ordered list of steps; each step names who to notify (target kinds),
on which channels, and how long to wait for an acknowledgement before the next step.
Nothing here does I/O: the escalation loop feeds in the alert severity, the step and
an injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from carewatch.clock import Clock
from carewatch.messages import Severity

TargetKind = Literal["grid_worker", "family_first", "family_all", "nearest_station", "duty_officer"]
ChannelName = Literal["sms", "wecom"]

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
    # Information is not pushed; it goes to the daily digest.
    "info": Policy("info", ()),
}


def policy_for(severity: Severity) -> Policy:
    return POLICIES[severity]


@dataclass(frozen=True, slots=True)
class StepPlan:
    step: int
    targets: tuple[TargetKind, ...]
    channels: tuple[ChannelName, ...]
    next_due_ms: int | None  # when the following step is due; None after the last step


def plan_step(policy: Policy, step: int, clock: Clock, default_wait_s: float) -> StepPlan | None:
    """What step `step` of `policy` does if carried out now; None when there is no such step."""
    if step < 0 or step >= len(policy.steps):
        return None
    spec = policy.steps[step]
    last = step == len(policy.steps) - 1
    wait_s = default_wait_s if spec.wait_s is None else spec.wait_s
    next_due = None if last else clock.now_ms() + int(wait_s * 1000)
    return StepPlan(step, spec.targets, spec.channels, next_due)
