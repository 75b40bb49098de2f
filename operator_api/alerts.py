"""/api/alerts: list with filters, one alert with its timeline, human actions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, LiteralString
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from psycopg import AsyncConnection, sql

from carewatch.messages import AlertKind, AlertStatus, Severity
from operator_api.actions import (
    AlertNotFound,
    Dispatch,
    HumanAction,
    act_and_announce,
    false_alarm_details,
)
from operator_api.auth import CurrentPrincipal, Pool
from operator_api.db import Row, Where, fetch_all, fetch_one, scope_conditions
from operator_api.labels import kind_label, status_label
from operator_api.masking import mask_model
from operator_api.models import (
    ActionIn,
    ActionResult,
    AlertDetail,
    AlertEventOut,
    AlertPage,
    AlertSummary,
    DispatchIn,
    EscalationOut,
    FalseAlarmIn,
    NotificationOut,
    ResolveIn,
    TakeOverIn,
)
from operator_api.scope import OutOfScope, Principal
from operator_api.validation import DistrictFilter, GridFilter, Offset

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

SUMMARY_COLUMNS: LiteralString = (
    "a.id, a.elder_id, e.name AS elder_name, e.district, e.grid_id, a.kind, a.severity,"
    " a.status, a.device_id, a.opened_at, a.acknowledged_at, a.acknowledged_by,"
    " a.closed_at, a.updates"
)
FROM_ALERTS: LiteralString = " FROM alerts a JOIN elders e ON e.id = a.elder_id"


def summary_fields(row: Row) -> dict[str, Any]:
    return {
        **row,
        "kind_label": kind_label(row["kind"]),
        "status_label": status_label(row["status"]),
    }


async def open_alerts_in_scope(conn: AsyncConnection[Any], principal: Principal) -> list[Row]:
    """Open alerts the principal may see, newest first (used by the phone page)."""
    where = Where()
    scope_conditions(where, principal)
    where.add("a.status IN ('pending', 'open', 'acknowledged')")
    query = (
        sql.SQL("SELECT " + SUMMARY_COLUMNS + FROM_ALERTS)
        + where.clause()
        + sql.SQL(" ORDER BY a.opened_at DESC LIMIT 200")
    )
    return await fetch_all(conn, query, where.params)


@router.get("", response_model=AlertPage)
async def list_alerts(
    principal: CurrentPrincipal,
    pool: Pool,
    status: Annotated[list[AlertStatus] | None, Query()] = None,
    kind: Annotated[list[AlertKind] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    district: DistrictFilter = None,
    grid: GridFilter = None,
    since: Annotated[datetime | None, Query(description="opened at or after")] = None,
    until: Annotated[datetime | None, Query(description="opened before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> AlertPage:
    """Alerts the caller may see, newest first. Repeat a filter to match any of its values."""
    principal.check_filters(district, grid)
    where = Where()
    scope_conditions(where, principal)
    if status:
        where.add("a.status = ANY(%s)", list(status))
    if kind:
        where.add("a.kind = ANY(%s)", list(kind))
    if severity:
        where.add("a.severity = ANY(%s)", list(severity))
    if district is not None:
        where.add("e.district = %s", district)
    if grid is not None:
        where.add("e.grid_id = %s", grid)
    if since is not None:
        where.add("a.opened_at >= %s", since)
    if until is not None:
        where.add("a.opened_at < %s", until)
    async with pool.connection() as conn:
        counted = await fetch_one(
            conn, sql.SQL("SELECT count(*) AS n" + FROM_ALERTS) + where.clause(), where.params
        )
        rows = await fetch_all(
            conn,
            sql.SQL("SELECT " + SUMMARY_COLUMNS + FROM_ALERTS)
            + where.clause()
            + sql.SQL(" ORDER BY a.opened_at DESC, a.id LIMIT %s OFFSET %s"),
            [*where.params, limit, offset],
        )
    page = AlertPage(
        total=counted["n"] if counted else 0,
        limit=limit,
        offset=offset,
        items=[AlertSummary(**summary_fields(r)) for r in rows],
    )
    return mask_model(principal, page)


@router.get("/{alert_id}", response_model=AlertDetail)
async def get_alert(alert_id: UUID, principal: CurrentPrincipal, pool: Pool) -> AlertDetail:
    """One alert with its audit timeline, escalation state and notifications."""
    async with pool.connection() as conn:
        row = await fetch_one(
            conn,
            "SELECT " + SUMMARY_COLUMNS + ", a.source_event_id, a.rule, a.device_time,"
            " a.confirmed_at, a.confidence, a.threshold, a.details"
            + FROM_ALERTS
            + " WHERE a.id = %s",
            (alert_id,),
        )
        if row is None:
            raise HTTPException(404, "no such alert")
        if not principal.sees_grid(row["grid_id"]):
            raise OutOfScope("alert outside this token's scope")
        events = await fetch_all(
            conn,
            "SELECT id, at, actor, action, details FROM alert_events"
            " WHERE alert_id = %s ORDER BY at, id",
            (alert_id,),
        )
        notifications = await fetch_all(
            conn,
            "SELECT id, step, purpose, channel, recipient_kind, recipient_id, recipient_name,"
            " address, status, attempts, last_error, created_at, sent_at, delivered_at"
            " FROM notifications WHERE alert_id = %s ORDER BY created_at, id",
            (alert_id,),
        )
        escalation = await fetch_one(
            conn,
            "SELECT policy, step, next_step_at, stopped_at, stopped_reason"
            " FROM escalations WHERE alert_id = %s",
            (alert_id,),
        )
    detail = AlertDetail(
        **summary_fields(row),
        escalation=EscalationOut(**escalation) if escalation else None,
        events=[AlertEventOut(**e) for e in events],
        notifications=[NotificationOut(**n) for n in notifications],
    )
    return mask_model(principal, detail)


async def _act(
    request: Request,
    pool: Pool,
    principal: Principal,
    alert_id: UUID,
    action: HumanAction,
    body: ActionIn,
    details: dict[str, object] | None = None,
    dispatch: Dispatch | None = None,
) -> ActionResult:
    announce = request.app.state.announce
    try:
        return await act_and_announce(
            pool, announce, principal, alert_id, action, body.note, details, dispatch=dispatch
        )
    except AlertNotFound:
        raise HTTPException(404, "no such alert") from None


@router.post("/{alert_id}/acknowledge", response_model=ActionResult)
async def acknowledge(
    alert_id: UUID,
    request: Request,
    principal: CurrentPrincipal,
    pool: Pool,
    body: ActionIn | None = None,
) -> ActionResult:
    """Take the alert on (as /take-over without stand_down): stops its escalation; the
    others are told who has it, not to stay away. 409 unless open/acknowledged."""
    return await _act(request, pool, principal, alert_id, "acknowledge", body or ActionIn())


@router.post("/{alert_id}/take-over", response_model=ActionResult)
async def take_over(
    alert_id: UUID,
    request: Request,
    principal: CurrentPrincipal,
    pool: Pool,
    body: TakeOverIn | None = None,
) -> ActionResult:
    """The operator takes the alert on: its escalation stops; everyone already told is
    told who has it and the note; told to stay away only with `stand_down`."""
    body = body or TakeOverIn()
    details: dict[str, object] = {"stand_down": body.stand_down}
    return await _act(request, pool, principal, alert_id, "acknowledge", body, details)


@router.post("/{alert_id}/dispatch", response_model=ActionResult)
async def dispatch(
    alert_id: UUID,
    request: Request,
    principal: CurrentPrincipal,
    pool: Pool,
    body: DispatchIn,
) -> ActionResult:
    """Send a named person: they handle the alert and are sent it (SMS, WeCom) with their
    own ack link and the note; the others are told whom the duty officer sent. 409
    unless open; 422 when the person is not in the registry."""
    sent = Dispatch(body.kind, body.id, body.note_to, body.stand_down)
    return await _act(request, pool, principal, alert_id, "acknowledge", body, None, sent)


@router.post("/{alert_id}/resolve", response_model=ActionResult)
async def resolve(
    alert_id: UUID,
    request: Request,
    principal: CurrentPrincipal,
    pool: Pool,
    body: ResolveIn | None = None,
) -> ActionResult:
    """Close the alert: stops its escalation and cancels its pending notifications; the
    family is told how it ended (`outcome`)."""
    body = body or ResolveIn()
    details: dict[str, object] = {"outcome": body.outcome} if body.outcome else {}
    return await _act(request, pool, principal, alert_id, "resolve", body, details)


@router.post("/{alert_id}/false-alarm", response_model=ActionResult)
async def false_alarm(
    alert_id: UUID,
    request: Request,
    principal: CurrentPrincipal,
    pool: Pool,
    body: FalseAlarmIn,
) -> ActionResult:
    """Close the alert as a false alarm; the family is told so, with the reason. 422
    without a reason."""
    details: dict[str, object] = {}
    if body.reason.strip() or body.note.strip():
        details = false_alarm_details(body.reason or body.note, body.note)
    return await _act(request, pool, principal, alert_id, "false_alarm", body, details)
