"""Network definitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.api.deps import CallerDep, DbDep, ModelId, ReaderDep, RuntimeDep, SettingsDep
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
    responses={**error_responses(401, 403, 409), 422: {"model": ValidationErrorOut}},
)
def create_model(body: ModelCreate, db: DbDep, settings: SettingsDep, caller: CallerDep) -> ModelOut:
    """Create a model owned by the caller (401 without an owner token; 403 at OWNER_MAX_MODELS)."""
    check_model(body, settings)
    owner_id = caller.require_owner("create a model")
    return orm_model_out(service.create_model(db, body, owner_id, settings), None)


@router.get("")
def list_models(
    db: DbDep,
    settings: SettingsDep,
    reader: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ModelList:
    """Every model (only the caller's own under OWNER_ONLY_READS), by id."""
    only = None if reader.everything else (reader.caller.owner_id or 0)
    rows, total = read_with_retry(
        db, lambda s: service.list_models(s, limit, offset, only), settings.db_read_retry_seconds
    )
    return ModelList(items=[orm_model_out(model, version) for model, version in rows], total=total)


@router.get("/{model_id}", responses=error_responses(404))
async def get_model(model_id: ModelId, runtime: RuntimeDep, reader: ReaderDep) -> ModelOut:
    return model_out(await runtime.reads.model(model_id, reader))


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401, 403, 404, 409))
def delete_model(model_id: ModelId, db: DbDep, caller: CallerDep) -> Response:
    """Delete a model and its sessions: its owner or the operator only (401 without a token, 403 for another's)."""
    service.delete_model(db, model_id, caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
