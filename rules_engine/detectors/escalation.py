"""Raising the severity of an alert that is already active (one alert per kind)."""

from __future__ import annotations

from collections.abc import Mapping

from carewatch.messages import AlertKind, Severity
from rules_engine.decisions import RenotifyAlert
from rules_engine.detectors.base import ElderView

_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}


def escalation(
    elder: ElderView,
    kind: AlertKind,
    severity: Severity,
    *,
    rule: str,
    cause: str,
    details: Mapping[str, object],
) -> list[RenotifyAlert]:
    """An 'escalated' change when the condition is now worse than the active alert says
    (a warning about a heart rate that turned extreme, a wandering elder still outside
    when night falls), so the notifier acts on the new severity; else nothing."""
    active = elder.active.get(kind)
    if active is None or _RANK[severity] <= _RANK[active.severity]:
        return []
    return [RenotifyAlert(active.alert_id, kind, "escalated", rule, cause, severity, details)]
