"""The API contract through the host's nginx, as a client generated from the published document meets it.

tests/app/test_app_fuzz.py fuzzes the app in-process; here schemathesis' own command line runs against
nginx in front of the live slot (port 18180), with every check and the phases a user's `st run` has:
the document's examples, the coverage phase (boundary values, missing and malformed parts, and methods
the document does not list, which must get 405 with an Allow header) and generated data. What nginx
adds or answers itself is under test too: its TRACE refusal, its body limit, its headers. The runner
is a loopback client, which nginx counts as internal (no rate limit, internal paths open), so every
answer comes from the contract and not from the limits, which the nginx scenario and the site test.

This file runs after test_app.py (file order), whose last test restarts the live slot. Trainings the
fuzzer starts are stopped at the end, so the worker is idle again for the scenario's destroy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BASE = "http://127.0.0.1:18180"
ST = Path(sys.executable).with_name("st")
ARTIFACTS = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3])) / "artifacts" / "fuzz"
# Generated examples per operation in the fuzzing phase (the coverage phase has its own fixed set).
MAX_EXAMPLES = 15


def api(method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = httpx.request(method, f"{BASE}{path}", timeout=30, headers=headers)
    return response.status_code, response.json() if response.content else None


def owner_header() -> dict[str, str]:
    """A new owner token as a header: the fuzzer sends it, so its changes reach the code behind the owner
    checks (and schemathesis' ignored_auth check sends them without it, expecting a 401)."""
    status, body = api("POST", "/api/owners")
    assert status == 201, body
    return {"Authorization": f"Bearer {body['token']}"}


def stop_every_training(owner: dict[str, str]) -> int:
    """Stop what the fuzzer (OWNER) queued or started; returns how many sessions were stopped."""
    stopped = 0
    _, models = api("GET", "/api/models?limit=500")
    for model in models["items"]:
        _, sessions = api("GET", f"/api/models/{model['id']}/sessions?limit=500")
        for session in sessions["items"]:
            if session["status"] in ("queued", "running"):
                status, body = api("POST", f"/api/sessions/{session['id']}/stop", owner)
                # 409: it ended on its own between the listing and the stop.
                assert status in (202, 409), body
                stopped += status == 202
    return stopped


def test_every_answer_through_nginx_keeps_the_contract(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    junit = ARTIFACTS / "front-door-junit.xml"
    owner = owner_header()
    command = [
        str(ST),
        "run",
        f"{BASE}/api/openapi.json",
        "--checks=all",
        "--phases=examples,coverage,fuzzing",
        f"--max-examples={MAX_EXAMPLES}",
        # The same cases every run, so that a failure reproduces.
        "--seed=20261204",
        "--generation-deterministic",
        # One worker: with two, schemathesis' coverage phase crashed in ast.parse on this Python (3.11.7:
        # "AST constructor recursion depth mismatch", a CPython bug with concurrent parsing).
        "--workers=1",
        "--request-timeout=30",
        f"--header=Authorization: {owner['Authorization']}",
        "--no-color",
        "--report=junit",
        f"--report-junit-path={junit}",
    ]
    started = time.monotonic()
    try:
        # Run from a scratch folder: schemathesis keeps its replay cache (.schemathesis/) where it runs.
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
    finally:
        stopped = stop_every_training(owner)
    # The token stays out of the artifacts (a throwaway owner, but the log is kept).
    output = (result.stdout + result.stderr).replace(owner["Authorization"], "Bearer nnp_<token>")
    (ARTIFACTS / "front-door.log").write_text(output)
    print(output[-4000:])
    print(f"{time.monotonic() - started:.0f} s; {stopped} fuzzed trainings stopped")
    assert result.returncode == 0, f"schemathesis through nginx found failures:\n{output[-12000:]}"
    # A run that tested little would also exit 0: every operation, both phases, hundreds of cases.
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts is not None, output[-3000:]
    assert int(counts[1]) == int(counts[2]) >= 500, counts[0]
    assert re.search(r"Tested: (\d+)", output)[1] == re.search(r"Selected: (\d+)/", output)[1], output[-3000:]  # type: ignore[index]
    for phase in ("Coverage", "Fuzzing"):
        assert re.search(rf"✅\s+{phase} \(in", output), f"the {phase.lower()} phase did not pass: {output[-3000:]}"
