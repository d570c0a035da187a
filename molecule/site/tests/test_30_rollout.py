"""Rollouts through the real plays, the way on-call runs them (site.yml --tags deploy), on the live stack.

In order (each test builds on the state the one before left): a new release under load with no failed
request, a redeploy of the live release that changes nothing, a release that cannot become ready (the
rollout stops at the first host, which serves the previous release again), a release whose migration
fails (no host switches, the database is unchanged), rollback to a named release and refusal of a
missing one, and no secret in any output. Ansible's output of every run is in artifacts/site/.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from stack import ARTIFACTS, LOCAL, RUNS, STATE, Load, Run, lb_client, live_releases, playbook, snapshot

FIGURES: dict[str, Any] = {}
OLD_PASSWORDS: list[str] = []
# The app cannot start (its migrations still run: alembic does not import app.main).
PLANTED_FAULT = '\nraise RuntimeError("planted fault: this release cannot start")\n'
PLANTED_MIGRATION = '''"""Planted failure: creates a table, then fails (the whole migration must roll back)."""

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("planted", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO planted (id) VALUES (1)")
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    op.drop_table("planted")
'''


@pytest.fixture(scope="module")
def state() -> Iterator[dict[str, Any]]:
    """What the tests hand on to each other; the figures are written to artifacts/site/ at the end."""
    shared: dict[str, Any] = {"initial": live_releases()}
    yield shared
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "rollout-figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("releases")
    return {
        "next": snapshot(folder, "next", append={"app/__init__.py": "# site scenario: a code-only change\n"}),
        "broken": snapshot(folder, "broken", append={"app/main.py": PLANTED_FAULT}),
        "bad-migration": snapshot(
            folder, "bad-migration", files={"alembic/versions/0002_planted.py": PLANTED_MIGRATION}
        ),
    }


@pytest.fixture(scope="module")
def model_id() -> int:
    """A trained model, so the load also exercises predictions (weights from the database)."""
    with lb_client() as client:
        body = {"name": f"rollout-{time.time_ns()}", "dataset": "xor", "dataset_params": {"n_samples": 200}}
        model = client.post("/api/models", json=body).json()
        session = client.post(f"/api/models/{model['id']}/sessions", json={"epochs": 20}).json()
        deadline = time.monotonic() + 120
        while client.get(f"/api/sessions/{session['id']}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        return int(model["id"])


def secrets_manager() -> Any:
    return aws("secretsmanager")


def rds() -> Any:
    return aws("rds")


def aws(service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{LOCAL['local_moto_port']}",
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto takes any key
    )


def secret(name: str) -> dict[str, Any]:
    return dict(json.loads(secrets_manager().get_secret_value(SecretId=name)["SecretString"]))


def service_started(host: str) -> str:
    """When the host's app service last entered the active state (changes with every restart)."""
    argv = ["docker", "exec", host, "systemctl", "show", "nnp-app", "--property=ActiveEnterTimestampMonotonic"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def database_state() -> dict[str, Any]:
    """Tables, columns, migration head and row counts of the app's schema, as the app's login sees them."""
    login = secret("nnp/local/rds-app")
    with psycopg.connect(
        host="127.0.0.1",
        port=LOCAL["local_db_port"],
        dbname=login["dbname"],
        user=login["username"],
        password=login["password"],
        sslmode="require",
    ) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        ).fetchall()
        tables = sorted({(schema, table) for schema, table, _, _ in columns})
        counts = {
            f"{schema}.{table}": conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]  # noqa: S608
            for schema, table in tables
        }
        head = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return {"columns": columns, "counts": counts, "head": head}


def deploy(source: Path, *extra: str) -> Run:
    return playbook("site.yml", "--tags", "deploy", "-e", f"app_source_dir={source}", *extra)


def test_a_new_release_rolls_out_under_load_without_a_failed_request(
    state: dict[str, Any], sources: dict[str, Path], model_id: int
) -> None:
    before = state["initial"]
    with Load(model_id) as load:
        # As in production: an RDS snapshot named after the release before migrating (moto's RDS).
        run = deploy(sources["next"], "-e", "deploy_snapshot_before_migrate=true")
    after = live_releases()

    assert run.rc == 0, run.output[-3000:]
    assert load.results["failed"] == 0, load.failures[:10]
    assert load.total >= 500, f"only {load.total} requests were sent during the rollout"
    assert after["web1"] == after["web2"] != before["web1"], (before, after)
    with lb_client() as client:
        assert client.get("/version").json()["release_id"] == after["web1"]
    # Both releases answered during the rollout: traffic really moved from one to the other.
    assert set(load.releases) == {before["web1"], after["web1"]}, load.releases
    state["next"] = after["web1"]
    snapshots = rds().describe_db_snapshots(DBInstanceIdentifier="nnp-local")["DBSnapshots"]
    assert f"nnp-local-pre-{after['web1']}" in {snap["DBSnapshotIdentifier"] for snap in snapshots}, snapshots
    FIGURES["rollout_code_change_s"] = round(run.seconds, 1)
    FIGURES["rollout_requests"] = dict(load.results)
    FIGURES["rollout_releases_seen"] = dict(load.releases)


def test_redeploying_the_live_release_changes_nothing(state: dict[str, Any], sources: dict[str, Path]) -> None:
    run = deploy(sources["next"])

    assert run.rc == 0, run.output[-3000:]
    assert run.changed() == 0, [line for line in run.output.splitlines() if line.startswith("changed:")]
    assert live_releases() == {"web1": state["next"], "web2": state["next"]}
    FIGURES["noop_deploy_s"] = round(run.seconds, 1)


def test_a_release_that_cannot_become_ready_stops_at_the_first_host(
    state: dict[str, Any], sources: dict[str, Path], model_id: int
) -> None:
    with Load(model_id) as load:
        run = deploy(sources["broken"], "-e", "app_health_timeout_seconds=20")
    after = live_releases()

    assert run.rc != 0
    assert "stopped at web1" in run.output, run.output[-3000:]
    assert f"web1 serves {state['next']}" in run.output, run.output[-3000:]
    assert after == {"web1": state["next"], "web2": state["next"]}, after
    assert load.results["failed"] == 0, load.failures[:10]
    FIGURES["failed_rollout_s"] = round(run.seconds, 1)
    FIGURES["failed_rollout_requests"] = dict(load.results)


def test_a_failing_migration_goes_live_nowhere_and_leaves_the_database_as_it_was(
    state: dict[str, Any], sources: dict[str, Path]
) -> None:
    before = database_state()
    run = deploy(sources["bad-migration"])
    after = database_state()

    assert run.rc != 0
    assert "division by zero" in run.output, run.output[-3000:]
    assert after == before
    assert not any(table == "planted" for _, table, _, _ in after["columns"])
    assert live_releases() == {"web1": state["next"], "web2": state["next"]}


def test_rollback_to_a_named_release(state: dict[str, Any]) -> None:
    target = state["initial"]["web1"]
    run = playbook("playbooks/rollback.yml", "-e", f"rollback_release={target}")

    assert run.rc == 0, run.output[-3000:]
    assert live_releases() == {"web1": target, "web2": target}


def test_rollback_to_a_missing_release_is_refused_before_any_change(state: dict[str, Any]) -> None:
    before = live_releases()
    run = playbook("playbooks/rollback.yml", "-e", "rollback_release=no-such-release")

    assert run.rc != 0
    assert "has no release 'no-such-release'" in run.output, run.output[-3000:]
    assert run.changed() == 0
    assert live_releases() == before


def test_a_rotated_app_password_goes_through_every_host_without_a_new_release(state: dict[str, Any]) -> None:
    """The runbook's rotation: a new password in the secret, then a deploy of the live release. Every
    host gets the new app.env and is restarted behind the drain (staging left a pending restart)."""
    login = secret("nnp/local/rds-app")
    OLD_PASSWORDS.append(login["password"])
    login["password"] = f"Rotated{uuid.uuid4().hex}"
    secrets_manager().put_secret_value(SecretId="nnp/local/rds-app", SecretString=json.dumps(login))
    releases, started = live_releases(), {host: service_started(host) for host in ("web1", "web2")}

    run = playbook("site.yml", "--tags", "deploy")

    assert run.rc == 0, run.output[-3000:]
    assert live_releases() == releases
    assert all(service_started(host) != started[host] for host in started), "a host was not restarted"
    assert database_state()["head"], "the app login no longer works with the rotated password"
    with lb_client() as client:
        assert client.get("/api/models").status_code == 200


def test_no_secret_appears_in_any_ansible_output() -> None:
    secrets = {
        "RDS master password": (STATE / "secrets" / "rds-master-password").read_text().split()[0],
        "app password": secret("nnp/local/rds-app")["password"],
        **{f"earlier app password {n}": value for n, value in enumerate(OLD_PASSWORDS)},
    }
    assert RUNS, "no ansible-playbook run to search"
    for run in RUNS:
        for what, value in secrets.items():
            assert len(value) >= 16
            assert value not in run.output, f"the {what} appears in the output of {' '.join(run.args)}"
