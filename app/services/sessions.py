"""Training sessions on the web side: create and queue, stop. Training itself runs in app.worker."""

from __future__ import annotations

import logging

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.ml.training import TrainingParams
from app.models import ACTIVE_STATUSES, NetworkModel, SessionStatus, TrainingSession
from app.services import queue
from app.services.errors import BusyError, ConflictError, ForbiddenError, NotFoundError
from app.services.owners import Caller, check_training_quota, lock_owner

logger = logging.getLogger(__name__)


def get_session(db: Session, session_id: int) -> TrainingSession:
    row = db.get(TrainingSession, session_id)
    if row is None:
        raise NotFoundError(f"training session {session_id} not found")
    return row


def resolve_device(db: Session, requested: str, settings: Settings) -> str:
    """`auto`: CUDA when a CUDA worker is alive, else CPU. `cuda` with no live CUDA worker is a 409."""
    if requested == "cpu":
        return "cpu"
    cuda_alive = queue.has_live_worker(db.connection(), "cuda", settings.worker_stalled_seconds)
    if requested == "cuda" and not cuda_alive:
        raise ConflictError(
            "device cuda was requested but no CUDA training worker is running (no heartbeat within "
            f"{settings.worker_stalled_seconds:g} s); use device auto or cpu, or start a worker with WORKER_DEVICE=cuda"
        )
    return "cuda" if cuda_alive else "cpu"


def start_session(
    db: Session,
    model_id: int,
    owner_id: int,
    params: TrainingParams,
    requested_device: str,
    settings: Settings,
    checkpoint_interval_seconds: float | None = None,
) -> TrainingSession:
    """Create a queued session and its job in one transaction: the model's owner only, within the owner's
    quotas (403/429) and the deployment's capacity (429)."""
    # FOR NO KEY UPDATE: see queue.lock_model_of (no deadlock with a worker changing this model's sessions).
    model = db.get(NetworkModel, model_id, with_for_update={"key_share": True})
    if model is None:
        raise NotFoundError(f"model {model_id} not found")
    if model.owner_id != owner_id:
        raise ForbiddenError(f"model {model_id} belongs to another owner; only its owner may train it")
    lock_owner(db, owner_id)
    check_training_quota(db, owner_id, params.epochs, settings)
    device = resolve_device(db, requested_device, settings)
    active = db.scalar(select(func.count()).where(TrainingSession.status.in_(ACTIVE_STATUSES)))
    if active is not None and active >= settings.max_concurrent_trainings:
        raise BusyError(
            f"too many trainings queued or running (limit {settings.max_concurrent_trainings}); retry when one finishes"
        )
    model.last_used_at = func.now()  # type: ignore[assignment] # a SQL expression, evaluated by the UPDATE
    row = TrainingSession(
        model_id=model_id,
        owner_id=owner_id,
        status=SessionStatus.QUEUED.value,
        epochs=params.epochs,
        learning_rate=params.learning_rate,
        batch_size=params.batch_size,
        optimizer=params.optimizer,
        seed=params.seed,
        device=device,
        checkpoint_interval_seconds=checkpoint_interval_seconds,
    )
    db.add(row)
    try:
        db.flush()  # the id, for the job's arguments; nothing is committed yet
        row.job_id = queue.defer(db.connection(), row.id, device)
        # The row as this request queued it (the server's defaults included), read before the commit: once
        # committed, a worker may claim it at once, and the 202 must describe what was accepted, not a race.
        db.flush()
        db.refresh(row)
        db.commit()
    except IntegrityError:
        db.rollback()
        if db.get(NetworkModel, model_id) is None:
            raise NotFoundError(f"model {model_id} not found") from None
        raise ConflictError(
            f"model {model_id} already has a queued or running training session; stop it first"
        ) from None
    logger.info("training queued", extra={"session_id": row.id, "job_id": row.job_id, "device": device})
    return row


def request_stop(db: Session, session_id: int, caller: Caller) -> TrainingSession:
    """Stop a session from any process: a queued one ends here, a running one's worker is told to abort.

    The session update and the job cancellation commit together. A running job gets procrastinate's
    abort request (its worker hears it by LISTEN/NOTIFY and the training checks it between batches);
    the worker also reads `stop_requested` back with every metrics flush, as a fallback.
    """
    caller.require_someone(f"stop training session {session_id}")
    owner_id = db.scalar(select(TrainingSession.owner_id).where(TrainingSession.id == session_id))
    if owner_id is None:
        raise NotFoundError(f"training session {session_id} not found")
    caller.require_change(owner_id, f"training session {session_id}", "stop")
    queued = TrainingSession.status == SessionStatus.QUEUED
    stopped = db.execute(
        update(TrainingSession)
        .where(TrainingSession.id == session_id, TrainingSession.status.in_(ACTIVE_STATUSES))
        .values(
            stop_requested=True,
            status=case((queued, SessionStatus.STOPPED.value), else_=TrainingSession.status),
            finished_at=case((queued, func.now()), else_=TrainingSession.finished_at),
        )
        .returning(TrainingSession.id, TrainingSession.job_id)
    ).first()
    if stopped is not None and stopped.job_id is not None:
        queue.cancel(db.connection(), stopped.job_id)
    db.commit()
    row = get_session(db, session_id)
    if stopped is None:
        raise ConflictError(f"training session {session_id} is {row.status}, not running; nothing to stop")
    return row
