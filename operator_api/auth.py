"""Bearer-token authentication.

`AuthFirst` (ASGI middleware) resolves the token of every request to the API, the
OpenAPI document and the docs page before anything else of the request is looked at:
an unauthenticated caller gets 401 without its query, path or body being parsed (or a
large body read). The principal it found is kept in the request's state, where the
FastAPI dependency `require_principal` takes it.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from carewatch.http_guard import ASGIApp, Receive, Scope, Send, header, send_json
from operator_api.db import get_pool
from operator_api.scope import Principal
from operator_api.tokens import resolve_token

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="API token from `create_token`")
# Paths only a token holder may reach (the phone page /m has its own cookie check).
PROTECTED_PREFIXES = ("/api/", "/openapi.json", "/docs")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers=_CHALLENGE)


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class AuthFirst:
    """401 for a request to a protected path without a valid bearer token, before the
    app parses the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = bearer_token(header(scope, b"authorization"))
        if token is None:
            await send_json(send, 401, {"detail": "missing bearer token"}, _CHALLENGE, close=True)
            return
        principal = await resolve_token(scope["app"].state.pool, token)
        if principal is None:
            log.info("rejected API token", extra={"path": path[:64]})
            detail = {"detail": "invalid or revoked token"}
            await send_json(send, 401, detail, _CHALLENGE, close=True)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def require_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    pool: Annotated[AsyncConnectionPool, Depends(get_pool)],
) -> Principal:
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):  # resolved by AuthFirst
        return found
    if credentials is None:
        raise unauthorized("missing bearer token")
    principal = await resolve_token(pool, credentials.credentials)
    if principal is None:
        log.info("rejected API token", extra={"path": request.url.path})
        raise unauthorized("invalid or revoked token")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]
