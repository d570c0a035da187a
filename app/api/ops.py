"""Operational endpoints at the root: liveness, readiness, version, and the web page."""

from __future__ import annotations

from pathlib import Path

import psycopg
import torch
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from psycopg_pool import PoolTimeout

from app.core.migrations import database_revision
from app.runtime import Runtime
from app.schemas.ops import HealthOut, NotReadyOut, ReadyOut, VersionOut

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

READY_TIMEOUT_SECONDS = 3.0

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> HealthOut:
    """Liveness: the process serves requests. Touches nothing else, so a database outage does not restart it."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": NotReadyOut}})
async def readyz(request: Request) -> ReadyOut | JSONResponse:
    """Readiness: the database answers and its schema is at the Alembic head this release expects, or newer.

    A revision this release does not know was written by a newer release: during a rolling deploy the
    migration runs once before any host switches, and hosts still on the old release must keep serving
    (migrations are expand/contract). A known older revision, or none, means a migration is pending.

    Async on the read pool, so a saturated thread pool cannot make a healthy instance look unready.
    """
    runtime: Runtime = request.app.state.runtime
    if runtime.shutting_down:
        return _not_ready("shutting down")
    try:
        async with runtime.read_pool.connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            revision = await database_revision(conn)
    except PoolTimeout:
        return _not_ready(f"database unreachable: no connection within {READY_TIMEOUT_SECONDS} s")
    except psycopg.Error as exc:
        return _not_ready(f"database unreachable: {' '.join(str(exc).split()) or type(exc).__name__}")
    if revision != runtime.alembic_head and (revision is None or revision in runtime.known_revisions):
        found = revision or "none (not migrated)"
        return _not_ready(f"schema revision is {found}, expected {runtime.alembic_head}; run alembic upgrade head")
    return ReadyOut(
        status="ready",
        schema_revision=revision,
        expected_revision=runtime.alembic_head,
        schema_newer=revision != runtime.alembic_head,
    )


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse(NotReadyOut(status="not ready", reason=reason).model_dump(), status_code=503)


@router.get("/version")
async def version(request: Request) -> VersionOut:
    runtime: Runtime = request.app.state.runtime
    return VersionOut(
        release_id=runtime.settings.release_id,
        git_sha=runtime.settings.git_sha,
        torch_version=torch.__version__,
        device=runtime.device.type,
        cuda_available=torch.cuda.is_available(),
    )


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
