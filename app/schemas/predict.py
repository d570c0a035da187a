"""Predictions and decision-boundary grids."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.schemas.common import StrictModel

# Bounded so float32 stays finite through the network; NaN and infinity are rejected outright.
Coordinate = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]


class PredictRequest(StrictModel):
    inputs: list[list[Coordinate]] = Field(
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
