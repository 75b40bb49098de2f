"""One FastAPI app serving both fake providers at the paths the adapters call, plus
inspection (/_records, /_stats) and control (/_control/...) endpoints for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from simulators.fake_providers import aliyun, wecom
from simulators.fake_providers.records import FailureMode, FailurePlan, Provider, RecordBook

log = logging.getLogger(__name__)

DEFAULT_PORT = 8090
# Longest an injected "timeout" holds a request whose client never disconnects.
DEFAULT_HANG_S = 30.0


@dataclass(frozen=True, slots=True)
class FakeProviders:
    """The state behind the app, for in-process inspection."""

    book: RecordBook
    failures: FailurePlan
    sms: aliyun.AliyunSmsFake
    wecom: wecom.WeComFake

    def reset(self) -> None:
        self.book.reset()
        self.failures.reset()
        self.sms.reset()
        self.wecom.reset()


class FailRequest(BaseModel):
    provider: Provider
    count: int = Field(1, ge=1, le=10_000)
    mode: FailureMode = "5xx"


def sms_path(settings: Settings) -> str:
    return urlsplit(settings.aliyun_sms_endpoint).path or "/"


def wecom_prefix(settings: Settings) -> str:
    return urlsplit(settings.wecom_base_url).path.rstrip("/")


def create_app(
    settings: Settings,
    record_file: Path | None = None,
    *,
    wecom_users: Iterable[str] | None = None,
    wecom_unlicensed: Iterable[str] = (),
    clock: Clock | None = None,
    hang_s: float = DEFAULT_HANG_S,
) -> FastAPI:
    """The fake Aliyun SMS + WeCom app; `wecom_users` limits the WeCom directory, and
    `wecom_unlicensed` users are in it without an account license."""
    clock = clock or SystemClock()
    book = RecordBook(record_file)
    failures = FailurePlan()
    state = FakeProviders(
        book,
        failures,
        aliyun.AliyunSmsFake(settings, book, failures, clock, hang_s),
        wecom.WeComFake(settings, book, failures, clock, hang_s, wecom_users, wecom_unlicensed),
    )
    app = FastAPI(title="carewatch fake providers", docs_url=None, redoc_url=None)
    app.state.fake = state
    aliyun.add_routes(app, state.sms, sms_path(settings))
    wecom.add_routes(app, state.wecom, wecom_prefix(settings))

    @app.get("/_records")
    async def records(since: int = 0, provider: Provider | None = None) -> list[dict[str, Any]]:
        return [r.to_json() for r in book.select(max(since, 0), provider)]

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return {**book.stats(), "pending_failures": failures.pending()}

    @app.post("/_control/fail")
    async def fail(request: FailRequest) -> dict[str, Any]:
        failures.inject(request.provider, request.count, request.mode)
        return {"ok": True, "pending_failures": failures.pending()}

    @app.post("/_control/recover")
    async def recover(provider: Provider) -> dict[str, Any]:
        """End an injected outage: the provider's pending failures are dropped."""
        return {"ok": True, "dropped": failures.clear(provider)}

    @app.post("/_control/expire_tokens")
    async def expire_tokens() -> dict[str, Any]:
        return {"ok": True, "expired": state.wecom.expire_tokens()}

    @app.post("/_control/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return {"ok": True}

    return app


def fake_state(app: FastAPI) -> FakeProviders:
    state: FakeProviders = app.state.fake
    return state


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: FastAPI, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    """Serve app on an already bound socket until the block exits."""
    config = uvicorn.Config(
        app,
        log_config=None,  # keep the process's (masking, structured) log setup
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:  # startup takes milliseconds; fail fast if it crashed
            if task.done():
                task.result()
                raise RuntimeError("fake providers server exited during startup")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("fake providers server did not start within 10 s")
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await task


def bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on connections whose
    # socket says it is TCP, and without it every response waited ~40 ms (Nagle against
    # the client's delayed ACK), which every SOS latency figure measured through the fake
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run(settings: Settings, stop: asyncio.Event, record_file: Path | None = None) -> None:
    """`carewatch fake-providers`: serve on 127.0.0.1 at the port of the SMS endpoint."""
    port = urlsplit(settings.aliyun_sms_endpoint).port or DEFAULT_PORT
    if (urlsplit(settings.wecom_base_url).port or DEFAULT_PORT) != port:
        log.warning(
            "wecom_base_url is on another port than aliyun_sms_endpoint; only %d is served", port
        )
    app = create_app(settings, record_file)
    with bind("127.0.0.1", port) as sock:
        async with serving(app, sock):
            log.info("fake providers listening", extra={"port": port})
            await stop.wait()
