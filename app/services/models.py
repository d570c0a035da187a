"""Network definitions: create, read, delete."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.ml.datasets import DATASETS, INPUT_DIM
from app.models import ACTIVE_STATUSES, ModelWeights, NetworkModel, TrainingSession
from app.schemas.models import ModelCreate
from app.services.errors import ConflictError, NotFoundError

_WITH_VERSION = select(NetworkModel, ModelWeights.session_id).outerjoin(
    ModelWeights, ModelWeights.model_id == NetworkModel.id
)


def create_model(db: Session, body: ModelCreate) -> NetworkModel:
    spec = DATASETS[body.dataset]
    row = NetworkModel(
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


def list_models(db: Session, limit: int, offset: int) -> tuple[Sequence[Row[tuple[NetworkModel, int | None]]], int]:
    rows = db.execute(_WITH_VERSION.order_by(NetworkModel.id).limit(limit).offset(offset)).all()
    total = db.scalar(select(func.count()).select_from(NetworkModel)) or 0
    return rows, total


def delete_model(db: Session, model_id: int) -> None:
    busy = db.scalar(
        select(exists().where(TrainingSession.model_id == model_id, TrainingSession.status.in_(ACTIVE_STATUSES)))
    )
    if busy:
        raise ConflictError(f"model {model_id} has a queued or running training session; stop it before deleting")
    deleted = db.execute(delete(NetworkModel).where(NetworkModel.id == model_id).returning(NetworkModel.id)).first()
    db.commit()
    if deleted is None:
        raise NotFoundError(f"model {model_id} not found")
