"""The HTTP endpoints the providers push to: SMS delivery reports, voice call reports.

`carewatch provider-callbacks` serves them on callbacks_host:callbacks_port. Register at
Aliyun (HTTP batch push mode) the URLs

    {public base}/callbacks/{provider_callback_secret}/aliyun/sms-report   (SmsReport)
    {public base}/callbacks/{provider_callback_secret}/aliyun/voice-report (VoiceReport)
    {public base}/callbacks/{provider_callback_secret}/aliyun/sms-up       (SmsUp)

Aliyun's HTTP batch push carries no signature of its own; the secret path segment is what
tells a push from Aliyun from anyone else's (compared in constant time; a wrong one is
refused and counted). Each push is a JSON array; each item is recorded in its own
transaction (notifier.receipts), so one bad item never loses the good ones around it, and
the answer is Aliyun's `{"code": 0, "msg": "接收成功"}`. A body that is not the provider's
format gets HTTP 400 and is kept in dead_letters; a database failure gets HTTP 500, and
the provider pushes again later (its retries, and our `provider_receipts`, make that safe).

A key 1 (我来处理) pressed in an alert call, or a reply "1" to the alert SMS, acknowledges
the alert through the ack link's own transaction (`notifier.ack_app.apply_action`), as if
the person had tapped the link: the others are told who is handling it, the wristband
that help is coming. A reply "2 <reason>" is the link's 误报 with that reason; a bare "2"
is asked for the reason. A reply gets a short answer by SMS.
A press of a WeCom card's 我来处理 button is served here too (`notifier.wecom_callback`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from carewatch.alert_outbox import AlertPublisher
from carewatch.bus import Bus, make_bus
from carewatch.clock import Clock, SystemClock
from carewatch.http_guard import BodyLimit
from carewatch.http_serve import serve_until
from carewatch.messages import AlertChange
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from notifier import receipts, wecom_callback
from notifier.ack_app import act_for_recipient
from notifier.channels.base import Message
from notifier.metrics import PROVIDER_CALLBACKS
from notifier.outbox import Claimed
from notifier.receipts import BadPush, ReceiptKind, Recorded
from notifier.sql import Conn
from notifier.worker import NotifierParts, notifier_parts

log = logging.getLogger(__name__)

OK_BODY = {"code": 0, "msg": "接收成功"}
# A push holds at most a few hundred reports of a few hundred bytes each.
MAX_BODY_BYTES = 1 << 20
PREFIX = "/callbacks/{secret}/aliyun"

Recorder = Callable[[Conn, Settings, Any, int, int], Awaitable[Recorded]]


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    secret = settings.provider_callback_secret.get_secret_value()
    state: dict[str, Any] = {}
    answering: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with notifier_parts(settings, clock) as parts:
            bus = make_bus(settings)
            await bus.start()
            state["parts"], state["bus"] = parts, bus
            stop_sweep = asyncio.Event()  # WeCom cards of alerts acknowledged elsewhere
            sweep = asyncio.create_task(wecom_callback.CardUpdater(lambda: parts).run(stop_sweep))
            try:
                yield
            finally:
                stop_sweep.set()
                await sweep
                if answering:  # answers to replies still being sent
                    await asyncio.gather(*answering, return_exceptions=True)
                await bus.stop()

    app = FastAPI(
        title="carewatch provider callbacks", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    # refused before the body is read (pushes are small; the routes check again)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    def parts() -> NotifierParts:
        found: NotifierParts = state["parts"]
        return found

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def handle(
        kind: ReceiptKind,
        given_secret: str,
        request: Request,
        parse: Callable[[bytes], Sequence[Any]],
        record: Recorder,
    ) -> JSONResponse:
        if not hmac.compare_digest(given_secret.encode(), secret.encode()):
            PROVIDER_CALLBACKS.labels(kind, "forbidden").inc()
            log.warning("provider push refused: wrong secret", extra={"kind": kind})
            return JSONResponse({"code": 403, "msg": "forbidden"}, status_code=403)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            PROVIDER_CALLBACKS.labels(kind, "too_large").inc()
            return JSONResponse({"code": 413, "msg": "too large"}, status_code=413)
        try:
            items = parse(body)
        except BadPush as exc:
            PROVIDER_CALLBACKS.labels(kind, "bad_push").inc()
            log.warning("provider push rejected", extra={"kind": kind, "detail": str(exc)})
            async with parts().pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO dead_letters (topic, reason, detail, payload)"
                    " VALUES (%s, %s, %s, %s)",
                    (f"callbacks.{kind}", "bad_push", str(exc), body[:65536]),
                )
            return JSONResponse({"code": 400, "msg": "bad request"}, status_code=400)
        for item in items:
            await _record_one(kind, item, record)
        return JSONResponse(OK_BODY)

    async def _record_one(kind: ReceiptKind, item: Any, record: Recorder) -> None:
        sender = parts().sender
        now = clock.now_ms()
        change: AlertChange | None = None
        queued: list[Claimed] = []
        async with parts().pool.connection() as conn, conn.transaction():
            result = await record(conn, settings, item, now, sender.lease_until_ms())
            queued += result.queued
            answer = result.answer
            outcome = result.outcome
            if result.act is not None:
                done, change, acted, beaten_by = await _act(conn, result.act, now)
                queued += acted
                if not done and answer is not None:  # it moved on meanwhile
                    answer = (answer[0], receipts.REPLY_TEXTS["closed"])
                if beaten_by is not None:  # someone acknowledged it meanwhile: not "由您处理"
                    outcome = "beaten"
                    await receipts.settle(conn, kind, item.key, outcome)
                    if answer is not None:
                        answer = (answer[0], beaten_by)
        PROVIDER_CALLBACKS.labels(kind, outcome).inc()
        sender.send_leased(queued)
        if change is not None:
            try:  # committed with its outbox row: the rules workers' sweep retries it
                await AlertPublisher(_bus(), parts().pool).publish([change])
            except Exception:
                log.warning("alert change left in the outbox for the sweep", exc_info=True)
        if answer is not None:  # not awaited: the provider wants its 200 within seconds
            task = asyncio.create_task(_answer(answer[0], answer[1], f"reply:{item.key}"))
            answering.add(task)
            task.add_done_callback(answering.discard)
        log.info("provider push", extra={"kind": kind, "outcome": outcome})

    def _bus() -> Bus:
        found: Bus = state["bus"]
        return found

    async def _act(
        conn: Conn, act: receipts.Act, now_ms: int
    ) -> tuple[bool, AlertChange | None, list[Claimed], str | None]:
        """Carry out a phone's action through the ack link's own transaction; False when
        the alert had moved on (closed, or this call / reply already acted). An
        acknowledgement that came second (the alert row lock orders them: someone else
        acknowledged after the reply was read) gets who has it: 已由XX处理（HH:MM）."""
        result = await act_for_recipient(
            conn,
            settings,
            act.alert_id,
            act.recipient_kind,
            act.recipient_id,
            act.token_id,
            act.action,
            now_ms,
            parts().sender.lease_until_ms(),
            act.details,
        )
        if isinstance(result, str):  # a replay, or the alert is over
            return False, None, [], None
        beaten_by = (
            await receipts.taken_text(conn, settings, result.alert) if result.beaten else None
        )
        return True, result.change, result.notifications, beaten_by

    async def _answer(phone: str, text: str, key: str) -> None:
        """The short answer to an SMS reply: sent now, once (the reply is recorded once),
        outside the outbox (an unknown sender has no alert to hang it on)."""
        sms = parts().channels.get("sms")
        if sms is None:
            return
        # the key names the reply, not the phone (keys are logged; numbers are not)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        message = Message(f"reply:{digest}", phone, "reply", {"result": text})
        try:
            result = await sms.send(message)
        except Exception:
            log.exception("answer to an sms reply failed")
            return
        if not result.ok:
            log.warning("answer to an sms reply not sent", extra={"error": result.error})

    async def _publish(change: AlertChange) -> None:
        await AlertPublisher(_bus(), parts().pool).publish([change])

    # WeCom's card button presses (their own signature scheme, their own module)
    wecom_callback.add_routes(app, settings, clock, parts, _publish, answering)

    @app.post(PREFIX + "/sms-report")
    async def sms_report(secret: str, request: Request) -> JSONResponse:
        return await handle(
            "sms_report", secret, request, receipts.parse_sms_reports, receipts.record_sms_report
        )

    @app.post(PREFIX + "/voice-report")
    async def voice_report(secret: str, request: Request) -> JSONResponse:
        return await handle(
            "voice_report",
            secret,
            request,
            receipts.parse_voice_reports,
            receipts.record_voice_report,
        )

    @app.post(PREFIX + "/sms-up")
    async def sms_up(secret: str, request: Request) -> JSONResponse:
        return await handle(
            "sms_up", secret, request, receipts.parse_sms_up, receipts.record_sms_up
        )

    return app


def encode_items(items: Sequence[msgspec.Struct]) -> bytes:
    """A push body as the provider sends it (the fake providers use this)."""
    return msgspec.json.encode(list(items))


async def run(settings: Settings, stop: asyncio.Event, clock: Clock | None = None) -> None:
    """Serve the provider callbacks on settings.callbacks_host:callbacks_port until `stop`."""
    serve_metrics(settings.metrics_port)
    app = create_app(settings, clock)
    await serve_until(app, settings.callbacks_host, settings.callbacks_port, stop)
