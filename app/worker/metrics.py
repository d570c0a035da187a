"""Prometheus metrics of a training worker (prometheus-client), over HTTP on WORKER_METRICS_ADDRESS and
WORKER_METRICS_PORT (0: none). One process, so its own registry: no multiprocess mode.

Counted and timed as the worker goes:
* nnp_worker_info{host, release, device, queue}: 1, what this worker is;
* nnp_worker_jobs_running: trainings this worker runs now;
* nnp_worker_jobs_total{result}: runs ended: completed, stopped (by its owner), failed (diverged),
  requeued (a graceful stop, or an error the session survives), superseded, skipped, error;
* nnp_worker_checkpoint_duration_seconds: writing a checkpoint (with the pending metrics, one transaction).
Read from the database at each scrape (one short query each, bounded by a statement timeout):
* nnp_worker_heartbeat_timestamp_seconds: this worker's last heartbeat as procrastinate_workers has it (what
  other workers judge it dead by); absent until it has registered;
* nnp_queue_jobs{queue, status}: the fleet's jobs waiting (todo) or running (doing), every known queue
  included at 0; every worker reports the same numbers, so alerts take the max by queue;
* nnp_queue_oldest_job_age_seconds{queue}: how long the oldest job that is due has waited (0: none);
* nnp_worker_database_up: 1 when those queries answered at this scrape, else 0 (and they are left out).
On a CUDA worker, read at each scrape:
* nnp_worker_gpu_memory_bytes{kind}: `allocated` and `reserved` by torch, `total` of the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from app.services import queue
from app.worker import retention

logger = logging.getLogger(__name__)

# Milliseconds a scrape's query may take on the server (the scrape itself times out at 10 s by default).
QUERY_TIMEOUT_MS = 2000
KNOWN_QUEUES = (queue.queue_name("cpu"), queue.queue_name("cuda"), retention.QUEUE)
# A checkpoint of our small networks takes milliseconds; a large one or a slow database, seconds.
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Not in prometheus-client's global registry: MetricsServer serves its own (these and the collectors below).
INFO = Gauge("nnp_worker_info", "1: this worker.", ["host", "release", "device", "queue"], registry=None)
RUNNING = Gauge("nnp_worker_jobs_running", "Trainings this worker runs now.", registry=None)
JOBS = Counter("nnp_worker_jobs", "Training runs ended, by result.", ["result"], registry=None)
CHECKPOINT = Histogram(
    "nnp_worker_checkpoint_duration_seconds", "Writing a checkpoint, commit included.",
    buckets=CHECKPOINT_BUCKETS, registry=None,
)  # fmt: skip
RESULTS = ("completed", "failed", "stopped", "requeued", "superseded", "skipped", "error")

# Jobs by queue and status, and the age of the oldest due job of each queue (it waits since its last
# (re)queueing event, or since it was due if it was scheduled for later).
_QUEUE_SQL = text(
    """
    SELECT j.queue_name, j.status::text AS status, count(*) AS jobs,
           coalesce(max(extract(epoch FROM now() - greatest(j.scheduled_at, e.at)))
                    FILTER (WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())), 0)
               AS oldest
    FROM procrastinate_jobs j
    LEFT JOIN LATERAL (
        SELECT max(at) AS at FROM procrastinate_events
        WHERE job_id = j.id AND type IN ('deferred', 'deferred_for_retry', 'retried')
    ) e ON true
    WHERE j.status IN ('todo', 'doing')
    GROUP BY 1, 2
    """
)
_HEARTBEAT_SQL = text("SELECT extract(epoch FROM last_heartbeat) FROM procrastinate_workers WHERE id = :id")


class DatabaseCollector(Collector):
    """The queue and heartbeat metrics, read at each scrape (in the HTTP server's thread)."""

    def __init__(self, engine: Engine, worker_id: Callable[[], int | None]) -> None:
        self.engine = engine
        self.worker_id = worker_id

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("nnp_worker_database_up", "1: the queue and heartbeat queries answered.")
        try:
            rows, heartbeat = self._read()
        except Exception as exc:
            logger.warning("metrics: the queue and heartbeat queries failed: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("nnp_queue_jobs", "Jobs of the fleet by queue and status.", labels=["queue", "status"])
        oldest = GaugeMetricFamily(
            "nnp_queue_oldest_job_age_seconds", "Seconds the oldest due job of each queue has waited.", labels=["queue"]
        )
        counts = {(name, status): 0.0 for name in KNOWN_QUEUES for status in ("todo", "doing")}
        ages = dict.fromkeys(KNOWN_QUEUES, 0.0)
        for name, status, count, age in rows:
            counts[(name, status)] = float(count)
            ages[name] = max(ages.get(name, 0.0), float(age))
        for (name, status), count in sorted(counts.items()):
            jobs.add_metric([name, status], count)
        for name, age in sorted(ages.items()):
            oldest.add_metric([name], age)
        yield jobs
        yield oldest
        if heartbeat is not None:
            beat = GaugeMetricFamily(
                "nnp_worker_heartbeat_timestamp_seconds", "This worker's last heartbeat in the database (Unix time)."
            )
            beat.add_metric([], heartbeat)
            yield beat

    def _read(self) -> tuple[list[Any], float | None]:
        with self.engine.begin() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}"))
            rows = list(conn.execute(_QUEUE_SQL))
            worker_id = self.worker_id()
            heartbeat = None
            if worker_id is not None:
                heartbeat = conn.execute(_HEARTBEAT_SQL, {"id": worker_id}).scalar_one_or_none()
        return rows, float(heartbeat) if heartbeat is not None else None


class GpuCollector(Collector):
    """torch's view of the CUDA device's memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = GaugeMetricFamily(
            "nnp_worker_gpu_memory_bytes", "GPU memory: allocated and reserved by torch, total.", labels=["kind"]
        )
        free, total = torch.cuda.mem_get_info(self.device)
        memory.add_metric(["allocated"], float(torch.cuda.memory_allocated(self.device)))
        memory.add_metric(["reserved"], float(torch.cuda.memory_reserved(self.device)))
        memory.add_metric(["total"], float(total))
        memory.add_metric(["free"], float(free))
        yield memory


@contextmanager
def checkpoint_timer() -> Iterator[None]:
    started = time.perf_counter()
    yield
    CHECKPOINT.observe(time.perf_counter() - started)


class MetricsServer:
    """The worker's metrics endpoint; `start` raises OSError when the port is taken."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def start(
        self, engine: Engine, device: torch.device, host: str, release: str, worker_id: Callable[[], int | None]
    ) -> None:
        INFO.labels(host, release, device.type, queue.queue_name(device.type)).set(1)
        for result in RESULTS:  # every series from the start, so that rate() sees the first increase
            JOBS.labels(result)
        registry = CollectorRegistry()
        for collector in (INFO, RUNNING, JOBS, CHECKPOINT, DatabaseCollector(engine, worker_id)):
            registry.register(collector)
        if device.type == "cuda":
            registry.register(GpuCollector(device))
        self._server, self._thread = start_http_server(self.port, addr=self.address, registry=registry)
        logger.info("metrics served", extra={"address": self.address, "port": self.port})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
