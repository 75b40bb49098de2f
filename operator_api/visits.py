"""/api/visits: the visit list (定期巡访) of the caller's elders and visit check-ins.

The ranking is visits.ranking (pure); this module picks the elders under the caller's
scope (operator_api.elders.elders_in_scope, operator_api.db.scope_conditions) and hands
them to visits.store. The phone page (/m) shows the same list through `visit_list`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from carewatch.messages import Event
from operator_api.auth import CurrentPrincipal, Pool
from operator_api.db import Row, Where, db_now, fetch_one, scope_conditions
from operator_api.elders import elders_in_scope
from operator_api.labels import CHINA_TZ, SITE_TZ_NAME
from operator_api.masking import mask_model
from operator_api.models import (
    CheckinIn,
    CheckinOut,
    MeasureChangeOut,
    VisitItemOut,
    VisitList,
    VisitReason,
)
from operator_api.scope import OutOfScope, Principal
from operator_api.validation import DistrictFilter, ElderId, GridFilter
from visits.ranking import VisitItem, rank_visits
from visits.signs import checkin_event
from visits.store import (
    OUTCOME_LABELS,
    latest_by_elder,
    load_inputs,
    recent_checkins,
    record_checkin,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/visits", tags=["visits"])

MAX_ELDERS = 1000  # a grid has ~200 elders; a district caller should filter by grid


def checkin_out(row: Row) -> CheckinOut:
    return CheckinOut(**row, outcome_label=OUTCOME_LABELS.get(row["outcome"], row["outcome"]))


def item_out(item: VisitItem, last: Row | None) -> VisitItemOut:
    return VisitItemOut(
        elder_id=item.elder_id,
        name=item.name,
        grid_id=item.grid_id,
        address=item.address,
        score=item.score,
        reasons=[VisitReason(points=round(r.points, 2), text=r.text) for r in item.reasons],
        decline=[
            MeasureChangeOut(
                measure=c.measure, recent=c.recent, baseline=c.baseline, drop=round(c.drop, 3)
            )
            for c in (item.decline.changes if item.decline else ())
        ],
        days_since_visit=item.days_since_visit,
        last_checkin=checkin_out(last) if last is not None else None,
    )


async def visit_list(
    conn: AsyncConnection[Any],
    principal: Principal,
    now: datetime,
    *,
    grid: str | None = None,
    district: str | None = None,
) -> VisitList:
    """The caller's elders ranked for today's visits (unmasked: the caller masks)."""
    _total, elders = await elders_in_scope(
        conn, principal, now, grid=grid, district=district, limit=MAX_ELDERS
    )
    local_now = now.astimezone(CHINA_TZ)
    ranked = rank_visits(await load_inputs(conn, elders, local_now, SITE_TZ_NAME), local_now)
    latest = latest_by_elder(
        await recent_checkins(conn, [e["id"] for e in elders], limit=MAX_ELDERS * 4)
    )
    return VisitList(generated_at=now, items=[item_out(i, latest.get(i.elder_id)) for i in ranked])


async def check_in(
    conn: AsyncConnection[Any], principal: Principal, elder_id: str, body: CheckinIn
) -> CheckinOut:
    """Record a check-in for an elder the caller may see (404 unknown, 403 outside)."""
    if await fetch_one(conn, "SELECT 1 FROM elders WHERE id = %s", (elder_id,)) is None:
        raise HTTPException(404, "no such elder")
    where = Where()
    where.add("e.id = %s", elder_id)
    scope_conditions(where, principal)
    found = await fetch_one(
        conn, sql.SQL("SELECT e.id FROM elders e") + where.clause(), where.params
    )
    if found is None:
        raise OutOfScope("elder outside this token's scope")
    saved = await record_checkin(conn, elder_id, body.outcome, principal.actor, body.note)
    return checkin_out(saved)


async def check_in_and_publish(
    pool: AsyncConnectionPool,
    publish_event: Callable[[Event], Awaitable[None]],
    principal: Principal,
    elder_id: str,
    body: CheckinIn,
) -> CheckinOut:
    """check_in in its own transaction; after the commit, an in-person visit goes to the
    rules engine as a sign of life (visits.signs). If the bus is down the check-in stays
    recorded (and a sign of life on the operator side); the rules miss that one sign."""
    async with pool.connection() as conn:
        saved = await check_in(conn, principal, elder_id, body)
    event = checkin_event(saved.model_dump())
    if event is not None:
        try:
            await publish_event(event)
        except Exception:
            log.warning("visit check-in not published to the rules", exc_info=True)
    return saved


@router.get("", response_model=VisitList)
async def get_visits(
    principal: CurrentPrincipal,
    pool: Pool,
    grid: GridFilter = None,
    district: DistrictFilter = None,
) -> VisitList:
    """Today's visit list: the caller's elders, highest risk first, each with the reasons
    (独居, alerts and false alarms in 30 days, devices, silence, slow decline, days since
    the last visit) and their last check-in."""
    async with pool.connection() as conn:
        found = await visit_list(conn, principal, await db_now(conn), grid=grid, district=district)
    return mask_model(principal, found)


@router.post("/{elder_id}/checkins", response_model=CheckinOut, status_code=201)
async def post_checkin(
    elder_id: ElderId, body: CheckinIn, request: Request, principal: CurrentPrincipal, pool: Pool
) -> CheckinOut:
    """Record a visit (visited), a phone call (phoned) or a knock nobody answered
    (not_home), with a note. Visited and phoned are a sign of life."""
    saved = await check_in_and_publish(
        pool, request.app.state.publish_event, principal, elder_id, body
    )
    return mask_model(principal, saved)
