# ruff: noqa: E402 - the repository root must be on sys.path before `app` is imported
"""Fixtures for the app tests: a real PostgreSQL cluster (the newest server here), migrated databases, app clients.

Isolation: one throwaway cluster per test session; a template database is migrated to head once and
each test module gets its own copy (CREATE DATABASE ... TEMPLATE is fast). Tests inside a module that
need an empty database use `clean_db`, which truncates.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# pytest (rootdir-less "prepend" import mode) puts only this directory on sys.path, not the repo root.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import itertools
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from alembic.config import Config
from helpers import become_owner
from pgcluster import PgCluster
from starlette.exceptions import StarletteDeprecationWarning
from workerproc import WorkerProcess

from alembic import command
from app.core.config import Settings, load_settings
from app.factory import create_app

with warnings.catch_warnings():
    # Starlette 1.x announces a move of its test client to httpx2; httpx still works and is what we pin.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TEMPLATE_DB = "nnp_template"
OPERATOR_TOKEN = "operator-" + "0123456789abcdef" * 3
_db_counter = itertools.count(1)

# Small limits keep fuzzed or careless trainings cheap on a 2-core machine.
TEST_LIMITS = {
    "max_concurrent_trainings": 3,
    "max_epochs": 2000,
    "max_layers": 6,
    "max_width": 64,
    "max_batch_size": 512,
    "max_samples": 2000,
    "max_predict_rows": 500,
    "max_grid_resolution": 100,
    "max_body_bytes": 65_536,
    "db_pool_size": 4,
    "torch_device": "cpu",
    "release_id": "test-release",
    "git_sha": "0123abc",
    # As the test workers run (workerproc.FAST_WORKER_ENV): liveness judged within seconds.
    "worker_heartbeat_seconds": 0.5,
    "worker_stalled_seconds": 2,
    # Owner quotas out of the way of the tests of everything else (tests/app/test_app_owners.py sets its own).
    "owner_max_models": 10_000,
    "owner_max_active_trainings": 1000,
    "owner_max_epochs_per_hour": 10_000_000,
    "operator_token": OPERATOR_TOKEN,
}


def alembic_config(url: str) -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def make_settings(url: str, **overrides: object) -> Settings:
    return load_settings(**{"database_url": url, **TEST_LIMITS, **overrides})


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        url = cluster.create_database(TEMPLATE_DB)
        command.upgrade(alembic_config(url), "head")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_cluster() -> Iterator[tuple[PgCluster, str]]:
    """A cluster of the test's own (for tests that restart it, stop it or change its logins), with a
    database at Alembic head: the cluster and that database's URL."""
    cluster = PgCluster()
    try:
        cluster.start()
        url = cluster.create_database(TEMPLATE_DB)
        command.upgrade(alembic_config(url), "head")
        yield cluster, url
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def database_url(pg: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database at Alembic head for this module."""
    name = f"t_{next(_db_counter)}_{request.module.__name__.rsplit('.', 1)[-1]}"[:60]
    url = pg.create_database(name, template=TEMPLATE_DB)
    yield url
    pg.drop_database(name)


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        become_owner(test_client)  # its cookie, as a browser keeps it
        yield test_client
    # Every module's app must finish without ever reaching the catch-all handler.
    assert unhandled_errors(app) == 0


def unhandled_errors(app: object) -> int:
    """How often the catch-all 500 ran (RequestContextMiddleware counts them)."""
    stack = getattr(app, "middleware_stack", None)
    while stack is not None:
        if hasattr(stack, "unhandled_errors"):
            return int(stack.unhandled_errors)
        stack = getattr(stack, "app", None)
    raise AssertionError("RequestContextMiddleware not found in the middleware stack")


@pytest.fixture
def clean_db(database_url: str) -> None:
    """Truncate every table before the test (the schema stays). Ids keep counting up, so a late worker
    of an earlier test can never mistake a new row for its own. Workers are kept (a module's worker
    fixture outlives tests); their jobs go."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE models, training_sessions, epoch_metrics, model_weights, training_checkpoints,"
            " procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers CASCADE"
        )


@pytest.fixture(scope="module")
def worker(database_url: str) -> Iterator[WorkerProcess]:
    """One CPU training worker process for the module (web processes never train)."""
    with WorkerProcess(database_url, WORKER_CONCURRENCY="2") as proc:
        yield proc
