"""A running ack app for the tests, and what they read back from it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from carewatch.bus import ALERTS_STREAM
from carewatch.settings import Settings
from harness.services import await_until
from notifier import ack_app


@contextlib.asynccontextmanager
async def running_server(
    run: Callable[[asyncio.Event], Awaitable[None]],
    http: httpx.AsyncClient,
    probe: str,
    what: str,
) -> AsyncIterator[None]:
    """`run(stop)` as a task, ready once `probe` answers 200 through `http`; stopped after."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))

    async def up() -> bool:
        if task.done():
            task.result()  # startup failed: raise its error here
        try:
            return (await http.get(probe)).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await await_until(up, 15, what)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def running_ack_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        httpx.AsyncClient(base_url=settings.ack_base_url, timeout=10) as http,
        running_server(
            lambda stop: ack_app.run(settings, stop), http, "/healthz", "ack app listening"
        ),
    ):
        yield http


def rejects(reason: str) -> float:
    return REGISTRY.get_sample_value("carewatch_ack_rejects_total", {"reason": reason}) or 0.0


def path_of(link: str) -> str:
    return urlsplit(link).path


async def alert_changes_on_stream(settings: Settings) -> list[bytes]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(ALERTS_STREAM))
    finally:
        await client.aclose()
    return [b"".join(fields.values()) for _, fields in entries]
