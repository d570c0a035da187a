"""Dataset listing and samples."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.ml.datasets import DATASETS, MAX_NOISE, MIN_SAMPLES
from app.schemas.common import Seed, StrictModel

DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]


class DatasetParams(StrictModel):
    n_samples: int = Field(400, ge=MIN_SAMPLES, le=100_000, description="Number of points (server limit applies).")
    noise: float = Field(0.1, ge=0.0, le=MAX_NOISE, allow_inf_nan=False, description="Std. dev. of added noise.")
    seed: Seed = 0


class DatasetOut(BaseModel):
    name: str
    task: Literal["classification", "regression"]
    num_classes: int
    input_dim: int
    description: str
    bounds: tuple[float, float]
    max_samples: int


class DatasetSample(BaseModel):
    name: str
    task: Literal["classification", "regression"]
    params: DatasetParams
    points: list[tuple[float, float]]
    labels: list[int] | None = Field(description="Class ids (classification).")
    targets: list[float] | None = Field(description="Target values (regression).")
