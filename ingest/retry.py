"""Retry an I/O step with exponential backoff, loudly, until it succeeds or we give up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import psycopg
import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a briefly unavailable PostgreSQL or Redis raises; anything else is a bug.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.AdminShutdown,
    redis.ConnectionError,
    redis.TimeoutError,
    # NATS bus: a lost connection, or the stream not declared yet.
    nats.errors.Error,
    ConnectionError,
    TimeoutError,
    OSError,
)
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 10.0


class GaveUp(Exception):
    """The step kept failing past its deadline (only used while shutting down)."""


async def with_retry(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    deadline: Callable[[], float | None] = lambda: None,
    items: int = 0,
) -> T:
    """Run `op` until it succeeds. `deadline()` (monotonic) is re-read after each failure,
    so a shutdown that starts while we are retrying bounds the remaining attempts."""
    backoff = BACKOFF_MIN_S
    attempt = 0
    while True:
        try:
            return await op()
        except TRANSIENT_ERRORS as exc:
            attempt += 1
            log.error(
                "%s failed, holding the batch and retrying",
                what,
                extra={
                    "attempt": attempt,
                    "items": items,
                    "error": repr(exc),
                    "backoff_s": backoff,
                },
            )
            limit = deadline()
            if limit is not None and time.monotonic() + backoff > limit:
                raise GaveUp(what) from exc
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
