"""Conditions that clear by themselves resolve their alert (shared by the detectors)."""

from __future__ import annotations

from collections.abc import Mapping

from carewatch.messages import AlertKind
from rules_engine.decisions import Decision, ResolveAlert
from rules_engine.detectors.base import ElderView


def resolve_if_active(
    elder: ElderView,
    kind: AlertKind,
    rule: str,
    cause: str,
    *,
    device_id: str | None = None,
    details: Mapping[str, object] | None = None,
) -> list[Decision]:
    """Resolve the elder's active `kind` alert; with `device_id`, only if that device
    opened it (one band coming back does not clear another band's trouble)."""
    active = elder.active.get(kind)
    if active is None or active.status not in ("open", "acknowledged"):
        return []
    if device_id is not None and active.device_id not in (None, device_id):
        return []
    return [ResolveAlert(active.alert_id, kind, rule, cause, details or {})]
