"""Bearer-token authentication as FastAPI dependencies."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from operator_api.db import get_pool
from operator_api.scope import Principal
from operator_api.tokens import resolve_token

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="API token from `create_token`")


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def require_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    pool: Annotated[AsyncConnectionPool, Depends(get_pool)],
) -> Principal:
    if credentials is None:
        raise unauthorized("missing bearer token")
    principal = await resolve_token(pool, credentials.credentials)
    if principal is None:
        log.info("rejected API token", extra={"path": request.url.path})
        raise unauthorized("invalid or revoked token")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]
