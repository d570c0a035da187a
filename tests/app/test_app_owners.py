"""Owners, quotas and retention (issue 15, item 2): who may change what, how much each owner may ask for,
what the answers say when the answer is no, and what retention removes and keeps."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from appserver import AppServer
from conftest import OPERATOR_TOKEN, make_settings
from fastapi.testclient import TestClient
from helpers import LONG_DATA, LONG_TRAINING, become_owner, create_model, start_session, wait_for_session
from workerproc import WorkerProcess

from app.core.db import create_db_engine
from app.factory import create_app
from app.worker.retention import run_retention

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def quota_app(database_url: str) -> Iterator[tuple[TestClient, TestClient, TestClient]]:
    """Two owners (A by cookie, B by Bearer) and an anonymous client of an app with small quotas."""
    settings = make_settings(
        database_url, owner_max_models=3, owner_max_active_trainings=1, owner_max_epochs_per_hour=12
    )
    app = create_app(settings)
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as anonymous:
        become_owner(a)
        become_owner(b, bearer=True)
        yield a, b, anonymous


def test_an_owner_token_is_random_kept_as_a_strict_cookie_and_stored_only_as_a_hash(
    client: TestClient, database_url: str
) -> None:
    first = client.post("/api/owners")
    second = client.post("/api/owners")
    assert first.status_code == second.status_code == 201
    token = first.json()["token"]
    assert token.startswith("nnp_")
    assert len(token) == 47
    assert token != second.json()["token"]
    assert first.json()["token_type"] == "bearer"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"nnp_owner={token};")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/api", "Max-Age=31536000"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # plain HTTP here; over HTTPS it is Secure (test below)
    assert first.headers["cache-control"] == "no-store"
    stored = sql(database_url, "SELECT token_hash FROM owners WHERE id = %s", first.json()["owner_id"])[0][0]
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()
    assert (
        sql(database_url, "SELECT count(*) FROM owners WHERE position(%s::bytea in token_hash) > 0", token.encode())[0][
            0
        ]
        == 0
    )


def test_over_https_the_cookie_is_secure(settings: Any) -> None:
    with TestClient(create_app(settings), base_url="https://testserver") as https:
        cookie = https.post("/api/owners").headers["set-cookie"]
    assert "secure" in cookie.lower(), cookie


def test_changes_without_a_token_are_401_and_say_where_tokens_come_from(
    quota_app: tuple[TestClient, TestClient, TestClient],
) -> None:
    a, _, anonymous = quota_app
    model = create_model(a, "owned-by-a")
    attempts = {
        "create": anonymous.post("/api/models", json={"name": "nobody", "dataset": "xor"}),
        "train": anonymous.post(f"/api/models/{model['id']}/sessions", json={"epochs": 1}),
        "delete": anonymous.delete(f"/api/models/{model['id']}"),
        "bad header": anonymous.post(
            "/api/models", json={"name": "x", "dataset": "xor"}, headers={"Authorization": "nnp"}
        ),
        "unknown": anonymous.post(
            "/api/models", json={"name": "x", "dataset": "xor"}, headers={"Authorization": "Bearer nnp_" + "A" * 43}
        ),
        "not a token": anonymous.post(
            "/api/models", json={"name": "x", "dataset": "xor"}, headers={"Authorization": "Bearer 123"}
        ),
    }
    for what, answer in attempts.items():
        assert answer.status_code == 401, (what, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer"), what
        assert "POST /api/owners" in answer.json()["detail"], (what, answer.json())
    assert "Authorization header: expected 'Bearer <token>'" in attempts["bad header"].json()["detail"]
    assert "not recognised" in attempts["unknown"].json()["detail"]
    assert anonymous.get("/api/owners/me").status_code == 401
    # Nothing was created, and the model is still there.
    assert anonymous.get(f"/api/models/{model['id']}").status_code == 200
    assert [m["name"] for m in anonymous.get("/api/models").json()["items"]].count("nobody") == 0


def test_only_the_owner_or_the_operator_changes_a_model_or_a_session(
    quota_app: tuple[TestClient, TestClient, TestClient], worker: WorkerProcess
) -> None:
    a, b, anonymous = quota_app
    model = create_model(a, "a-long", dataset_params=LONG_DATA)
    # Everyone may read it (reads are public unless OWNER_ONLY_READS); its owner is named.
    assert b.get(f"/api/models/{model['id']}").json()["owner_id"] == a.get("/api/owners/me").json()["owner_id"]

    forbidden = b.post(f"/api/models/{model['id']}/sessions", json={"epochs": 1})
    assert forbidden.status_code == 403
    assert "belongs to another owner" in forbidden.json()["detail"]
    session = start_session(a, model["id"], **{**LONG_TRAINING, "epochs": 12})
    assert session["owner_id"] == model["owner_id"]

    for who, client in (("b", b), ("anonymous", anonymous)):
        stop = client.post(f"/api/sessions/{session['id']}/stop")
        delete = client.delete(f"/api/models/{model['id']}")
        expected = 403 if who == "b" else 401
        assert (stop.status_code, delete.status_code) == (expected, expected), (who, stop.text, delete.text)
    assert (
        "only its owner (or the operator) may stop it" in b.post(f"/api/sessions/{session['id']}/stop").json()["detail"]
    )
    assert a.get(f"/api/sessions/{session['id']}").json()["status"] in {"queued", "running"}

    # The operator owns nothing but may stop and delete anything.
    assert anonymous.post("/api/models", json={"name": "op", "dataset": "xor"}, headers=OPERATOR).status_code == 403
    assert anonymous.get("/api/owners/me", headers=OPERATOR).json() == {
        "owner_id": None,
        "operator": True,
        "owner_only_reads": False,
        "quotas": None,
    }
    assert anonymous.post(f"/api/sessions/{session['id']}/stop", headers=OPERATOR).status_code == 202
    assert wait_for_session(a, session["id"], timeout=30)["status"] == "stopped"
    assert anonymous.delete(f"/api/models/{model['id']}", headers=OPERATOR).status_code == 204
    assert a.get(f"/api/models/{model['id']}").status_code == 404

    mine = create_model(a, "a-deletes-own")
    assert a.delete(f"/api/models/{mine['id']}").status_code == 204


@pytest.mark.usefixtures("clean_db")
def test_quotas_refuse_with_the_quota_named(
    quota_app: tuple[TestClient, TestClient, TestClient], worker: WorkerProcess
) -> None:
    a, b, _ = quota_app
    become_owner(a)  # the database was emptied: a new token
    become_owner(b, bearer=True)
    models = [create_model(a, f"q{n}") for n in range(3)]
    refused = a.post("/api/models", json={"name": "q3", "dataset": "xor"})
    assert refused.status_code == 403
    assert refused.json()["quota"] == "owner_max_models"
    assert "at most 3 models (OWNER_MAX_MODELS); delete one first" in refused.json()["detail"]
    assert create_model(b, "other-owner-unaffected")["name"] == "other-owner-unaffected"

    # One training at a time: the second is a 429 until the first ends.
    long = start_session(a, models[0]["id"], epochs=6, batch_size=1, learning_rate=0.001)
    busy = a.post(f"/api/models/{models[1]['id']}/sessions", json={"epochs": 1})
    assert busy.status_code == 429
    assert busy.json()["quota"] == "owner_max_active_trainings"
    assert busy.headers["retry-after"] == "10"
    wait_for_session(a, long["id"], timeout=60)

    # 12 epochs an hour: 6 ran, 6 more fit, then none; the answer says when.
    assert start_session(a, models[1]["id"], epochs=6)["epochs"] == 6
    wait_for_session(a, a.get(f"/api/models/{models[1]['id']}/sessions").json()["items"][0]["id"], timeout=60)
    hourly = a.post(f"/api/models/{models[2]['id']}/sessions", json={"epochs": 1})
    assert hourly.status_code == 429, hourly.text
    assert hourly.json()["quota"] == "owner_max_epochs_per_hour"
    assert 3500 <= int(hourly.headers["retry-after"]) <= 3600
    assert "started 12 epochs in the last hour and may start at most 12" in hourly.json()["detail"]
    too_many = a.post(f"/api/models/{models[2]['id']}/sessions", json={"epochs": 13})
    assert (too_many.status_code, too_many.json()["quota"]) == (403, "owner_max_epochs_per_hour")

    me = a.get("/api/owners/me").json()
    assert me["quotas"] == {
        "models": {"used": 3, "limit": 3},
        "active_trainings": {"used": 0, "limit": 1},
        "epochs_per_hour": {"used": 12, "limit": 12},
    }


def test_racing_requests_of_one_owner_never_exceed_a_quota(database_url: str) -> None:
    """Eight clients of one owner create models at once through two uvicorn processes: exactly the quota
    of them succeed, whatever the interleaving (the owner's row is locked while its quota is checked)."""
    sql(database_url, "TRUNCATE models, training_sessions CASCADE")
    env = {"DATABASE_URL": database_url, "TORCH_DEVICE": "cpu", "OWNER_MAX_MODELS": "3"}
    with AppServer(env, workers=2) as server:
        with server.client() as first:
            token = first.headers["Authorization"]
        outcomes: Counter[int] = Counter()
        barrier = threading.Barrier(8)

        def create(n: int) -> None:
            with httpx.Client(base_url=server.base_url, headers={"Authorization": token}, timeout=30) as client:
                barrier.wait()
                for m in range(3):
                    outcomes[
                        client.post("/api/models", json={"name": f"race-{n}-{m}", "dataset": "xor"}).status_code
                    ] += 1

        threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcomes == Counter({201: 3, 403: 21}), outcomes


def test_owner_only_reads_hide_other_owners_rows(database_url: str, worker: WorkerProcess) -> None:
    app = create_app(make_settings(database_url, owner_only_reads=True))
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as anonymous:
        become_owner(a)
        become_owner(b, bearer=True)
        model = create_model(a, "private-model")
        session = start_session(a, model["id"], epochs=2)
        wait_for_session(a, session["id"])
        hidden = {
            "model": f"/api/models/{model['id']}",
            "sessions": f"/api/models/{model['id']}/sessions",
            "session": f"/api/sessions/{session['id']}",
            "metrics": f"/api/sessions/{session['id']}/metrics",
            "boundary": f"/api/models/{model['id']}/boundary?resolution=4",
        }
        for what, path in hidden.items():
            assert a.get(path).status_code == 200, what
            for other in (b, anonymous):
                answer = other.get(path)
                assert answer.status_code == 404, (what, answer.text)
            assert anonymous.get(path, headers=OPERATOR).status_code == 200, what
        predict = {"inputs": [[0.0, 0.0]]}
        assert a.post(f"/api/models/{model['id']}/predict", json=predict).status_code == 200
        assert b.post(f"/api/models/{model['id']}/predict", json=predict).status_code == 404
        assert model["id"] in {m["id"] for m in a.get("/api/models").json()["items"]}
        assert model["id"] not in {m["id"] for m in b.get("/api/models").json()["items"]}
        assert anonymous.get("/api/models").json() == {"items": [], "total": 0}
        assert model["id"] in {m["id"] for m in anonymous.get("/api/models", headers=OPERATOR).json()["items"]}
        assert a.get("/api/owners/me").json()["owner_only_reads"] is True


def test_a_prediction_records_the_models_use(database_url: str, worker: WorkerProcess) -> None:
    app = create_app(make_settings(database_url, model_touch_seconds=0.2))
    with TestClient(app) as a:
        become_owner(a)
        model = create_model(a, "touched")
        wait_for_session(a, start_session(a, model["id"], epochs=1)["id"])
        sql(database_url, "UPDATE models SET last_used_at = now() - interval '100 days' WHERE id = %s", model["id"])
        assert a.post(f"/api/models/{model['id']}/predict", json={"inputs": [[0.0, 0.0]]}).status_code == 200
        deadline = time.monotonic() + 10
        while True:
            age = sql(database_url, "SELECT now() - last_used_at FROM models WHERE id = %s", model["id"])[0][0]
            if age.total_seconds() < 60:
                break
            assert time.monotonic() < deadline, f"last_used_at not updated by a prediction: {age}"
            time.sleep(0.05)


def _age(url: str, table: str, column: str, row_id: int, days: int) -> None:
    sql(url, f"UPDATE {table} SET {column} = now() - make_interval(days => %s) WHERE id = %s", days, row_id)  # noqa: S608


@pytest.mark.usefixtures("clean_db")
def test_retention_removes_what_is_old_and_keeps_what_is_used(
    client: TestClient, database_url: str, worker: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    become_owner(client)
    url = database_url
    old_model = create_model(client, "old-unused")
    busy_model = create_model(client, "old-but-training", dataset_params=LONG_DATA)
    kept_model = create_model(client, "recent")
    done = [wait_for_session(client, start_session(client, kept_model["id"], epochs=2)["id"]) for _ in range(2)]
    old_session, current_weights = done  # the second's weights are the model's
    busy = start_session(client, busy_model["id"], **LONG_TRAINING)
    for session in done:
        sql(url, "UPDATE training_sessions SET finished_at = now() - interval '40 days' WHERE id = %s", session["id"])
    for model in (old_model, busy_model):
        _age(url, "models", "last_used_at", model["id"], 100)
    empty_owner = become_owner(client)["owner_id"]
    _age(url, "owners", "created_at", empty_owner, 100)
    new_owner = become_owner(client)["owner_id"]
    metrics_before = sql(url, "SELECT count(*) FROM epoch_metrics WHERE session_id = %s", old_session["id"])[0][0]
    assert metrics_before == 2

    settings = make_settings(url, retention_session_days=30, retention_model_days=90)
    engine = create_db_engine(settings)
    try:
        dry = run_retention(engine, settings, dry_run=True)
        assert sql(url, "SELECT count(*) FROM models")[0][0] == 3  # a dry run changes nothing
        with caplog.at_level(logging.INFO, logger="app.worker.retention"):
            report = run_retention(engine, settings)
        again = run_retention(engine, settings)
    finally:
        engine.dispose()

    assert (dry.sessions, dry.models, dry.owners) == (report.sessions, report.models, report.owners)
    assert report.sessions == [old_session["id"]]
    assert report.metrics == 2
    assert report.models == [old_model["id"]]
    assert report.owners == [empty_owner]
    assert (again.sessions, again.models, again.owners) == ([], [], [])
    remaining_models = {row[0] for row in sql(url, "SELECT id FROM models")}
    assert remaining_models == {busy_model["id"], kept_model["id"]}
    remaining_sessions = {row[0] for row in sql(url, "SELECT id FROM training_sessions")}
    assert remaining_sessions == {current_weights["id"], busy["id"]}
    assert sql(url, "SELECT count(*) FROM epoch_metrics WHERE session_id = %s", old_session["id"])[0][0] == 0
    owners = {row[0] for row in sql(url, "SELECT id FROM owners")}
    assert empty_owner not in owners
    assert {1, new_owner} <= owners
    logged = [r.getMessage() for r in caplog.records if r.name == "app.worker.retention"]
    removed = "1 sessions (2 metric rows, 0 checkpoints), 1 models (0 sessions, 0 metric rows), 1 owners"
    nothing = "0 sessions (0 metric rows, 0 checkpoints), 0 models (0 sessions, 0 metric rows), 0 owners"
    assert logged == [
        f"retention would remove {removed}",
        f"retention removed {removed}",
        f"retention removed {nothing}",
    ]
    assert client.post(f"/api/sessions/{busy['id']}/stop", headers=OPERATOR).status_code == 202


@pytest.mark.usefixtures("clean_db")
def test_the_workers_run_retention_on_its_schedule(client: TestClient, database_url: str) -> None:
    """A worker defers the periodic retention job (procrastinate's periodic deferrer) and runs it: an old
    model goes without anyone calling anything."""
    become_owner(client)
    model = create_model(client, "expires")
    _age(database_url, "models", "last_used_at", model["id"], 100)
    with WorkerProcess(database_url, RETENTION_CRON="* * * * * */2", RETENTION_MODEL_DAYS="90") as proc:
        deadline = time.monotonic() + 30
        while sql(database_url, "SELECT count(*) FROM models WHERE id = %s", model["id"])[0][0]:
            assert time.monotonic() < deadline, proc.log_text()[-3000:]
            time.sleep(0.2)
        # Run by this worker or by the module's (both take the maintenance queue): once per tick either way.
        query = "SELECT status FROM procrastinate_jobs WHERE task_name = 'retention'"
        while ("succeeded",) not in (jobs := sql(database_url, query)):
            assert time.monotonic() < deadline, (jobs, proc.log_text()[-3000:])
            time.sleep(0.2)


def test_bad_retention_and_operator_settings_are_named() -> None:
    from app.core.config import ConfigError, load_settings

    url = "postgresql://x@127.0.0.1/x"
    with pytest.raises(ConfigError, match="RETENTION_CRON is not a cron expression"):
        load_settings(database_url=url, retention_cron="daily")
    with pytest.raises(ConfigError, match="OPERATOR_TOKEN must be at least 32 characters"):
        load_settings(database_url=url, operator_token="short")
    assert load_settings(database_url=url, operator_token="").operator_token is None
