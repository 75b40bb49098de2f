"""Exact conversions between epoch milliseconds (messages) and timestamptz (database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_to_dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def dt_to_ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _MS
