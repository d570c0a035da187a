"""FastAPI dependencies."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.runtime import Runtime
from app.schemas.common import MAX_ID
from app.services.errors import UnauthorizedError
from app.services.owners import (
    ANONYMOUS,
    COOKIE_NAME,
    OPERATOR,
    TOKEN_PATTERN,
    WHERE_OWNERS_COME_FROM,
    Caller,
    Reader,
    operator_matches,
    parse_authorization,
    token_hash,
)

logger = logging.getLogger(__name__)


# Async although they do no I/O: FastAPI runs sync dependencies in the thread pool, one hop each.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_settings(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Settings:
    return runtime.settings


def get_db(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    db = runtime.session_factory()
    try:
        yield db
    finally:
        try:
            db.close()
        except DBAPIError as exc:
            # Closing rolls back, which fails on a connection the database cut (a restart); SQLAlchemy has
            # discarded that connection, and the answer (or error) the endpoint produced must still go out.
            logger.warning("closing a database session failed: %s", type(exc.orig or exc).__name__)


_OWNER_SQL = "SELECT id FROM owners WHERE token_hash = %s"


# For the OpenAPI document only (security schemes on the routes that need an owner): resolve_caller reads
# the headers itself, so that a malformed Authorization header is a 401 naming it rather than no token.
_BEARER = HTTPBearer(auto_error=False, scheme_name="ownerToken", description="An owner token from POST /api/owners.")
_COOKIE = APIKeyCookie(
    name=COOKIE_NAME, auto_error=False, scheme_name="ownerCookie", description="The same token, as browsers keep it."
)


async def get_caller(
    request: Request,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    _cookie: Annotated[str | None, Depends(_COOKIE)],
) -> Caller:
    return await resolve_caller(request, runtime)


async def resolve_caller(request: Request, runtime: Runtime) -> Caller:
    """The owner (or operator) a request speaks for: its Bearer token, else its cookie, else nobody.

    A token that is not known is a 401, so a client never mistakes itself for someone it is not.
    Only the routes that change something, or read under OWNER_ONLY_READS, ask (one indexed query)."""
    header = request.headers.get("authorization")
    token = parse_authorization(header) if header is not None else request.cookies.get(COOKIE_NAME)
    if not token:
        return ANONYMOUS
    if operator_matches(token, runtime.settings):
        return OPERATOR
    source = "Authorization header" if header is not None else f"cookie {COOKIE_NAME}"
    if TOKEN_PATTERN.fullmatch(token) is None:
        raise UnauthorizedError(f"{source}: not an owner token; {WHERE_OWNERS_COME_FROM}")
    row = await runtime.reads.one(_OWNER_SQL, (token_hash(token),))
    if row is None:
        raise UnauthorizedError(
            f"{source}: owner token not recognised (never issued, or removed by retention); {WHERE_OWNERS_COME_FROM}"
        )
    return Caller(owner_id=int(row["id"]))


async def get_reader(request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Reader:
    """Reads are everyone's unless OWNER_ONLY_READS; then the caller's own rows (the operator's: all)."""
    if not runtime.settings.owner_only_reads:
        return Reader(ANONYMOUS, everything=True)
    caller = await resolve_caller(request, runtime)
    return Reader(caller, everything=caller.operator)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ReaderDep = Annotated[Reader, Depends(get_reader)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]
ModelId = Annotated[int, Path(ge=1, le=MAX_ID, description="Model id.")]
SessionId = Annotated[int, Path(ge=1, le=MAX_ID, description="Training session id.")]
