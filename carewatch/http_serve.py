"""Serve an ASGI app with uvicorn until an event is set: the one serve loop of carewatch's
web apps (operator API, ack server, provider callbacks, platform push gateways).

uvicorn installs its own signal handlers by default; the workers own signals (one
`stop` event per process, set by the CLI or run-all), so the server here leaves them
alone and exits when `stop` is set, after finishing the requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller owns them and sets `stop`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` on host:port until `stop` is set; raises if the server fails (e.g. the
    port is taken)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the process's (phone-masking) log set-up
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
