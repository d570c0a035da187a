"""Initial schema: models, training sessions, epoch metrics, model weights.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=False),
        sa.Column("dataset_params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("layers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("task", sa.String(length=16), nullable=False),
        sa.Column("input_dim", sa.Integer(), nullable=False),
        sa.Column("output_dim", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "training_sessions",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("learning_rate", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("optimizer", sa.String(length=8), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("current_epoch", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("stop_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner_host", sa.String(length=255), nullable=False),
        sa.Column("owner_pid", sa.Integer(), nullable=False),
        sa.Column("owner_instance", sa.String(length=32), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'stopped', 'failed', 'interrupted')",
            name=op.f("ck_training_sessions_status"),
        ),
        sa.CheckConstraint("optimizer IN ('sgd', 'adam')", name=op.f("ck_training_sessions_optimizer")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_training_sessions_model_id_models"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_sessions")),
    )
    op.create_index(op.f("ix_training_sessions_model_id"), "training_sessions", ["model_id"])
    op.create_index("ix_training_sessions_status_owner_host", "training_sessions", ["status", "owner_host"])
    # One queued/running session per model, across every host sharing the database.
    op.create_index(
        "uq_training_sessions_active_model",
        "training_sessions",
        ["model_id"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
    )
    op.create_table(
        "epoch_metrics",
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            name=op.f("fk_epoch_metrics_session_id_training_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "epoch", name=op.f("pk_epoch_metrics")),
    )
    op.create_table(
        "model_weights",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_weights_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            name=op.f("fk_model_weights_session_id_training_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_model_weights")),
    )
    op.create_index(op.f("ix_model_weights_session_id"), "model_weights", ["session_id"])


def downgrade() -> None:
    op.drop_table("model_weights")
    op.drop_table("epoch_metrics")
    op.drop_table("training_sessions")
    op.drop_table("models")
