"""Alembic: the migration chain works both ways and matches the ORM models exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import REPO_ROOT, alembic_config
from pgcluster import PgCluster
from sqlalchemy import Column, Integer, MetaData, Table, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from alembic import command
from app.core.config import normalize_database_url
from app.core.migrations import include_name
from app.models import Base


@pytest.fixture(scope="module")
def empty_db(pg: PgCluster) -> Iterator[str]:
    pg.create_database("migrations_empty")
    yield pg.url("migrations_empty")
    pg.drop_database("migrations_empty")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


PROCRASTINATE_TABLES = {
    "procrastinate_jobs",
    "procrastinate_workers",
    "procrastinate_events",
    "procrastinate_periodic_defers",
}


def procrastinate_objects(url: str) -> int:
    """Functions and types left behind by procrastinate's schema."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%%')"
            " + (SELECT count(*) FROM pg_type WHERE typname LIKE 'procrastinate%%')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_vendored_procrastinate_schema_is_the_pinned_release(empty_db: str) -> None:
    """The migration's copy is byte for byte the schema of the procrastinate version in requirements.txt."""
    import importlib.metadata
    import importlib.resources

    pinned = next(
        line.split("==")[1].strip()
        for line in (REPO_ROOT / "app" / "requirements.txt").read_text().splitlines()
        if line.startswith("procrastinate==")
    )
    assert importlib.metadata.version("procrastinate") == pinned
    library = importlib.resources.files("procrastinate.sql").joinpath("schema.sql").read_text()
    assert (REPO_ROOT / "alembic" / "procrastinate" / f"schema-{pinned}.sql").read_text() == library


def revision(url: str) -> str | None:
    engine = create_engine(normalize_database_url(url), poolclass=NullPool)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_downgrade_upgrade(empty_db: str) -> None:
    cfg = alembic_config(empty_db)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    expected = {"alembic_version", "models", "training_sessions", "epoch_metrics", "model_weights"}
    expected |= {"training_checkpoints", "training_workers", "owners", *PROCRASTINATE_TABLES}

    command.upgrade(cfg, "head")
    assert tables(empty_db) == expected
    assert revision(empty_db) == head

    command.downgrade(cfg, "0001")  # procrastinate's schema goes with 0002, types and functions included
    assert tables(empty_db) == {"alembic_version", "models", "training_sessions", "epoch_metrics", "model_weights"}
    assert procrastinate_objects(empty_db) == 0

    command.downgrade(cfg, "base")
    assert tables(empty_db) == {"alembic_version"}
    assert revision(empty_db) is None

    command.upgrade(cfg, "head")
    assert tables(empty_db) == expected
    assert revision(empty_db) == head


def test_rows_older_than_owners_get_the_legacy_owner(empty_db: str) -> None:
    """Revision 0003 gives existing models and sessions the documented owner `legacy` (id 1, no token, so
    nobody but the operator can change them), and each model a last use from its newest session."""
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "0002")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        model_id = conn.execute(
            "INSERT INTO models (name, dataset, dataset_params, layers, task, input_dim, output_dim, created_at)"
            " VALUES ('old', 'xor', '{}', '[]', 'classification', 2, 2, now() - interval '10 days') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO training_sessions (model_id, status, epochs, learning_rate, batch_size, optimizer, seed,"
            " device, created_at) VALUES (%s, 'completed', 1, 0.1, 1, 'sgd', 0, 'cpu', now() - interval '3 days')",
            (model_id,),
        )
    command.upgrade(cfg, "head")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT id, label, token_hash FROM owners").fetchall() == [(1, "legacy", None)]
        assert conn.execute("SELECT owner_id FROM models").fetchall() == [(1,)]
        assert conn.execute("SELECT owner_id FROM training_sessions").fetchall() == [(1,)]
        age = conn.execute("SELECT now() - last_used_at FROM models").fetchone()[0]
        assert 2.9 < age.total_seconds() / 86_400 < 3.1  # the session's start, not the model's creation
        # The previous release, still serving during a rollout, inserts without an owner: legacy, not a failure.
        conn.execute(
            "INSERT INTO models (name, dataset, dataset_params, layers, task, input_dim, output_dim)"
            " VALUES ('from-the-previous-release', 'xor', '{}', '[]', 'classification', 2, 2)"
        )
        assert conn.execute("SELECT owner_id FROM models WHERE name = 'from-the-previous-release'").fetchone() == (1,)
        # New owners count on from there.
        assert conn.execute("INSERT INTO owners (token_hash) VALUES (%s) RETURNING id", (b"x" * 32,)).fetchone() == (2,)
    command.downgrade(cfg, "0002")  # and back: the rows stay, without owners
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM models").fetchone() == (2,)


def test_alembic_check_finds_no_drift(empty_db: str) -> None:
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    command.check(cfg)  # raises AutogenerateDiffsDetected on any difference


def test_drift_would_be_detected(empty_db: str) -> None:
    """The comparison is not vacuous: an extra model table shows up as a difference."""
    command.upgrade(alembic_config(empty_db), "head")
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    engine = create_engine(normalize_database_url(empty_db), poolclass=NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        diff = compare_metadata(context, metadata)
    assert [op[0] for op in diff] == ["add_table"]
    assert diff[0][1].name == "not_migrated"


def test_alembic_cli_reads_database_url_from_the_environment(empty_db: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db.replace("postgresql://", "postgresql+psycopg://")}
    alembic = [sys.executable, "-m", "alembic"]
    upgrade = subprocess.run([*alembic, "upgrade", "head"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert upgrade.returncode == 0, upgrade.stderr
    check = subprocess.run([*alembic, "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_alembic_without_database_url_names_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "current"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_a_migration_waiting_for_a_lock_gives_up_and_changes_nothing(empty_db: str) -> None:
    """A transaction holding a table keeps a migration that alters it from its lock: the migration stops after
    its lock_timeout instead of queueing every query of the app behind it, and leaves the schema as it was."""
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "0001")
    cfg.attributes["lock_timeout_seconds"] = "1"
    with psycopg.connect(empty_db) as holder:
        holder.execute("SELECT count(*) FROM training_sessions")  # an open transaction reading the table
        start = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            command.upgrade(cfg, "head")
        waited = time.monotonic() - start
        holder.rollback()
    assert 1 <= waited < 10, waited
    assert revision(empty_db) == "0001"
    assert tables(empty_db) == {"alembic_version", "models", "training_sessions", "epoch_metrics", "model_weights"}
    command.upgrade(alembic_config(empty_db), "head")  # with the table free, the same migration goes through
    assert revision(empty_db) == ScriptDirectory.from_config(cfg).get_current_head()


@pytest.mark.parametrize("value", ["0", "-1", "ten", "3601"])
def test_a_bad_lock_timeout_is_refused_by_name(empty_db: str, value: str) -> None:
    cfg = alembic_config(empty_db)
    cfg.attributes["lock_timeout_seconds"] = value
    with pytest.raises(SystemExit, match="MIGRATION_LOCK_TIMEOUT_SECONDS must be a number of seconds"):
        command.upgrade(cfg, "head")
