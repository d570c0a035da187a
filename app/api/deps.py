"""FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.runtime import Runtime
from app.schemas.common import MAX_ID


# Async although they do no I/O: FastAPI runs sync dependencies in the thread pool, one hop each.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_settings(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Settings:
    return runtime.settings


def get_db(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    with runtime.session_factory() as db:
        yield db


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]
ModelId = Annotated[int, Path(ge=1, le=MAX_ID, description="Model id.")]
SessionId = Annotated[int, Path(ge=1, le=MAX_ID, description="Training session id.")]
