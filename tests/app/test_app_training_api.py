"""Training sessions through the API, run by a real worker process: lifecycle, limits, stop, bad input."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from helpers import LONG_DATA, LONG_TRAINING, create_model, start_session, wait_for_session
from sqlalchemy import event
from sqlalchemy.orm import Session
from workerproc import WorkerProcess

pytestmark = pytest.mark.usefixtures("clean_db")


def test_training_lifecycle_persists_metrics_and_weights(
    client: TestClient, worker: WorkerProcess, database_url: str
) -> None:
    model = create_model(client, "xor")
    session = start_session(client, model["id"], epochs=40, learning_rate=0.05, batch_size=16, seed=3)
    assert session["status"] == "queued"
    assert session["device"] == "cpu"  # auto, and no CUDA worker is alive
    assert (session["owner_pid"], session["attempts"], session["resumed_from_epoch"]) == (None, 0, None)
    assert (session["epochs"], session["batch_size"], session["optimizer"]) == (40, 16, "adam")

    done = wait_for_session(client, session["id"])
    assert done["status"] == "completed", done
    assert done["owner_pid"] == worker.pid  # trained by the worker process, not by the web app
    assert (done["attempts"], done["resumed_from_epoch"]) == (1, None)
    assert done["current_epoch"] == 40
    assert done["accuracy"] >= 0.9
    assert done["started_at"] is not None
    assert done["finished_at"] is not None

    metrics = client.get(f"/api/sessions/{session['id']}/metrics").json()
    assert metrics["status"] == "completed"
    assert [m["epoch"] for m in metrics["items"]] == list(range(1, 41))
    assert metrics["items"][-1]["loss"] == pytest.approx(done["loss"])
    assert metrics["items"][-1]["loss"] < metrics["items"][0]["loss"]
    tail = client.get(f"/api/sessions/{session['id']}/metrics?after_epoch=37").json()
    assert [m["epoch"] for m in tail["items"]] == [38, 39, 40]

    trained = client.get(f"/api/models/{model['id']}").json()
    assert trained["trained"] is True
    assert trained["weights_version"] == session["id"]
    listing = client.get(f"/api/models/{model['id']}/sessions").json()
    assert [s["id"] for s in listing["items"]] == [session["id"]]
    with psycopg.connect(database_url) as conn:
        job = conn.execute(
            "SELECT j.status FROM procrastinate_jobs j JOIN training_sessions s ON s.job_id = j.id WHERE s.id = %s",
            (session["id"],),
        ).fetchone()
        leftover = conn.execute(
            "SELECT count(*) FROM training_checkpoints WHERE session_id = %s", (session["id"],)
        ).fetchone()
    assert job == ("succeeded",)
    assert leftover == (0,)  # a finished session's checkpoint is dropped


def test_the_202_describes_the_queued_session_even_when_a_worker_claims_it_at_the_commit(
    client: TestClient, database_url: str
) -> None:
    """A worker may claim a session the instant the start commits (LISTEN/NOTIFY: seen under load in make test,
    the answer said running). The answer is the session as queued, whatever happens after the commit: here a
    stand-in worker marks it running right at the commit, before the endpoint could read it back."""

    def claim(db: Session) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE training_sessions SET status = 'running', attempts = 1 WHERE status = 'queued'")

    model = create_model(client, "xor")
    event.listen(Session, "after_commit", claim)
    try:
        session = start_session(client, model["id"], epochs=1)
    finally:
        event.remove(Session, "after_commit", claim)
    assert (session["status"], session["attempts"], session["owner_pid"]) == ("queued", 0, None), session
    assert client.get(f"/api/sessions/{session['id']}").json()["status"] == "running"


def test_regression_sessions_have_no_accuracy(client: TestClient, worker: WorkerProcess) -> None:
    model = create_model(client, "plane", dataset="plane")
    done = wait_for_session(client, start_session(client, model["id"], epochs=5)["id"])
    assert done["status"] == "completed"
    assert done["accuracy"] is None
    metrics = client.get(f"/api/sessions/{done['id']}/metrics").json()["items"]
    assert all(m["accuracy"] is None for m in metrics)


def test_one_active_session_per_model_and_capacity_limit(client: TestClient, worker: WorkerProcess) -> None:
    models = [create_model(client, f"busy-{i}", dataset_params=LONG_DATA) for i in range(4)]
    first = start_session(client, models[0]["id"], **LONG_TRAINING)
    second = client.post(f"/api/models/{models[0]['id']}/sessions", json=LONG_TRAINING)
    assert second.status_code == 409
    assert "already has a queued or running training session" in second.json()["detail"]

    started = [first] + [start_session(client, m["id"], **LONG_TRAINING) for m in models[1:3]]
    refused = client.post(f"/api/models/{models[3]['id']}/sessions", json=LONG_TRAINING)
    assert refused.status_code == 429  # MAX_CONCURRENT_TRAININGS is 3 in the tests
    assert "too many trainings" in refused.json()["detail"]
    assert refused.headers["Retry-After"].isdigit()

    # The worker runs two at a time (WORKER_CONCURRENCY=2), so the third session waits; stopping it
    # there ends it at once.
    for session in started[:2]:
        wait_for_session(client, session["id"], {"running"})
    queued = started[2]
    assert client.get(f"/api/sessions/{queued['id']}").json()["status"] == "queued"
    stopped = client.post(f"/api/sessions/{queued['id']}/stop")
    assert stopped.status_code == 202
    assert stopped.json()["status"] == "stopped"
    assert stopped.json()["started_at"] is None

    for session in started[:2]:
        assert client.post(f"/api/sessions/{session['id']}/stop").status_code == 202
    for session in started[:2]:
        assert wait_for_session(client, session["id"], timeout=30)["status"] in {"stopped", "completed"}
    assert wait_for_session(client, queued["id"])["current_epoch"] == 0
    done = start_session(client, models[3]["id"], epochs=1)
    assert wait_for_session(client, done["id"])["status"] == "completed"


def test_stop_running_session_saves_weights_within_a_second_or_two(client: TestClient, worker: WorkerProcess) -> None:
    model = create_model(client, "stoppable", dataset_params={"n_samples": 200})
    session = start_session(client, model["id"], epochs=2000, batch_size=1)
    wait_for_session(client, session["id"], {"running"}, min_epoch=1)
    asked = time.monotonic()
    response = client.post(f"/api/sessions/{session['id']}/stop")
    assert response.status_code == 202
    assert response.json()["stop_requested"] is True
    done = wait_for_session(client, session["id"], timeout=30)
    assert time.monotonic() - asked < 3
    assert done["status"] == "stopped"
    assert 1 <= done["current_epoch"] < 2000
    assert client.get(f"/api/models/{model['id']}").json()["weights_version"] == session["id"]
    again = client.post(f"/api/sessions/{session['id']}/stop")
    assert again.status_code == 409
    assert "not running" in again.json()["detail"]


def test_delete_model_with_active_session_is_409(client: TestClient, worker: WorkerProcess) -> None:
    model = create_model(client, "in-use", dataset_params=LONG_DATA)
    session = start_session(client, model["id"], **LONG_TRAINING)
    response = client.delete(f"/api/models/{model['id']}")
    assert response.status_code == 409
    assert "stop it before deleting" in response.json()["detail"]
    client.post(f"/api/sessions/{session['id']}/stop")
    wait_for_session(client, session["id"])
    assert client.delete(f"/api/models/{model['id']}").status_code == 204
    assert client.get(f"/api/sessions/{session['id']}").status_code == 404


def test_diverging_training_fails_with_a_clear_message(client: TestClient, worker: WorkerProcess) -> None:
    model = create_model(client, "diverge", dataset="sine", layers=[{"width": 64, "activation": "relu"}] * 2)
    session = start_session(client, model["id"], epochs=50, learning_rate=10, batch_size=1, optimizer="sgd")
    done = wait_for_session(client, session["id"])
    assert done["status"] == "failed"
    assert "lower the learning rate" in done["error"]
    assert done["attempts"] == 1  # a diverging training is not retried
    assert client.get(f"/api/models/{model['id']}").json()["trained"] is False


def test_training_unknown_model_is_404_and_unknown_session_is_404(client: TestClient) -> None:
    response = client.post("/api/models/999999/sessions", json={"epochs": 1})
    assert response.status_code == 404
    assert response.json()["detail"] == "model 999999 not found"
    assert client.get("/api/models/999999/sessions").status_code == 404
    for path in ("/api/sessions/999999", "/api/sessions/999999/metrics"):
        assert client.get(path).status_code == 404
    assert client.post("/api/sessions/999999/stop").status_code == 404


def params_case(**params: Any) -> Any:
    return params


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (params_case(epochs=0), "epochs"),
        (params_case(epochs=2001), "epochs"),  # MAX_EPOCHS is 2000 here
        (params_case(epochs=10**12), "epochs"),
        (params_case(learning_rate=0), "learning_rate"),
        (params_case(learning_rate=-1), "learning_rate"),
        (params_case(learning_rate=1e9), "learning_rate"),
        (params_case(learning_rate="fast"), "learning_rate"),
        (params_case(batch_size=0), "batch_size"),
        (params_case(batch_size=513), "batch_size"),  # MAX_BATCH_SIZE is 512 here
        (params_case(optimizer="rmsprop"), "optimizer"),
        (params_case(seed=-1), "seed"),
        (params_case(momentum=0.9), "momentum"),
        (params_case(device="tpu"), "device"),
        (params_case(device="CUDA"), "device"),
        (params_case(device=None), "device"),
        (params_case(checkpoint_interval_seconds=-1), "checkpoint_interval_seconds"),
        (params_case(checkpoint_interval_seconds=0), "checkpoint_interval_seconds"),
        (params_case(checkpoint_interval_seconds="often"), "checkpoint_interval_seconds"),
        (params_case(checkpoint_interval_seconds=10**9), "checkpoint_interval_seconds"),
    ],
)
def test_invalid_training_parameters_are_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    model = create_model(client, "params")
    response = client.post(f"/api/models/{model['id']}/sessions", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_learning_rate_is_422(client: TestClient, literal: str) -> None:
    model = create_model(client, "nan-lr")
    body = f'{{"epochs": 1, "learning_rate": {literal}}}'.encode()
    response = client.post(
        f"/api/models/{model['id']}/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "learning_rate" in response.json()["message"]


def test_a_second_start_while_a_worker_claims_the_first_is_a_409_not_a_deadlock(
    client: TestClient, worker: WorkerProcess
) -> None:
    """A worker claims a new session at once (LISTEN/NOTIFY) while the client already asks for a second
    one of the same model: both transactions add an entry for the model to the unique index of active
    sessions. Without the model lock both waited for the other's entry, PostgreSQL broke the deadlock by
    failing the request, and the client got a 503 (seen once in make test). Twenty times in a row: always
    the 409 that names the conflict, and every first session runs."""
    outcomes = []
    for attempt in range(20):
        model = create_model(client, f"claim-race-{attempt}", dataset_params=LONG_DATA)
        first = start_session(client, model["id"], **LONG_TRAINING)
        second = client.post(f"/api/models/{model['id']}/sessions", json={"epochs": 1})
        outcomes.append(second.status_code)
        assert client.post(f"/api/sessions/{first['id']}/stop").status_code == 202
        assert wait_for_session(client, first["id"], timeout=60)["status"] == "stopped"
    assert outcomes == [409] * 20
