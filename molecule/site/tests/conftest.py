"""The site scenario's tests import the repository's browser driver (tests/browser) and stack.py; the
fixtures the rollout tests share (test_30, test_40) are here.

SITE_TESTS selects a phase: `quiet` (test_10, 15, 20, 25: they put no load on the stack, and `make test` runs
them in its pool right after the stack is up), `load` (test_30, 40, 45: the saturating loads, which run with
nothing beside them), or unset for all. The secrets check (test_90) ends every phase: it reads the
phase's own ansible-playbook runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[2]):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from stack import ARTIFACTS, FIGURES, REPO, aws, lb_client, live_releases, snapshot  # noqa: E402

# The app cannot start (its migrations still run: alembic does not import app.main).
PLANTED_FAULT = '\nraise RuntimeError("planted fault: this release cannot start")\n'
PLANTED_MIGRATION = '''"""Planted failure: creates a table, then fails (the whole migration must roll back)."""

import sqlalchemy as sa

from alembic import op

revision: str = "0999"
down_revision: str | None = "@HEAD@"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("planted", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO planted (id) VALUES (1)")
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    op.drop_table("planted")
'''

# A route that fails (an unhandled error: the app answers 500 and counts it), for the 5xx alert (test_40).
PLANTED_FAILING_ROUTE = """

@app.get("/api/planted-failure", include_in_schema=False)
def planted_failure() -> None:
    raise RuntimeError("planted failure: the site scenario's burst of 5xx")
"""

# On top of the newest revision of this checkout, so that it is the only head.
HEAD_REVISION = max(path.name.split("_")[0] for path in (REPO / "alembic" / "versions").glob("[0-9]*_*.py"))
PLANTED_MIGRATION = PLANTED_MIGRATION.replace("@HEAD@", HEAD_REVISION)


PHASES = {"quiet": ("test_10_", "test_15_", "test_20_", "test_25_"), "load": ("test_30_", "test_40_", "test_45_")}
ALWAYS = "test_90_"


def site_phase() -> str:
    phase = os.environ.get("SITE_TESTS", "")
    if phase and phase not in PHASES:
        raise pytest.UsageError(f"SITE_TESTS={phase!r}: expected one of {', '.join(PHASES)} (or unset for all)")
    return phase


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    phase = site_phase()
    if not phase:
        return
    prefixes = (*PHASES[phase], ALWAYS)
    keep = [item for item in items if item.path.name.startswith(prefixes)]
    dropped = [item for item in items if not item.path.name.startswith(prefixes)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def figures() -> Iterator[None]:
    """The figures the tests recorded (stack.FIGURES), written to artifacts/site/ at the end."""
    yield
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "rollout-figures.json"
    # The load phase adds its figures to the quiet phase's (which runs first, on the same stack).
    earlier = json.loads(path.read_text()) if site_phase() == "load" and path.exists() else {}
    path.write_text(json.dumps({**earlier, **FIGURES}, indent=2) + "\n")


@pytest.fixture(scope="session", autouse=True)
def alarm_topic_queue() -> dict[str, Any]:
    """A queue subscribed to the alarm topic in moto before any test runs: the deploy history's notifications
    of this session's runs (test_45 reads it), published there as on AWS."""
    sns, sqs = aws("sns"), aws("sqs")
    topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(":nnp-local-alarms"))
    queue = sqs.create_queue(QueueName=f"site-{site_phase() or 'all'}-{time.time_ns()}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    return {"queue": queue, "subscription": subscription, "since": time.time()}


@pytest.fixture(scope="session")
def state() -> dict[str, Any]:
    """What the rollout tests hand on to each other."""
    return {"initial": live_releases()}


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("releases")
    return {
        # What the converge deployed (this checkout: app_source_dir's default), live again after test_30's rollback.
        "live": REPO,
        "next": snapshot(folder, "next", append={"app/__init__.py": "# site scenario: a code-only change\n"}),
        # web1 keeps it live after test_40's one-host rollout, which the 5xx burst uses.
        "single": snapshot(
            folder,
            "single",
            append={"app/__init__.py": "# site scenario: a one-host rollout\n", "app/main.py": PLANTED_FAILING_ROUTE},
        ),
        "broken": snapshot(folder, "broken", append={"app/main.py": PLANTED_FAULT}),
        "bad-migration": snapshot(
            folder, "bad-migration", files={"alembic/versions/0999_planted.py": PLANTED_MIGRATION}
        ),
    }


@pytest.fixture(scope="session")
def model_id() -> int:
    """A trained model, so the load also exercises predictions (weights from the database)."""
    with lb_client(owner=True) as client:
        body = {"name": f"rollout-{time.time_ns()}", "dataset": "xor", "dataset_params": {"n_samples": 200}}
        model = client.post("/api/models", json=body).json()
        session = client.post(f"/api/models/{model['id']}/sessions", json={"epochs": 20}).json()
        deadline = time.monotonic() + 120
        while client.get(f"/api/sessions/{session['id']}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        return int(model["id"])
