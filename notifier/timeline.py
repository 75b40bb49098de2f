"""The notifier's alert timeline rows (written by carewatch.alerts) and timestamps from
injected-clock milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from carewatch import alerts

NOTIFIER_ACTOR = "notifier"


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def append(
    conn: AsyncConnection[Any],
    alert_id: str,
    action: str,
    details: dict[str, object],
    *,
    at_ms: int,
    actor: str = NOTIFIER_ACTOR,
) -> None:
    await alerts.record(conn, alert_id, action, details, at_ms=at_ms, actor=actor)
