"""Injected network faults shared by both fake providers."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request


async def hang_until_disconnect(request: Request, max_s: float) -> None:
    """Hold a request open until the client gives up (its timeout) or max_s passes.

    The body has been read already, so the next ASGI receive() only returns when the
    connection closes: a fake "timeout" costs no polling and ends as soon as the client
    stops waiting.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_disconnected(request), max_s)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
