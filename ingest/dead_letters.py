"""Rejected device input, kept in `dead_letters` for inspection (batched insert).

Bounded, so that a broken or hostile device cannot fill the table: every rejection is
counted (carewatch_ingest_rejects_total), but only the first
ingest_dead_letters_per_device_hour of one device in an hour are kept (and
ingest_dead_letters_per_hour of all devices); the rest are counted again as not kept.
Rows older than dead_letter_retention_days are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingest.validate import Rejection

log = logging.getLogger(__name__)

# Oversized payloads are kept only in part: enough to see what the device sent.
PAYLOAD_CAP_BYTES = 16 * 1024
_TEXT_CAP = 1000

_INSERT = (
    "INSERT INTO dead_letters (received_at, topic, device_id, reason, detail, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    topic: str
    rejection: Rejection
    payload: bytes


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; device-controlled strings may.
    return value[:_TEXT_CAP].replace("\x00", "\\0")


def as_params(letter: DeadLetter) -> tuple[object, ...]:
    payload = letter.payload
    detail = letter.rejection.detail
    if len(payload) > PAYLOAD_CAP_BYTES:
        detail = f"{detail} (payload truncated to {PAYLOAD_CAP_BYTES} bytes)"
        payload = payload[:PAYLOAD_CAP_BYTES]
    device_id = letter.rejection.device_id
    return (
        datetime.fromtimestamp(letter.received_ms / 1000, tz=UTC),
        _text(letter.topic),
        _text(device_id) if device_id is not None else None,
        letter.rejection.reason,
        _text(detail),
        payload,
    )


async def insert_dead_letters(conn: AsyncConnection[object], letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT, [as_params(letter) for letter in letters])


class DeadLetterLimit:
    """Which rejections are kept: at most `per_device` per key (device id, or topic when
    there is none) and `total` in all per window. Memory is bounded by `total`."""

    def __init__(
        self,
        per_device: int,
        total: int,
        window_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_device = per_device
        self._total = total
        self._window_s = window_s
        self._clock = clock
        self._started = clock()
        self._counts: dict[str, int] = {}
        self._kept = 0

    def keep(self, key: str) -> bool:
        """True if this rejection is kept; the first one refused for a key in a window
        is logged (once, not per message)."""
        now = self._clock()
        if now - self._started >= self._window_s:
            self._started, self._counts, self._kept = now, {}, 0
        count = self._counts.get(key, 0)
        if count < self._per_device and self._kept < self._total:
            self._counts[key] = count + 1
            self._kept += 1
            return True
        if count == self._per_device:
            self._counts[key] = count + 1  # log once per window
            log.warning(
                "dead letters of this device are no longer kept this hour (still counted)",
                extra={"device_or_topic": key[:200], "kept": count},
            )
        elif self._kept == self._total:
            self._kept += 1
            log.warning("dead letter limit of all devices reached this hour (still counted)")
        return False


_PURGE = (
    "DELETE FROM dead_letters WHERE id IN"
    " (SELECT id FROM dead_letters WHERE received_at < %s LIMIT %s)"
)


async def purge_dead_letters(
    pool: AsyncConnectionPool[Any], older_than: datetime, chunk: int = 10_000
) -> int:
    """Delete dead letters received before `older_than`, in short transactions."""
    deleted = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(_PURGE, (older_than, chunk))
            rows = int(cur.rowcount)
            deleted += rows
            if rows < chunk:
                return deleted


async def keep_trimmed(
    pool: AsyncConnectionPool[Any],
    retention_days: int,
    stop: asyncio.Event,
    every_s: float = 3600.0,
) -> None:
    """Purge old dead letters at start and then every `every_s`, until `stop`."""
    while not stop.is_set():
        try:
            older_than = datetime.now(tz=UTC) - timedelta(days=retention_days)
            deleted = await purge_dead_letters(pool, older_than)
            if deleted:
                log.info("old dead letters deleted", extra={"rows": deleted})
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("could not delete old dead letters", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
