"""The training queue with real worker processes: enqueue, claim, complete, stop, worker death, exact resume.

Workers run with short timings (workerproc.FAST_WORKER_ENV): heartbeat 0.5 s, dead after 2 s; the
sessions that get interrupted ask for a checkpoint every 0.2 s. Each worker here takes one job at a
time, so a signal hits exactly one run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import torch
from conftest import make_settings, unhandled_errors
from fastapi.testclient import TestClient
from helpers import LONG_DATA, LONG_TRAINING, become_owner, create_model, start_session, wait_for_session
from workerproc import FAST_WORKER_ENV, REPO_ROOT, WorkerProcess

from app.factory import create_app

pytestmark = pytest.mark.usefixtures("clean_db")

# Long enough to be interrupted five times, short enough to finish in a few seconds of CPU.
RESUME_MODEL = {
    "dataset": "moons",
    "dataset_params": {"n_samples": 200, "noise": 0.2, "seed": 5},
    "layers": [{"width": 16, "activation": "relu", "dropout": 0.1}, {"width": 8, "activation": "tanh"}],
}
RESUME_TRAINING = {
    "epochs": 200,
    "learning_rate": 0.01,
    "batch_size": 8,
    "optimizer": "adam",
    "seed": 21,
    # The workers' CHECKPOINT_INTERVAL_SECONDS is the default 60 s: the tests rely on this override.
    "checkpoint_interval_seconds": 0.2,
}


@pytest.fixture
def workers(database_url: str) -> Iterator[list[WorkerProcess]]:
    """Collects the workers a test starts and always ends them."""
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.close()


def spawn(workers: list[WorkerProcess], database_url: str, wait: bool = True, **env: str) -> WorkerProcess:
    proc = WorkerProcess(database_url, **env)
    workers.append(proc)
    return proc.start(wait=wait)


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def job_of(database_url: str, session_id: int) -> tuple[Any, ...]:
    rows = query(
        database_url,
        "SELECT j.status, j.queue_name, j.task_name, j.args FROM procrastinate_jobs j"
        " JOIN training_sessions s ON s.job_id = j.id WHERE s.id = %s",
        session_id,
    )
    assert len(rows) == 1, rows
    return rows[0]


def epochs_recorded(database_url: str, session_id: int) -> list[int]:
    rows = query(database_url, "SELECT epoch FROM epoch_metrics WHERE session_id = %s ORDER BY epoch", session_id)
    return [row[0] for row in rows]


def checkpoint_epoch(database_url: str, session_id: int) -> int:
    rows = query(database_url, "SELECT epoch FROM training_checkpoints WHERE session_id = %s", session_id)
    return int(rows[0][0]) if rows else 0


def final_weights(database_url: str, model_id: int) -> dict[str, torch.Tensor]:
    [(data,)] = query(database_url, "SELECT data FROM model_weights WHERE model_id = %s", model_id)
    return torch.load(io.BytesIO(data), weights_only=True)  # type: ignore[no-any-return]


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds it took until predicate() was true."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


# -- the web process only queues ---------------------------------------------------------------------


def test_nothing_trains_in_the_web_process(client: TestClient, database_url: str) -> None:
    """No worker runs in this test: the session and its job wait, and stopping cancels both."""
    model = create_model(client, "waits")
    session = start_session(client, model["id"], epochs=3)
    assert session["status"] == "queued"
    time.sleep(1.5)
    still = client.get(f"/api/sessions/{session['id']}").json()
    assert (still["status"], still["attempts"], still["current_epoch"], still["owner_pid"]) == ("queued", 0, 0, None)
    status, queue_name, task, args = job_of(database_url, session["id"])
    assert (status, queue_name, task, args) == ("todo", "training-cpu", "train_session", {"session_id": session["id"]})

    stopped = client.post(f"/api/sessions/{session['id']}/stop").json()
    assert stopped["status"] == "stopped"
    assert job_of(database_url, session["id"])[0] == "cancelled"


def test_session_and_job_are_created_in_one_transaction(database_url: str) -> None:
    """When deferring the job fails, the session row is rolled back with it (and vice versa)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'queue refused'; END; $$;"
            "CREATE TRIGGER refuse_jobs BEFORE INSERT ON procrastinate_jobs FOR EACH ROW EXECUTE FUNCTION refuse_jobs()"
        )
    try:
        app = create_app(make_settings(database_url))
        with TestClient(app, raise_server_exceptions=False) as local:
            owner = become_owner(local, bearer=True)
            model = create_model(local, "atomic")
            response = local.post(f"/api/models/{model['id']}/sessions", json={"epochs": 1})
            assert response.status_code == 500
        assert unhandled_errors(app) == 1
        assert query(database_url, "SELECT count(*) FROM training_sessions") == [(0,)]
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse_jobs ON procrastinate_jobs; DROP FUNCTION refuse_jobs()")
    with TestClient(create_app(make_settings(database_url))) as local:
        local.headers["Authorization"] = f"Bearer {owner['token']}"
        session = start_session(local, model["id"], epochs=1)
    assert job_of(database_url, session["id"])[0] == "todo"
    assert query(database_url, "SELECT count(*) FROM procrastinate_jobs") == [(1,)]


def test_cuda_needs_a_live_cuda_worker(client: TestClient, database_url: str) -> None:
    model = create_model(client, "gpu")
    refused = client.post(f"/api/models/{model['id']}/sessions", json={"epochs": 1, "device": "cuda"})
    assert refused.status_code == 409
    assert "no CUDA training worker is running" in refused.json()["detail"]
    assert query(database_url, "SELECT count(*) FROM training_sessions") == [(0,)]
    auto = start_session(client, model["id"], epochs=1, device="auto")
    assert auto["device"] == "cpu"
    client.post(f"/api/sessions/{auto['id']}/stop")

    # A CUDA worker as the database sees one: registered, heartbeat fresh. Then as it looks once dead.
    [(worker_id,)] = query(database_url, "SELECT worker_id FROM procrastinate_register_worker_v1()")
    query(
        database_url,
        "INSERT INTO training_workers (id, host, pid, release_id, device, concurrency)"
        " VALUES (%s, 'gpu-host', 4242, 'r1', 'cuda', 1) RETURNING id",
        worker_id,
    )
    try:
        cuda = start_session(client, model["id"], epochs=1, device="cuda")
        assert cuda["device"] == "cuda"
        assert job_of(database_url, cuda["id"])[1] == "training-cuda"
        client.post(f"/api/sessions/{cuda['id']}/stop")
        auto_gpu = start_session(client, model["id"], epochs=1)
        assert auto_gpu["device"] == "cuda"  # auto prefers the GPU
        client.post(f"/api/sessions/{auto_gpu['id']}/stop")
        [listed] = client.get("/api/workers").json()["items"]
        assert (listed["host"], listed["device"], listed["release_id"], listed["alive"]) == (
            "gpu-host",
            "cuda",
            "r1",
            True,
        )

        query(database_url, "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")
        assert client.get("/api/workers").json()["items"][0]["alive"] is False
        late = client.post(f"/api/models/{create_model(client, 'gpu2')['id']}/sessions", json={"device": "cuda"})
        assert late.status_code == 409
    finally:
        query(database_url, "DELETE FROM training_workers WHERE id = %s", worker_id)
        query(database_url, "DELETE FROM procrastinate_workers WHERE id = %s", worker_id)


# -- workers ------------------------------------------------------------------------------------------


def test_worker_claims_completes_and_is_listed(
    client: TestClient, database_url: str, workers: list[WorkerProcess]
) -> None:
    # WORKER_HOST names it (the deploy sets the inventory name: containers may share a host name).
    proc = spawn(workers, database_url, WORKER_HOST="web7")
    [listed] = client.get("/api/workers").json()["items"]
    assert (listed["host"], listed["pid"], listed["device"], listed["release_id"], listed["alive"]) == (
        "web7",
        proc.pid,
        "cpu",
        "test-worker",
        True,
    )
    assert listed["concurrency"] == 1
    model = create_model(client, "claimed")
    session = start_session(client, model["id"], epochs=20, learning_rate=0.05)
    done = wait_for_session(client, session["id"], timeout=60)
    finished = (done["status"], done["owner_host"], done["owner_pid"], done["attempts"])
    assert finished == ("completed", "web7", proc.pid, 1)
    assert job_of(database_url, session["id"])[0] == "succeeded"
    assert epochs_recorded(database_url, session["id"]) == list(range(1, 21))

    assert proc.terminate() == 0  # idle: exits at once, and unregisters
    assert client.get("/api/workers").json()["items"] == []


def run_check(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, **FAST_WORKER_ENV}
    argv = [sys.executable, "-m", "app.worker.check", *args]
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_deploy_gate_finds_exactly_the_worker_it_asks_for(database_url: str, workers: list[WorkerProcess]) -> None:
    """python -m app.worker.check, the deploy's gate: host, pid, release and device must all match a live row."""
    proc = spawn(workers, database_url, WORKER_HOST="gpu7", RELEASE_ID="r-new")
    ok = run_check(database_url, "--host=gpu7", f"--pid={proc.pid}", "--release=r-new", "--device=cpu", "--timeout=5")
    assert ok.returncode == 0, ok.stderr
    found = json.loads(ok.stdout)
    found_fields = (found["host"], found["pid"], found["release_id"], found["device"], found["alive"])
    assert found_fields == ("gpu7", proc.pid, "r-new", "cpu", True)
    wrong = {
        "release": ["--host=gpu7", f"--pid={proc.pid}", "--release=r-old", "--device=cpu"],
        "device": ["--host=gpu7", f"--pid={proc.pid}", "--release=r-new", "--device=cuda"],
        "host": ["--host=gpu8", f"--pid={proc.pid}", "--release=r-new", "--device=cpu"],
        "pid (an older process)": ["--host=gpu7", f"--pid={proc.pid + 1}", "--release=r-new", "--device=cpu"],
    }
    for what, args in wrong.items():
        started = time.monotonic()
        failed = run_check(database_url, *args, "--timeout=1.5")
        assert failed.returncode == 1, what
        assert time.monotonic() - started < 10, what
        assert "no live worker with" in failed.stderr, what
        assert '"host": "gpu7"' in failed.stderr, what
    # A worker killed hard stays listed until it is pruned, but no longer alive: the gate refuses it.
    proc.kill()
    time.sleep(float(FAST_WORKER_ENV["WORKER_STALLED_SECONDS"]) + 1)
    dead = run_check(database_url, "--host=gpu7", f"--pid={proc.pid}", "--release=r-new", "--device=cpu", "--timeout=1")
    assert dead.returncode == 1
    assert '"alive": false' in dead.stderr
    bad = run_check(
        "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "--host=h",
        "--pid=1",
        "--release=r",
        "--device=cpu",
        "--timeout=1",
    )
    assert bad.returncode in (1, 2)
    assert "worker check:" in bad.stderr


def test_stop_while_running_aborts_the_job(client: TestClient, database_url: str, workers: list[WorkerProcess]) -> None:
    spawn(workers, database_url)
    model = create_model(client, "abort", dataset_params=LONG_DATA)
    session = start_session(client, model["id"], **LONG_TRAINING)
    wait_for_session(client, session["id"], {"running"}, min_epoch=1, timeout=60)
    asked = time.monotonic()
    assert client.post(f"/api/sessions/{session['id']}/stop").status_code == 202
    wait_until(lambda: job_of(database_url, session["id"])[0] == "aborted", 5, "job aborted")
    assert time.monotonic() - asked < 2.5
    done = client.get(f"/api/sessions/{session['id']}").json()
    assert done["status"] == "stopped"
    assert client.get(f"/api/models/{model['id']}").json()["weights_version"] == session["id"]


def test_exhausted_retries_interrupt_the_session_with_a_reason(
    client: TestClient, database_url: str, workers: list[WorkerProcess]
) -> None:
    victim = spawn(workers, database_url, JOB_MAX_FAILURES="0")
    model = create_model(client, "doomed", **RESUME_MODEL)
    session = start_session(client, model["id"], **RESUME_TRAINING)
    spawn(workers, database_url, JOB_MAX_FAILURES="0")
    wait_for_session(client, session["id"], {"running"}, timeout=60)
    victim.kill()
    done = wait_for_session(client, session["id"], timeout=15)
    assert done["status"] == "interrupted"
    assert "stopped sending heartbeats 1 times (JOB_MAX_FAILURES=0)" in done["error"]
    assert job_of(database_url, session["id"])[0] == "failed"


def test_internal_errors_are_retried_then_interrupt_the_session(
    client: TestClient, database_url: str, workers: list[WorkerProcess]
) -> None:
    """A run that fails (here: an unreadable checkpoint) counts a failure and is retried from the queue;
    one failure more than JOB_MAX_FAILURES and the session is interrupted with the reason."""
    model = create_model(client, "broken")
    session = start_session(client, model["id"], epochs=5)
    query(
        database_url, "INSERT INTO training_checkpoints (session_id, epoch, data) VALUES (%s, 2, 'junk')", session["id"]
    )
    spawn(workers, database_url, JOB_MAX_FAILURES="1")
    done = wait_for_session(client, session["id"], timeout=30)
    assert done["status"] == "interrupted"
    assert done["error"].startswith("gave up after 2 failures (JOB_MAX_FAILURES=1); last: internal error: ")
    assert done["attempts"] == 2
    assert job_of(database_url, session["id"])[0] == "failed"


# -- exact resume -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_weights(database_url: str) -> dict[str, torch.Tensor]:
    """The same training, never interrupted."""
    with WorkerProcess(database_url), TestClient(create_app(make_settings(database_url))) as local:
        become_owner(local)
        model = create_model(local, "reference", **RESUME_MODEL)
        session = start_session(local, model["id"], **RESUME_TRAINING)
        done = wait_for_session(local, session["id"], timeout=120)
        assert (done["status"], done["attempts"], done["resumed_from_epoch"]) == ("completed", 1, None)
        assert done["checkpoint_interval_seconds"] == 0.2
        weights = final_weights(database_url, model["id"])
    return weights


@pytest.mark.parametrize(
    "signals",
    # 1, 2 and 5 interruptions (issue 12). The five hold every hand-over: TERM first, KILL after TERM,
    # KILL after KILL, TERM after KILL, so a lone TERM needs no case of its own.
    [["KILL"], ["KILL", "TERM"], ["TERM", "KILL", "KILL", "TERM", "KILL"]],
    ids=lambda s: f"{len(s)}x-" + "-".join(s),
)
def test_interrupted_training_ends_bit_identical(
    client: TestClient,
    database_url: str,
    workers: list[WorkerProcess],
    reference_weights: dict[str, torch.Tensor],
    signals: list[str],
) -> None:
    """SIGKILL: the run resumes from its last periodic checkpoint on the standby worker once the dead
    one's heartbeat is WORKER_STALLED_SECONDS old; SIGTERM: the run checkpoints at the end of its epoch
    and is handed back at once. Either way the final weights equal the uninterrupted run's, bit for bit,
    and every epoch has exactly one metrics row."""
    model = create_model(client, "interrupted", **RESUME_MODEL)
    current = spawn(workers, database_url)
    session = start_session(client, model["id"], **RESUME_TRAINING)
    resumed_from: list[int] = []
    for attempt, signal_name in enumerate(signals, start=1):
        # Interrupt only after this run has made progress past its own start (a fresh checkpoint).
        floor = max(resumed_from, default=0)
        wait_until(lambda floor=floor: checkpoint_epoch(database_url, session["id"]) > floor, 60, "progress")
        body = client.get(f"/api/sessions/{session['id']}").json()
        assert (body["status"], body["attempts"]) == ("running", attempt), body
        standby = spawn(workers, database_url, wait=False)  # starts up while the current one dies
        if signal_name == "KILL":
            current.kill()
        else:
            assert current.terminate() == 0  # finishes its epoch, checkpoints, hands the job back
            body = client.get(f"/api/sessions/{session['id']}").json()
            # The standby, when it is up already, may have taken the job back at once.
            assert body["status"] in ("queued", "running"), body
            if body["status"] == "queued":
                assert checkpoint_epoch(database_url, session["id"]) == body["current_epoch"]
        interrupted_at = time.monotonic()
        stopped_epoch = epochs_recorded(database_url, session["id"])[-1]
        standby.wait_registered()
        # The standby's own start (torch's import) is not what is timed: on a busy machine it can take
        # longer than the whole hand-over. From whichever came later, the interruption or a live worker:
        available_at = max(interrupted_at, time.monotonic())
        current = standby
        wait_until(
            lambda attempt=attempt: client.get(f"/api/sessions/{session['id']}").json()["attempts"] == attempt + 1,
            30,
            f"run {attempt + 1} claimed",
        )
        # A dead worker's job is back within WORKER_STALLED_SECONDS (2) + a sweep (0.5) + a fetch.
        assert time.monotonic() - available_at < 10
        body = client.get(f"/api/sessions/{session['id']}").json()
        assert body["owner_pid"] == current.pid
        assert floor < body["resumed_from_epoch"] <= stopped_epoch
        resumed_from.append(body["resumed_from_epoch"])
    done = wait_for_session(client, session["id"], timeout=120)
    assert done["status"] == "completed", done
    assert done["attempts"] == len(signals) + 1
    assert all(epoch > 0 for epoch in resumed_from)
    assert resumed_from == sorted(resumed_from)
    assert epochs_recorded(database_url, session["id"]) == list(range(1, RESUME_TRAINING["epochs"] + 1))
    [(failures,)] = query(database_url, "SELECT failures FROM training_sessions WHERE id = %s", session["id"])
    assert failures == signals.count("KILL")  # graceful stops cost no retry
    weights = final_weights(database_url, model["id"])
    assert weights.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.equal(weights[name], tensor), name
