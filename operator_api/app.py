"""The operator API (FastAPI) and the grid worker's phone page, served by uvicorn.

OpenAPI document: /openapi.json, docs page: /docs (operator_api.apidocs, no CDN); like
the API itself, both need a bearer token (operator_api.auth.AuthFirst). The dispatcher
console (/console, operator_api.console) has its own cookie login. Request bodies over MAX_BODY_BYTES get 413
before they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from carewatch.alert_lifecycle import TransitionError
from carewatch.alert_outbox import AlertPublisher
from carewatch.bus import make_bus, shard_of, stream_for
from carewatch.db.pool import open_pool
from carewatch.http_guard import BodyLimit, SecurityHeaders
from carewatch.http_serve import serve_until
from carewatch.messages import AlertChange, Event, encode
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from operator_api import alerts, console, elders, followup, mobile, reports, stations, visits
from operator_api.actions import PersonNotFound, ReasonRequired
from operator_api.apidocs import DOCS_CSP, docs_page
from operator_api.auth import AuthFirst, CurrentPrincipal
from operator_api.scope import OutOfScope

log = logging.getLogger(__name__)

# The largest body the API takes: an action's note is at most 500 characters.
MAX_BODY_BYTES = 64 * 1024
# Every answer: personal data is not cached on the way, nor framed by another site.
RESPONSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await open_pool(settings.database_url)
        event_bus = make_bus(settings)
        await event_bus.start()

        publisher = AlertPublisher(event_bus, app.state.pool)

        async def announce(change: AlertChange) -> None:
            await publisher.publish([change])

        app.state.announce = announce

        async def publish_event(event: Event) -> None:
            """A carewatch-made event (a visit check-in) on the elder's events shard."""
            stream = stream_for(event.type, shard_of(event.elder_id, settings.bus_shards))
            await event_bus.publish(stream, encode(event), message_id=event.id)

        app.state.publish_event = publish_event
        try:
            yield
        finally:
            await event_bus.stop()
            await app.state.pool.close()

    app = FastAPI(
        title="carewatch operator API",
        version="1",
        description=(
            "Alerts, their timelines and the elder registry for operators and grid workers. "
            "Authenticate with `Authorization: Bearer <token>`; what a token sees depends "
            "on its role and scope."
        ),
        lifespan=lifespan,
        # served below, behind the token like the API (the docs page without a CDN)
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(_principal: CurrentPrincipal) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_principal: CurrentPrincipal) -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()), headers={"Content-Security-Policy": DOCS_CSP})

    @app.exception_handler(OutOfScope)
    async def out_of_scope(_request: Request, exc: OutOfScope) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(ReasonRequired)
    async def reason_required(_request: Request, exc: ReasonRequired) -> JSONResponse:
        body = {"detail": exc.message_en, "message": exc.message_zh, "error": "reason_required"}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(PersonNotFound)
    async def person_not_found(_request: Request, exc: PersonNotFound) -> JSONResponse:
        body = {"detail": f"no such person to dispatch: {exc}", "message": "找不到要派遣的人员。"}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(TransitionError)
    async def not_allowed_now(_request: Request, exc: TransitionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "status": exc.status}, status_code=409)

    app.state.settings = settings  # the console's map and reopen window
    for module in (alerts, followup, elders, stations, reports, visits, mobile, console):
        app.include_router(module.router)
    # the last added runs first: headers on every answer, the body cap, then the token
    app.add_middleware(AuthFirst)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(SecurityHeaders, headers=RESPONSE_HEADERS)
    return app


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Serve on settings.operator_host:operator_port until `stop` is set."""
    serve_metrics(settings.metrics_port)
    app = create_app(settings)
    app.state.stopping = stop  # the console's live streams end when the server stops
    await serve_until(app, settings.operator_host, settings.operator_port, stop)
    log.info("operator API stopped")
