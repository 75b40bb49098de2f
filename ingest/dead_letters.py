"""Rejected device input, kept in `dead_letters` for inspection (batched insert)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg import AsyncConnection

from ingest.validate import Rejection

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
