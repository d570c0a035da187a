"""Predictions and decision-boundary grids."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, Strict

from app.ml.datasets import INPUT_DIM
from app.schemas.common import StrictModel

# Bounded so float32 stays finite through the network; NaN and infinity are rejected outright. Strict: a
# number, not a boolean or a string (an integer is one).
Coordinate = Annotated[float, Strict(), Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
# A row holds one value per input of the model: INPUT_DIM for every built-in dataset (the route still checks it
# against the model's).
Row = Annotated[list[Coordinate], Field(min_length=INPUT_DIM, max_length=INPUT_DIM)]


class PredictRequest(StrictModel):
    inputs: list[Row] = Field(
        min_length=1, max_length=100_000, description="Rows of input values (server limit MAX_PREDICT_ROWS)."
    )


class PredictOut(BaseModel):
    model_id: int
    weights_version: int
    task: Literal["classification", "regression"]
    outputs: list[float] | list[int] = Field(description="Predicted class ids, or regression values.")
    probabilities: list[list[float]] | None = Field(description="Per-class probabilities (classification).")


class BoundaryOut(BaseModel):
    model_id: int
    weights_version: int
    task: Literal["classification", "regression"]
    resolution: int
    xs: list[float]
    ys: list[float]
    values: list[list[float]] = Field(description="values[iy][ix]: predicted class id or regression value.")
    confidence: list[list[float]] | None = Field(description="Probability of the predicted class.")
