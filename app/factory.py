"""Application factory: wiring of settings, middleware, routers and the start-up/shutdown lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.api import datasets, models, ops, owners, predict, sessions
from app.api.errors import register_exception_handlers
from app.api.openapi import finish_openapi
from app.api.ops import STATIC_DIR
from app.core import metrics
from app.core.config import ConfigError, Settings, get_settings
from app.core.logging import configure_logging
from app.core.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.ml.device import configure_threads
from app.runtime import Runtime

logger = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Moves every object alive after start-up out of the garbage collector's sight (gc.freeze).

    torch, FastAPI, SQLAlchemy and the app leave about 250,000 tracked objects behind at start-up, and
    each full collection walks all of them: about 70-150 ms on this machine, with the event loop stopped.
    Under load a full collection comes every few thousand requests, and every request in flight waits it
    out (the 200 ms p99 of the prediction benchmark). Those objects live as long as the process, so
    collecting them can never free anything; frozen, a full collection walks only what requests made.
    Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("start-up objects frozen out of garbage collection", extra={"objects": frozen})
    return frozen


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app. Settings default to the environment; ConfigError names what is wrong."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Here, in the event-loop thread: OpenMP thread counts are per thread, and this one runs the
        # forward passes of predictions (threads started later inherit the setting).
        configure_threads(settings.torch_threads)
        try:
            runtime = await anyio.to_thread.run_sync(Runtime.start, settings)
        except ConfigError as exc:
            logger.critical("start-up failed: %s", exc)
            raise
        try:
            await runtime.open()
            app.state.runtime = runtime
            metrics.set_build_info(settings.release_id, settings.git_sha, torch.__version__)
            async with metrics.pool_sampler(runtime):
                freeze_startup_objects()
                yield
        finally:
            gc.unfreeze()
            # uvicorn has stopped accepting connections and let in-flight requests finish by now.
            await runtime.aclose()

    app = FastAPI(
        title="Neural network playground",
        version=settings.release_id,
        lifespan=lifespan,
        # No Swagger/ReDoc pages: they load their assets from a CDN, which the CSP (default-src 'self')
        # forbids. The spec itself is served.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    register_exception_handlers(app)

    # Included directly, not through an intermediate /api router: FastAPI re-matches the path at
    # every level of nesting, which costs a measurable share of a prediction request.
    for module in (datasets, models, sessions, predict, owners):
        app.include_router(module.router, prefix="/api")
    app.include_router(ops.router)
    finish_openapi(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if "/static" not in metrics.MOUNTS:
        metrics.MOUNTS.append("/static")

    # Added innermost first: CORS, then the body limit, then request context (outermost).
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
