"""Network definitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.api.deps import DbDep, ModelId, RuntimeDep, SettingsDep
from app.api.limits import check_model
from app.core.db import read_with_retry
from app.ml.network import layer_specs, parameter_count
from app.models import NetworkModel
from app.schemas.common import ValidationErrorOut, error_responses
from app.schemas.models import ModelCreate, ModelList, ModelOut
from app.services import models as service

router = APIRouter(prefix="/models", tags=["models"])


def model_out(row: Mapping[str, Any]) -> ModelOut:
    """Response from a `models` row plus its `weights_version` (ORM object or async-read mapping)."""
    layers = layer_specs(row["layers"])
    return ModelOut.model_validate(
        {
            **row,
            "parameter_count": parameter_count(row["input_dim"], row["output_dim"], layers),
            "trained": row["weights_version"] is not None,
        }
    )


def orm_model_out(model: NetworkModel, weights_version: int | None) -> ModelOut:
    columns = {name: getattr(model, name) for name in NetworkModel.__table__.columns.keys()}  # noqa: SIM118
    return model_out({**columns, "weights_version": weights_version})


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**error_responses(409), 422: {"model": ValidationErrorOut}},
)
def create_model(body: ModelCreate, db: DbDep, settings: SettingsDep) -> ModelOut:
    check_model(body, settings)
    return orm_model_out(service.create_model(db, body), None)


@router.get("")
def list_models(
    db: DbDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ModelList:
    rows, total = read_with_retry(db, lambda s: service.list_models(s, limit, offset), settings.db_read_retry_seconds)
    return ModelList(items=[orm_model_out(model, version) for model, version in rows], total=total)


@router.get("/{model_id}", responses=error_responses(404))
async def get_model(model_id: ModelId, runtime: RuntimeDep) -> ModelOut:
    return model_out(await runtime.reads.model(model_id))


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 409))
def delete_model(model_id: ModelId, db: DbDep) -> Response:
    service.delete_model(db, model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
