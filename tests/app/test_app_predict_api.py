"""Predictions and decision-boundary grids."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import create_model, start_session, wait_for_session
from workerproc import WorkerProcess


@pytest.fixture(scope="module")
def trained(client: TestClient, worker: WorkerProcess) -> dict[str, Any]:
    """One trained classifier, one trained regressor, one untrained model for the whole module."""
    xor = create_model(client, "predict-xor", dataset_params={"n_samples": 300, "noise": 0.0})
    blobs = create_model(client, "predict-blobs", dataset="blobs")
    plane = create_model(client, "predict-plane", dataset="plane")
    untrained = create_model(client, "predict-untrained")
    sessions = [
        start_session(client, xor["id"], epochs=60, learning_rate=0.05, batch_size=16),
        start_session(client, blobs["id"], epochs=20),
    ]
    sessions.append(start_session(client, plane["id"], epochs=30, optimizer="sgd", learning_rate=0.05))
    for session in sessions:
        assert wait_for_session(client, session["id"])["status"] == "completed"
    return {"xor": xor, "blobs": blobs, "plane": plane, "untrained": untrained, "sessions": sessions}


def test_classification_prediction(client: TestClient, trained: dict[str, Any]) -> None:
    model_id = trained["xor"]["id"]
    response = client.post(f"/api/models/{model_id}/predict", json={"inputs": [[0.7, 0.6], [-0.7, 0.6], [-0.5, -0.5]]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "classification"
    assert body["weights_version"] == trained["sessions"][0]["id"]
    assert body["outputs"] == [1, 0, 1]
    assert len(body["probabilities"]) == 3
    for row, predicted in zip(body["probabilities"], body["outputs"], strict=True):
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
        assert row[predicted] > 0.5


def test_multiclass_prediction_has_a_probability_per_class(client: TestClient, trained: dict[str, Any]) -> None:
    body = client.post(f"/api/models/{trained['blobs']['id']}/predict", json={"inputs": [[0.0, 0.6]]}).json()
    assert len(body["probabilities"][0]) == 3
    assert body["outputs"] == [0]  # the first blob is centred at (0, 0.6)


def test_regression_prediction(client: TestClient, trained: dict[str, Any]) -> None:
    body = client.post(f"/api/models/{trained['plane']['id']}/predict", json={"inputs": [[0.5, -0.5]]}).json()
    assert body["task"] == "regression"
    assert body["probabilities"] is None
    assert body["outputs"][0] == pytest.approx(0.5, abs=0.1)  # 0.6 * 0.5 - 0.4 * -0.5


def test_boundary_grid(client: TestClient, trained: dict[str, Any]) -> None:
    body = client.get(f"/api/models/{trained['xor']['id']}/boundary?resolution=11").json()
    assert body["resolution"] == 11
    assert body["xs"][0] == pytest.approx(-1.5)
    assert body["xs"][-1] == pytest.approx(1.5)
    assert len(body["values"]) == 11
    assert all(len(row) == 11 for row in body["values"])
    assert body["values"][1][1] == 1  # (-1.2, -1.2): same-sign quadrant
    assert body["values"][1][9] == 0  # (1.2, -1.2)
    assert all(0.5 <= p <= 1 for row in body["confidence"] for p in row)
    regression = client.get(f"/api/models/{trained['plane']['id']}/boundary?resolution=3").json()
    assert regression["confidence"] is None
    assert regression["values"][0][2] > regression["values"][0][0]  # grows with x1


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/api/models/987654/predict", json={"inputs": [[0, 0]]})
    assert response.status_code == 404
    assert response.json()["detail"] == "model 987654 not found"
    assert client.get("/api/models/987654/boundary").status_code == 404


def test_untrained_model_is_409(client: TestClient, trained: dict[str, Any]) -> None:
    model_id = trained["untrained"]["id"]
    response = client.post(f"/api/models/{model_id}/predict", json={"inputs": [[0, 0]]})
    assert response.status_code == 409
    assert "has not been trained yet" in response.json()["detail"]
    assert client.get(f"/api/models/{model_id}/boundary").status_code == 409


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ([[0.1, 0.2, 0.3]], "inputs[0]"),
        ([[0.1]], "inputs[0]"),
        ([[0.1, 0.2], []], "inputs[1]"),
        ([], "inputs"),
        ([[1e7, 0]], "inputs[0][0]"),
        ([["a", 0]], "inputs[0][0]"),
        ([[None, 0]], "inputs[0][0]"),
        ([["0.5", 0]], "inputs[0][0]"),
        ([[True, 0]], "inputs[0][0]"),
        ([[0, 0]] * 501, "inputs"),  # MAX_PREDICT_ROWS is 500 here
        ("0,0", "inputs"),
    ],
)
def test_bad_inputs_are_422(client: TestClient, trained: dict[str, Any], inputs: Any, field: str) -> None:
    response = client.post(f"/api/models/{trained['xor']['id']}/predict", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_inputs_are_422(client: TestClient, trained: dict[str, Any], literal: str) -> None:
    body = f'{{"inputs": [[{literal}, 0.5]]}}'.encode()
    response = client.post(
        f"/api/models/{trained['xor']['id']}/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "inputs[0][0]" in response.json()["message"]


@pytest.mark.parametrize("resolution", ["1", "101", "0", "-5", "abc", "1e3"])
def test_bad_resolution_is_422(client: TestClient, trained: dict[str, Any], resolution: str) -> None:
    response = client.get(f"/api/models/{trained['xor']['id']}/boundary?resolution={resolution}")
    assert response.status_code == 422
    assert "resolution (query parameter)" in response.json()["message"]


def test_retraining_is_picked_up_by_the_cache(client: TestClient, trained: dict[str, Any]) -> None:
    model_id = trained["plane"]["id"]
    before = client.post(f"/api/models/{model_id}/predict", json={"inputs": [[0.5, -0.5]]}).json()
    session = start_session(client, model_id, epochs=1, learning_rate=0.5, optimizer="sgd", seed=9)
    assert wait_for_session(client, session["id"])["status"] == "completed"
    after = client.post(f"/api/models/{model_id}/predict", json={"inputs": [[0.5, -0.5]]}).json()
    assert before["weights_version"] != after["weights_version"] == session["id"]
    assert before["outputs"] != after["outputs"]
