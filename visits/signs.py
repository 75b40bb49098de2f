"""A check-in as a sign of life for the rules engine. Pure: a stored check-in in, the
bus event out (the operator API publishes it on the elder's events shard).

Only an in-person visit ('visited') goes to the rules: the elder was seen at home, which
is what the inactivity rule's deadline is about. A phone call says the elder is alive but
not where (out of home, the rule waits for the door); it stays a sign of life on the
operator side only (operator_api/elders.py LIFE_JOINS).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from carewatch.messages import Event

DEVICE_KIND = "visit"


def checkin_event(checkin: Mapping[str, Any]) -> Event | None:
    """The `visit_checkin` event of a stored check-in row, None unless 'visited'."""
    if checkin["outcome"] != "visited":
        return None
    at: datetime = checkin["at"]
    at_ms = int(at.timestamp() * 1000)
    return Event(
        id=f"visit:{checkin['id']}",
        elder_id=checkin["elder_id"],
        device_id=f"visit:{checkin['actor']}",
        device_kind=DEVICE_KIND,
        type="event",
        event="visit_checkin",
        device_time_ms=at_ms,
        received_ms=at_ms,
    )
