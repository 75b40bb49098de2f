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
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from simulators.fake_providers import aliyun, aliyun_voice, tencent, wecom
from simulators.fake_providers.pushes import CallOutcome, Pusher
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
    voice: aliyun_voice.AliyunVoiceFake
    tencent: tencent.TencentSmsFake
    pusher: Pusher | None  # None: reports are not pushed (no receipt URL configured)

    def reset(self) -> None:
        self.book.reset()
        self.failures.reset()
        self.sms.reset()
        self.wecom.reset()
        self.voice.reset()
        if self.pusher is not None:
            self.pusher.reset()


class FailRequest(BaseModel):
    provider: Provider
    count: int = Field(1, ge=1, le=10_000)
    mode: FailureMode = "5xx"


class SmsReportScript(BaseModel):
    phone: str = Field(min_length=5, max_length=20)
    count: int = Field(1, ge=1, le=1000)
    code: str = Field("MK:0001", min_length=1, max_length=20)


class CallScript(BaseModel):
    phone: str = Field(min_length=5, max_length=20)
    outcomes: list[CallOutcome] = Field(min_length=1, max_length=100)


class SmsReply(BaseModel):
    phone: str = Field(min_length=5, max_length=20)
    content: str = Field(min_length=1, max_length=500)


class WeComPress(BaseModel):
    userid: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=64)
    task_id: str | None = Field(None, max_length=128)
    twice: bool = False  # pushed twice (WeCom retries a push it got no answer to)
    forge: bool = False  # with a wrong msg_signature
    age_s: int = Field(0, ge=0, le=86_400)  # signed this long ago (a replayed push)


def sms_path(settings: Settings) -> str:
    return urlsplit(settings.aliyun_sms_endpoint).path or "/"


def wecom_prefix(settings: Settings) -> str:
    return urlsplit(settings.wecom_base_url).path.rstrip("/")


def voice_path(settings: Settings) -> str:
    return urlsplit(settings.aliyun_voice_endpoint).path or "/"


def tencent_path(settings: Settings) -> str:
    return urlsplit(settings.tencent_sms_endpoint).path or "/"


def create_app(
    settings: Settings,
    record_file: Path | None = None,
    *,
    wecom_users: Iterable[str] | None = None,
    wecom_unlicensed: Iterable[str] = (),
    clock: Clock | None = None,
    hang_s: float = DEFAULT_HANG_S,
    push_reports: bool = False,
    ring_s: float = 0.2,
) -> FastAPI:
    """The fake Aliyun SMS + voice + WeCom app; `wecom_users` limits the WeCom directory,
    and `wecom_unlicensed` users are in it without an account license. With
    `push_reports`, delivery and call reports are pushed to the provider callbacks app
    (settings.callbacks_host:callbacks_port), as Aliyun does once a receipt URL is set."""
    clock = clock or SystemClock()
    book = RecordBook(record_file)
    failures = FailurePlan()
    pusher = Pusher(settings, ring_s) if push_reports else None
    sms = aliyun.AliyunSmsFake(settings, book, failures, clock, hang_s)
    if pusher is not None:
        sms.on_delivered = pusher.sms_delivered
    state = FakeProviders(
        book,
        failures,
        sms,
        wecom.WeComFake(settings, book, failures, clock, hang_s, wecom_users, wecom_unlicensed),
        aliyun_voice.AliyunVoiceFake(settings, book, failures, clock, hang_s, pusher),
        tencent.TencentSmsFake(settings, book, failures, clock, hang_s),
        pusher,
    )
    app = FastAPI(title="carewatch fake providers", docs_url=None, redoc_url=None)
    app.state.fake = state
    aliyun.add_routes(app, state.sms, sms_path(settings))
    wecom.add_routes(app, state.wecom, wecom_prefix(settings))
    app.add_api_route(
        voice_path(settings), state.voice.handle, methods=["GET", "POST"], include_in_schema=False
    )
    app.add_api_route(
        tencent_path(settings), state.tencent.handle, methods=["POST"], include_in_schema=False
    )

    def pushing() -> Pusher:
        if pusher is None:
            raise HTTPException(409, "reports are not pushed (push_reports is off)")
        return pusher

    @app.post("/_control/sms_report")
    async def sms_report(script: SmsReportScript) -> dict[str, Any]:
        """The next `count` SMS to `phone` are reported not delivered, with `code`."""
        pushing().fail_sms(script.phone, script.count, script.code)
        return {"ok": True}

    @app.post("/_control/calls")
    async def calls(script: CallScript) -> dict[str, Any]:
        """The next calls to `phone` end as scripted: answered, busy, no_answer, key1, key2."""
        pushing().script_calls(script.phone, list(script.outcomes))
        return {"ok": True}

    @app.post("/_control/push_twice")
    async def push_twice(on: bool = True) -> dict[str, Any]:
        """Every report is pushed twice (the provider does not promise exactly once)."""
        pushing().push_twice = on
        return {"ok": True}

    @app.post("/_control/sms_reply")
    async def sms_reply(reply: SmsReply) -> dict[str, Any]:
        """`phone` replies `content` to our number (an SmsUp push)."""
        pushing().push_sms_up(reply.phone, reply.content)
        return {"ok": True}

    @app.post("/_control/wecom_press")
    async def wecom_press(press: WeComPress) -> dict[str, Any]:
        """`userid` presses the button `key` of a WeCom card: the template_card_event is
        pushed to the callback URL; answers the HTTP status of each push."""
        if not press.task_id and not state.wecom.card_task_ids(press.userid):
            return {"ok": False, "statuses": []}
        statuses = await state.wecom.press(
            press.userid, press.key, press.task_id, press.twice, press.forge, press.age_s
        )
        return {"ok": True, "statuses": statuses}

    @app.get("/_pushes")
    async def pushes() -> list[dict[str, Any]]:
        return list(pushing().pushes)

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
        pusher: Pusher | None = getattr(app.state, "fake", None) and app.state.fake.pusher
        if pusher is not None:
            await pusher.aclose()


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
    for name in ("wecom_base_url", "aliyun_voice_endpoint", "tencent_sms_endpoint"):
        if (urlsplit(getattr(settings, name)).port or DEFAULT_PORT) != port:
            log.warning(
                "%s is on another port than aliyun_sms_endpoint; only %d is served", name, port
            )
    app = create_app(settings, record_file, push_reports=True)
    with bind("127.0.0.1", port) as sock:
        async with serving(app, sock):
            log.info("fake providers listening", extra={"port": port})
            await stop.wait()
