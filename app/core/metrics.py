"""Prometheus metrics of the web processes (prometheus-client), served at GET /metrics.

Uvicorn runs several processes per slot, so the client's multiprocess mode: with PROMETHEUS_MULTIPROC_DIR
set (the slot unit sets it to a folder of the slot's runtime directory, which systemd empties at every
start), each process writes its samples to memory-mapped files there, and /metrics, whichever process
answers it, adds up the files of all. Without that variable (tests, `make run`) a process serves its own.
Counters and histograms of a process that died stay in the sums (they did happen); its gauges are dropped
at the next scrape (`_forget_dead_processes`), since Uvicorn, which restarts a dead process, does not say.

What is measured, and why these labels (a bounded set: never a raw path, an id or a client's value):
* nnp_http_requests_total{method, route, status}: `route` is the route's template (/api/models/{model_id})
  as FastAPI matched it, /static/{path} for the static files, "unmatched" for a path no route takes (the
  404s of scanners stay one series);
* nnp_http_request_duration_seconds{method, route}: from the first byte of the request in the app to the
  end of the response;
* nnp_http_requests_in_flight: requests in the app now, all processes of the slot;
* nnp_db_pool_connections{pool, state}, nnp_db_pool_max_connections{pool} and
  nnp_db_pool_waiting_requests{pool}: the ORM pool (`orm`, writes) and the async read pool (`read`),
  sampled every POOL_SAMPLE_SECONDS by each process;
* nnp_app_ready: 1 while every process of the slot is ready (/readyz), sampled with the pools;
* nnp_build_info{release, git_sha, python, torch}: 1 for the running release (a graph's marker of a deploy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from app.runtime import Runtime

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which every Prometheus reads (Debian 12's 2.42 included); the names are all
# plain ones, so it is the same text as prometheus-client's newer 1.0.0.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# How often each process samples its connection pools.
POOL_SAMPLE_SECONDS = 2.0
# Methods the app serves; anything else is counted as "other" (an unbounded label otherwise).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

# From a fast read (about 1 ms here) to the slowest request the app allows itself (30 s statements).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "nnp_http_requests", "HTTP requests the app answered, by method, route template and status.",
    ["method", "route", "status"],
)  # fmt: skip
DURATION = Histogram(
    "nnp_http_request_duration_seconds", "Time the app took to answer, by method and route template.",
    ["method", "route"], buckets=DURATION_BUCKETS,
)  # fmt: skip
IN_FLIGHT = Gauge(
    "nnp_http_requests_in_flight", "Requests being answered now.", multiprocess_mode="livesum"
)  # fmt: skip
POOL_CONNECTIONS = Gauge(
    "nnp_db_pool_connections", "Open database connections by pool (orm: writes, read: hot reads) and state.",
    ["pool", "state"], multiprocess_mode="livesum",
)  # fmt: skip
POOL_MAX = Gauge(
    "nnp_db_pool_max_connections", "The most connections each pool may open.", ["pool"], multiprocess_mode="livesum"
)  # fmt: skip
POOL_WAITING = Gauge(
    "nnp_db_pool_waiting_requests", "Requests waiting for a connection of the pool.", ["pool"],
    multiprocess_mode="livesum",
)  # fmt: skip
READY = Gauge(
    "nnp_app_ready", "1 while every process of the slot is ready (what /readyz answers), else 0.",
    multiprocess_mode="livemin",
)  # fmt: skip
BUILD_INFO = Gauge(
    "nnp_build_info", "1 for the release this slot runs.", ["release", "git_sha", "python", "torch"],
    multiprocess_mode="max",
)  # fmt: skip

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+_(?P<pid>\d+)\.db$")


# Paths under a mounted app (/static), which leaves no route in the scope: set by app.factory.
MOUNTS: list[str] = []


def route_label(route: object, path: str) -> str:
    """The matched route's template (/api/models/{model_id}), or "unmatched".

    The router leaves the route in the ASGI scope. FastAPI's route path lacks the prefix its router was
    included with (`/api`); that prefix is literal, so it is the start of the request's path: the route's
    segments replace the path's last ones. (The app has no route whose parameter spans segments.)
    """
    template = getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        for mount in MOUNTS:
            if path.startswith(mount + "/"):
                return mount + "/{path}"
        return UNMATCHED
    suffix = [part for part in template.split("/") if part]
    segments = [part for part in path.split("/") if part]
    keep = len(segments) - len(suffix)
    if keep <= 0:
        return template
    return "/" + "/".join([*segments[:keep], *suffix])


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def observe_request(method: str, route: object, path: str, status: int, seconds: float) -> None:
    method, template = method_label(method), route_label(route, path)
    REQUESTS.labels(method, template, str(status)).inc()
    DURATION.labels(method, template).observe(seconds)


def set_build_info(release: str, git_sha: str, torch_version: str) -> None:
    BUILD_INFO.labels(release, git_sha or "unknown", platform.python_version(), torch_version).set(1)


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV, "")
    return Path(value) if value else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _forget_dead_processes(folder: Path) -> list[int]:
    """Drop the live gauges of processes that are gone (a process Uvicorn restarted after a crash)."""
    dead = set()
    for path in folder.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _pid_alive(int(match["pid"])):
            dead.add(int(match["pid"]))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(folder))
    return sorted(dead)


def exposition() -> bytes:
    """The text format of every metric: of all processes of the slot in multiprocess mode."""
    folder = multiprocess_dir()
    if folder is None:
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY)
    _forget_dead_processes(folder)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return generate_latest(registry)


def sample_pools(runtime: Runtime) -> None:
    """One sample of both pools (this process's share of the slot's sums) and of its readiness."""
    pool = runtime.engine.pool
    checked_out = pool.checkedout()  # type: ignore[attr-defined]  # QueuePool's, the engine's pool class
    POOL_CONNECTIONS.labels("orm", "in_use").set(checked_out)
    POOL_CONNECTIONS.labels("orm", "idle").set(pool.checkedin())  # type: ignore[attr-defined]
    # pool_size plus as many overflow connections (app.core.db.create_db_engine).
    POOL_MAX.labels("orm").set(2 * runtime.settings.db_pool_size)
    stats = runtime.read_pool.get_stats()
    size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
    POOL_CONNECTIONS.labels("read", "in_use").set(max(size - idle, 0))
    POOL_CONNECTIONS.labels("read", "idle").set(idle)
    POOL_MAX.labels("read").set(runtime.read_pool.max_size)
    POOL_WAITING.labels("read").set(stats.get("requests_waiting", 0))
    READY.set(1 if runtime.readiness.current().reason is None else 0)


@contextlib.asynccontextmanager
async def pool_sampler(runtime: Runtime, interval: float = POOL_SAMPLE_SECONDS) -> AsyncIterator[None]:
    """Samples the pools and readiness every `interval` seconds while the app runs."""

    async def loop() -> None:
        while True:
            try:
                sample_pools(runtime)
            except Exception:  # a metric must never take the app down
                logger.exception("sampling the connection pools failed")
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="metrics-pool-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
