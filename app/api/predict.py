"""Predictions with trained weights."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

import anyio
import anyio.to_thread
import torch
from fastapi import APIRouter, Query, Request, Response

from app.api.deps import ModelId, get_reader
from app.api.errors import field_error
from app.api.limits import within_limit
from app.ml.datasets import BOUNDS
from app.ml.inference import LoadedModel, NonFiniteOutputError, boundary, grid_axis, predict
from app.runtime import Runtime
from app.schemas.common import ValidationErrorOut, error_responses
from app.schemas.predict import BoundaryOut, PredictOut, PredictRequest
from app.services.errors import ConflictError

router = APIRouter(prefix="/models", tags=["prediction"])

# The event loop also answers the health checks and every other request of this process, so no single
# request may hold it for more than a few milliseconds. A decision boundary's answer grows with the square
# of its resolution: turning a 400 x 400 grid into JSON through the response model took 52 ms of the
# loop's own CPU, and MAX_GRID_RESOLUTION may be raised to 1000 (six times that). The grid is computed and
# encoded in a worker thread instead, at most HEAVY_THREADS at a time per process (more would only share
# the same cores), one row at a time, so that the thread hands the interpreter back to the loop between
# rows (within Python's 5 ms switch interval) rather than holding it through one long encoding call.
# Small predictions stay on the loop (below); large ones go to the same threads: a 1000-row prediction's
# forward pass and encoding cost the loop 5-6 ms when idle and 13 ms on a machine saturated by make test,
# while parsing and checking its body costs about 0.6 ms (tests/app/test_app_predict_api.py).
HEAVY_THREADS = anyio.CapacityLimiter(2)
# Up to this many rows a prediction runs on the loop (tens of microseconds); more go to HEAVY_THREADS.
INLINE_PREDICT_ROWS = 64
JSON = "application/json"


def _dumps(value: object) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _rows(rows: Sequence[Sequence[float]] | None) -> str:
    """A JSON array of arrays, encoded row by row (each a short call that holds the interpreter briefly)."""
    if rows is None:
        return "null"
    return "[" + ",".join(_dumps(row) for row in rows) + "]"


def _object(head: dict[str, object], tail: dict[str, str]) -> bytes:
    """HEAD's fields, then TAIL's already encoded ones, as one JSON object."""
    encoded = _dumps(head)
    fields = "".join(f",{_dumps(name)}:{value}" for name, value in tail.items())
    return (encoded[:-1] + fields + "}").encode()


def _predict_body(model_id: int, model: LoadedModel, inputs: list[list[float]]) -> bytes:
    result = predict(model, torch.tensor(inputs, dtype=torch.float32))
    head = {"model_id": model_id, "weights_version": model.version, "task": model.task}
    return _object(head, {"outputs": _dumps(result.outputs), "probabilities": _rows(result.probabilities)})


def _boundary_body(model_id: int, model: LoadedModel, resolution: int) -> bytes:
    xs = ys = grid_axis(*BOUNDS, resolution)
    values, confidence = boundary(model, xs, ys)
    head = {"model_id": model_id, "weights_version": model.version, "task": model.task, "resolution": resolution}
    return _object(head | {"xs": xs, "ys": ys}, {"values": _rows(values), "confidence": _rows(confidence)})


# The hot path: async end to end (no thread-pool hop for the usual few rows) and the runtime read straight from
# the app. A forward pass over a few rows of a small MLP takes microseconds, so it runs on the event loop;
# above INLINE_PREDICT_ROWS it runs in a worker thread. The answer is encoded directly (as the boundary's
# is), which costs a fraction of what the response model's second validation and encoding of every float did.
@router.post(
    "/{model_id}/predict",
    response_model=PredictOut,
    responses={**error_responses(404, 409), 422: {"model": ValidationErrorOut}},
)
async def predict_outputs(model_id: ModelId, body: PredictRequest, request: Request) -> Response:
    """Outputs for each input row: class id and probabilities, or the regression value."""
    runtime: Runtime = request.app.state.runtime
    if len(body.inputs) > runtime.settings.max_predict_rows:
        raise field_error(
            ("body", "inputs"), f"at most {runtime.settings.max_predict_rows} rows per request (MAX_PREDICT_ROWS)"
        )
    model = await runtime.predictor.get(model_id, await get_reader(request, runtime))
    for index, row in enumerate(body.inputs):
        if len(row) != model.input_dim:
            raise field_error(("body", "inputs", index), f"expected {model.input_dim} values, got {len(row)}")
    try:
        if len(body.inputs) <= INLINE_PREDICT_ROWS:
            content = _predict_body(model_id, model, body.inputs)
        else:
            content = await anyio.to_thread.run_sync(_predict_body, model_id, model, body.inputs, limiter=HEAVY_THREADS)
    except NonFiniteOutputError as exc:
        raise field_error(("body", "inputs"), str(exc)) from None
    return Response(content, media_type=JSON)


@router.get("/{model_id}/boundary", response_model=BoundaryOut, responses=error_responses(404, 409))
async def decision_boundary(
    model_id: ModelId,
    request: Request,
    resolution: Annotated[int, Query(ge=2, le=1000, description="Grid points per axis (MAX_GRID_RESOLUTION).")] = 50,
) -> Response:
    """The model evaluated on a regular grid over the datasets' plotting window, for drawing."""
    runtime: Runtime = request.app.state.runtime
    if "resolution" not in request.query_params:
        resolution = within_limit(resolution, runtime.settings.max_grid_resolution)
    if resolution > runtime.settings.max_grid_resolution:
        raise field_error(
            ("query", "resolution"), f"must be at most {runtime.settings.max_grid_resolution} (MAX_GRID_RESOLUTION)"
        )
    model = await runtime.predictor.get(model_id, await get_reader(request, runtime))
    try:
        # Up to MAX_GRID_RESOLUTION**2 points, computed and encoded off the event loop (above).
        content = await anyio.to_thread.run_sync(_boundary_body, model_id, model, resolution, limiter=HEAVY_THREADS)
    except NonFiniteOutputError as exc:
        raise ConflictError(str(exc)) from None
    return Response(content, media_type=JSON)
