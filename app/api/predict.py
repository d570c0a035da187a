"""Predictions with trained weights."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
import torch
from fastapi import APIRouter, Query, Request

from app.api.deps import ModelId
from app.api.errors import field_error
from app.api.limits import within_limit
from app.ml.datasets import BOUNDS
from app.ml.inference import NonFiniteOutputError, boundary, grid_axis, predict
from app.runtime import Runtime
from app.schemas.common import ValidationErrorOut, error_responses
from app.schemas.predict import BoundaryOut, PredictOut, PredictRequest
from app.services.errors import ConflictError

router = APIRouter(prefix="/models", tags=["prediction"])


# The hot path: async end to end (no thread-pool hop) and the runtime read straight from the app.
# A forward pass over at most MAX_PREDICT_ROWS rows of a small MLP takes microseconds, so it runs
# on the event loop.
@router.post("/{model_id}/predict", responses={**error_responses(404, 409), 422: {"model": ValidationErrorOut}})
async def predict_outputs(model_id: ModelId, body: PredictRequest, request: Request) -> PredictOut:
    """Outputs for each input row: class id and probabilities, or the regression value."""
    runtime: Runtime = request.app.state.runtime
    if len(body.inputs) > runtime.settings.max_predict_rows:
        raise field_error(
            ("body", "inputs"), f"at most {runtime.settings.max_predict_rows} rows per request (MAX_PREDICT_ROWS)"
        )
    model = await runtime.predictor.get(model_id)
    for index, row in enumerate(body.inputs):
        if len(row) != model.input_dim:
            raise field_error(("body", "inputs", index), f"expected {model.input_dim} values, got {len(row)}")
    try:
        result = predict(model, torch.tensor(body.inputs, dtype=torch.float32))
    except NonFiniteOutputError as exc:
        raise field_error(("body", "inputs"), str(exc)) from None
    return PredictOut(
        model_id=model_id,
        weights_version=model.version,
        task=model.task,  # type: ignore[arg-type]
        outputs=result.outputs,
        probabilities=result.probabilities,
    )


@router.get("/{model_id}/boundary", responses=error_responses(404, 409))
async def decision_boundary(
    model_id: ModelId,
    request: Request,
    resolution: Annotated[int, Query(ge=2, le=1000, description="Grid points per axis (MAX_GRID_RESOLUTION).")] = 50,
) -> BoundaryOut:
    """The model evaluated on a regular grid over the datasets' plotting window, for drawing."""
    runtime: Runtime = request.app.state.runtime
    if "resolution" not in request.query_params:
        resolution = within_limit(resolution, runtime.settings.max_grid_resolution)
    if resolution > runtime.settings.max_grid_resolution:
        raise field_error(
            ("query", "resolution"), f"must be at most {runtime.settings.max_grid_resolution} (MAX_GRID_RESOLUTION)"
        )
    model = await runtime.predictor.get(model_id)
    xs = ys = grid_axis(*BOUNDS, resolution)
    try:
        # Up to MAX_GRID_RESOLUTION**2 points: heavy enough to keep off the event loop.
        values, confidence = await anyio.to_thread.run_sync(boundary, model, xs, ys)
    except NonFiniteOutputError as exc:
        raise ConflictError(str(exc)) from None
    return BoundaryOut(
        model_id=model_id,
        weights_version=model.version,
        task=model.task,  # type: ignore[arg-type]
        resolution=resolution,
        xs=xs,
        ys=ys,
        values=values,
        confidence=confidence,
    )
