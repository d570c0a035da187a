"""Shared field types and error bodies."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# Ids are PostgreSQL `integer`; larger values could never match and would overflow the bind parameter.
MAX_ID = 2**31 - 1
MAX_SEED = 2**31 - 1

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Random seed; same seed, same result.")]


def _numeric(annotation: Any) -> bool:
    """int, float, or either or None."""
    if annotation in (int, float):
        return True
    args = set(get_args(annotation)) - {type(None)} if get_origin(annotation) in (Union, UnionType) else set()
    return bool(args) and args <= {int, float}


def _not_a_number(value: Any) -> str | None:
    """What the value is instead of a number (a boolean, a string), or None for anything else."""
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else None


class StrictModel(BaseModel):
    """Request bodies reject unknown fields, so a misspelt option is an error rather than silently ignored.
    Their numbers are numbers, as a client generated from the OpenAPI document sends them: no `false` for 0
    and no "5" for 5 (pydantic would take both), while 5.0 stays an integer, as JSON Schema has it, and an
    integer a number. (A validator, not pydantic's strict mode: that would refuse 5.0 for an integer.)"""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        numeric = bool(info.field_name) and _numeric(cls.model_fields[info.field_name].annotation)
        if numeric and (what := _not_a_number(value)):
            raise ValueError(f"must be a number, not {what}")
        return value


class ErrorOut(BaseModel):
    detail: str
    quota: str | None = Field(None, description="The owner quota that refused the request (403 and 429 only).")


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
