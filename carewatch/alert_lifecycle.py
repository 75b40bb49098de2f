"""Alert lifecycle: which status changes are allowed, and by which action.

pending --confirm--> open --acknowledge--> acknowledged --resolve--> resolved
   |                   |                        |
   +--cancel--> cancelled   +--false_alarm / resolve-+--> false_alarm / resolved
                                                               |
                acknowledged <--reopen--------------------------+

Pure: carewatch.alerts applies it to every change, whoever makes it.
"""

from __future__ import annotations

from typing import Literal

from carewatch.messages import AlertStatus

Action = Literal[
    "confirm", "cancel", "acknowledge", "arrive", "join", "resolve", "false_alarm", "reopen"
]

# (from status, action) -> new status. 'arrive' keeps the alert acknowledged but is
# recorded in the timeline ("已到达"); so does 'join' (我也前往: someone else has it and
# this person goes too).
_TRANSITIONS: dict[tuple[AlertStatus, Action], AlertStatus] = {
    ("pending", "confirm"): "open",
    ("pending", "cancel"): "cancelled",
    ("open", "cancel"): "cancelled",
    ("open", "acknowledge"): "acknowledged",
    ("open", "arrive"): "acknowledged",
    ("open", "resolve"): "resolved",
    ("open", "false_alarm"): "false_alarm",
    ("acknowledged", "acknowledge"): "acknowledged",
    ("acknowledged", "arrive"): "acknowledged",
    ("acknowledged", "join"): "acknowledged",
    ("acknowledged", "resolve"): "resolved",
    ("acknowledged", "false_alarm"): "false_alarm",
    # a person closed it too early (or it flared up again): it is theirs again, handled,
    # without a new escalation; a cancelled alert (never confirmed) stays cancelled
    ("resolved", "reopen"): "acknowledged",
    ("false_alarm", "reopen"): "acknowledged",
}


class TransitionError(ValueError):
    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"action {action!r} is not allowed on an alert that is {status!r}")
        self.status = status
        self.action = action


def next_status(status: AlertStatus, action: Action) -> AlertStatus:
    try:
        return _TRANSITIONS[(status, action)]
    except KeyError:
        raise TransitionError(status, action) from None
