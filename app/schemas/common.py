"""Shared field types and error bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# Ids are PostgreSQL `integer`; larger values could never match and would overflow the bind parameter.
MAX_ID = 2**31 - 1
MAX_SEED = 2**31 - 1

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Random seed; same seed, same result.")]


class StrictModel(BaseModel):
    """Request bodies reject unknown fields, so a misspelt option is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    detail: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    message: str = Field(description="All problems in one line, each prefixed with the field it concerns.")
    detail: list[ValidationErrorItem]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return."""
    return {code: {"model": ErrorOut} for code in codes}
