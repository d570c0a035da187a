"""Owners: who created each model and session (issue 15), and when a model was last used (retention).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

An owner is a random token held by a browser (cookie) or an API client (Bearer); only its SHA-256 is
stored. Rows that exist before this revision get the owner `legacy` (id 1, no token): nobody can act as
it, so only the operator token can delete those models or stop those sessions; everyone can still read
them. A model's `last_used_at` starts as the newest of its creation and its sessions' starts.

`owner_id` defaults to the legacy owner in the database: during a rollout the previous release still
serves beside this schema (migrations run before the first switch) and creates rows without an owner;
they go to `legacy` instead of failing. The release that follows can drop the default once no host runs
a release older than this one.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_OWNER_ID = 1


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=True),
        sa.Column("label", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owners")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_owners_token_hash")),
        sa.CheckConstraint("token_hash IS NULL OR octet_length(token_hash) = 32", name=op.f("ck_owners_token_hash")),
    )
    # The identity is BY DEFAULT, so an explicit id is allowed; the sequence then moves past it.
    op.execute(f"INSERT INTO owners (id, label) VALUES ({LEGACY_OWNER_ID}, 'legacy')")  # noqa: S608 - a constant
    op.execute("SELECT setval(pg_get_serial_sequence('owners', 'id'), (SELECT max(id) FROM owners))")
    for table in ("models", "training_sessions"):
        # A constant default fills existing rows without rewriting them (PostgreSQL 11+), and the NOT NULL
        # check then only reads the table.
        op.add_column(
            table,
            sa.Column("owner_id", sa.Integer(), server_default=sa.text(str(LEGACY_OWNER_ID)), nullable=False),
        )
        op.create_foreign_key(
            op.f(f"fk_{table}_owner_id_owners"), table, "owners", ["owner_id"], ["id"], ondelete="RESTRICT"
        )
    op.create_index(op.f("ix_models_owner_id"), "models", ["owner_id"])
    op.create_index(op.f("ix_training_sessions_owner_id_created_at"), "training_sessions", ["owner_id", "created_at"])
    op.add_column(
        "models",
        sa.Column("last_used_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.execute(
        """
        UPDATE models m SET last_used_at = greatest(m.created_at, coalesce(
            (SELECT max(s.created_at) FROM training_sessions s WHERE s.model_id = m.id), m.created_at))
        """
    )
    # Retention finds finished sessions by age.
    op.create_index(op.f("ix_training_sessions_finished_at"), "training_sessions", ["finished_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_training_sessions_finished_at"), table_name="training_sessions")
    op.drop_column("models", "last_used_at")
    op.drop_index(op.f("ix_training_sessions_owner_id_created_at"), table_name="training_sessions")
    op.drop_index(op.f("ix_models_owner_id"), table_name="models")
    for table in ("models", "training_sessions"):
        op.drop_constraint(op.f(f"fk_{table}_owner_id_owners"), table, type_="foreignkey")
        op.drop_column(table, "owner_id")
    op.drop_table("owners")
