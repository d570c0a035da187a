"""SQLAlchemy ORM models. Everything a user must see again lives here, so any host can serve it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class SessionStatus(str, Enum):
    """A session's status. Behaves as enum.StrEnum would, which needs Python 3.11 (Ubuntu 22.04 has 3.10).

    A plain `(str, Enum)` member prints as "SessionStatus.QUEUED", and on 3.12+ f-strings do too; with
    __str__ returning the value, str(), format() and f-strings give "queued" on every Python from 3.10.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return str(self.value)


ACTIVE_STATUSES = (SessionStatus.QUEUED, SessionStatus.RUNNING)
_STATUS_SQL = ", ".join(f"'{status.value}'" for status in SessionStatus)
_ACTIVE_SQL = ", ".join(f"'{status.value}'" for status in ACTIVE_STATUSES)


class Base(DeclarativeBase):
    # Deterministic constraint names keep Alembic migrations reproducible.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[dict[str, Any]]: JSONB,
    }


# Rows that existed before owners (Alembic revision 0003) belong to this one; it has no token.
LEGACY_OWNER_ID = 1


class Owner(Base):
    """Whoever created models and sessions: a browser (cookie) or an API client (Bearer token).

    Only the SHA-256 of the token is stored: the token is 32 random bytes, so a fast hash is as safe as a
    slow one and keeps the lookup one index probe. NULL for the legacy owner, which nobody can act as.
    (Not to be confused with a session's `owner_host`/`owner_pid`: the worker process running it.)
    """

    __tablename__ = "owners"
    __table_args__ = (CheckConstraint("token_hash IS NULL OR octet_length(token_hash) = 32", name="token_hash"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    token_hash: Mapped[bytes | None] = mapped_column(LargeBinary, unique=True)
    label: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class NetworkModel(Base):
    """A network definition: dataset to learn and hidden layers."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    # Defaults to LEGACY_OWNER_ID in the database only for a previous release's inserts during a rollout
    # (alembic/versions/0003_owners.py); this release always names the owner.
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("owners.id", ondelete="RESTRICT"), index=True, server_default=text(str(LEGACY_OWNER_ID))
    )
    name: Mapped[str] = mapped_column(String(100), unique=True)
    dataset: Mapped[str] = mapped_column(String(32))
    dataset_params: Mapped[dict[str, Any]]
    layers: Mapped[list[dict[str, Any]]]
    task: Mapped[str] = mapped_column(String(16))
    input_dim: Mapped[int]
    output_dim: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Creation, a training start or a prediction (at most one update per process per
    # MODEL_TOUCH_SECONDS); retention removes models unused for RETENTION_MODEL_DAYS.
    last_used_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TrainingSession(Base):
    """One training run of a model; status and latest metrics are updated while it runs."""

    __tablename__ = "training_sessions"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_SQL})", name="status"),
        CheckConstraint("optimizer IN ('sgd', 'adam')", name="optimizer"),
        # At most one queued/running session per model, enforced across all hosts.
        Index(
            "uq_training_sessions_active_model",
            "model_id",
            unique=True,
            postgresql_where=text(f"status IN ({_ACTIVE_SQL})"),
        ),
        Index("ix_training_sessions_status_owner_host", "status", "owner_host"),
        Index("ix_training_sessions_owner_id_created_at", "owner_id", "created_at"),
        CheckConstraint("device IN ('cpu', 'cuda')", name="device"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    # Who started it (the model's owner; see Owner). Quotas count by it.
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("owners.id", ondelete="RESTRICT"), server_default=text(str(LEGACY_OWNER_ID))
    )
    status: Mapped[str] = mapped_column(String(16))
    epochs: Mapped[int]
    learning_rate: Mapped[float] = mapped_column(Float)
    batch_size: Mapped[int]
    optimizer: Mapped[str] = mapped_column(String(8))
    seed: Mapped[int] = mapped_column(BigInteger)
    device: Mapped[str] = mapped_column(String(16))
    current_epoch: Mapped[int] = mapped_column(server_default=text("0"))
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    stop_requested: Mapped[bool] = mapped_column(server_default=text("false"))
    error: Mapped[str | None] = mapped_column(Text)
    # Owner = the worker process running (or last running) it; NULL while it waits for its first worker.
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None]
    owner_instance: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None] = mapped_column(index=True)
    # The procrastinate job that runs it (procrastinate_jobs.id; no foreign key: that schema is the library's).
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # Runs started by workers; also the fencing token: a run writes only while attempts is still its own.
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    # Worker deaths and internal errors so far (JOB_MAX_FAILURES of them are survived).
    failures: Mapped[int] = mapped_column(server_default=text("0"))
    # Requested checkpoint interval; NULL: the worker's CHECKPOINT_INTERVAL_SECONDS.
    checkpoint_interval_seconds: Mapped[float | None] = mapped_column(Float)
    # The checkpoint epoch the latest run resumed from (NULL: it started from scratch).
    resumed_from_epoch: Mapped[int | None]


class EpochMetric(Base):
    """Loss and accuracy after one epoch; accuracy is NULL for regression."""

    __tablename__ = "epoch_metrics"

    session_id: Mapped[int] = mapped_column(ForeignKey("training_sessions.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)
    loss: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)


class TrainingCheckpoint(Base):
    """The latest checkpoint of a session: everything needed to resume it exactly (see app.ml.training)."""

    __tablename__ = "training_checkpoints"

    session_id: Mapped[int] = mapped_column(ForeignKey("training_sessions.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TrainingWorker(Base):
    """What a procrastinate worker is (host, release, device); its heartbeat is procrastinate's own row."""

    __tablename__ = "training_workers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # procrastinate_workers.id
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    release_id: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(16))
    concurrency: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ModelWeights(Base):
    """Latest trained weights of a model (torch.save of the CPU state_dict). session_id doubles as version."""

    __tablename__ = "model_weights"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("training_sessions.id", ondelete="CASCADE"), index=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
