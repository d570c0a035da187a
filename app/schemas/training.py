"""Training sessions and their metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.models import SessionStatus
from app.schemas.common import Seed, StrictModel


class TrainingCreate(StrictModel):
    epochs: int = Field(100, ge=1, le=100_000, description="Server limit MAX_EPOCHS applies.")
    learning_rate: float = Field(0.03, gt=0.0, le=10.0, allow_inf_nan=False)
    batch_size: int = Field(32, ge=1, le=65_536, description="Server limit MAX_BATCH_SIZE applies.")
    optimizer: Literal["sgd", "adam"] = "adam"
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when a CUDA worker is alive, else CPU. cuda without one is a 409."
    )
    checkpoint_interval_seconds: float | None = Field(
        None,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds between checkpoints of this training; default: the worker's CHECKPOINT_INTERVAL_SECONDS.",
    )


class SessionOut(BaseModel):
    id: int
    model_id: int
    owner_id: int = Field(description="Who started it: the model's owner.")
    status: SessionStatus
    epochs: int
    learning_rate: float
    batch_size: int
    optimizer: str
    seed: int
    device: str
    current_epoch: int
    loss: float | None
    accuracy: float | None
    stop_requested: bool
    error: str | None
    owner_host: str | None = Field(description="The worker host running it (or that ran it last).")
    owner_pid: int | None = Field(description="That worker's process id.")
    checkpoint_interval_seconds: float | None
    attempts: int = Field(description="Runs started by workers (1 + resumptions).")
    resumed_from_epoch: int | None = Field(description="Checkpoint epoch the latest run resumed from.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SessionList(BaseModel):
    items: list[SessionOut]


class EpochOut(BaseModel):
    epoch: int
    loss: float
    accuracy: float | None


class MetricsOut(BaseModel):
    session_id: int
    status: SessionStatus
    items: list[EpochOut]


class WorkerOut(BaseModel):
    id: int
    host: str
    pid: int
    release_id: str
    device: str
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    alive: bool = Field(description="Heartbeat within WORKER_STALLED_SECONDS.")
    running_jobs: int


class WorkerList(BaseModel):
    items: list[WorkerOut]
