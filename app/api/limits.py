"""Checks of request values against the configured limits (they vary per deployment, not per schema)."""

from __future__ import annotations

from app.api.errors import field_error
from app.core.config import Settings
from app.schemas.models import ModelCreate
from app.schemas.training import TrainingCreate

# What a request leaves out gets the schema's default, lowered to the configured limit where that is lower
# (with MAX_EPOCHS=50 a training that names no epochs runs 50, not a 422); the OpenAPI document says the
# same (app/api/openapi.py).


def within_limit(default: int, limit: int) -> int:
    return min(default, limit)


def check_model(body: ModelCreate, settings: Settings) -> None:
    params = body.dataset_params
    if "n_samples" not in params.model_fields_set:
        params.n_samples = within_limit(params.n_samples, settings.max_samples)
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
    if "epochs" not in body.model_fields_set:
        body.epochs = within_limit(body.epochs, settings.max_epochs)
    if "batch_size" not in body.model_fields_set:
        body.batch_size = within_limit(body.batch_size, settings.max_batch_size)
    if body.epochs > settings.max_epochs:
        raise field_error(("body", "epochs"), f"must be at most {settings.max_epochs} (MAX_EPOCHS)")
    if body.batch_size > settings.max_batch_size:
        raise field_error(("body", "batch_size"), f"must be at most {settings.max_batch_size} (MAX_BATCH_SIZE)")
