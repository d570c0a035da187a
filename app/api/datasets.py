"""Built-in datasets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.api.deps import SettingsDep
from app.api.errors import field_error
from app.api.limits import within_limit
from app.ml.datasets import BOUNDS, DATASETS, INPUT_DIM, MAX_NOISE, MIN_SAMPLES, generate
from app.schemas.common import MAX_SEED, error_responses
from app.schemas.datasets import DatasetName, DatasetOut, DatasetParams, DatasetSample

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("")
def list_datasets(settings: SettingsDep) -> list[DatasetOut]:
    return [
        DatasetOut(
            name=spec.name,
            task=spec.task,  # type: ignore[arg-type]
            num_classes=spec.num_classes,
            input_dim=INPUT_DIM,
            description=spec.description,
            bounds=BOUNDS,
            max_samples=settings.max_samples,
        )
        for spec in DATASETS.values()
    ]


@router.get("/{name}/sample", responses=error_responses(404))
def sample_dataset(
    name: DatasetName,
    settings: SettingsDep,
    request: Request,
    n_samples: Annotated[int, Query(ge=MIN_SAMPLES, le=100_000)] = 400,
    noise: Annotated[float, Query(ge=0.0, le=MAX_NOISE, allow_inf_nan=False)] = 0.1,
    seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
) -> DatasetSample:
    if "n_samples" not in request.query_params:
        n_samples = within_limit(n_samples, settings.max_samples)
    if n_samples > settings.max_samples:
        raise field_error(("query", "n_samples"), f"must be at most {settings.max_samples} (MAX_SAMPLES)")
    data = generate(name, n_samples, noise, seed)
    classification = data.spec.task == "classification"
    return DatasetSample(
        name=name,
        task=data.spec.task,  # type: ignore[arg-type]
        params=DatasetParams(n_samples=n_samples, noise=noise, seed=seed),
        points=data.x.tolist(),
        labels=data.y.tolist() if classification else None,
        targets=None if classification else data.y[:, 0].tolist(),
    )
