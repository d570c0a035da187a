"""GET /selftest: the known-answer test that deploy gates compare with app_gate_known_answer."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
import torch
from conftest import REPO_ROOT
from fastapi.testclient import TestClient

from app.ml import selftest
from app.ml.network import LayerSpec

DOCUMENTED = re.compile(r"known answer is `(\[[^\]]*\])`")


def documented_answer() -> list[float]:
    match = DOCUMENTED.search((REPO_ROOT / "app" / "README.md").read_text())
    assert match, "app/README.md must state: known answer is `[...]`"
    return list(json.loads(match.group(1)))


def test_selftest_returns_the_documented_known_answer(client: TestClient) -> None:
    response = client.get("/selftest")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "answer": documented_answer(), "device": "cpu"}
    assert documented_answer() == list(selftest.KNOWN_ANSWER) == [0.257, 0.4402, 0.3028]


def test_the_known_answer_is_far_from_a_rounding_boundary() -> None:
    """Computed in float64 by hand: every exact value is within 1e-5 of its published 4-decimal form,
    so float32 differences between devices cannot change the published answer."""
    w = {name: torch.tensor(value, dtype=torch.float64) for name, value in selftest.WEIGHTS.items()}
    x = torch.tensor([selftest.INPUT], dtype=torch.float64)
    hidden = torch.tanh(x @ w["0.weight"].T + w["0.bias"])
    exact = torch.softmax(hidden @ w["2.weight"].T + w["2.bias"], dim=1)[0].tolist()
    assert [round(v, 4) for v in exact] == list(selftest.KNOWN_ANSWER)
    assert max(abs(v - k) for v, k in zip(exact, selftest.KNOWN_ANSWER, strict=True)) < 1e-5
    assert selftest.run(torch.device("cpu")) == list(selftest.KNOWN_ANSWER)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_known_answer_holds_on_cuda() -> None:
    assert selftest.run(torch.device("cuda")) == list(selftest.KNOWN_ANSWER)


def test_selftest_is_503_when_the_computation_is_wrong(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selftest, "LAYERS", (LayerSpec(4, "sigmoid"),))  # e.g. a broken kernel
    response = client.get("/selftest")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failed"
    expected = r"cpu: answer \[.*\] differs from the known answer \[0\.257, 0\.4402, 0\.3028\]"
    assert re.fullmatch(expected, body["reason"]), body


def test_selftest_is_503_without_a_traceback_when_the_computation_raises(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(device: torch.device) -> list[float]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered at /opt/secret/path")

    monkeypatch.setattr(selftest, "compute", broken)
    response = client.get("/selftest")
    assert response.status_code == 503
    assert response.json() == {"status": "failed", "reason": "cpu: the computation raised RuntimeError"}


def test_selftest_runs_outside_the_event_loop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow computation (e.g. a CUDA context starting) must not stall other requests."""
    entered, release = threading.Event(), threading.Event()
    real_compute = selftest.compute

    def slow(device: torch.device) -> list[float]:
        entered.set()
        release.wait(10)
        return real_compute(device)

    monkeypatch.setattr(selftest, "compute", slow)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(client.get("/selftest")))
    worker.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        assert time.monotonic() - started < 2
        assert not results, "the self-test finished early: the test proves nothing"
    finally:
        release.set()
        worker.join(10)
    assert results[0].status_code == 200
