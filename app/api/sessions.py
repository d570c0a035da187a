"""Training sessions: start, watch, stop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import CallerDep, DbDep, ModelId, ReaderDep, RuntimeDep, SessionId, SettingsDep
from app.api.limits import check_training
from app.core.db import read_with_retry
from app.ml.training import TrainingParams
from app.models import NetworkModel, TrainingSession
from app.schemas.common import ValidationErrorOut, error_responses
from app.schemas.training import MetricsOut, SessionList, SessionOut, TrainingCreate, WorkerList, WorkerOut
from app.services import queue
from app.services import sessions as service
from app.services.errors import NotFoundError

router = APIRouter(tags=["training"])


@router.post(
    "/models/{model_id}/sessions",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**error_responses(401, 403, 404, 409, 429), 422: {"model": ValidationErrorOut}},
)
def start_training(
    model_id: ModelId, body: TrainingCreate, db: DbDep, runtime: RuntimeDep, caller: CallerDep
) -> SessionOut:
    """Queue a training run of one of the caller's models for the workers (202). 409 for device cuda with no
    live CUDA worker; 429 at the owner's quotas (OWNER_MAX_ACTIVE_TRAININGS, OWNER_MAX_EPOCHS_PER_HOUR) or
    when MAX_CONCURRENT_TRAININGS sessions are queued or running; 403 for another owner's model."""
    check_training(body, runtime.settings)
    owner_id = caller.require_owner("start a training")
    params = TrainingParams(body.epochs, body.learning_rate, body.batch_size, body.optimizer, body.seed)
    row = service.start_session(
        db, model_id, owner_id, params, body.device, runtime.settings, body.checkpoint_interval_seconds
    )
    return SessionOut.model_validate(row, from_attributes=True)


@router.get("/models/{model_id}/sessions", responses=error_responses(404))
def list_sessions(
    model_id: ModelId,
    db: DbDep,
    settings: SettingsDep,
    reader: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SessionList:
    """Sessions of a model, newest first."""

    def read(session: Session) -> Sequence[TrainingSession]:
        owner_id = session.scalar(select(NetworkModel.owner_id).where(NetworkModel.id == model_id))
        if owner_id is None or not reader.may_read(owner_id):
            raise NotFoundError(f"model {model_id} not found")
        return session.scalars(
            select(TrainingSession)
            .where(TrainingSession.model_id == model_id)
            .order_by(TrainingSession.id.desc())
            .limit(limit)
        ).all()

    rows = read_with_retry(db, read, settings.db_read_retry_seconds)
    return SessionList(items=[SessionOut.model_validate(row, from_attributes=True) for row in rows])


# Polled while a session runs: async reads on the event loop (see app.services.reads).
@router.get("/sessions/{session_id}", responses=error_responses(404))
async def get_session(session_id: SessionId, runtime: RuntimeDep, reader: ReaderDep) -> SessionOut:
    return SessionOut.model_validate(await runtime.reads.session(session_id, reader))


@router.get("/sessions/{session_id}/metrics", responses=error_responses(404))
async def get_metrics(
    session_id: SessionId,
    runtime: RuntimeDep,
    reader: ReaderDep,
    after_epoch: Annotated[int, Query(ge=0, le=2**31 - 1, description="Only epochs after this one.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> MetricsOut:
    """Per-epoch metrics in epoch order; poll with after_epoch set to the last epoch seen."""
    session = await runtime.reads.session(session_id, reader)
    items = await runtime.reads.metrics(session_id, after_epoch, limit)
    return MetricsOut.model_validate({"session_id": session_id, "status": session["status"], "items": items})


@router.post(
    "/sessions/{session_id}/stop", status_code=status.HTTP_202_ACCEPTED, responses=error_responses(401, 403, 404, 409)
)
def stop_session(session_id: SessionId, db: DbDep, caller: CallerDep) -> SessionOut:
    """Stop a session: a queued one at once, a running one within a batch or two on its worker. Its owner or
    the operator only (401 without a token, 403 for another's)."""
    row = service.request_stop(db, session_id, caller)
    return SessionOut.model_validate(row, from_attributes=True)


@router.get("/workers", tags=["workers"])
def list_workers(db: DbDep, settings: SettingsDep) -> WorkerList:
    """Training workers that registered and have not been pruned (dead ones show alive = false first)."""
    stalled = settings.worker_stalled_seconds
    workers = read_with_retry(db, lambda s: queue.list_workers(s.connection(), stalled), settings.db_read_retry_seconds)
    return WorkerList(items=[WorkerOut.model_validate(w, from_attributes=True) for w in workers])
