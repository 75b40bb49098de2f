"""/m: the grid worker's phone page. Server-rendered, no build step.

The worker opens /m?token=... once (from an SMS or WeCom link); the token moves into an
HttpOnly cookie and the browser is redirected to /m, so the secret does not stay in the
address bar or the history. Buttons post back with the cookie (SameSite=Strict).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import APIRouter, Cookie, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from psycopg import AsyncConnection

from carewatch.alert_lifecycle import TransitionError
from operator_api.actions import AlertNotFound, act_and_announce
from operator_api.alerts import open_alerts_in_scope
from operator_api.auth import Pool
from operator_api.db import fetch_one
from operator_api.elders import elders_in_scope
from operator_api.masking import mask_model, mask_text
from operator_api.mobile_page import render_message, render_page, render_report
from operator_api.models import CheckinIn
from operator_api.reports import Period, area_report_now, export_response
from operator_api.scope import OutOfScope, Principal
from operator_api.tokens import resolve_token
from operator_api.validation import FIRST_DAY, ID_PATTERN, LAST_DAY
from operator_api.visits import check_in_and_publish, visit_list

router = APIRouter(tags=["phone page"])

COOKIE = "cw_token"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
_NO_STORE = {"Cache-Control": "no-store"}


def _message(status: int, title: str, text: str) -> HTMLResponse:
    return HTMLResponse(render_message(title, text), status_code=status, headers=_NO_STORE)


def _bad_link() -> HTMLResponse:
    return _message(401, "链接无效", "链接无效或已失效，请联系管理员获取新的链接。")


async def _title(conn: AsyncConnection[Any], principal: Principal) -> str:
    if principal.role == "grid_worker":
        row = await fetch_one(
            conn,
            "SELECT w.name AS worker, g.name AS grid FROM grid_workers w"
            " JOIN grids g ON g.id = w.grid_id WHERE w.id = %s",
            (principal.subject_id,),
        )
        if row is not None:
            return f"{row['worker']}（{row['grid']}）"
    if principal.role == "operator":
        return f"值班员 {principal.subject_id}（{principal.scope_label}）"
    return "管理员"


@router.get("/m", response_class=HTMLResponse)
async def phone_page(
    request: Request,
    pool: Pool,
    token: Annotated[str | None, Query(description="one-time entry; moved to a cookie")] = None,
    cw_token: Annotated[str | None, Cookie()] = None,
) -> Response:
    """我的待处理告警 and 我的老人 for the holder of the token."""
    if token is not None:
        if await resolve_token(pool, token) is None:
            return _bad_link()
        redirect = RedirectResponse("/m", status_code=303, headers=_NO_STORE)
        redirect.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE_S,
            path="/m",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return redirect
    principal = await resolve_token(pool, cw_token) if cw_token else None
    if principal is None:
        return _bad_link()
    async with pool.connection() as conn:
        now_row = await fetch_one(conn, "SELECT now() AS now")
        assert now_row is not None
        now: datetime = now_row["now"]
        alerts = await open_alerts_in_scope(conn, principal)
        _total, elders = await elders_in_scope(conn, principal, now, limit=1000)
        title = await _title(conn, principal)
        visits = mask_model(principal, await visit_list(conn, principal, now))
    # the page shows these rows' names: free text, as in the API's models
    alerts = [{**a, "elder_name": mask_text(principal, a["elder_name"])} for a in alerts]
    elders = [{**e, "name": mask_text(principal, e["name"])} for e in elders]
    page = render_page(title, alerts, elders, now, visits.items)
    return HTMLResponse(page, headers=_NO_STORE)


@router.post("/m/alerts/{alert_id}/{action}", include_in_schema=False)
async def phone_action(
    alert_id: UUID,
    action: Literal["acknowledge", "resolve"],
    request: Request,
    pool: Pool,
    cw_token: Annotated[str | None, Cookie()] = None,
) -> Response:
    principal = await resolve_token(pool, cw_token) if cw_token else None
    if principal is None:
        return _bad_link()
    try:
        await act_and_announce(
            pool, request.app.state.announce, principal, alert_id, action, "手机页面操作"
        )
    except AlertNotFound:
        return _message(404, "告警不存在", "该告警不存在。")
    except OutOfScope:
        return _message(403, "无权操作", "该告警不在您负责的范围内。")
    except TransitionError:
        pass  # somebody else changed it first: the page shows where it stands now
    return RedirectResponse("/m", status_code=303, headers=_NO_STORE)


@router.post("/m/visits/{elder_id}/checkin", include_in_schema=False)
async def phone_checkin(
    elder_id: Annotated[str, Path(pattern=ID_PATTERN)],
    request: Request,
    pool: Pool,
    cw_token: Annotated[str | None, Cookie()] = None,
) -> Response:
    """A visit check-in from the page's form (outcome button, optional note)."""
    principal = await resolve_token(pool, cw_token) if cw_token else None
    if principal is None:
        return _bad_link()
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    outcome = (form.get("outcome") or [""])[0]
    note = (form.get("note") or [""])[0].strip()
    if outcome not in ("visited", "phoned", "not_home") or len(note) > 500:
        return _message(422, "登记失败", "请选择走访结果，备注不超过500字。")
    try:
        await check_in_and_publish(
            pool,
            request.app.state.publish_event,
            principal,
            elder_id,
            CheckinIn(outcome=outcome, note=note),
        )
    except HTTPException:
        return _message(404, "老人不存在", "该老人不存在。")
    except OutOfScope:
        return _message(403, "无权操作", "该老人不在您负责的范围内。")
    return RedirectResponse("/m#visits", status_code=303, headers=_NO_STORE)


ReportDate = Annotated[date | None, Query(alias="date", ge=FIRST_DAY, le=LAST_DAY)]


@router.get("/m/reports", response_class=HTMLResponse, include_in_schema=False)
async def phone_report(
    pool: Pool,
    period: Period = "week",
    day: ReportDate = None,
    cw_token: Annotated[str | None, Cookie()] = None,
) -> Response:
    """The street and district report as a page (the caller's scope)."""
    principal = await resolve_token(pool, cw_token) if cw_token else None
    if principal is None:
        return _bad_link()
    report = await area_report_now(pool, principal, period, day)
    async with pool.connection() as conn:
        title = await _title(conn, principal)
    return HTMLResponse(render_report(title, report), headers=_NO_STORE)


@router.get("/m/reports.{fmt}", include_in_schema=False)
async def phone_report_export(
    fmt: Literal["csv", "xlsx"],
    pool: Pool,
    period: Period = "week",
    day: ReportDate = None,
    cw_token: Annotated[str | None, Cookie()] = None,
) -> Response:
    principal = await resolve_token(pool, cw_token) if cw_token else None
    if principal is None:
        return _bad_link()
    return export_response(await area_report_now(pool, principal, period, day), fmt)
