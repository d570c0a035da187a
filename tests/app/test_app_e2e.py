"""End to end: real uvicorn processes on loopback ports sharing one PostgreSQL database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from appserver import REPO_ROOT, AppServer
from helpers import LONG_DATA, LONG_TRAINING, create_model, start_session, wait_for_session
from pgcluster import free_port
from workerproc import WorkerProcess

POINTS = [[0.6, 0.7], [-0.6, 0.7], [-0.4, -0.8], [0.9, -0.2], [0.2, 0.3]]


@pytest.fixture
def servers(database_url: str) -> Iterator[list[AppServer]]:
    """Collects the servers a test starts and always ends them (and deletes their logs)."""
    started: list[AppServer] = []
    yield started
    for server in started:
        server.close()


def launch(servers: list[AppServer], database_url: str, count: int = 1) -> list[AppServer]:
    """Start `count` app processes in parallel and wait until each is ready."""
    env = {"DATABASE_URL": database_url, "TORCH_DEVICE": "cpu", "RELEASE_ID": "e2e", "MAX_SAMPLES": "2000"}
    batch = [AppServer(env).start(wait=False) for _ in range(count)]
    servers.extend(batch)
    for server in batch:
        server.wait_ready()
    return batch


def assert_json_logs(server: AppServer) -> None:
    records = server.log_records()  # raises if any line is not JSON
    access = [r for r in records if r["logger"] == "app.access"]
    assert access, "no access log lines"
    assert all(r.get("request_id") for r in access)


@pytest.mark.usefixtures("clean_db")
def test_train_restart_and_share_between_processes(
    servers: list[AppServer], database_url: str, worker: WorkerProcess
) -> None:
    first, second = launch(servers, database_url, count=2)
    with first.client() as a, second.client() as b:
        model = create_model(a, "e2e-xor", dataset_params={"n_samples": 400, "noise": 0.05, "seed": 2})
        session = start_session(a, model["id"], epochs=150, learning_rate=0.05, batch_size=16, seed=1)
        done = wait_for_session(a, session["id"], timeout=120)
        assert done["status"] == "completed"
        assert done["device"] == "cpu"
        assert done["accuracy"] >= 0.95

        # The other process sees the same model, session and metrics, and serves the same predictions.
        assert b.get(f"/api/models/{model['id']}").json()["weights_version"] == session["id"]
        assert b.get(f"/api/sessions/{session['id']}").json() == done
        metrics = b.get(f"/api/sessions/{session['id']}/metrics").json()["items"]
        assert len(metrics) == 150
        assert metrics[-1]["accuracy"] >= 0.95
        before = a.post(f"/api/models/{model['id']}/predict", json={"inputs": POINTS}).json()
        assert before["outputs"] == [1, 0, 1, 0, 1]
        assert b.post(f"/api/models/{model['id']}/predict", json={"inputs": POINTS}).json() == before
        response = a.get("/healthz", headers={"X-Request-ID": "e2e-trace-1"})
        assert response.headers["X-Request-ID"] == "e2e-trace-1"

    traced = first.wait_for_log(lambda r: r.get("request_id") == "e2e-trace-1")
    assert (traced["logger"], traced["path"], traced["status"]) == ("app.access", "/healthz", 200)
    first.kill()
    assert_json_logs(first)

    (restarted,) = launch(servers, database_url)
    with restarted.client() as c:
        after = c.post(f"/api/models/{model['id']}/predict", json={"inputs": POINTS}).json()
        assert after == before  # same weights, loaded from PostgreSQL by a fresh process
        assert c.get("/version").json()["release_id"] == "e2e"

        # A web process that stops (SIGTERM) exits cleanly and leaves the trainings alone: they run
        # in the worker, and any other web process can stop them (for their owner).
        long_model = create_model(c, "e2e-long", dataset_params=LONG_DATA)
        long_session = start_session(c, long_model["id"], **LONG_TRAINING)
        wait_for_session(c, long_session["id"], {"running"})
        owner = c.headers["Authorization"]
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status reports the signal.
    assert restarted.terminate() in (0, -signal.SIGTERM)
    assert any(r["msg"] == "stopped" and r["logger"] == "app.runtime" for r in restarted.log_records())
    with second.client() as b:
        running = b.get(f"/api/sessions/{long_session['id']}").json()
        assert (running["status"], running["owner_pid"]) == ("running", worker.pid)
        assert b.post(f"/api/sessions/{long_session['id']}/stop").status_code == 403  # b is another owner
        assert b.post(f"/api/sessions/{long_session['id']}/stop", headers={"Authorization": owner}).status_code == 202
        assert wait_for_session(b, long_session["id"], timeout=30)["status"] == "stopped"
    assert_json_logs(restarted)


def test_start_up_errors_are_clear_and_keep_the_password_secret() -> None:
    secret = "hunter2-not-logged"
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    runs = {
        "unreachable": {**base, "DATABASE_URL": f"postgresql://app:{secret}@127.0.0.1:{free_port()}/nnp"},
        "missing": base,
        "no-cuda": {**base, "DATABASE_URL": f"postgresql://app:{secret}@127.0.0.1:1/nnp", "TORCH_DEVICE": "cuda"},
    }
    procs = {
        name: subprocess.Popen(
            [*command, "--port", str(free_port())],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, env in runs.items()
    }
    try:
        outputs = {name: proc.communicate(timeout=60)[0].decode() for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode != 0, outputs[name]
        assert secret not in outputs[name]
    assert "DATABASE_URL: cannot connect to postgresql+psycopg://app:***@127.0.0.1:" in outputs["unreachable"]
    assert "DATABASE_URL is not set" in outputs["missing"]
    assert "TORCH_DEVICE=cuda but CUDA is not available" in outputs["no-cuda"]


def test_worker_start_up_errors_are_clear_and_keep_the_password_secret() -> None:
    secret = "hunter2-not-logged"
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    url = f"postgresql://app:{secret}@127.0.0.1:{free_port()}/nnp"
    runs = {
        "unreachable": {**base, "DATABASE_URL": url, "WORKER_DEVICE": "cpu"},
        "no-cuda": {**base, "DATABASE_URL": url, "WORKER_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": ""},
        "bad-interval": {**base, "DATABASE_URL": url, "CHECKPOINT_INTERVAL_SECONDS": "-1"},
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "app.worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, env in runs.items()
    }
    try:
        outputs = {name: proc.communicate(timeout=60)[0].decode() for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 2, outputs[name]
        assert secret not in outputs[name]
    assert "DATABASE_URL: cannot connect to postgresql+psycopg://app:***@127.0.0.1:" in outputs["unreachable"]
    assert "WORKER_DEVICE=cuda but CUDA is not available" in outputs["no-cuda"]
    assert "CHECKPOINT_INTERVAL_SECONDS" in outputs["bad-interval"]
