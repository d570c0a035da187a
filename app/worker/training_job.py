"""One run of a training job in a worker thread: claim the session, resume, train, checkpoint, finish.

Fencing: claiming a session increments its `attempts`, and every later write of the run (metrics,
checkpoints, the final status and weights) applies only while `attempts` is still the run's own
number. A worker that was declared dead (missed heartbeats) but is in fact still running therefore
cannot overwrite the run that replaced it; it notices at its next write and gives up quietly.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.core.config import Settings
from app.ml.datasets import generate
from app.ml.network import build_network, layer_specs, state_dict_to_bytes
from app.ml.training import EpochResult, TrainingDivergedError, TrainingParams, TrainState, train
from app.models import (
    ACTIVE_STATUSES,
    EpochMetric,
    ModelWeights,
    NetworkModel,
    SessionStatus,
    TrainingCheckpoint,
    TrainingSession,
)
from app.services import queue
from app.services.ownership import Owner
from app.worker import metrics

logger = logging.getLogger(__name__)

# Metrics are written at most this often (and at checkpoints and the end); the stop flag is read back
# with the same round trip.
FLUSH_INTERVAL_SECONDS = 0.25
STOP_POLL_SECONDS = 1.0

INTERRUPTED_GAVE_UP = "gave up after {failures} failures (JOB_MAX_FAILURES={limit}); last: {reason}"


class Requeue(Exception):  # noqa: N818 - a signal to the queue, not an error
    """Give the job back to the queue now (graceful shutdown, or a failure the session survives)."""


class Superseded(Exception):  # noqa: N818
    """The session was taken over by another run (or deleted): this run must write nothing more."""


class Aborted(Exception):  # noqa: N818
    """The session was stopped (user request): the job ends as aborted."""


@dataclass
class WorkerContext:
    """What every job of one worker process shares."""

    settings: Settings
    engine: Engine
    device: torch.device
    owner: Owner
    draining: threading.Event = field(default_factory=threading.Event)


class TrainingRun:
    def __init__(self, ctx: WorkerContext, session_id: int, job_id: int, should_abort: Any) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.job_id = job_id
        self._should_abort = should_abort
        self.attempt = 0
        self._pending: list[EpochResult] = []
        self._last_sync = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._stop = False
        self._checkpoint_every = ctx.settings.checkpoint_interval_seconds
        self.state: TrainState | None = None

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> str:
        """Returns the session's final status, or raises Requeue / Superseded / Aborted."""
        claimed = self._claim()
        if claimed is None:
            logger.info("session not claimable (stopped or taken over)", extra=self._extra())
            return "skipped"
        session, model, checkpoint = claimed
        params = TrainingParams(
            session.epochs, session.learning_rate, session.batch_size, session.optimizer, session.seed
        )
        data = generate(model.dataset, **model.dataset_params)
        net = build_network(model.input_dim, model.output_dim, layer_specs(model.layers), seed=params.seed)
        self._checkpoint_every = session.checkpoint_interval_seconds or self.ctx.settings.checkpoint_interval_seconds
        state = self.state = TrainState(net, params, self.ctx.device)
        if checkpoint is not None:
            state.restore(checkpoint)
        logger.info(
            "training started",
            extra={**self._extra(), "model_id": model.id, "resumed_from_epoch": state.epoch, "attempt": self.attempt},
        )
        self._last_checkpoint = time.monotonic()  # the interval counts from the start of training
        try:
            done = train(state, data, self._on_epoch, self._should_stop)
        except TrainingDivergedError as exc:
            self._flush()
            self._finish(SessionStatus.FAILED, error=str(exc))
            return SessionStatus.FAILED.value
        if self.ctx.draining.is_set() and done < params.epochs and not self._stop:
            # _on_epoch took a checkpoint at this epoch boundary already.
            self._give_back()
            raise Requeue(f"worker shutting down after epoch {done}")
        self._flush()
        if done == params.epochs:
            self._finish(SessionStatus.COMPLETED, weights=state.net if done > 0 else None)
            logger.info("training finished", extra={**self._extra(), "status": "completed", "epochs_done": done})
            return SessionStatus.COMPLETED.value
        self._finish(SessionStatus.STOPPED, weights=state.net if done > 0 else None)
        logger.info("training finished", extra={**self._extra(), "status": "stopped", "epochs_done": done})
        raise Aborted(f"session {self.session_id} stopped at epoch {done}")

    # -- database steps ------------------------------------------------------------------------

    def _extra(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "job_id": self.job_id}

    def _fenced(self) -> Any:
        return (
            (TrainingSession.id == self.session_id)
            & (TrainingSession.attempts == self.attempt)
            & (TrainingSession.status == SessionStatus.RUNNING)
        )

    def _claim(self) -> tuple[TrainingSession, NetworkModel, bytes | None] | None:
        """Mark the session running as our attempt; drop metrics after the checkpoint; load both."""
        owner = self.ctx.owner
        with self.ctx.engine.begin() as conn:
            queue.lock_model_of(conn, session_id=self.session_id)
            checkpoint = conn.execute(
                select(TrainingCheckpoint.epoch, TrainingCheckpoint.data).where(
                    TrainingCheckpoint.session_id == self.session_id
                )
            ).first()
            epoch = checkpoint.epoch if checkpoint is not None else 0
            row = conn.execute(
                update(TrainingSession)
                .where(
                    TrainingSession.id == self.session_id,
                    TrainingSession.job_id == self.job_id,
                    TrainingSession.status.in_((SessionStatus.QUEUED, SessionStatus.RUNNING)),
                    TrainingSession.stop_requested.is_(False),
                )
                .values(
                    status=SessionStatus.RUNNING.value,
                    attempts=TrainingSession.attempts + 1,
                    started_at=func.coalesce(TrainingSession.started_at, func.now()),
                    heartbeat_at=func.now(),
                    owner_host=owner.host,
                    owner_pid=owner.pid,
                    owner_instance=owner.instance,
                    resumed_from_epoch=epoch if checkpoint is not None else None,
                    current_epoch=epoch,
                )
                .returning(TrainingSession.id)
            ).first()
            if row is None:
                return None
            session = _session_from_row(conn, self.session_id)
            self.attempt = session.attempts
            # Epochs after the checkpoint are redone: their old metrics go, so each epoch has one row.
            conn.execute(
                delete(EpochMetric).where(EpochMetric.session_id == self.session_id, EpochMetric.epoch > epoch)
            )
            last = conn.execute(
                select(EpochMetric.loss, EpochMetric.accuracy).where(
                    EpochMetric.session_id == self.session_id, EpochMetric.epoch == epoch
                )
            ).first()
            conn.execute(
                update(TrainingSession)
                .where(TrainingSession.id == self.session_id)
                .values(loss=last.loss if last else None, accuracy=last.accuracy if last else None)
            )
            model = _model_from_row(conn, session.model_id)
        return session, model, checkpoint.data if checkpoint is not None else None

    def _on_epoch(self, result: EpochResult) -> bool:
        self._pending.append(result)
        now = time.monotonic()
        draining = self.ctx.draining.is_set()
        due = now - self._last_checkpoint >= self._checkpoint_every
        if (draining or due) and result.epoch < self._params_epochs():
            self._flush(checkpoint=True)
            return not self._stop and not draining
        if now - self._last_sync >= FLUSH_INTERVAL_SECONDS:
            self._flush()
        return not self._stop

    def _params_epochs(self) -> int:
        assert self.state is not None
        return self.state.params.epochs

    def _should_stop(self) -> bool:
        if self._should_abort():
            self._stop = True
        elif time.monotonic() - self._last_sync >= STOP_POLL_SECONDS:
            self._flush()
        return self._stop

    def _flush(self, checkpoint: bool = False) -> None:
        """Write pending metrics (and a checkpoint of the current state); read the stop flag back."""
        self._last_sync = time.monotonic()
        pending, self._pending = self._pending, []
        with metrics.checkpoint_timer() if checkpoint else contextlib.nullcontext(), self.ctx.engine.begin() as conn:
            values: dict[str, object] = {"heartbeat_at": func.now()}
            if pending:
                last = pending[-1]
                values |= {"current_epoch": last.epoch, "loss": last.loss, "accuracy": last.accuracy}
            stop_requested = conn.execute(
                update(TrainingSession).where(self._fenced()).values(values).returning(TrainingSession.stop_requested)
            ).scalar_one_or_none()
            if stop_requested is None:
                raise Superseded(f"session {self.session_id} is no longer run by attempt {self.attempt}")
            if pending:
                stmt = pg_insert(EpochMetric).values(
                    [
                        {"session_id": self.session_id, "epoch": r.epoch, "loss": r.loss, "accuracy": r.accuracy}
                        for r in pending
                    ]
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[EpochMetric.session_id, EpochMetric.epoch],
                        set_={"loss": stmt.excluded.loss, "accuracy": stmt.excluded.accuracy},
                    )
                )
            if checkpoint:
                self._write_checkpoint(conn)
        if stop_requested:
            self._stop = True

    def _write_checkpoint(self, conn: Connection) -> None:
        assert self.state is not None
        stmt = pg_insert(TrainingCheckpoint).values(
            session_id=self.session_id, epoch=self.state.epoch, data=self.state.checkpoint()
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[TrainingCheckpoint.session_id],
                set_={"epoch": stmt.excluded.epoch, "data": stmt.excluded.data, "created_at": func.now()},
            )
        )
        self._last_checkpoint = time.monotonic()
        logger.info("checkpoint written", extra={**self._extra(), "epoch": self.state.epoch})

    def _give_back(self) -> None:
        with self.ctx.engine.begin() as conn:
            updated = conn.execute(
                update(TrainingSession)
                .where(self._fenced())
                .values(status=SessionStatus.QUEUED.value, heartbeat_at=func.now())
                .returning(TrainingSession.id)
            ).first()
        if updated is None:
            raise Superseded(f"session {self.session_id} is no longer run by attempt {self.attempt}")
        logger.info("training handed back to the queue", extra={**self._extra(), "epoch": self._epoch()})

    def _epoch(self) -> int:
        return self.state.epoch if self.state is not None else 0

    def _finish(self, status: SessionStatus, error: str | None = None, weights: torch.nn.Module | None = None) -> None:
        with self.ctx.engine.begin() as conn:
            updated = conn.execute(
                update(TrainingSession)
                .where(self._fenced())
                .values(status=status.value, finished_at=func.now(), error=error)
                .returning(TrainingSession.model_id)
            ).first()
            if updated is None:
                raise Superseded(f"session {self.session_id} is no longer run by attempt {self.attempt}")
            # A finished session is never resumed: its checkpoint is only dead weight.
            conn.execute(delete(TrainingCheckpoint).where(TrainingCheckpoint.session_id == self.session_id))
            if weights is not None:
                stmt = pg_insert(ModelWeights).values(
                    model_id=updated.model_id, session_id=self.session_id, data=state_dict_to_bytes(weights)
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[ModelWeights.model_id],
                        set_={
                            "session_id": stmt.excluded.session_id,
                            "data": stmt.excluded.data,
                            "created_at": func.now(),
                        },
                    )
                )


def _session_from_row(conn: Connection, session_id: int) -> TrainingSession:
    row = conn.execute(select(TrainingSession.__table__).where(TrainingSession.id == session_id)).mappings().one()
    return TrainingSession(**row)


def _model_from_row(conn: Connection, model_id: int) -> NetworkModel:
    row = conn.execute(select(NetworkModel.__table__).where(NetworkModel.id == model_id)).mappings().one()
    return NetworkModel(**row)


def record_failure(ctx: WorkerContext, session_id: int, job_id: int, attempt: int, reason: str) -> bool:
    """After an internal error in a run: True when the session may be retried, else it is interrupted.

    `attempt` 0: the run failed before it claimed the session (e.g. a database error), which is counted
    all the same, so that the session cannot stay queued behind a failed job.
    """
    limit = ctx.settings.job_max_failures
    fence = TrainingSession.attempts == attempt if attempt else TrainingSession.status.in_(ACTIVE_STATUSES)
    with ctx.engine.begin() as conn:
        row = conn.execute(
            update(TrainingSession)
            .where(
                TrainingSession.id == session_id,
                TrainingSession.job_id == job_id,
                TrainingSession.status.in_(ACTIVE_STATUSES),
                fence,
            )
            .values(failures=TrainingSession.failures + 1)
            .returning(TrainingSession.failures)
        ).first()
        if row is None:
            return False
        if row.failures <= limit:
            conn.execute(
                update(TrainingSession)
                .where(TrainingSession.id == session_id)
                .values(status=SessionStatus.QUEUED.value)
            )
            return True
        conn.execute(
            update(TrainingSession)
            .where(TrainingSession.id == session_id)
            .values(
                status=SessionStatus.INTERRUPTED.value,
                finished_at=func.now(),
                error=INTERRUPTED_GAVE_UP.format(failures=row.failures, limit=limit, reason=reason)[:1000],
            )
        )
        return False
