"""Prometheus metrics of the web processes (app.core.metrics, GET /metrics) and of a worker (app.worker.metrics).

In process (TestClient): the series and their labels (route templates, never raw paths or ids; one
"unmatched" series for paths no route takes; the release in nnp_build_info; both pools). Under a real
Uvicorn with two processes in multiprocess mode, as in a slot: every scrape, whichever process answers
it, counts the requests of both exactly; and after one process is killed with SIGKILL (Uvicorn starts a
new one) its counts stay while its gauges go, so the pool sizes add up to the live processes only.
A worker on its own port: what it is, its heartbeat, every queue's depth and the age of its oldest job,
a training running and then counted, its checkpoints timed; a database it cannot reach makes a scrape
say so; a port already taken stops it at start with a message naming the settings.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import torch
from appserver import AppServer
from fastapi.testclient import TestClient
from helpers import create_model, start_session, wait_for_session
from pgcluster import free_port
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import create_engine
from workerproc import WorkerProcess

from app.core.config import Settings
from app.worker.metrics import DatabaseCollector, GpuCollector

Samples = list[Sample]


def parse(text: str) -> Samples:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def scrape(client: TestClient | httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    return parse(response.text)


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process tests read this process's own registry."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def test_requests_are_counted_by_route_template_method_and_status(client: TestClient, settings: Settings) -> None:
    before = scrape(client)
    for model_id in (987654, 987655, 987656):
        assert client.get(f"/api/models/{model_id}").status_code == 404
    assert client.get("/no/such/path/123").status_code == 404
    assert client.get("/healthz").status_code == 200
    after = scrape(client)

    def grew(**labels: str) -> float:
        return value(after, "nnp_http_requests_total", **labels) - value(before, "nnp_http_requests_total", **labels)

    assert grew(method="GET", route="/api/models/{model_id}", status="404") == 3
    assert grew(method="GET", route="unmatched", status="404") == 1
    assert grew(method="GET", route="/healthz", status="200") == 1
    # The scrape before this one was counted too, as a request like any other.
    assert grew(method="GET", route="/metrics", status="200") == 1
    durations = "nnp_http_request_duration_seconds_count"
    assert (
        value(after, durations, route="/api/models/{model_id}")
        - value(before, durations, route="/api/models/{model_id}")
        == 3
    )
    routes = {s.labels["route"] for s in after if s.name == "nnp_http_requests_total"}
    assert not any(any(ch.isdigit() for ch in route) for route in routes), routes  # no id, no raw path
    # The scrape itself is the one request in flight.
    assert value(after, "nnp_http_requests_in_flight") == 1
    info = [s for s in after if s.name == "nnp_build_info" and s.value == 1]
    assert [s.labels["release"] for s in info] == [settings.release_id], info
    assert {s.labels["pool"] for s in after if s.name == "nnp_db_pool_max_connections"} == {"orm", "read"}
    assert value(after, "nnp_db_pool_max_connections", pool="orm") == 2 * settings.db_pool_size
    assert value(after, "nnp_db_pool_max_connections", pool="read") == settings.db_pool_size
    assert value(after, "nnp_db_pool_connections", pool="read") >= 1  # the read pool keeps one open
    assert value(after, "nnp_app_ready") == 1


def test_metrics_are_not_in_the_api_document(client: TestClient) -> None:
    assert "/metrics" not in client.get("/api/openapi.json").json()["paths"]


@pytest.fixture
def two_processes(database_url: str, tmp_path: Path) -> Iterator[tuple[AppServer, Path]]:
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {
        "DATABASE_URL": database_url,
        "TORCH_DEVICE": "cpu",
        "RELEASE_ID": "metrics",
        "DB_POOL_SIZE": "3",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    with AppServer(env, workers=2) as server:
        yield server, folder


def app_processes(server: AppServer) -> list[int]:
    """Uvicorn's worker processes (its multiprocessing spawns; not the resource tracker beside them)."""
    found = []
    for pid in server.pids()[1:]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def wait_for_processes(server: AppServer, count: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        children = app_processes(server)
        if len(children) == count:
            return children
        assert time.monotonic() < deadline, f"{len(children)} app processes, not {count}"
        time.sleep(0.1)


def healthz_total(samples: Samples) -> float:
    return value(samples, "nnp_http_requests_total", route="/healthz", status="200")


def test_every_scrape_adds_up_every_process_and_a_killed_one_keeps_its_counts_not_its_gauges(
    two_processes: tuple[AppServer, Path],
) -> None:
    server, folder = two_processes
    first, second = wait_for_processes(server, 2)
    # A new connection for each request: the kernel hands them to both processes.
    for _ in range(200):
        assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
    counts = {f.name.rsplit("_", 1)[-1] for f in folder.glob("counter_*.db")}
    assert counts == {f"{first}.db", f"{second}.db"}, f"not both processes answered requests: {counts}"
    scrapes = [scrape(httpx.Client(base_url=server.base_url, timeout=10)) for _ in range(10)]
    assert {healthz_total(samples) for samples in scrapes} == {200}
    # Each process samples its pools at start: the sums cover both (DB_POOL_SIZE 3: orm 6, read 3 each).
    deadline = time.monotonic() + 10
    while value(scrapes[-1], "nnp_db_pool_max_connections", pool="orm") != 12:
        assert time.monotonic() < deadline, scrapes[-1]
        time.sleep(0.2)
        scrapes[-1] = scrape(httpx.Client(base_url=server.base_url, timeout=10))
    assert value(scrapes[-1], "nnp_db_pool_max_connections", pool="read") == 6

    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while first in app_processes(server) or len(app_processes(server)) < 2:
        assert time.monotonic() < deadline, "Uvicorn did not replace the killed process"
        time.sleep(0.1)
    (new,) = set(app_processes(server)) - {second}
    server.wait_ready()
    deadline = time.monotonic() + 30
    while not (folder / f"gauge_livesum_{new}.db").exists():  # the new process has sampled its pools
        assert time.monotonic() < deadline, "the new process wrote no gauge"
        time.sleep(0.1)
    time.sleep(1)  # the file appears with the first of its gauges; the whole sample takes a millisecond
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        samples = scrape(client)
    # Two live processes' pools; with the killed process's gauges still counted it would be three.
    assert value(samples, "nnp_db_pool_max_connections", pool="orm") == 12
    # The killed process's requests are still counted, and the in-flight sum is this scrape alone.
    assert healthz_total(samples) == 200
    assert value(samples, "nnp_http_requests_in_flight") == 1
    assert not list(folder.glob(f"gauge_live*_{first}.db")), "the killed process's live gauges stayed"


# -- the worker's metrics (app.worker.metrics) --------------------------------------------------------


def worker_samples(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def test_a_worker_serves_what_it_is_its_queue_its_heartbeat_and_its_trainings(
    database_url: str, client: TestClient, clean_db: None
) -> None:
    port = free_port()
    with WorkerProcess(database_url, WORKER_METRICS_PORT=str(port), WORKER_HOST="metrics-host") as worker:
        samples = worker_samples(port)
        info = [s.labels for s in samples if s.name == "nnp_worker_info" and s.value == 1]
        assert info == [{"host": "metrics-host", "release": "test-worker", "device": "cpu", "queue": "training-cpu"}]
        assert value(samples, "nnp_worker_database_up") == 1
        beat = value(samples, "nnp_worker_heartbeat_timestamp_seconds")
        assert abs(time.time() - beat) < 10, beat  # heartbeats every 0.5 s here (FAST_WORKER_ENV)
        # Every known queue is there, at 0, before any job.
        queues = {(s.labels["queue"], s.labels["status"]) for s in samples if s.name == "nnp_queue_jobs"}
        assert queues == {(q, st) for q in ("training-cpu", "training-cuda", "maintenance") for st in ("todo", "doing")}
        assert value(samples, "nnp_worker_jobs_running") == 0

        # A job no worker here takes (no cuda worker): it waits, and the age of the queue grows.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES ('training-cuda', 'x', '{}')"
            )
        time.sleep(2)
        samples = worker_samples(port)
        assert value(samples, "nnp_queue_jobs", queue="training-cuda", status="todo") == 1
        assert value(samples, "nnp_queue_oldest_job_age_seconds", queue="training-cuda") >= 2
        assert value(samples, "nnp_queue_oldest_job_age_seconds", queue="training-cpu") == 0
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = 'training-cuda'")

        # A training with a checkpoint every 0.2 s: running while it runs, then counted as completed.
        model = create_model(client, "metrics", dataset_params={"n_samples": 1000})
        session = start_session(client, model["id"], epochs=30, batch_size=5, checkpoint_interval_seconds=0.2)
        deadline = time.monotonic() + 60
        while value(samples := worker_samples(port), "nnp_worker_jobs_running") != 1:
            assert time.monotonic() < deadline, "the worker never showed its training running"
            time.sleep(0.05)
        assert value(samples, "nnp_queue_jobs", queue="training-cpu", status="doing") == 1
        assert wait_for_session(client, session["id"])["status"] == "completed"
        samples = worker_samples(port)
        assert value(samples, "nnp_worker_jobs_running") == 0
        assert value(samples, "nnp_worker_jobs_total", result="completed") == 1
        assert value(samples, "nnp_worker_jobs_total", result="requeued") == 0
        assert value(samples, "nnp_worker_checkpoint_duration_seconds_count") >= 2
        assert value(samples, "nnp_worker_checkpoint_duration_seconds_sum") > 0
        assert not [s for s in samples if s.name.startswith("nnp_worker_gpu")]  # a CPU worker
        assert worker.proc is not None
        assert worker.proc.poll() is None


def test_without_its_database_a_worker_scrape_says_so_instead_of_failing() -> None:
    engine = create_engine(
        f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", connect_args={"connect_timeout": 2}
    )
    samples = [s for family in DatabaseCollector(engine, lambda: 7).collect() for s in family.samples]
    assert [(s.name, s.value) for s in samples] == [("nnp_worker_database_up", 0.0)]


def test_a_worker_whose_metrics_port_is_taken_stops_at_start_naming_it(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = WorkerProcess(database_url, WORKER_METRICS_PORT=str(port))
        try:
            worker.start(wait=False)
            assert worker.proc is not None
            assert worker.proc.wait(60) == 2
            assert f"cannot serve metrics on 127.0.0.1 port {port} (WORKER_METRICS_ADDRESS, WORKER_METRICS_PORT)" in (
                worker.log_text()
            )
        finally:
            worker.close()


def test_a_cuda_workers_scrape_reports_the_devices_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """GpuCollector against torch.cuda's answers (no GPU here; scripts/gpu-check.sh checks it on one)."""
    device = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (70 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 20 * 2**20)
    samples = [s for family in GpuCollector(device).collect() for s in family.samples]
    assert {s.labels["kind"]: s.value for s in samples if s.name == "nnp_worker_gpu_memory_bytes"} == {
        "allocated": 3 * 2**20,
        "reserved": 20 * 2**20,
        "free": 70 * 2**30,
        "total": 80 * 2**30,
    }
