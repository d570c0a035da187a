"""FastAPI dependencies."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.runtime import Runtime
from app.schemas.common import MAX_ID

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


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]
ModelId = Annotated[int, Path(ge=1, le=MAX_ID, description="Model id.")]
SessionId = Annotated[int, Path(ge=1, le=MAX_ID, description="Training session id.")]
