"""Small helpers shared by the API tests."""

from __future__ import annotations

import time
from typing import Any, Protocol

FINAL = {"completed", "stopped", "failed", "interrupted"}

# Big enough to keep a worker busy for minutes unless stopped: 2000 points in batches of 1.
LONG_DATA = {"n_samples": 2000, "noise": 0.1, "seed": 0}
LONG_TRAINING = {"epochs": 1000, "learning_rate": 0.001, "batch_size": 1, "optimizer": "sgd"}


class HttpClient(Protocol):
    headers: Any
    cookies: Any

    def get(self, url: str, **kwargs: Any) -> Any: ...
    def post(self, url: str, **kwargs: Any) -> Any: ...


def become_owner(client: HttpClient, *, bearer: bool = False) -> dict[str, Any]:
    """A new owner token for this client: kept as the cookie the answer sets (a browser), or with bearer=True
    sent as `Authorization: Bearer` from now on (an API client)."""
    response = client.post("/api/owners")
    assert response.status_code == 201, response.text
    owner = dict(response.json())
    if bearer:
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {owner['token']}"
    return owner


def create_model(client: HttpClient, name: str, dataset: str = "xor", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "dataset": dataset, "layers": [{"width": 8, "activation": "tanh"}] * 2, **extra}
    response = client.post("/api/models", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def start_session(client: HttpClient, model_id: int, **params: Any) -> dict[str, Any]:
    response = client.post(f"/api/models/{model_id}/sessions", json=params)
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for_session(
    client: HttpClient, session_id: int, statuses: set[str] = FINAL, timeout: float = 60.0, min_epoch: int = 0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        session = client.get(f"/api/sessions/{session_id}").json()
        if session["status"] in statuses and session["current_epoch"] >= min_epoch:
            return dict(session)
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session_id} still {session['status']} after {timeout} s: {session}")
        time.sleep(0.05)
