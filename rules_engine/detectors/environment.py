"""Home environment alarms (smoke, gas, water leak): a critical alert at once.

The sensor already applied its own threshold, so there is no window and nothing to
cancel; a repeat alarm folds into the active alert.
"""

from __future__ import annotations

from collections.abc import Sequence

from carewatch.messages import AlertKind, Event
from rules_engine.decisions import Decision
from rules_engine.detectors.base import ElderView, EventDetector, open_or_repeat

ALARM_KINDS: dict[str, AlertKind] = {"smoke": "smoke", "gas": "gas", "leak": "leak"}


class EnvironmentDetector(EventDetector):
    def wants(self, event: Event) -> bool:
        return event.type == "event" and event.event in ALARM_KINDS

    def decide(self, event: Event, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        kind = ALARM_KINDS[str(event.event)]
        return [
            open_or_repeat(
                event,
                elder,
                kind=kind,
                severity="critical",
                status="open",
                rule=f"environment.{kind}",
                threshold={},
            )
        ]
