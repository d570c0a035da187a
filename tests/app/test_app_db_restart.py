"""Reads survive a PostgreSQL restart: clients polling a real uvicorn see no failed request.

A Multi-AZ failover or a minor-version upgrade on RDS restarts the server under the app; here the
test's own cluster is restarted (pg_ctl restart, fast mode: every connection is cut) while client
threads read as fast as they can. Every pooled connection is then dead; the app must notice, connect
again once the server is back, and answer each read instead of failing it. Failures are counted by
reason (status code or transport error).
"""

from __future__ import annotations

import collections
import subprocess
import threading
import time

import httpx
from appserver import AppServer
from helpers import create_model
from pgcluster import PgCluster
from workerproc import WorkerProcess

CLIENTS = 8
# The reads clients poll: the list (ORM session in the thread pool) and one model (the async read pool).
PATHS = ["/api/models?limit=5", "/api/models/{id}"]


class Readers:
    """CLIENTS threads reading PATHS round robin until stopped; counts answers by outcome."""

    def __init__(self, base_url: str, model_id: int) -> None:
        self.paths = [path.format(id=model_id) for path in PATHS]
        self.base_url = base_url
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)]

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            turn = number
            while not self._stop.is_set():
                path = self.paths[turn % len(self.paths)]
                turn += 1
                try:
                    answer = client.get(path)
                    outcome = str(answer.status_code)
                    detail = f"{path} -> {answer.status_code} {answer.text[:200]}"
                except httpx.TransportError as exc:
                    outcome, detail = type(exc).__name__, f"{path} -> {exc!r}"
                with self._lock:
                    self.outcomes[outcome] += 1
                    if outcome != "200":
                        self.failures.append(detail)

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_reads_survive_postgresql_restarts(own_cluster: tuple[PgCluster, str]) -> None:
    cluster, url = own_cluster
    server = AppServer(
        {"DATABASE_URL": url, "TORCH_DEVICE": "cpu", "RELEASE_ID": "restart", "DB_POOL_SIZE": "4"}, workers=2
    ).start()
    try:
        with server.client() as client:
            model_id = create_model(client, "restart")["id"]
        with Readers(server.base_url, model_id) as readers:
            time.sleep(2)
            for _ in range(2):
                before = readers.outcomes.total()
                start = time.monotonic()
                cluster.restart()
                down = time.monotonic() - start
                time.sleep(3)
                assert readers.outcomes.total() > before + 50, f"the clients stalled: {readers.outcomes}"
        errors = [line for line in server.log_text().splitlines() if '"ERROR"' in line or "Traceback" in line]
        report = (
            f"outcomes {dict(readers.outcomes)}, last restart took {down:.1f} s;"
            f" failures {sorted(set(readers.failures))[:8]}; app errors {errors[:5]}"
        )
        print(f"\nPostgreSQL restarted twice under {CLIENTS} readers: {report}")
        assert readers.outcomes["200"] > 500, report
        assert set(readers.outcomes) == {"200"}, report
    finally:
        server.close()


def test_a_worker_that_loses_its_database_exits_1_for_systemd_to_start_it_again(
    own_cluster: tuple[PgCluster, str],
) -> None:
    """The database down for 3 s (a reboot): procrastinate stops the worker, whose listener lost its
    connection and could not connect again. The process must then exit, and with 1, so that systemd
    (Restart=on-failure) starts it again. Found in the site scenario: after two PostgreSQL restarts, two
    workers had exited 0 (systemd left them down); here, one in two runs hung instead, its stalled-job
    sweep having swallowed the cancellation inside a database call (a live process that took no job)."""
    cluster, url = own_cluster
    with WorkerProcess(url) as worker:
        assert worker.proc is not None
        worker.wait_registered()
        cluster.outage(3)
        try:
            code = worker.proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        log = worker.log_text()
    print(f"\nworker after the database was down for 3 s: exit code {code}")
    assert code == 1, f"the worker {'hung' if code is None else f'exited {code}'}:\n{log[-3000:]}"
    assert "the worker stopped without being asked to" in log, log[-3000:]
