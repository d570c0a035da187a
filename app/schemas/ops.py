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


class SelfTestOut(BaseModel):
    status: str
    # The network's output rounded to 4 decimals; equal to app.ml.selftest.KNOWN_ANSWER when status is ok.
    answer: list[float]
    device: str


class SelfTestFailedOut(BaseModel):
    status: str
    reason: str


class VersionOut(BaseModel):
    release_id: str
    git_sha: str
    torch_version: str
    device: str
    cuda_available: bool
