"""Alert changes: written with the transaction that made them, published after commit.

Every writer of alert state uses it: the rules engine, the ack app and the operator
API. The outbox row is what makes publishing crash-safe: a change committed but never
published (the process died or the bus was down in between) is found by
`AlertPublisher.sweep`, which the rules workers run every few seconds, and published
again. A redelivered event publishes its changes again too. Both can
duplicate a message; consumers deduplicate by AlertChange.id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from carewatch.bus import ALERTS_STREAM, Bus
from carewatch.messages import AlertChange, decode_alert_change, encode
from carewatch.metrics import BUS_PUBLISHED

log = logging.getLogger(__name__)


async def write(
    cur: AsyncCursor[Any] | AsyncConnection[Any], source: str, changes: Sequence[AlertChange]
) -> None:
    """Record `changes` inside the caller's transaction; `source` names what made them
    (an event id, a timer id, an ack) so a redelivery can find them again."""
    for change in changes:
        await cur.execute(
            "INSERT INTO rules_outbox (change_id, source, body) VALUES (%s, %s, %s)"
            " ON CONFLICT (change_id) DO NOTHING",
            (change.id, source, encode(change)),
        )


async def for_source(cur: AsyncCursor[DictRow], source: str) -> list[AlertChange]:
    await cur.execute(
        "SELECT body FROM rules_outbox WHERE source = %s ORDER BY created_at, change_id",
        (source,),
    )
    return [decode_alert_change(bytes(row["body"])) for row in await cur.fetchall()]


class AlertPublisher:
    def __init__(self, bus: Bus, pool: AsyncConnectionPool) -> None:
        self._bus = bus
        self._pool = pool

    async def publish(self, changes: Sequence[AlertChange]) -> None:
        if not changes:
            return
        for change in changes:
            await self._bus.publish(ALERTS_STREAM, encode(change), message_id=change.id)
            BUS_PUBLISHED.labels(ALERTS_STREAM).inc()
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE rules_outbox SET published_at = now()"
                " WHERE change_id = ANY(%s) AND published_at IS NULL",
                ([c.id for c in changes],),
            )

    async def sweep(self, older_than_ms: int, limit: int = 500) -> int:
        """Publish changes committed at least `older_than_ms` ago and never published."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT body FROM rules_outbox WHERE published_at IS NULL"
                " AND created_at <= now() - make_interval(secs => %s)"
                " ORDER BY created_at, change_id LIMIT %s",
                (older_than_ms / 1000, limit),
            )
            changes = [decode_alert_change(bytes(r["body"])) for r in await cur.fetchall()]
        if changes:
            log.warning(
                "republishing alert changes left unpublished", extra={"count": len(changes)}
            )
            await self.publish(changes)
        return len(changes)
