"""/api/elders: the elders a caller looks after, with their last sign of life."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from psycopg import AsyncConnection, sql

from carewatch import care_notes
from operator_api.auth import CurrentPrincipal, Pool
from operator_api.db import Row, Where, db_now, fetch_all, fetch_one, scope_conditions
from operator_api.masking import mask_model
from operator_api.models import (
    CareNotesOut,
    ContactOut,
    DeviceOut,
    ElderDetail,
    ElderPage,
    ElderSummary,
)
from operator_api.scope import OutOfScope, Principal
from operator_api.validation import DistrictFilter, ElderId, GridFilter, Offset

router = APIRouter(prefix="/api/elders", tags=["registry"])

# A device whose clock runs ahead must not make an elder look alive for hours to come:
# only readings up to this far past "now" count as a sign of life.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=5)

# Last sign of life up to a moment (parameter: that moment, twice): the latest telemetry,
# device contact or visit check-in that reached the elder (visits/, migration 075),
# whichever is later. Needs the elders table aliased `e`. (Telemetry takes the moment as
# its own parameter so its partitions are pruned at plan time.)
LIFE_JOINS = sql.SQL(
    " CROSS JOIN LATERAL (SELECT %s::timestamptz AS upto) life"
    " LEFT JOIN LATERAL (SELECT max(d.last_seen) AS seen FROM devices d"
    "   WHERE d.elder_id = e.id AND d.last_seen <= life.upto) dev ON true"
    " LEFT JOIN LATERAL (SELECT t.ts FROM telemetry t"
    "   WHERE t.elder_id = e.id AND t.ts <= %s ORDER BY t.ts DESC LIMIT 1) tel ON true"
    " LEFT JOIN LATERAL (SELECT v.at FROM visit_checkins v"
    "   WHERE v.elder_id = e.id AND v.outcome IN ('visited', 'phoned') AND v.at <= life.upto"
    "   ORDER BY v.at DESC LIMIT 1) vis ON true"
)
LAST_SIGN_OF_LIFE = sql.SQL("GREATEST(dev.seen, tel.ts, vis.at)")

_SUMMARY = (
    sql.SQL(
        "SELECT e.id, e.name, e.district, e.street, e.grid_id, e.care_profile_id, e.lives_alone, "
    )
    + LAST_SIGN_OF_LIFE
    + sql.SQL(
        " AS last_sign_of_life,"
        " (SELECT count(*) FROM alerts a WHERE a.elder_id = e.id"
        "   AND a.status IN ('pending', 'open', 'acknowledged')) AS open_alerts"
        " FROM elders e"
    )
    + LIFE_JOINS
)


def life_horizon(now: datetime) -> datetime:
    return now + CLOCK_SKEW_ALLOWANCE


async def elders_in_scope(
    conn: AsyncConnection[Any],
    principal: Principal,
    now: datetime,
    *,
    grid: str | None = None,
    district: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> tuple[int, list[Row]]:
    """(total, one page of elders) the principal may see, by name."""
    principal.check_filters(district, grid)
    where = Where()
    scope_conditions(where, principal)
    if grid is not None:
        where.add("e.grid_id = %s", grid)
    if district is not None:
        where.add("e.district = %s", district)
    counted = await fetch_one(
        conn, sql.SQL("SELECT count(*) AS n FROM elders e") + where.clause(), where.params
    )
    horizon = life_horizon(now)
    rows = await fetch_all(
        conn,
        _SUMMARY + where.clause() + sql.SQL(" ORDER BY e.name, e.id LIMIT %s OFFSET %s"),
        [horizon, horizon, *where.params, limit, offset],
    )
    return (counted["n"] if counted else 0), rows


@router.get("", response_model=ElderPage)
async def list_elders(
    principal: CurrentPrincipal,
    pool: Pool,
    grid: GridFilter = None,
    district: DistrictFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Offset = 0,
) -> ElderPage:
    async with pool.connection() as conn:
        total, rows = await elders_in_scope(
            conn,
            principal,
            await db_now(conn),
            grid=grid,
            district=district,
            limit=limit,
            offset=offset,
        )
    page = ElderPage(
        total=total, limit=limit, offset=offset, items=[ElderSummary(**r) for r in rows]
    )
    return mask_model(principal, page)


@router.get("/{elder_id}", response_model=ElderDetail)
async def get_elder(elder_id: ElderId, principal: CurrentPrincipal, pool: Pool) -> ElderDetail:
    """Profile, devices (last seen, battery, online) and contacts of one elder."""
    async with pool.connection() as conn:
        horizon = life_horizon(await db_now(conn))
        row = await fetch_one(
            conn,
            sql.SQL(
                "SELECT s.*, e.phone, e.address, e.lat, e.lon, p.name AS care_profile_name FROM ("
            )
            + _SUMMARY
            + sql.SQL(
                " WHERE e.id = %s) s JOIN elders e ON e.id = s.id"
                " LEFT JOIN care_profiles p ON p.id = e.care_profile_id"
            ),
            (horizon, horizon, elder_id),
        )
        if row is None:
            raise HTTPException(404, "no such elder")
        if not principal.sees_grid(row["grid_id"]):
            raise OutOfScope("elder outside this token's scope")
        devices = await fetch_all(
            conn,
            "SELECT id, kind, last_seen, battery, online FROM devices"
            " WHERE elder_id = %s ORDER BY kind, id",
            (elder_id,),
        )
        contacts = await fetch_all(
            conn,
            "SELECT priority, name, relation, phone, wecom_userid FROM contacts"
            " WHERE elder_id = %s ORDER BY priority",
            (elder_id,),
        )
        notes = await care_notes.load(conn, elder_id)
    detail = ElderDetail(
        **row,
        devices=[DeviceOut(**d) for d in devices],
        contacts=[ContactOut(**c) for c in contacts],
        care_notes=CareNotesOut(**notes.as_dict()),
    )
    return mask_model(principal, detail)
