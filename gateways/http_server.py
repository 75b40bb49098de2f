"""The platforms' push endpoints (CTWing, OneNET): answer at once, process after.

CTWing retries a push that did not get a 200 fast and, after many failures, stops
pushing for a while and drops messages; so a push is answered 200 as soon as it is
queued in memory, and a worker task decodes and publishes it afterwards. A push that
cannot be used (bad JSON, unknown device, no field mapping) is still answered 200: it
is counted and kept in `dead_letters` (topic `gateway/ctwing` or `gateway/onenet`),
and the pushes after it go through. A retried push gives the same sequence numbers
(gateways.translate), so ingest keeps one copy.

Endpoints:
    POST /ctwing            CTWing subscription push (dataReport, eventReport,
                            deviceOnlineOfflineReport)
    GET  /onenet            OneNET URL verification: echoes msg if the signature holds
    POST /onenet            OneNET data push; refused (403) if msg_signature is wrong
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from psycopg_pool import AsyncConnectionPool

from carewatch.http_serve import serve_until
from carewatch.messages import DeviceStatus
from carewatch.settings import Settings
from gateways.directory import Directory
from gateways.metrics import FRAMES, REJECTS
from gateways.mqtt_link import MqttLink, PublishFailed
from gateways.platforms import (
    PlatformMessage,
    PushError,
    decode_ctwing,
    decode_onenet,
    onenet_body,
    onenet_verified,
)
from gateways.translate import Uplink, platform_reading, seq_for, uplinks
from ingest.dead_letters import DeadLetter, insert_dead_letters
from ingest.validate import Rejection

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
MAX_BODY_BYTES = 64 * 1024
_DEAD_LETTER_REASONS = ("malformed_json", "schema_invalid", "unknown_device", "oversized")


class PushProcessor:
    """Decodes queued pushes and publishes them as the devices; bad ones to dead letters."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], directory: Directory, link: MqttLink
    ) -> None:
        self._pool = pool
        self._directory = directory
        self._link = link
        self.queue: asyncio.Queue[tuple[str, bytes, int] | None] = asyncio.Queue(QUEUE_LIMIT)

    async def run(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            platform, body, received_ms = item
            try:
                await self.process(platform, body, received_ms)
            except Exception:  # one push must never stop the others
                REJECTS.labels(platform, "internal_error").inc()
                log.exception("push processing failed", extra={"platform": platform})

    async def process(self, platform: str, body: bytes, received_ms: int) -> None:
        try:
            messages = [decode_ctwing(body)] if platform == "ctwing" else decode_onenet(body)
        except PushError as exc:
            await self._dead_letter(platform, body, received_ms, exc.reason, exc.detail, None)
            return
        for message in messages:
            await self._one(platform, message, body, received_ms)

    async def _one(
        self, platform: str, message: PlatformMessage, body: bytes, received_ms: int
    ) -> None:
        device = None
        for device_key in message.ids:
            device = await self._directory.find(platform, device_key)
            if device is not None:
                break
        if device is None:
            await self._dead_letter(
                platform, body, received_ms, "unknown_device", f"ids {list(message.ids)}", None
            )
            return
        FRAMES.labels(platform, message.kind).inc()
        out: list[Uplink]
        if message.online is not None:
            out = [
                Uplink(
                    "status",
                    DeviceStatus(
                        v=1,
                        state="online" if message.online else "offline",
                        seq=seq_for(message.time_ms, message.discriminator, 3),
                        ts=message.time_ms,
                    ),
                )
            ]
        elif message.fields:
            rules = self._directory.field_rules(platform, device.product)
            if not rules:
                await self._dead_letter(
                    platform,
                    body,
                    received_ms,
                    "schema_invalid",
                    f"no field mapping for {platform} product {device.product!r}",
                    device.device_id,
                )
                return
            reading, unknown = platform_reading(message.fields, rules)
            for _ in unknown:
                REJECTS.labels(platform, "unmapped_field").inc()
            out = uplinks(reading, time_ms=message.time_ms, discriminator=message.discriminator)
        else:
            out = []
        if out:
            try:
                await self._link.publish(platform, device.device_id, out)
            except PublishFailed as exc:
                REJECTS.labels(platform, "broker_unavailable").inc()
                log.error("push not published", extra={"platform": platform, "error": str(exc)})

    async def _dead_letter(
        self,
        platform: str,
        body: bytes,
        received_ms: int,
        reason: str,
        detail: str,
        device_id: str | None,
    ) -> None:
        REJECTS.labels(platform, reason).inc()
        log.info(
            "push rejected",
            extra={"platform": platform, "reason": reason, "detail": detail[:200]},
        )
        stored = reason if reason in _DEAD_LETTER_REASONS else "schema_invalid"
        letter = DeadLetter(
            received_ms,
            f"gateway/{platform}",
            Rejection(stored, detail, device_id),  # type: ignore[arg-type]
            body,
        )
        try:
            async with self._pool.connection() as conn:
                await insert_dead_letters(conn, [letter])
        except Exception as exc:  # the count stays; the letter is lost with the database
            log.error("dead letter not stored", extra={"error": str(exc)})


def create_app(settings: Settings, processor: PushProcessor) -> FastAPI:
    app = FastAPI(title="carewatch gateway push endpoints", docs_url=None, redoc_url=None)
    token = settings.onenet_token.get_secret_value() if settings.onenet_token else None

    def _enqueue(platform: str, body: bytes) -> bool:
        try:
            processor.queue.put_nowait((platform, body, time.time_ns() // 1_000_000))
        except asyncio.QueueFull:
            REJECTS.labels(platform, "overloaded").inc()
            return False
        return True

    async def _body(request: Request) -> bytes | None:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return None
        return bytes(body)

    @app.post("/ctwing")
    async def ctwing(request: Request) -> Response:
        body = await _body(request)
        if body is None:
            REJECTS.labels("ctwing", "oversized").inc()
            return JSONResponse({"code": 413, "msg": "too large"}, status_code=413)
        if not _enqueue("ctwing", body):
            return JSONResponse({"code": 503, "msg": "busy"}, status_code=503)
        return JSONResponse({"code": 0, "msg": "ok"})

    @app.get("/onenet")
    async def onenet_verify(msg: str = "", nonce: str = "", signature: str = "") -> Response:
        if token is None or not onenet_verified(token, nonce, msg, signature):
            REJECTS.labels("onenet", "bad_signature").inc()
            return PlainTextResponse("signature mismatch", status_code=403)
        return PlainTextResponse(msg)

    @app.post("/onenet")
    async def onenet_push(request: Request) -> Response:
        body = await _body(request)
        if body is None:
            REJECTS.labels("onenet", "oversized").inc()
            return PlainTextResponse("too large", status_code=413)
        try:
            msg, signature, nonce = onenet_body(body)
        except PushError as exc:
            REJECTS.labels("onenet", exc.reason).inc()
            return PlainTextResponse(exc.reason, status_code=400)
        if token is None or not onenet_verified(token, nonce, msg, signature):
            REJECTS.labels("onenet", "bad_signature").inc()
            return PlainTextResponse("signature mismatch", status_code=403)
        if not _enqueue("onenet", msg):
            return PlainTextResponse("busy", status_code=503)
        return PlainTextResponse("ok")

    return app


async def serve(settings: Settings, app: FastAPI, stop: asyncio.Event) -> None:
    await serve_until(app, settings.gateway_host, settings.gateway_http_port, stop)
