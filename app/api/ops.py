"""Operational endpoints at the root: liveness, readiness, self-test, version, and the web page."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio.to_thread
import torch
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from app.core import metrics
from app.ml import selftest as known_answer
from app.runtime import Runtime
from app.schemas.ops import HealthOut, NotReadyOut, ReadyOut, SelfTestFailedOut, SelfTestOut, VersionOut

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CPU = torch.device("cpu")

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> HealthOut:
    """Liveness: the process serves requests. Touches nothing else, so a database outage does not restart it."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": NotReadyOut}})
async def readyz(request: Request) -> ReadyOut | JSONResponse:
    """Readiness: the database answers and its schema is at the Alembic head this release expects, or newer.

    As of the last background check (every READY_CHECK_INTERVAL seconds, app.services.readiness): no
    database query here, so probes stay cheap and prompt on a saturated host. 503 with a reason while
    starting, shutting down, when the last check failed, or when no check has succeeded for
    `ready_max_age` seconds.
    """
    runtime: Runtime = request.app.state.runtime
    state = runtime.readiness.current()
    if state.reason is not None:
        return _not_ready(state.reason)
    return ReadyOut(
        status="ready",
        schema_revision=state.schema_revision,
        expected_revision=state.expected_revision,
        schema_newer=state.schema_newer,
    )


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse(NotReadyOut(status="not ready", reason=reason).model_dump(), status_code=503)


@router.get("/selftest", response_model=SelfTestOut, responses={503: {"model": SelfTestFailedOut}})
async def selftest(request: Request) -> SelfTestOut | JSONResponse:
    """Known-answer test of torch: a fixed network on a fixed input must give the documented `answer`.

    Runs on the CPU (predictions) and, when it is another, on the configured device (training), in a
    worker thread. Touches no database. For deploy gates; see app/README.md for the expected answer.
    """
    runtime: Runtime = request.app.state.runtime
    answer: list[float] = []
    for device in dict.fromkeys([CPU, runtime.device]):
        try:
            answer = await anyio.to_thread.run_sync(known_answer.run, device)
        except known_answer.SelfTestMismatchError as exc:
            logger.warning("self-test failed on %s: %s", device.type, exc)
            return _failed(f"{device.type}: {exc}")
        except Exception as exc:  # a broken install or device; the traceback goes to the log only
            logger.exception("self-test raised on %s", device.type)
            return _failed(f"{device.type}: the computation raised {type(exc).__name__}")
    return SelfTestOut(status="ok", answer=answer, device=runtime.device.type)


def _failed(reason: str) -> JSONResponse:
    return JSONResponse(SelfTestFailedOut(status="failed", reason=reason).model_dump(), status_code=503)


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


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus metrics of every process of this slot (app.core.metrics). nginx serves this path to its
    internal networks only, whatever nginx_internal_paths_public says."""
    body = await anyio.to_thread.run_sync(metrics.exposition)
    return Response(body, media_type=metrics.CONTENT_TYPE)
