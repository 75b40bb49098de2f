"""API tokens: random bearer secrets of which only the sha256 is stored.

A token is shown once, by `create_token`; losing it means creating a new one.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from operator_api.scope import (
    ALL_DISTRICTS,
    ROLES,
    SUBTREE_GRIDS,
    Principal,
    Region,
    Role,
    principal_for,
)

TOKEN_PREFIX = "cwo_"  # noqa: S105 - not a secret: makes leaked tokens easy to scan for
SCOPE_SEPARATOR = "/"


def hash_token(token: str) -> str:
    # surrogatepass: any str hashes (it then matches no token), nothing raises
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def region_of_scope(conn: psycopg.Connection[Any], scope: str) -> int:
    """The region node an operator scope names: '*' (the city), a district name
    ('渝中区': created if no grid names it yet, as district scopes always worked), or
    the names down the tree from the district, '/'-separated:
    '渝中区/解放碑街道', '渝中区/解放碑街道/民族路社区', '渝中区/解放碑街道/民族路社区/G1'
    (a grid by its id). Raises ValueError for a path that names no node."""
    if scope == ALL_DISTRICTS:
        row = conn.execute("SELECT carewatch_city_region()").fetchone()
        assert row is not None
        return int(row[0])
    names = [n.strip() for n in scope.split(SCOPE_SEPARATOR)]
    if any(not n for n in names):
        raise ValueError(f"scope {scope!r} has an empty name")
    if len(names) == 1:
        row = conn.execute("SELECT carewatch_place_region(%s, NULL, NULL)", (names[0],)).fetchone()
        assert row is not None
        return int(row[0])
    row = conn.execute(
        "WITH RECURSIVE walk (id, depth) AS ("
        "  SELECT r.id, 1 FROM regions r JOIN regions c ON c.id = r.parent_id"
        "   WHERE c.level = 'city' AND r.name = (%(names)s::text[])[1]"
        "  UNION ALL"
        "  SELECT r.id, w.depth + 1 FROM walk w JOIN regions r ON r.parent_id = w.id"
        "   WHERE r.name = (%(names)s::text[])[w.depth + 1])"
        " SELECT id FROM walk WHERE depth = cardinality(%(names)s::text[])",
        {"names": names},
    ).fetchone()
    if row is None:
        raise ValueError(f"no region {scope!r} in the region tree")
    return int(row[0])


def create_token(dsn: str, role: Role, subject_id: str, scope: str | None = None) -> str:
    """Store a new token for `subject_id` and return it (the only time it is visible).

    operator: scope names a region node (region_of_scope): '*', a district, or a path
    of names below it; grid_worker: subject_id is the grid worker's id (the token
    follows their grid); admin: scope is ignored.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if role == "operator" and not scope:
        raise ValueError("an operator token needs a scope: '*', a district or a region path")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(dsn) as conn, conn.transaction():
        region_id = None
        if role == "grid_worker":
            found = conn.execute("SELECT 1 FROM grid_workers WHERE id = %s", (subject_id,))
            if found.fetchone() is None:
                raise ValueError(f"no grid worker {subject_id!r} in the registry")
        if role == "operator" and scope:
            region_id = region_of_scope(conn, scope)
        conn.execute(
            "INSERT INTO api_tokens (token_hash, role, subject_id, scope, region_id)"
            " VALUES (%s, %s, %s, %s, %s)",
            (hash_token(token), role, subject_id, scope if role != "admin" else None, region_id),
        )
    return token


def revoke_token(dsn: str, token: str) -> bool:
    """Revoke a token; True if it existed and was live."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = %s AND revoked_at IS NULL",
            (hash_token(token),),
        )
        return cur.rowcount == 1


async def resolve_token(pool: AsyncConnectionPool, token: str) -> Principal | None:
    """The principal a bearer token stands for, or None (unknown, revoked, orphaned)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT t.role, t.subject_id, g.id AS grid_id,"
            " r.id AS region_id, r.level, r.name, r.path,"
            " (SELECT d.name FROM regions d WHERE d.level = 'district' AND d.id = ANY("
            "   string_to_array(btrim(r.path, '/'), '/')::bigint[])) AS district"
            " FROM api_tokens t"
            " LEFT JOIN grid_workers w ON t.role = 'grid_worker' AND w.id = t.subject_id"
            " LEFT JOIN grids g ON g.id = w.grid_id"
            " LEFT JOIN regions r ON r.id = CASE t.role WHEN 'operator' THEN t.region_id"
            "   WHEN 'grid_worker' THEN g.region_id END"
            " WHERE t.token_hash = %s AND t.revoked_at IS NULL",
            (hash_token(token),),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        region = None
        visible: frozenset[str] | None = None
        if row["region_id"] is not None:
            region = Region(row["region_id"], row["level"], row["name"], row["path"])
            if not region.is_root:
                await cur.execute(SUBTREE_GRIDS, (region.subtree_pattern,))
                visible = frozenset(r["id"] for r in await cur.fetchall())
    return principal_for(
        row["role"], row["subject_id"], region, row["district"], row["grid_id"], visible
    )
