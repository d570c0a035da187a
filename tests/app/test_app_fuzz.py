"""Property-based fuzzing of the whole OpenAPI spec with schemathesis: every answer keeps the contract.

For every operation, schemathesis generates data that fits the schema (positive) and data that
breaks it (negative); each response must pass every check schemathesis has (validate_response's
default), not only "no 5xx": the status is documented, and so are the content type, the headers and
the body; data the schema admits is accepted (2xx, or 404/409/429 for the state it meets), data it
refuses is refused. That holds because the document is this deployment's (app/api/openapi.py: the
configured limits as maxima, every status with its real body). The app runs in-process (ASGI) with
its lifespan, against this module's own database, with tiny training limits so fuzzed sessions stay
cheap.

(The `schema.parametrize()` pytest integration needs the schema at import time, before the database
exists, and its lazy `from_fixture` variant does not run under pytest 9; hence Hypothesis'
`@given` with schemathesis strategies, parametrized over the operations of the app's route table.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from conftest import make_settings, unhandled_errors
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python.asgi import get_client, shutdown_lifespans
from workerproc import WorkerProcess

from app.factory import create_app

MAX_EXAMPLES = 25


# Random ids almost never name an existing row; "known-ids" runs pin them to the seeded model and
# session so that the generated bodies and queries reach the code behind the 404s.
KNOWN_IDS = {"model_id": 1, "session_id": 1}


def _cases() -> list[Any]:
    """(method, path, generation mode, pinned path ids) for each operation and each variant that applies."""
    # Building the app needs settings but no database connection (that happens in the lifespan).
    spec = create_app(make_settings("postgresql://collect@127.0.0.1/collect")).openapi()
    cases = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            parameters = operation.get("parameters", [])
            ids = {p["name"]: KNOWN_IDS[p["name"]] for p in parameters if p["in"] == "path" and p["name"] in KNOWN_IDS}
            variants: list[tuple[str, GenerationMode, dict[str, int] | None]] = [
                ("positive", GenerationMode.POSITIVE, None)
            ]
            if parameters or "requestBody" in operation:
                variants.append(("negative", GenerationMode.NEGATIVE, None))
            if ids and method != "delete":  # deleting the seeded model would starve the other cases
                variants.append(("known-ids", GenerationMode.POSITIVE, ids))
            for name, mode, pinned in variants:
                label = f"{method.upper()} {path} {name}"
                cases.append(pytest.param(method.upper(), path, mode, pinned, id=label))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def fuzz_target(
    database_url: str, worker: WorkerProcess
) -> Iterator[tuple[schemathesis.BaseSchema, FastAPI, dict[str, str]]]:
    app = create_app(
        make_settings(database_url, max_epochs=3, max_samples=100, max_width=16, max_layers=3, max_batch_size=64)
    )
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)  # also starts the app's lifespan
    try:
        # schemathesis' own ASGI client: it shares the event loop (and so the pools) of that lifespan.
        with get_client(app) as client:
            owner = _seed(client)
        yield schema, app, owner
    finally:
        shutdown_lifespans()
    assert unhandled_errors(app) == 0, "a fuzzed request reached the catch-all 500 handler"


def _seed(client: requests.Session) -> dict[str, str]:
    """Model 1 trained and model 2 untrained, so the fuzzer's small ids reach the prediction paths; both
    belong to the owner whose Authorization header is returned, which the fuzzer then sends: its changes
    reach the code behind the owner checks (and schemathesis' ignored_auth check sends them without it)."""
    token = client.post("/api/owners").json()["token"]
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {token}"
    trained = client.post("/api/models", json={"name": "seed", "dataset": "xor", "dataset_params": {"n_samples": 50}})
    client.post("/api/models", json={"name": "seed-untrained", "dataset": "sine"})
    session = client.post(f"/api/models/{trained.json()['id']}/sessions", json={"epochs": 2}).json()
    deadline = time.monotonic() + 30
    while client.get(f"/api/sessions/{session['id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline, "seed training did not finish"
        time.sleep(0.05)
    return {"Authorization": f"Bearer {token}"}


def test_the_spec_covers_the_api() -> None:
    paths = {case.values[1] for case in CASES}
    assert {"/api/models", "/api/models/{model_id}/predict", "/api/sessions/{session_id}/stop", "/readyz"} <= paths
    assert len(paths) >= 12


@pytest.mark.parametrize(("method", "path", "mode", "path_parameters"), CASES)
def test_every_answer_keeps_the_contract(
    fuzz_target: tuple[schemathesis.BaseSchema, FastAPI, dict[str, str]],
    method: str,
    path: str,
    mode: GenerationMode,
    path_parameters: dict[str, int] | None,
) -> None:
    schema, _, owner = fuzz_target
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # no .hypothesis/ directory in the work tree
        derandomize=True,  # the same examples every run, so a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(headers=owner)
        case.validate_response(response, headers=owner)

    check()
