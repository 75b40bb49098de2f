"""/api/stations: care centres, stations and mutual-aid points in the caller's region."""

from __future__ import annotations

from fastapi import APIRouter
from psycopg import sql

from operator_api.auth import CurrentPrincipal, Pool
from operator_api.db import Where, fetch_all
from operator_api.masking import mask_models
from operator_api.models import StationOut
from operator_api.scope import station_predicate
from operator_api.validation import DistrictFilter

router = APIRouter(prefix="/api/stations", tags=["registry"])


@router.get("", response_model=list[StationOut])
async def list_stations(
    principal: CurrentPrincipal, pool: Pool, district: DistrictFilter = None
) -> list[StationOut]:
    """Stations the caller may see (those in their region and those serving it),
    optionally of one `district`."""
    principal.check_filters(district, None)
    where = Where()
    scoped = station_predicate(principal)
    if scoped is not None:
        fragment, params = scoped
        where.add(fragment, *params)
    if district is not None:
        where.add("s.district = %s", district)
    async with pool.connection() as conn:
        rows = await fetch_all(
            conn,
            sql.SQL(
                "SELECT s.id, s.name, s.kind, s.district, s.street, s.lat, s.lon, s.phone,"
                " s.staffed, s.duty_start, s.duty_end FROM stations s"
            )
            + where.clause()
            + sql.SQL(" ORDER BY s.district, s.name, s.id"),
            where.params,
        )
    return mask_models(principal, [StationOut(**r) for r in rows])
