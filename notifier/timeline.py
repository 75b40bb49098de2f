"""Alert timeline rows (alert_events) and timestamps from injected-clock milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

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
    await conn.execute(
        "INSERT INTO alert_events (alert_id, at, actor, action, details)"
        " VALUES (%s, %s, %s, %s, %s)",
        (alert_id, from_ms(at_ms), actor, action, Jsonb(details)),
    )
