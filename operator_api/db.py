"""Small query helpers over the app's connection pool (rows as dicts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

from fastapi import Request
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from operator_api.scope import Principal, scope_predicate

Query = LiteralString | sql.SQL | sql.Composed
Row = dict[str, Any]


def get_pool(request: Request) -> AsyncConnectionPool:
    """FastAPI dependency: the pool opened by the app's lifespan."""
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


async def fetch_all(conn: AsyncConnection[Any], query: Query, params: Any = ()) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def fetch_one(conn: AsyncConnection[Any], query: Query, params: Any = ()) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def db_now(conn: AsyncConnection[Any]) -> datetime:
    """The database's clock: every "now" of a request comes from one place."""
    row = await fetch_one(conn, "SELECT now() AS now")
    assert row is not None
    now: datetime = row["now"]
    return now


class Where:
    """AND-ed WHERE conditions with their parameters; fragments are code, never input."""

    def __init__(self) -> None:
        self._parts: list[sql.SQL] = []
        self.params: list[Any] = []

    def add(self, fragment: LiteralString, *params: Any) -> None:
        self._parts.append(sql.SQL(fragment))
        self.params.extend(params)

    def clause(self) -> sql.Composed:
        if not self._parts:
            return sql.Composed([])
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self._parts)


def scope_conditions(
    where: Where, principal: Principal, grid_column: LiteralString = "e.grid_id"
) -> None:
    """Restrict a query to what the principal may see: by default a query over elders
    aliased `e`; `grid_column` names another grid id column (e.g. "g.id" over grids)."""
    predicate = scope_predicate(principal, grid_column)
    if predicate is not None:
        fragment, params = predicate
        where.add(fragment, *params)
