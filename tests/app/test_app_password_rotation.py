"""A database password rotation fails no request and restarts no process.

The app's login has no password in DATABASE_URL: libpq reads it from PGPASSFILE at each new connection
(what the app role deploys). A rotation changes the password on the server first and then the file on
every host (playbooks/deploy.yml), so for a few seconds every new connection is refused; the app keeps
trying those connections for DB_AUTH_RETRY_SECONDS (nothing ran on them, so writes retry too).

Here, under eight clients (reads through both pools, and writes) on two processes whose pools are small
(DB_POOL_SIZE=2: the ORM pool's overflow connections open and close all the time, as a busy host's do),
the login's password is changed on a real PostgreSQL and the passfile gets the new one only GAP seconds
later. With the retry no request fails and the same processes serve throughout; without it
(DB_AUTH_RETRY_SECONDS=0, the control) the new connections of that gap fail and so do the writes on them
(reads retry on a new connection for DB_READ_RETRY_SECONDS), as before the passfile and the retry.
"""

from __future__ import annotations

import collections
import os
import secrets
import threading
import time
from pathlib import Path

import httpx
import pytest
from appserver import AppServer
from helpers import create_model
from pgcluster import PgCluster
from psycopg import sql
from sqlalchemy.engine import make_url

CLIENTS = 8
# Seconds between the server's new password and the passfile's (the deploy's gap is one task, 1-3 s).
GAP = 3.0
LOGIN = "rotated_app"


def write_passfile(path: Path, port: int, password: str) -> None:
    """libpq's format (host:port:database:user:password), replaced in one rename as the role's copy is."""
    partial = path.with_suffix(".partial")
    partial.write_text(f"127.0.0.1:{port}:*:{LOGIN}:{password}\n")
    partial.chmod(0o600)  # libpq ignores a password file others can read
    os.replace(partial, path)


def app_connections(cluster: PgCluster) -> int:
    with cluster.admin() as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (LOGIN,)).fetchone()
    return int(row[0]) if row else 0


class Clients:
    """CLIENTS threads: reads through the async pool and the ORM, and writes (a new owner each)."""

    def __init__(self, base_url: str, model_id: int) -> None:
        self.requests = [
            ("GET", f"/api/models/{model_id}"),
            ("GET", "/api/models?limit=5"),
            ("POST", "/api/owners"),
        ]
        self.base_url = base_url
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)]

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            turn = number
            while not self._stop.is_set():
                method, path = self.requests[turn % len(self.requests)]
                turn += 1
                try:
                    answer = client.request(method, path)
                    outcome = f"{method} {answer.status_code}"
                    detail = f"{method} {path} -> {answer.status_code} {answer.text[:200]}"
                    ok = answer.status_code in (200, 201)
                except httpx.TransportError as exc:
                    outcome, detail, ok = f"{method} {type(exc).__name__}", f"{method} {path} -> {exc!r}", False
                with self._lock:
                    self.outcomes[outcome] += 1
                    if not ok:
                        self.failures.append(detail)

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)


@pytest.mark.parametrize("retry_seconds", [30, 0], ids=["with-auth-retry", "control-without"])
def test_a_password_rotation_fails_no_request_and_restarts_nothing(
    own_cluster: tuple[PgCluster, str], tmp_path: Path, retry_seconds: int
) -> None:
    cluster, url = own_cluster
    old, new = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    with cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(LOGIN), old))
    passfile = tmp_path / "pgpass"
    write_passfile(passfile, cluster.port, old)
    app_url = f"postgresql://{LOGIN}@127.0.0.1:{cluster.port}/{make_url(url).database}"  # no password
    env = {
        "DATABASE_URL": app_url,
        "PGPASSFILE": str(passfile),
        "DB_AUTH_RETRY_SECONDS": str(retry_seconds),
        "DB_POOL_SIZE": "2",
        "TORCH_DEVICE": "cpu",
        "RELEASE_ID": "rotation",
        "OWNER_MAX_MODELS": "1000",
    }
    server = AppServer(env, workers=2).start()
    try:
        with server.client() as client:
            model_id = create_model(client, "rotation")["id"]
        pids = server.pids()
        with Clients(server.base_url, model_id) as clients:
            time.sleep(1.5)
            connected = app_connections(cluster)
            with cluster.admin() as conn:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(LOGIN), new))
            before_gap = clients.outcomes.total()
            time.sleep(GAP)
            during_gap = clients.outcomes.total() - before_gap
            write_passfile(passfile, cluster.port, new)
            time.sleep(3)
        retried = server.log_text().count("refused the app login's password")
        report = (
            f"outcomes {dict(clients.outcomes)} ({during_gap} in the {GAP:g} s gap), {connected} app connections"
            f" open before, {retried} connection retries logged; failures {sorted(set(clients.failures))[:6]}"
        )
        print(f"\nPassword rotated under {CLIENTS} clients (DB_AUTH_RETRY_SECONDS={retry_seconds}): {report}")
        assert clients.outcomes.total() > 200, f"the clients stalled: {report}"
        assert server.pids() == pids, "an app process was restarted"
        if retry_seconds:
            assert not clients.failures, report
            assert clients.outcomes["POST 201"] > 20, report
            assert retried > 0, f"no connection met the old password: the gap was not exercised. {report}"
        else:
            # The control: the gap's new connections fail, so writes (never retried) answer 503.
            assert clients.outcomes["POST 503"] > 0, report
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get(f"/api/models/{model_id}").status_code == 200
    finally:
        server.close()
