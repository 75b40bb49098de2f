"""API tokens: random bearer secrets of which only the sha256 is stored.

A token is shown once, by `create_token`; losing it means creating a new one.
"""

from __future__ import annotations

import hashlib
import secrets

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from operator_api.scope import ROLES, Principal, Role, principal_for

TOKEN_PREFIX = "cwo_"  # noqa: S105 - not a secret: makes leaked tokens easy to scan for


def hash_token(token: str) -> str:
    # surrogatepass: any str hashes (it then matches no token), nothing raises
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(dsn: str, role: Role, subject_id: str, scope: str | None = None) -> str:
    """Store a new token for `subject_id` and return it (the only time it is visible).

    operator: scope is a district name or '*'; grid_worker: subject_id is the grid
    worker's id; admin: scope is ignored.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if role == "operator" and not scope:
        raise ValueError("an operator token needs a scope: a district name or '*'")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if role == "grid_worker":
            found = conn.execute("SELECT 1 FROM grid_workers WHERE id = %s", (subject_id,))
            if found.fetchone() is None:
                raise ValueError(f"no grid worker {subject_id!r} in the registry")
        conn.execute(
            "INSERT INTO api_tokens (token_hash, role, subject_id, scope) VALUES (%s, %s, %s, %s)",
            (hash_token(token), role, subject_id, scope if role != "admin" else None),
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
            "SELECT t.role, t.subject_id, t.scope, g.id AS grid_id, g.district"
            " FROM api_tokens t"
            " LEFT JOIN grid_workers w ON t.role = 'grid_worker' AND w.id = t.subject_id"
            " LEFT JOIN grids g ON g.id = w.grid_id"
            " WHERE t.token_hash = %s AND t.revoked_at IS NULL",
            (hash_token(token),),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    worker_grid = (row["grid_id"], row["district"]) if row["grid_id"] is not None else None
    return principal_for(row["role"], row["subject_id"], row["scope"], worker_grid)
