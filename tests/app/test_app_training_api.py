"""Training sessions through the API: lifecycle, limits, stop (also from another process), recovery."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import make_settings, unhandled_errors
from fastapi.testclient import TestClient
from helpers import LONG_DATA, LONG_TRAINING, create_model, start_session, wait_for_session

from app.core.config import Settings
from app.core.db import create_db_engine
from app.factory import create_app
from app.services.ownership import Owner
from app.services.sessions import (
    INTERRUPTED_LOCAL,
    INTERRUPTED_SHUTDOWN,
    INTERRUPTED_STALE,
    recover_local_sessions,
    sweep_stale_sessions,
)

pytestmark = pytest.mark.usefixtures("clean_db")


@pytest.fixture
def second_client(settings: Settings) -> Iterator[TestClient]:
    """Another app instance on the same database: a different owner, as a second host would be."""
    app = create_app(settings)
    with TestClient(app) as other:
        yield other
    assert unhandled_errors(app) == 0


def test_training_lifecycle_persists_metrics_and_weights(client: TestClient) -> None:
    model = create_model(client, "xor")
    session = start_session(client, model["id"], epochs=40, learning_rate=0.05, batch_size=16, seed=3)
    assert session["status"] in {"queued", "running"}
    assert session["device"] == "cpu"
    assert session["owner_pid"] == os.getpid()
    assert (session["epochs"], session["batch_size"], session["optimizer"]) == (40, 16, "adam")

    done = wait_for_session(client, session["id"])
    assert done["status"] == "completed", done
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


def test_regression_sessions_have_no_accuracy(client: TestClient) -> None:
    model = create_model(client, "plane", dataset="plane")
    done = wait_for_session(client, start_session(client, model["id"], epochs=5)["id"])
    assert done["status"] == "completed"
    assert done["accuracy"] is None
    metrics = client.get(f"/api/sessions/{done['id']}/metrics").json()["items"]
    assert all(m["accuracy"] is None for m in metrics)


def test_one_active_session_per_model_and_capacity_limit(client: TestClient) -> None:
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

    # The pool has two workers, so the third session waits; stopping it there ends it at once.
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
    # Capacity is back once the workers have let go of all three (just after the database says so).
    trainer = client.app.state.runtime.trainer  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while trainer.active_count:
        assert time.monotonic() < deadline, "trainer slots were not released"
        time.sleep(0.02)
    done = start_session(client, models[3]["id"], epochs=1)
    assert wait_for_session(client, done["id"])["status"] == "completed"


def test_stop_running_session_saves_weights(client: TestClient) -> None:
    model = create_model(client, "stoppable", dataset_params={"n_samples": 200})
    session = start_session(client, model["id"], epochs=2000, batch_size=1)
    wait_for_session(client, session["id"], {"running"}, min_epoch=1)
    response = client.post(f"/api/sessions/{session['id']}/stop")
    assert response.status_code == 202
    assert response.json()["stop_requested"] is True
    done = wait_for_session(client, session["id"], timeout=30)
    assert done["status"] == "stopped"
    assert 1 <= done["current_epoch"] < 2000
    assert client.get(f"/api/models/{model['id']}").json()["weights_version"] == session["id"]
    again = client.post(f"/api/sessions/{session['id']}/stop")
    assert again.status_code == 409
    assert "not running" in again.json()["detail"]


def test_stop_reaches_a_session_running_in_another_process(client: TestClient, second_client: TestClient) -> None:
    model = create_model(client, "remote-stop", dataset_params=LONG_DATA)
    session = start_session(client, model["id"], **LONG_TRAINING)
    wait_for_session(client, session["id"], {"running"})
    # The other instance has no live run for this session; only the database flag can reach it.
    response = second_client.post(f"/api/sessions/{session['id']}/stop")
    assert response.status_code == 202
    done = wait_for_session(second_client, session["id"], timeout=15)
    assert done["status"] == "stopped"


def test_delete_model_with_active_session_is_409(client: TestClient) -> None:
    model = create_model(client, "in-use", dataset_params=LONG_DATA)
    session = start_session(client, model["id"], **LONG_TRAINING)
    response = client.delete(f"/api/models/{model['id']}")
    assert response.status_code == 409
    assert "stop it before deleting" in response.json()["detail"]
    client.post(f"/api/sessions/{session['id']}/stop")
    wait_for_session(client, session["id"])
    assert client.delete(f"/api/models/{model['id']}").status_code == 204
    assert client.get(f"/api/sessions/{session['id']}").status_code == 404


def test_diverging_training_fails_with_a_clear_message(client: TestClient) -> None:
    model = create_model(client, "diverge", dataset="sine", layers=[{"width": 64, "activation": "relu"}] * 2)
    session = start_session(client, model["id"], epochs=50, learning_rate=10, batch_size=1, optimizer="sgd")
    done = wait_for_session(client, session["id"])
    assert done["status"] == "failed"
    assert "lower the learning rate" in done["error"]
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


def test_graceful_shutdown_interrupts_running_sessions(settings: Settings, database_url: str) -> None:
    app = create_app(settings)
    with TestClient(app) as own:
        model = create_model(own, "shutdown", dataset_params=LONG_DATA)
        session = start_session(own, model["id"], **LONG_TRAINING)
        wait_for_session(own, session["id"], {"running"})
    # Lifespan shutdown has run: the worker was stopped and the session marked.
    with psycopg.connect(database_url) as conn:
        status, error = conn.execute(
            "SELECT status, error FROM training_sessions WHERE id = %s", (session["id"],)
        ).fetchone()  # type: ignore[misc]
    assert status == "interrupted"
    assert error == INTERRUPTED_SHUTDOWN
    assert unhandled_errors(app) == 0


def insert_session(conn: psycopg.Connection, model_id: int, host: str, pid: int, instance: str, age_s: int) -> int:
    row = conn.execute(
        """
        INSERT INTO training_sessions (model_id, status, epochs, learning_rate, batch_size, optimizer, seed,
                                       device, owner_host, owner_pid, owner_instance, heartbeat_at)
        VALUES (%s, 'running', 10, 0.1, 8, 'sgd', 0, 'cpu', %s, %s, %s, now() - make_interval(secs => %s))
        RETURNING id
        """,
        (model_id, host, pid, instance, age_s),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_recovery_marks_only_provably_dead_sessions(client: TestClient, database_url: str) -> None:
    me = Owner()
    models = [create_model(client, f"recover-{i}")["id"] for i in range(6)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        dead_pid = insert_session(conn, models[0], me.host, 2**22 + 12345, "a" * 32, 0)  # no such process
        reused_pid = insert_session(conn, models[1], me.host, me.pid, "b" * 32, 0)  # our pid, older incarnation
        alive = insert_session(conn, models[2], me.host, 1, "c" * 32, 0)  # pid 1 is alive: not ours to judge
        other_fresh = insert_session(conn, models[3], "other-host", 4242, "d" * 32, 5)
        other_stale = insert_session(conn, models[4], "other-host", 4242, "e" * 32, 3600)
        own = insert_session(conn, models[5], me.host, me.pid, me.instance, 3600)

    engine = create_db_engine(make_settings(database_url))
    try:
        assert sorted(recover_local_sessions(engine, me)) == sorted([dead_pid, reused_pid])
        # The app's own heartbeat sweep may have got there first; the states below are what count.
        assert set(sweep_stale_sessions(engine, me, stale_seconds=60)) <= {other_stale}
    finally:
        engine.dispose()

    def state(session_id: int) -> tuple[str, str | None]:
        body = client.get(f"/api/sessions/{session_id}").json()
        return body["status"], body["error"]

    assert state(dead_pid) == ("interrupted", INTERRUPTED_LOCAL)
    assert state(reused_pid) == ("interrupted", INTERRUPTED_LOCAL)
    assert state(other_stale) == ("interrupted", INTERRUPTED_STALE)
    assert state(alive) == ("running", None)
    assert state(other_fresh) == ("running", None)
    assert state(own) == ("running", None)
    with psycopg.connect(database_url, autocommit=True) as conn:  # leave nothing "running" behind
        conn.execute("UPDATE training_sessions SET status = 'interrupted' WHERE status = 'running'")
