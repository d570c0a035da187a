"""Network definitions: create, read, delete."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.ml.datasets import DATASETS, INPUT_DIM
from app.models import ACTIVE_STATUSES, ModelWeights, NetworkModel, TrainingSession
from app.schemas.models import ModelCreate
from app.services.errors import ConflictError, NotFoundError
from app.services.owners import Caller, check_model_quota, lock_owner

_WITH_VERSION = select(NetworkModel, ModelWeights.session_id).outerjoin(
    ModelWeights, ModelWeights.model_id == NetworkModel.id
)


def create_model(db: Session, body: ModelCreate, owner_id: int, settings: Settings) -> NetworkModel:
    lock_owner(db, owner_id)
    check_model_quota(db, owner_id, settings)
    spec = DATASETS[body.dataset]
    row = NetworkModel(
        owner_id=owner_id,
        name=body.name,
        dataset=body.dataset,
        dataset_params=body.dataset_params.model_dump(),
        layers=[layer.model_dump() for layer in body.layers],
        task=spec.task,
        input_dim=INPUT_DIM,
        output_dim=spec.output_dim,
    )
    db.add(row)
    try:
        db.commit()
    except IntegrityError:
        # The unique constraint is the arbiter, so two hosts racing on one name cannot both win.
        db.rollback()
        raise ConflictError(f"name: a model named {body.name!r} already exists") from None
    db.refresh(row)
    return row


def list_models(
    db: Session, limit: int, offset: int, owner_id: int | None = None
) -> tuple[Sequence[Row[tuple[NetworkModel, int | None]]], int]:
    """A page of models and the total; only OWNER_ID's when given (owner-only reads)."""
    mine = [NetworkModel.owner_id == owner_id] if owner_id is not None else []
    rows = db.execute(_WITH_VERSION.where(*mine).order_by(NetworkModel.id).limit(limit).offset(offset)).all()
    total = db.scalar(select(func.count()).select_from(NetworkModel).where(*mine)) or 0
    return rows, total


def delete_model(db: Session, model_id: int, caller: Caller) -> None:
    caller.require_someone(f"delete model {model_id}")
    owner_id = db.scalar(select(NetworkModel.owner_id).where(NetworkModel.id == model_id))
    if owner_id is None:
        raise NotFoundError(f"model {model_id} not found")
    caller.require_change(owner_id, f"model {model_id}", "delete")
    busy = db.scalar(
        select(exists().where(TrainingSession.model_id == model_id, TrainingSession.status.in_(ACTIVE_STATUSES)))
    )
    if busy:
        raise ConflictError(f"model {model_id} has a queued or running training session; stop it before deleting")
    deleted = db.execute(delete(NetworkModel).where(NetworkModel.id == model_id).returning(NetworkModel.id)).first()
    db.commit()
    if deleted is None:
        raise NotFoundError(f"model {model_id} not found")
