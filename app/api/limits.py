"""Checks of request values against the configured limits (they vary per deployment, not per schema)."""

from __future__ import annotations

from app.api.errors import field_error
from app.core.config import Settings
from app.schemas.models import ModelCreate
from app.schemas.training import TrainingCreate


def check_model(body: ModelCreate, settings: Settings) -> None:
    if len(body.layers) > settings.max_layers:
        raise field_error(("body", "layers"), f"at most {settings.max_layers} hidden layers are allowed (MAX_LAYERS)")
    for index, layer in enumerate(body.layers):
        if layer.width > settings.max_width:
            raise field_error(("body", "layers", index, "width"), f"must be at most {settings.max_width} (MAX_WIDTH)")
    if body.dataset_params.n_samples > settings.max_samples:
        raise field_error(
            ("body", "dataset_params", "n_samples"), f"must be at most {settings.max_samples} (MAX_SAMPLES)"
        )


def check_training(body: TrainingCreate, settings: Settings) -> None:
    if body.epochs > settings.max_epochs:
        raise field_error(("body", "epochs"), f"must be at most {settings.max_epochs} (MAX_EPOCHS)")
    if body.batch_size > settings.max_batch_size:
        raise field_error(("body", "batch_size"), f"must be at most {settings.max_batch_size} (MAX_BATCH_SIZE)")
