"""/console: the dispatcher's desktop console (Simplified Chinese), served by the API.

A static page (operator_api/static/console.*, plain JavaScript, nothing fetched from
outside) over a small JSON API under /console/api and a server-sent event stream of the
caller's open alerts (/console/api/stream, fed by operator_api.live).

Authentication is the operator API's tokens: the dispatcher pastes theirs into the
login form (or opens /console?token=...), and it moves into an HttpOnly, SameSite=Strict
cookie for path /console. Every /console/api call resolves that token again, so a
revoked token stops working at once, and is scoped exactly like the API: the card is
the API's own reader (operator_api.console_data), the live stream looks each changed
alert up under the caller's scope and sends nothing about the others. State-changing
calls must come from this origin with the console's header (X-Carewatch-Console).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import APIRouter, Cookie, Depends, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, Field

from carewatch.settings import Settings
from operator_api import console_data, followup
from operator_api.actions import FALSE_ALARM_REASONS, Dispatch, HumanAction, false_alarm_details
from operator_api.apidocs import docs_page
from operator_api.auth import Pool
from operator_api.console_map import map_view, tile_source
from operator_api.elders import get_elder
from operator_api.live import RESYNC, AlertFeed
from operator_api.models import AreaReport, DispatchIn, TakeOverIn
from operator_api.reports import area_report_now, export_response
from operator_api.scope import Principal
from operator_api.tokens import resolve_token

log = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)

COOKIE = "cw_console"
COOKIE_MAX_AGE_S = 12 * 3600  # one shift
CONSOLE_HEADER = "x-carewatch-console"
HEARTBEAT_S = 15.0
STATIC_FILES: dict[str, str] = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "apidocs.js": "text/javascript; charset=utf-8",
    "apidocs.css": "text/css; charset=utf-8",
}
# Leaflet 1.9.4 (BSD-2-Clause, static/vendor/leaflet/LICENSE), as `npm pack leaflet` ships it.
VENDOR_FILES: dict[str, str] = {
    "leaflet/leaflet.js": "text/javascript; charset=utf-8",
    "leaflet/leaflet.css": "text/css; charset=utf-8",
    "leaflet/LICENSE": "text/plain; charset=utf-8",
    **{
        f"leaflet/images/{name}.png": "image/png"
        for name in ("layers", "layers-2x", "marker-icon", "marker-icon-2x", "marker-shadow")
    },
}


def csp(tile_source: str | None = None) -> str:
    """Nothing but this origin (no CDN, no inline script, no framing), and the map's tile
    server when one is configured (Settings.console_tile_url)."""
    images = "'self' data:" + (f" {tile_source}" if tile_source else "")
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; img-src {images};"
        " connect-src 'self'; media-src 'self' data:; frame-ancestors 'none'; base-uri 'none';"
        " form-action 'self'"
    )


CSP = csp()
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# Outcome categories of a resolution: code -> (lifecycle action, Chinese label).
OUTCOMES: dict[str, tuple[HumanAction, str]] = {
    "arrived_ok": ("resolve", "到达无事"),
    "handled": ("resolve", "已处理"),
    "hospital": ("resolve", "送医"),
    "false_alarm": ("false_alarm", "误报"),
}
Outcome = Literal["arrived_ok", "handled", "hospital", "false_alarm"]


class ConsoleActionIn(BaseModel):
    note: str = Field("", max_length=500)
    outcome: Outcome | None = None
    # a false alarm's reason (operator_api.FALSE_ALARM_REASONS): required for 误报
    reason: str | None = Field(None, max_length=40)


def _static(name: str) -> str:
    return (resources.files("operator_api") / "static" / name).read_text(encoding="utf-8")


def _page(
    title: str, body: str, script: str | None = None, tile_source: str | None = None
) -> HTMLResponse:
    tag = ""
    if script:  # the console itself, with the map library it draws with
        tag = (
            '<link rel="stylesheet" href="/console/static/vendor/leaflet/leaflet.css">'
            '<script src="/console/static/vendor/leaflet/leaflet.js" defer></script>'
            f'<script src="/console/static/{script}" defer></script>'
        )
    html = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>{tag}"
        '<link rel="stylesheet" href="/console/static/console.css">'
        f"</head><body>{body}</body></html>"
    )
    return HTMLResponse(html, headers={**PAGE_HEADERS, "Content-Security-Policy": csp(tile_source)})


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _login_page(message: str = "") -> HTMLResponse:
    note = f'<p class="login-error">{message}</p>' if message else ""
    body = (
        '<main class="login"><h1>居家养老应急调度台</h1>'
        '<form method="post" action="/console/login">'
        '<label for="token">访问令牌</label>'
        '<input id="token" name="token" type="password" autocomplete="off" required>'
        f'{note}<button type="submit">登录</button></form>'
        '<p class="hint">令牌由管理员通过 <code>python -m operator_api create-token</code> 发放。</p>'
        "</main>"
    )
    response = _page("登录 · 应急调度台", body)
    if message:
        response.status_code = 401
    return response


def _with_cookie(response: Response, request: Request, token: str) -> Response:
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE_S,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _same_origin(request: Request) -> None:
    """Refuse a state-changing request sent from another site."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(403, "cross-site request refused")


async def console_principal(
    pool: Pool, cw_console: Annotated[str | None, Cookie()] = None
) -> Principal:
    principal = await resolve_token(pool, cw_console) if cw_console else None
    if principal is None:
        raise HTTPException(401, "not logged in to the console")
    return principal


ConsolePrincipal = Annotated[Principal, Depends(console_principal)]


async def console_writer(request: Request, principal: ConsolePrincipal) -> Principal:
    """A console principal allowed to change something: same origin, console header."""
    _same_origin(request)
    if request.headers.get(CONSOLE_HEADER) != "1":
        raise HTTPException(403, "missing console header")
    return principal


ConsoleWriter = Annotated[Principal, Depends(console_writer)]


# --- pages --------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def console_page(
    request: Request,
    pool: Pool,
    token: Annotated[str | None, Query()] = None,
    cw_console: Annotated[str | None, Cookie()] = None,
) -> Response:
    if token is not None:  # a link with the token: into the cookie, out of the address bar
        if await resolve_token(pool, token) is None:
            return _login_page("令牌无效或已被吊销。")
        redirect = RedirectResponse("/console", status_code=303, headers=PAGE_HEADERS)
        return _with_cookie(redirect, request, token)
    if cw_console is None or await resolve_token(pool, cw_console) is None:
        return _login_page()
    return _page(
        "应急调度台",
        '<div id="app" class="loading">正在加载…</div>',
        "console.js",
        tile_source(_settings(request).console_tile_url),
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, pool: Pool) -> Response:
    _same_origin(request)
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    if not token or await resolve_token(pool, token) is None:
        log.info("console login refused")
        return _login_page("令牌无效或已被吊销。")
    redirect = RedirectResponse("/console", status_code=303, headers=PAGE_HEADERS)
    return _with_cookie(redirect, request, token)


@router.post("/logout")
async def logout(request: Request) -> Response:
    _same_origin(request)
    response = RedirectResponse("/console", status_code=303, headers=PAGE_HEADERS)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(404, "no such file")
    return Response(
        _static(name),
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/static/vendor/{path:path}")
async def vendor_file(path: str) -> Response:
    if path not in VENDOR_FILES:
        raise HTTPException(404, "no such file")
    data = (resources.files("operator_api") / "static" / "vendor" / path).read_bytes()
    return Response(
        data,
        media_type=VENDOR_FILES[path],
        headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/docs", response_class=HTMLResponse)
async def console_docs(request: Request, _principal: ConsolePrincipal) -> HTMLResponse:
    """The API's documentation for a logged-in console user (no CDN)."""
    return HTMLResponse(docs_page(request.app.openapi()), headers={"Cache-Control": "no-store"})


# --- JSON ---------------------------------------------------------------------------------


def _title(principal: Principal) -> str:
    if principal.role == "admin":
        return "管理员（全部辖区）"
    if principal.role == "operator":
        return f"值班调度员 {principal.subject_id}（{principal.scope_label}）"
    return f"网格员 {principal.subject_id}（{principal.grid_id}）"


@router.get("/api/me")
async def me(request: Request, principal: ConsolePrincipal, pool: Pool) -> JSONResponse:
    grids = await console_data.grids_in_scope(pool, principal)
    profiles = await console_data.care_profiles(pool)
    settings = _settings(request)
    return JSONResponse(
        {
            "role": principal.role,
            "subject": principal.subject_id,
            "district": principal.district,
            "grid": principal.grid_id,
            "title": _title(principal),
            "full_numbers": principal.dials_contacts,
            "grids": grids,
            "outcomes": {code: label for code, (_a, label) in OUTCOMES.items()},
            "call_outcomes": followup.CALL_OUTCOMES,
            "false_alarm_reasons": FALSE_ALARM_REASONS,
            "care_profiles": profiles,
            "device_states": console_data.DEVICE_STATES,
            "reopen_hours": settings.console_reopen_hours,
            "map": {
                "tile_url": settings.console_tile_url or None,
                "crs": settings.console_tile_crs,
                "attribution": settings.console_tile_attribution,
            },
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/api/queue")
async def queue(principal: ConsolePrincipal, pool: Pool) -> JSONResponse:
    async with pool.connection() as conn:
        now = await console_data.db_now(conn)
    items = await console_data.open_queue(pool, principal)
    return JSONResponse(
        {"now": now.isoformat(), "items": items}, headers={"Cache-Control": "no-store"}
    )


@router.get("/api/alerts/{alert_id}")
async def alert(
    alert_id: UUID, request: Request, principal: ConsolePrincipal, pool: Pool
) -> JSONResponse:
    settings = _settings(request)
    card = await console_data.alert_card(pool, principal, alert_id)
    elder = card["elder"]
    card["map"] = map_view(
        elder["lat"],
        elder["lon"],
        tile_url=settings.console_tile_url,
        crs=settings.console_tile_crs,
        attribution=settings.console_tile_attribution,
    )
    closed_at = card["alert"]["closed_at"]
    card["reopen_until"] = (
        None
        if closed_at is None or card["alert"]["status"] not in followup.REOPENABLE
        else (
            datetime.fromisoformat(closed_at) + timedelta(hours=settings.console_reopen_hours)
        ).isoformat()
    )
    return JSONResponse(card, headers={"Cache-Control": "no-store"})


@router.post("/api/alerts/{alert_id}/call")
async def call(
    alert_id: UUID, body: followup.CallIn, principal: ConsoleWriter, pool: Pool
) -> JSONResponse:
    """A phone call with its outcome on the timeline (operator_api.followup)."""
    result = await followup.log_call(pool, principal, alert_id, body, via="console")
    return JSONResponse(result.model_dump(mode="json"))


@router.post("/api/alerts/{alert_id}/reopen")
async def reopen(
    alert_id: UUID,
    body: followup.ReopenIn,
    request: Request,
    principal: ConsoleWriter,
    pool: Pool,
) -> JSONResponse:
    """Reopen a closed alert within console_reopen_hours (operator_api.followup)."""
    result = await followup.reopen(
        pool,
        request.app.state.announce,
        principal,
        alert_id,
        body.note,
        followup.reopen_window(request),
        details={"via": "console"},
    )
    return JSONResponse(result.model_dump(mode="json"))


@router.post("/api/alerts/{alert_id}/take-over")
async def take_over(
    alert_id: UUID, body: TakeOverIn, request: Request, principal: ConsoleWriter, pool: Pool
) -> JSONResponse:
    """接手: the operator has it (operator_api.actions); the others are told to stay
    away only with stand_down; the note goes to everyone told."""
    details: dict[str, object] = {"via": "console", "stand_down": body.stand_down}
    result = await followup.act(
        pool, request.app.state.announce, principal, alert_id, "acknowledge", body.note, details
    )
    return JSONResponse(result.model_dump(mode="json"))


@router.post("/api/alerts/{alert_id}/dispatch")
async def dispatch(
    alert_id: UUID, body: DispatchIn, request: Request, principal: ConsoleWriter, pool: Pool
) -> JSONResponse:
    """派单: send a named person from the card's list (operator_api.actions.Dispatch);
    409 unless open, 422 for someone not in the registry."""
    sent = Dispatch(body.kind, body.id, body.note_to, body.stand_down)
    result = await followup.act(
        pool,
        request.app.state.announce,
        principal,
        alert_id,
        "acknowledge",
        body.note,
        {"via": "console"},
        dispatch=sent,
    )
    return JSONResponse(result.model_dump(mode="json"))


@router.post("/api/alerts/{alert_id}/{action}")
async def act(
    alert_id: UUID,
    action: Literal["acknowledge", "resolve", "note"],
    body: ConsoleActionIn,
    request: Request,
    principal: ConsoleWriter,
    pool: Pool,
) -> JSONResponse:
    """acknowledge; resolve with an outcome category; a note on the timeline. All go
    through operator_api.actions, the API's own action path."""
    note = body.note.strip()
    details: dict[str, object] = {"via": "console"}
    lifecycle: HumanAction
    if action == "resolve":
        if body.outcome is None:
            raise HTTPException(422, "resolve needs an outcome category")
        lifecycle, label = OUTCOMES[body.outcome]
        details.update(outcome=body.outcome, outcome_label=label)
        if lifecycle == "false_alarm":  # 422 without a reason
            details.update(false_alarm_details(body.reason, note))
    elif action == "note":
        if not note:
            raise HTTPException(422, "a note needs text")
        lifecycle = "note"
    else:
        lifecycle = "acknowledge"
    result = await followup.act(
        pool, request.app.state.announce, principal, alert_id, lifecycle, note, details
    )
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/api/elders")
async def elders(
    principal: ConsolePrincipal,
    pool: Pool,
    q: Annotated[str | None, Query(max_length=100)] = None,
    grid: Annotated[str | None, Query(max_length=100)] = None,
    district: Annotated[str | None, Query(max_length=100)] = None,
    profile: Annotated[str | None, Query(max_length=40)] = None,
    device: Annotated[console_data.DeviceState | None, Query()] = None,
) -> JSONResponse:
    found = await console_data.search_elders(
        pool, principal, q, grid, district, profile=profile, device=device
    )
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


@router.get("/api/elders/{elder_id}")
async def elder(elder_id: str, principal: ConsolePrincipal, pool: Pool) -> JSONResponse:
    detail = await get_elder(elder_id, principal, pool)  # 404 / OutOfScope like the API
    recent = await console_data.elder_alerts(pool, principal, elder_id)
    async with pool.connection() as conn:
        person = await console_data.person_of(conn, elder_id)
    return JSONResponse(
        {"elder": detail.model_dump(mode="json"), "alerts": recent, "person": person},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/api/reports/areas")
async def areas(
    principal: ConsolePrincipal,
    pool: Pool,
    period: Annotated[Literal["week", "month"], Query()] = "week",
) -> JSONResponse:
    """The street and district report (operator_api.reports) for this week or month,
    scoped and masked as the caller, like /api/reports/areas."""
    report: AreaReport = await area_report_now(pool, principal, period, None)
    return JSONResponse(report.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/api/reports/areas.{fmt}")
async def areas_download(
    fmt: Literal["csv", "xlsx"],
    principal: ConsolePrincipal,
    pool: Pool,
    period: Annotated[Literal["week", "month"], Query()] = "week",
) -> Response:
    """The same report as a CSV or XLSX download (operator_api.reports.export_response)."""
    return export_response(await area_report_now(pool, principal, period, None), fmt)


# --- live stream --------------------------------------------------------------------------


def _feed(request: Request) -> AlertFeed:
    """The process's one feed, started by the first stream."""
    state = request.app.state
    feed: AlertFeed | None = getattr(state, "alert_feed", None)
    if feed is None:
        feed = AlertFeed(str(state.pool.conninfo), _stopping(request))
        state.alert_feed = feed
    return feed


def _stopping(request: Request) -> asyncio.Event:
    """Set when the server stops (operator_api.app.run): streams end so it can."""
    stopping: asyncio.Event | None = getattr(request.app.state, "stopping", None)
    if stopping is None:
        stopping = asyncio.Event()
        request.app.state.stopping = stopping
    return stopping


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _next(queue: asyncio.Queue[str], stopping: asyncio.Event) -> str | None:
    """The next alert id; None on a heartbeat timeout or when the server stops. Nothing
    is left pending: a stream closed meanwhile (cancelled) leaves no task behind."""
    getting = asyncio.ensure_future(queue.get())
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait(
            {getting, stopped}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopped.cancel()
        if not getting.done():
            getting.cancel()
    if getting.done() and not getting.cancelled():
        return getting.result()  # also when it completed just as the wait ended
    return None


@router.get("/api/stream")
async def stream(request: Request, principal: ConsolePrincipal, pool: Pool) -> Response:
    """Server-sent events: `ready` once listening, then `alert` (a queue row, only for
    alerts in the caller's scope) on every committed change, `resync` when the queue
    must be reloaded; a comment every 15 s keeps proxies from closing the stream."""
    feed = _feed(request)
    stopping = _stopping(request)
    token = request.cookies.get(COOKIE, "")
    try:
        queue = await asyncio.wait_for(feed.subscribe(), 10)
    except TimeoutError:
        raise HTTPException(503, "live feed unavailable") from None

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 1000\n\n" + _event("ready", {"role": principal.role})
            while not stopping.is_set():
                alert_id = await _next(queue, stopping)
                if alert_id is None:
                    if stopping.is_set():
                        return
                    if await resolve_token(pool, token) is None:  # revoked meanwhile
                        yield _event("logout", {})
                        return
                    yield ": keep-alive\n\n"
                    continue
                pending = {alert_id}
                while not queue.empty():  # one look-up per alert, however many changes
                    pending.add(queue.get_nowait())
                if RESYNC in pending:
                    yield _event("resync", {})
                    continue
                for one in sorted(pending):
                    entry = await console_data.queue_entry(pool, principal, one)
                    if entry is not None:
                        yield _event("alert", entry)
        finally:
            feed.unsubscribe(queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
