"""Training queue: procrastinate 3.10.0's schema, checkpoints, workers, resume bookkeeping on sessions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

The procrastinate schema is vendored (alembic/procrastinate/schema-3.10.0.sql, byte for byte the
library's procrastinate/sql/schema.sql of that release) so that this migration stays the same when
the library is upgraded: an upgrade of procrastinate comes with a new migration that runs the
library's own migration files for the versions in between (see app/README.md).
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCRASTINATE_SCHEMA = Path(__file__).resolve().parents[1] / "procrastinate" / "schema-3.10.0.sql"

# Everything the schema file creates, for the downgrade (functions are found by name prefix).
_DROP_PROCRASTINATE = """
DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,
    procrastinate_workers CASCADE;
DO $$
DECLARE fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
    LOOP
        EXECUTE 'DROP FUNCTION ' || fn;
    END LOOP;
END;
$$;
DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_status, procrastinate_job_event_type;
"""


def _run_script(sql: str) -> None:
    # The script holds several statements and literal % signs (RAISE formats): hand it to psycopg
    # as one parameterless simple query instead of SQLAlchemy's text(), which would parse it.
    if op.get_context().as_sql:
        op.execute(sql)
        return
    op.get_bind().connection.driver_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _run_script(PROCRASTINATE_SCHEMA.read_text(encoding="utf-8"))

    # Sessions wait in the queue before any worker owns them.
    for column in ("owner_host", "owner_pid", "owner_instance"):
        op.alter_column("training_sessions", column, nullable=True)
    op.add_column("training_sessions", sa.Column("job_id", sa.BigInteger(), nullable=True))
    op.add_column("training_sessions", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("training_sessions", sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("training_sessions", sa.Column("resumed_from_epoch", sa.Integer(), nullable=True))
    op.add_column("training_sessions", sa.Column("checkpoint_interval_seconds", sa.Float(), nullable=True))
    op.create_index(op.f("ix_training_sessions_job_id"), "training_sessions", ["job_id"])
    op.create_check_constraint("device", "training_sessions", "device IN ('cpu', 'cuda')")

    op.create_table(
        "training_checkpoints",
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            name=op.f("fk_training_checkpoints_session_id_training_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_training_checkpoints")),
    )
    op.create_table(
        "training_workers",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_workers")),
    )


def downgrade() -> None:
    op.drop_table("training_workers")
    op.drop_table("training_checkpoints")
    op.drop_constraint(op.f("ck_training_sessions_device"), "training_sessions", type_="check")
    op.drop_index(op.f("ix_training_sessions_job_id"), table_name="training_sessions")
    for column in ("checkpoint_interval_seconds", "resumed_from_epoch", "failures", "attempts", "job_id"):
        op.drop_column("training_sessions", column)
    # Sessions that never had an owner get an explicit placeholder, so the NOT NULLs can come back.
    op.execute(
        "UPDATE training_sessions SET owner_host = coalesce(owner_host, ''), owner_pid = coalesce(owner_pid, 0),"
        " owner_instance = coalesce(owner_instance, '')"
    )
    for column in ("owner_host", "owner_pid", "owner_instance"):
        op.alter_column("training_sessions", column, nullable=False)
    _run_script(_DROP_PROCRASTINATE)
