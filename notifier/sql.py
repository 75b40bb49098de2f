"""Parameterised queries returning dict rows, whatever row factory the connection has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

Conn = AsyncConnection[Any]
Params = Sequence[object] | Mapping[str, object]


async def rows(conn: Conn, query: str, params: Params = ()) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def one(conn: Conn, query: str, params: Params = ()) -> dict[str, Any] | None:
    found = await rows(conn, query, params)
    return found[0] if found else None
