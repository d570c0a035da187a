"""Owners: tokens and quota use."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class OwnerCreated(BaseModel):
    owner_id: int
    token: str = Field(description="Shown once. Send it as `Authorization: Bearer <token>`; browsers keep a cookie.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme's name, not a secret


class QuotaUse(BaseModel):
    used: int
    limit: int


class OwnerQuotas(BaseModel):
    models: QuotaUse = Field(description="Models kept (OWNER_MAX_MODELS).")
    active_trainings: QuotaUse = Field(description="Trainings queued or running (OWNER_MAX_ACTIVE_TRAININGS).")
    epochs_per_hour: QuotaUse = Field(description="Epochs started in the last hour (OWNER_MAX_EPOCHS_PER_HOUR).")


class OwnerOut(BaseModel):
    owner_id: int | None = Field(description="null for the operator, who owns nothing.")
    operator: bool
    owner_only_reads: bool = Field(description="true: reads show each owner only their own models and sessions.")
    quotas: OwnerQuotas | None = Field(description="null for the operator (no quotas apply).")
