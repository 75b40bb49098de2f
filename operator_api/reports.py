"""/api/reports: one day's alerts, response times and silent elders (daily); visits done
against due, alerts and response times per street and district (areas, docs/visits.md)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal, LiteralString

from fastapi import APIRouter, Query
from fastapi.responses import Response
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from operator_api.auth import CurrentPrincipal, Pool
from operator_api.db import Row, Where, db_now, fetch_all, fetch_one, scope_conditions
from operator_api.elders import LAST_SIGN_OF_LIFE, LIFE_JOINS
from operator_api.labels import CHINA_TZ
from operator_api.masking import mask_model
from operator_api.models import AreaReport, AreaReportRow, DailyReport, DurationStats, SilentElder
from operator_api.report_export import XLSX_MEDIA, filename, to_csv, to_xlsx
from operator_api.scope import Principal
from operator_api.stats import percentile
from operator_api.validation import FIRST_DAY, LAST_DAY, DistrictFilter, GridFilter, ReportDay

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


# --- the street and district report for the civil-affairs office (docs/visits.md) -----

Period = Literal["week", "month"]


def period_bounds(period: Period, day: date) -> tuple[date, date]:
    """First and last day (inclusive) of the week (Monday-Sunday) or month of `day`."""
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=6)
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following - timedelta(days=1)


class AreaFigures:
    """Figures of one street, or of a district's streets together."""

    def __init__(self) -> None:
        self.elders = self.due = self.done = self.checkins = self.offline = 0
        self.alerts = self.false_alarms = 0
        self.ack_s: list[float] = []
        self.arrive_s: list[float] = []

    def add(self, other: AreaFigures) -> None:
        self.elders += other.elders
        self.due += other.due
        self.done += other.done
        self.checkins += other.checkins
        self.offline += other.offline
        self.alerts += other.alerts
        self.false_alarms += other.false_alarms
        self.ack_s += other.ack_s
        self.arrive_s += other.arrive_s

    def row(self, level: str, district: str, street: str | None) -> AreaReportRow:
        return AreaReportRow(
            level=level,
            district=district,
            street=street,
            elders=self.elders,
            visits_due=self.due,
            visits_done=self.done,
            visit_rate=self.done / self.due if self.due else None,
            checkins=self.checkins,
            alerts=self.alerts,
            time_to_acknowledge=duration_stats(self.ack_s),
            time_to_arrive=duration_stats(self.arrive_s),
            false_alarms=self.false_alarms,
            false_alarm_rate=self.false_alarms / self.alerts if self.alerts else None,
            devices_offline=self.offline,
        )


def area_rows(streets: dict[tuple[str, str], AreaFigures]) -> list[AreaReportRow]:
    """Each street (by district, then street), then its district's total."""
    rows: list[AreaReportRow] = []
    for district in sorted({d for d, _s in streets}):
        total = AreaFigures()
        for (d, street), figures in sorted(streets.items()):
            if d == district:
                rows.append(figures.row("street", district, street))
                total.add(figures)
        rows.append(total.row("district", district, None))
    return rows


async def _count_by_street(
    conn: AsyncConnection[Any], rows: LiteralString, where: Where
) -> list[Row]:
    """(district, street, n) of `rows` (joined to elders `e`) matching `where`."""
    return await fetch_all(
        conn,
        sql.SQL("SELECT e.district, e.street, count(*) AS n FROM ")
        + sql.SQL(rows)
        + where.clause()
        + sql.SQL(" GROUP BY 1, 2"),
        where.params,
    )


async def area_report(
    conn: AsyncConnection[Any],
    principal: Principal,
    period: Period,
    day: date,
    grid: str | None = None,
    district: str | None = None,
) -> AreaReport:
    """Visits done against due (elders due a visit or a call every period: those living
    alone and the empty-nest), alerts, response times, false alarms and devices offline
    per street and district, over the caller's elders (scope_conditions)."""
    first, last = period_bounds(period, day)
    start, _ = day_bounds(first)
    _, end = day_bounds(last)
    streets: dict[tuple[str, str], AreaFigures] = defaultdict(AreaFigures)

    def area(row: Row) -> AreaFigures:
        return streets[(row["district"], row["street"])]

    elders = _elder_filter(principal, grid, district)
    for r in await fetch_all(
        conn,
        sql.SQL(
            "SELECT e.district, e.street, count(*) AS elders,"
            " count(*) FILTER (WHERE (e.lives_alone OR e.care_profile_id IN ('alone', 'empty_nest')))"
            "   AS due,"
            " count(*) FILTER (WHERE (e.lives_alone OR e.care_profile_id IN ('alone', 'empty_nest'))"
            "   AND EXISTS (SELECT 1 FROM visit_checkins v"
            "   WHERE v.elder_id = e.id AND v.outcome IN ('visited', 'phoned')"
            "   AND v.at >= %s AND v.at < %s)) AS done"
            " FROM elders e"
        )
        + elders.clause()
        + sql.SQL(" GROUP BY 1, 2"),
        [start, end, *elders.params],
    ):
        figures = area(r)
        figures.elders, figures.due, figures.done = r["elders"], r["due"], r["done"]
    checkins = _elder_filter(principal, grid, district)
    checkins.add("v.at >= %s AND v.at < %s", start, end)
    for r in await _count_by_street(
        conn, "visit_checkins v JOIN elders e ON e.id = v.elder_id", checkins
    ):
        area(r).checkins = r["n"]
    alerts = _elder_filter(principal, grid, district)
    alerts.add("a.opened_at >= %s AND a.opened_at < %s", start, end)
    for r in await fetch_all(
        conn,
        sql.SQL(
            "SELECT e.district, e.street, a.status,"
            " extract(epoch FROM a.acknowledged_at - a.opened_at)::float8 AS ack_s,"
            " extract(epoch FROM (SELECT min(ev.at) FROM alert_events ev"
            "   WHERE ev.alert_id = a.id AND ev.action = 'arrived') - a.opened_at)::float8"
            "   AS arrive_s"
            " FROM alerts a JOIN elders e ON e.id = a.elder_id"
        )
        + alerts.clause(),
        alerts.params,
    ):
        figures = area(r)
        figures.alerts += 1
        figures.false_alarms += r["status"] == "false_alarm"
        if r["ack_s"] is not None:
            figures.ack_s.append(r["ack_s"])
        if r["arrive_s"] is not None:
            figures.arrive_s.append(r["arrive_s"])
    devices = _elder_filter(principal, grid, district)
    devices.add("NOT d.online")
    for r in await _count_by_street(conn, "devices d JOIN elders e ON e.id = d.elder_id", devices):
        area(r).offline = r["n"]
    return AreaReport(period=period, start=first, end=last, rows=area_rows(dict(streets)))


async def _today(conn: AsyncConnection[Any]) -> date:
    return (await db_now(conn)).astimezone(CHINA_TZ).date()


async def area_report_now(
    pool: AsyncConnectionPool,
    principal: Principal,
    period: Period,
    day: date | None,
    grid: str | None = None,
    district: str | None = None,
) -> AreaReport:
    """area_report for `day`, or today (China time); masked for the caller."""
    async with pool.connection() as conn:
        found = await area_report(
            conn, principal, period, day or await _today(conn), grid, district
        )
    return mask_model(principal, found)


PeriodQuery = Annotated[Period, Query(description="week (Monday-Sunday) or month")]
OptionalDay = Annotated[
    date | None,
    Query(
        alias="date", ge=FIRST_DAY, le=LAST_DAY, description="a day of the period; default today"
    ),
]


@router.get("/areas", response_model=AreaReport)
async def areas_report(
    principal: CurrentPrincipal,
    pool: Pool,
    period: PeriodQuery = "week",
    day: OptionalDay = None,
    grid: GridFilter = None,
    district: DistrictFilter = None,
) -> AreaReport:
    """Per street and district, for the civil-affairs office: 独居/空巢 elders visited
    (or phoned) in the week or month against those due, check-ins, alerts, time to
    acknowledge and to arrive (median, p90), false-alarm rate, devices offline now."""
    return await area_report_now(pool, principal, period, day, grid, district)


def export_response(report: AreaReport, fmt: Literal["csv", "xlsx"]) -> Response:
    if fmt == "csv":
        body, media = to_csv(report), "text/csv; charset=utf-8"
    else:
        body, media = to_xlsx(report), XLSX_MEDIA
    disposition = f'attachment; filename="{filename(report, fmt)}"'
    return Response(body, media_type=media, headers={"Content-Disposition": disposition})


@router.get("/areas.{fmt}", response_class=Response)
async def areas_export(
    fmt: Literal["csv", "xlsx"],
    principal: CurrentPrincipal,
    pool: Pool,
    period: PeriodQuery = "week",
    day: OptionalDay = None,
    grid: GridFilter = None,
    district: DistrictFilter = None,
) -> Response:
    """The same report as a download with Chinese headers: CSV (UTF-8 with BOM) or XLSX
    (a title row, then the header)."""
    return export_response(await area_report_now(pool, principal, period, day, grid, district), fmt)
