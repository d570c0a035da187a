"""/readyz: answered from a background check, never from a query of its own (app.services.readiness)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest
from conftest import TEMPLATE_DB, alembic_config, make_settings, unhandled_errors
from fastapi.testclient import TestClient
from pgcluster import PgCluster
from tcpproxy import TcpProxy

from alembic import command
from app.core.config import REPO_ROOT, Settings
from app.core.migrations import script_revisions
from app.factory import create_app
from app.services import readiness

HEAD, _ = script_revisions(REPO_ROOT / "alembic")  # the newest migration of this checkout
READY = {"status": "ready", "schema_revision": HEAD, "expected_revision": HEAD, "schema_newer": False}
# Checks this often in most tests here, so that they see a change within a fraction of a second.
FAST = 0.1


def wait_for_readyz(client: TestClient, status_code: int, timeout: float) -> Any:
    """Poll /readyz until it answers `status_code`; the response."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == status_code:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz still {response.status_code} after {timeout} s: {response.text}")
        time.sleep(0.02)


def readiness_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == readiness.__name__ and r.levelno == logging.WARNING]


@pytest.fixture(scope="module")
def fast_client(database_url: str) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url, ready_check_interval=FAST))
    with TestClient(app) as test_client:
        yield test_client
    assert unhandled_errors(app) == 0


def test_readyz_is_ready_from_the_first_request(client: TestClient) -> None:
    """The first check runs during start-up, so a process serves its first probe already ready."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == READY


def test_readyz_is_503_when_the_schema_is_not_at_head(fast_client: TestClient, database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    try:
        response = wait_for_readyz(fast_client, 503, timeout=5)
        assert response.json() == {
            "status": "not ready",
            "reason": f"schema revision is none (not migrated), expected {HEAD}; run alembic upgrade head",
        }
        assert fast_client.get("/healthz").status_code == 200
        # The API answers 503 rather than 500 while the tables are missing.
        models = fast_client.get("/api/models")
        assert models.status_code == 503
        assert "schema" in models.json()["detail"]
        wait_for_ready_metric(fast_client, 0)  # what the monitoring host alerts on
    finally:
        command.upgrade(cfg, "head")
    assert wait_for_readyz(fast_client, 200, timeout=5).json() == READY
    wait_for_ready_metric(fast_client, 1)


def wait_for_ready_metric(client: TestClient, expected: int, timeout: float = 10.0) -> None:
    """Until GET /metrics has nnp_app_ready at `expected` (sampled every 2 s, app.core.metrics)."""
    deadline = time.monotonic() + timeout
    while True:
        line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith("nnp_app_ready "))
        if float(line.split()[1]) == expected:
            return
        assert time.monotonic() < deadline, line
        time.sleep(0.2)


def test_readyz_stays_ready_on_a_newer_schema(fast_client: TestClient, database_url: str) -> None:
    """A rolling deploy migrates once before any host switches: hosts on the old release must stay in service."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'")
    try:
        deadline = time.monotonic() + 5
        while (body := fast_client.get("/readyz").json()).get("schema_revision") == HEAD:
            assert body["status"] == "ready", body  # never out of service in between
            assert time.monotonic() < deadline, "the newer revision was not picked up"
            time.sleep(0.02)
        assert body == {
            "status": "ready",
            "schema_revision": "9999_from_a_newer_release",
            "expected_revision": HEAD,
            "schema_newer": True,
        }
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (HEAD,))
    deadline = time.monotonic() + 5
    while fast_client.get("/readyz").json() != READY:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def proxied_database(pg: PgCluster) -> Iterator[tuple[str, TcpProxy]]:
    """A migrated database reached through a proxy that the test can cut or stall."""
    pg.create_database("ops_unreachable", template=TEMPLATE_DB)
    proxy = TcpProxy(pg.port)
    yield pg.url("ops_unreachable").replace(f":{pg.port}/", f":{proxy.port}/"), proxy
    proxy.cut()
    pg.drop_database("ops_unreachable")


def test_readyz_is_503_while_the_database_is_cut_and_200_once_it_is_back(
    pg: PgCluster, proxied_database: tuple[str, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    url, proxy = proxied_database
    settings = make_settings(url, ready_check_interval=0.2)
    app = create_app(settings)
    with TestClient(app) as local:
        monitor: readiness.ReadinessMonitor = app.state.runtime.readiness
        assert local.get("/readyz").status_code == 200
        proxy.cut()
        cut_at = time.monotonic()
        response = wait_for_readyz(local, 503, timeout=settings.ready_max_age + 2)
        assert time.monotonic() - cut_at <= settings.ready_max_age
        # A fixed phrase: the driver's message (address, port, user) goes to the log only.
        assert response.json() == {"status": "not ready", "reason": "database unreachable"}
        for secret in (pg.password, "127.0.0.1", str(proxy.port), "postgres"):
            assert secret not in response.text
        assert local.get("/healthz").status_code == 200
        assert local.get("/version").status_code == 200
        # API calls that need the database say so with 503, not 500.
        down = local.get("/api/models")
        assert down.status_code == 503
        assert down.json()["detail"] == "database unavailable; retry shortly"
        assert down.headers["Retry-After"] == "5"

        # Down for several checks: still 503, and logged once, with the driver's detail.
        attempts, deadline = monitor.attempts, time.monotonic() + 15
        while monitor.attempts < attempts + 2:
            assert time.monotonic() < deadline, "the checks stopped"
            time.sleep(0.05)
        assert local.get("/readyz").json()["reason"] == "database unreachable"
        [warning] = readiness_warnings(caplog)
        assert warning.getMessage() == "not ready: database unreachable"
        assert getattr(warning, "detail", "")

        proxy.restore()
        back_at = time.monotonic()
        assert wait_for_readyz(local, 200, timeout=15).json() == READY
        # The read pool gives up retrying after READ_POOL_RECONNECT_SECONDS; the next check connects anew.
        assert time.monotonic() - back_at <= settings.ready_check_interval + settings.ready_check_timeout + 1.5
        assert local.get("/api/models").status_code == 200
        assert any(r.getMessage() == "ready again" for r in caplog.records if r.name == readiness.__name__)
    assert unhandled_errors(app) == 0


def test_readyz_answers_from_its_cache_while_the_database_stalls(proxied_database: tuple[str, TcpProxy]) -> None:
    """A database that stops answering (a saturated host, a partition) does not slow /readyz down, and
    only takes the host out of service once the last successful check is `ready_max_age` old."""
    url, proxy = proxied_database
    settings = make_settings(url, ready_check_interval=0.5)
    max_age = settings.ready_max_age
    assert max_age == 3 * 0.5 + settings.ready_check_timeout
    with TestClient(create_app(settings)) as local:
        assert local.get("/readyz").status_code == 200
        proxy.stall()
        stalled_at = time.monotonic()
        while True:
            started = time.monotonic()
            response = local.get("/readyz")
            assert time.monotonic() - started < 1.0, "a probe must not wait for the database"
            since = time.monotonic() - stalled_at
            if response.status_code != 200:
                break
            assert since <= max_age + 0.5, "still ready long after the last successful check"
            time.sleep(0.05)
        # The last success finished at most one interval (plus its own duration) before the stall.
        assert since >= max_age - settings.ready_check_interval - 0.5
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "reason": "database unreachable: no answer within 2 s"}
        proxy.restore()
        assert wait_for_readyz(local, 200, timeout=15).json() == READY


def test_readyz_says_starting_until_the_first_check_answers(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.core.config.READY_CHECK_TIMEOUT_SECONDS", 0.3)  # start-up waits this long for it
    released = threading.Event()
    real_revision = readiness.database_revision

    async def held_revision(conn: psycopg.AsyncConnection[Any]) -> str | None:
        while not released.is_set():
            await anyio.sleep(0.01)
        return await real_revision(conn)

    monkeypatch.setattr(readiness, "database_revision", held_revision)
    settings: Settings = make_settings(database_url, ready_check_interval=FAST)
    with TestClient(create_app(settings)) as local:
        response = local.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "reason": "starting"}
        released.set()
        assert wait_for_readyz(local, 200, timeout=5).json() == READY


def test_readyz_says_shutting_down_once_shutdown_begins(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(make_settings(database_url))
    during_shutdown: list[Any] = []
    with TestClient(app) as local:
        assert local.get("/readyz").status_code == 200
        engine = app.state.runtime.engine
        dispose = engine.dispose

        def shutdown() -> None:
            # Runs in a worker thread while the lifespan awaits it: the event loop still serves requests.
            during_shutdown.append(local.get("/readyz"))
            dispose()

        monkeypatch.setattr(engine, "dispose", shutdown)
    [response] = during_shutdown
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reason": "shutting down"}
