"""/api/reports/daily: one day's alerts, response times and silent elders."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter
from psycopg import AsyncConnection, sql

from operator_api.auth import CurrentPrincipal, Pool
from operator_api.db import Where, fetch_all, fetch_one, scope_conditions
from operator_api.elders import LAST_SIGN_OF_LIFE, LIFE_JOINS
from operator_api.labels import CHINA_TZ
from operator_api.masking import mask_model
from operator_api.models import DailyReport, DurationStats, SilentElder
from operator_api.scope import Principal
from operator_api.stats import percentile
from operator_api.validation import DistrictFilter, GridFilter, ReportDay

router = APIRouter(prefix="/api/reports", tags=["reports"])

SILENCE = timedelta(hours=24)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a calendar day in China time."""
    start = datetime.combine(day, time.min, tzinfo=CHINA_TZ)
    return start, start + timedelta(days=1)


def duration_stats(seconds: list[float]) -> DurationStats:
    return DurationStats(
        count=len(seconds), median_s=percentile(seconds, 0.5), p90_s=percentile(seconds, 0.9)
    )


def _elder_filter(principal: Principal, grid: str | None, district: str | None) -> Where:
    principal.check_filters(district, grid)
    where = Where()
    scope_conditions(where, principal)
    if grid is not None:
        where.add("e.grid_id = %s", grid)
    if district is not None:
        where.add("e.district = %s", district)
    return where


async def _silent_elders(
    conn: AsyncConnection[Any], elders: Where, as_of: datetime
) -> list[SilentElder]:
    rows = await fetch_all(
        conn,
        sql.SQL("SELECT * FROM (SELECT e.id AS elder_id, e.name, e.grid_id, ")
        + LAST_SIGN_OF_LIFE
        + sql.SQL(" AS last_sign_of_life FROM elders e")
        + LIFE_JOINS
        + elders.clause()
        + sql.SQL(
            ") s WHERE last_sign_of_life IS NULL OR last_sign_of_life < %s"
            " ORDER BY last_sign_of_life NULLS FIRST, elder_id"
        ),
        [as_of, as_of, *elders.params, as_of - SILENCE],
    )
    return [SilentElder(**r) for r in rows]


@router.get("/daily", response_model=DailyReport)
async def daily_report(
    principal: CurrentPrincipal,
    pool: Pool,
    day: ReportDay,
    grid: GridFilter = None,
    district: DistrictFilter = None,
) -> DailyReport:
    """Alerts opened that day by kind, time to acknowledge and to resolve (median, p90),
    and elders not heard from in the 24 h before the end of the day (or now, for today)."""
    start, end = day_bounds(day)
    alerts = _elder_filter(principal, grid, district)
    alerts.add("a.opened_at >= %s AND a.opened_at < %s", start, end)
    async with pool.connection() as conn:
        rows = await fetch_all(
            conn,
            sql.SQL(
                "SELECT a.kind, a.status,"
                " extract(epoch FROM a.acknowledged_at - a.opened_at)::float8 AS ack_s,"
                " extract(epoch FROM a.closed_at - a.opened_at)::float8 AS close_s"
                " FROM alerts a JOIN elders e ON e.id = a.elder_id"
            )
            + alerts.clause(),
            alerts.params,
        )
        now_row = await fetch_one(conn, "SELECT now() AS now")
        assert now_row is not None
        elders = _elder_filter(principal, grid, district)
        silent = await _silent_elders(conn, elders, min(end, now_row["now"]))
    report = DailyReport(
        date=day,
        district=district,
        grid=grid,
        alerts_total=len(rows),
        alerts_by_kind=dict(sorted(Counter(r["kind"] for r in rows).items())),
        time_to_acknowledge=duration_stats([r["ack_s"] for r in rows if r["ack_s"] is not None]),
        time_to_resolve=duration_stats(
            [r["close_s"] for r in rows if r["status"] == "resolved" and r["close_s"] is not None]
        ),
        silent_elders=silent,
    )
    return mask_model(principal, report)
