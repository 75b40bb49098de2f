"""The operator API (FastAPI) and the grid worker's phone page, served by uvicorn.

OpenAPI document: /openapi.json, interactive docs: /docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from carewatch.alert_lifecycle import TransitionError
from carewatch.alert_outbox import AlertPublisher
from carewatch.bus import make_broker
from carewatch.db.pool import open_pool
from carewatch.messages import AlertChange
from carewatch.settings import Settings
from operator_api import alerts, apidocs, console, elders, mobile, reports, stations
from operator_api.scope import OutOfScope

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await open_pool(settings.database_url)
        broker = make_broker(settings)
        await broker.connect()

        publisher = AlertPublisher(broker, app.state.pool)

        async def announce(change: AlertChange) -> None:
            await publisher.publish([change])

        app.state.announce = announce
        try:
            yield
        finally:
            await broker.stop()
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
        docs_url=None,  # operator_api.apidocs serves /docs without a CDN
        redoc_url=None,
    )

    @app.exception_handler(OutOfScope)
    async def out_of_scope(_request: Request, exc: OutOfScope) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(TransitionError)
    async def not_allowed_now(_request: Request, exc: TransitionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "status": exc.status}, status_code=409)

    for module in (alerts, elders, stations, reports, mobile, console, apidocs):
        app.include_router(module.router)
    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller owns signals (via `stop`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Serve on settings.operator_host:operator_port until `stop` is set."""
    app = create_app(settings)
    app.state.stopping = stop  # the console's live streams end when the server stops
    config = uvicorn.Config(
        app,
        host=settings.operator_host,
        port=settings.operator_port,
        log_config=None,  # keep the process's (masking) log setup
        access_log=False,
        lifespan="on",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    log.info("operator API stopped")
