"""Network definitions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import StrictModel
from app.schemas.datasets import DatasetName, DatasetParams

Activation = Literal["relu", "tanh", "sigmoid"]

# Schema-level ceilings; the configured limits (MAX_LAYERS, MAX_WIDTH, ...) are checked per request.
HARD_MAX_LAYERS = 64
HARD_MAX_WIDTH = 4096


class Layer(StrictModel):
    width: int = Field(ge=1, le=HARD_MAX_WIDTH, description="Number of units (server limit MAX_WIDTH applies).")
    activation: Activation
    dropout: float = Field(0.0, ge=0.0, le=0.9, allow_inf_nan=False, description="Dropout after the activation.")


class ModelCreate(StrictModel):
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$",
        description="Unique name: letters, digits, space, '_', '.', '-'.",
    )
    dataset: DatasetName
    dataset_params: DatasetParams = Field(default_factory=DatasetParams)
    layers: list[Layer] = Field(
        default_factory=list, max_length=HARD_MAX_LAYERS, description="Hidden layers (server limit MAX_LAYERS)."
    )


class ModelOut(BaseModel):
    id: int
    owner_id: int = Field(description="Its owner (GET /api/owners/me gives yours); 1 is `legacy`: older rows.")
    name: str
    dataset: str
    dataset_params: DatasetParams
    layers: list[Layer]
    task: Literal["classification", "regression"]
    input_dim: int
    output_dim: int
    parameter_count: int
    trained: bool
    weights_version: int | None = Field(description="Id of the session that produced the current weights.")
    created_at: datetime
    last_used_at: datetime = Field(description="Creation, training start or prediction (within MODEL_TOUCH_SECONDS).")


class ModelList(BaseModel):
    items: list[ModelOut]
    total: int
