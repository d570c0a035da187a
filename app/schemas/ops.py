"""Operational endpoints."""

from __future__ import annotations

from pydantic import BaseModel


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    schema_revision: str | None
    expected_revision: str
    # True when a newer release already migrated the schema (rolling deploy in progress).
    schema_newer: bool = False


class NotReadyOut(BaseModel):
    status: str
    reason: str


class VersionOut(BaseModel):
    release_id: str
    git_sha: str
    torch_version: str
    device: str
    cuda_available: bool
