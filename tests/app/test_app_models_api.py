"""Datasets and network-definition endpoints, including every kind of bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import become_owner

from app.core.config import Settings
from app.factory import create_app

XOR_NET = {
    "name": "xor-net",
    "dataset": "xor",
    "dataset_params": {"n_samples": 200, "noise": 0.05, "seed": 1},
    "layers": [{"width": 8, "activation": "tanh"}, {"width": 4, "activation": "relu", "dropout": 0.1}],
}


def assert_422(response: Any, field: str) -> str:
    """422 whose message names the field; returns the message."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert field in body["message"], body
    assert body["detail"], body
    return body["message"]


# ---- datasets ----------------------------------------------------------------------------------


def test_list_datasets(client: TestClient) -> None:
    response = client.get("/api/datasets")
    assert response.status_code == 200
    by_name = {d["name"]: d for d in response.json()}
    assert {"xor", "circles", "moons", "spirals", "blobs", "sine", "plane"} <= set(by_name)
    assert by_name["blobs"]["num_classes"] == 3
    assert by_name["sine"]["task"] == "regression"
    assert by_name["xor"]["max_samples"] == 2000
    assert by_name["xor"]["bounds"] == [-1.5, 1.5]


def test_dataset_sample_is_deterministic(client: TestClient) -> None:
    url = "/api/datasets/moons/sample?n_samples=50&noise=0.2&seed=4"
    first, second = client.get(url).json(), client.get(url).json()
    assert first == second
    assert len(first["points"]) == 50
    assert len(first["labels"]) == 50
    assert first["targets"] is None
    assert first["params"] == {"n_samples": 50, "noise": 0.2, "seed": 4}
    regression = client.get("/api/datasets/sine/sample?n_samples=20").json()
    assert regression["labels"] is None
    assert len(regression["targets"]) == 20


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("n_samples=5", "n_samples"),
        ("n_samples=2001", "n_samples"),  # above MAX_SAMPLES of this deployment
        ("noise=0.9", "noise"),
        ("noise=nan", "noise"),
        ("noise=inf", "noise"),
        ("seed=-1", "seed"),
        ("seed=abc", "seed"),
    ],
)
def test_dataset_sample_rejects_bad_parameters(client: TestClient, query: str, field: str) -> None:
    message = assert_422(client.get(f"/api/datasets/xor/sample?{query}"), field)
    assert "query parameter" in message


def test_unknown_dataset_sample_is_422(client: TestClient) -> None:
    assert_422(client.get("/api/datasets/mnist/sample"), "name")


# ---- models ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_db")
def test_model_crud(client: TestClient) -> None:
    created = client.post("/api/models", json=XOR_NET)
    assert created.status_code == 201, created.text
    model = created.json()
    assert model["name"] == "xor-net"
    assert model["task"] == "classification"
    assert (model["input_dim"], model["output_dim"]) == (2, 2)
    assert model["layers"][1] == {"width": 4, "activation": "relu", "dropout": 0.1}
    assert model["parameter_count"] == (2 + 1) * 8 + (8 + 1) * 4 + (4 + 1) * 2
    assert model["trained"] is False
    assert model["weights_version"] is None

    assert client.get(f"/api/models/{model['id']}").json() == model
    blobs = client.post("/api/models", json={"name": "blobs net", "dataset": "blobs"}).json()
    assert blobs["output_dim"] == 3
    assert blobs["layers"] == []
    assert blobs["dataset_params"] == {"n_samples": 400, "noise": 0.1, "seed": 0}

    listing = client.get("/api/models").json()
    assert listing["total"] == 2
    assert [m["name"] for m in listing["items"]] == ["xor-net", "blobs net"]
    page = client.get("/api/models?limit=1&offset=1").json()
    assert [m["name"] for m in page["items"]] == ["blobs net"]

    assert client.delete(f"/api/models/{model['id']}").status_code == 204
    missing = client.get(f"/api/models/{model['id']}")
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"model {model['id']} not found"
    assert client.delete(f"/api/models/{model['id']}").status_code == 404


@pytest.mark.usefixtures("clean_db")
def test_duplicate_name_is_409(client: TestClient) -> None:
    assert client.post("/api/models", json=XOR_NET).status_code == 201
    duplicate = client.post("/api/models", json={**XOR_NET, "dataset": "circles"})
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]
    assert "name" in duplicate.json()["detail"]


def layers(*layers: dict[str, Any]) -> dict[str, Any]:
    return {**XOR_NET, "name": "bad", "layers": list(layers)}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (layers({"width": 8, "activation": "softmax"}), "layers[0].activation"),
        (layers({"width": 0, "activation": "relu"}), "layers[0].width"),
        (layers({"width": 8, "activation": "relu"}, {"width": 65, "activation": "relu"}), "layers[1].width"),
        (layers({"width": 10**9, "activation": "relu"}), "layers[0].width"),
        (layers(*[{"width": 4, "activation": "relu"}] * 7), "layers"),  # MAX_LAYERS is 6 here
        (layers(*[{"width": 4, "activation": "relu"}] * 500), "layers"),
        (layers({"width": 8, "activation": "relu", "dropout": 1.5}), "layers[0].dropout"),
        (layers({"width": 8}), "layers[0].activation"),
        (layers({"width": "wide", "activation": "relu"}), "layers[0].width"),
        (layers({"width": 8, "activation": "relu", "colour": "red"}), "layers[0].colour"),
        # Types as the schema gives them (no coercion): a client generated from it never sends these.
        (layers({"width": 8, "activation": "relu", "dropout": False}), "layers[0].dropout"),
        (layers({"width": "8", "activation": "relu"}), "layers[0].width"),
        (layers({"width": 8.5, "activation": "relu"}), "layers[0].width"),
        ({**XOR_NET, "dataset_params": {"seed": "1"}}, "dataset_params.seed"),
        (layers({"width": True, "activation": "relu"}), "layers[0].width"),
        ({**XOR_NET, "dataset_params": {"noise": "0.1"}}, "dataset_params.noise"),
        ({**XOR_NET, "dataset": "mnist"}, "dataset"),
        ({**XOR_NET, "dataset_params": {"n_samples": 3}}, "dataset_params.n_samples"),
        ({**XOR_NET, "dataset_params": {"n_samples": 2001}}, "dataset_params.n_samples"),
        ({**XOR_NET, "dataset_params": {"noise": -0.1}}, "dataset_params.noise"),
        ({**XOR_NET, "dataset_params": {"seed": 2**40}}, "dataset_params.seed"),
        ({**XOR_NET, "name": ""}, "name"),
        ({**XOR_NET, "name": "x" * 101}, "name"),
        ({**XOR_NET, "name": "nul\u0000byte"}, "name"),
        ({**XOR_NET, "name": "<script>"}, "name"),
        ({k: v for k, v in XOR_NET.items() if k != "name"}, "name"),
        ({**XOR_NET, "extra": 1}, "extra"),
        ([], "request body"),
    ],
)
def test_invalid_model_definitions_are_422_naming_the_field(client: TestClient, body: Any, field: str) -> None:
    assert_422(client.post("/api/models", json=body), field)


def test_an_integer_is_a_number(client: TestClient) -> None:
    """Numbers refuse strings and booleans, not an integer where a number may be fractional, nor 8.0 for an
    integer (JSON Schema's integer is a number without a fraction)."""
    body = {**XOR_NET, "name": "integer-dropout", "layers": [{"width": 8.0, "activation": "relu", "dropout": 0}]}
    created = client.post("/api/models", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["layers"][0] == {"width": 8, "activation": "relu", "dropout": 0.0}
    assert client.delete(f"/api/models/{created.json()['id']}").status_code == 204


def test_the_openapi_document_advertises_the_configured_limits(client: TestClient, settings: Settings) -> None:
    """A client generated from the document sends nothing refused for size: each maximum is this deployment's
    limit (tests/app/conftest.py's, below the schemas' own ceilings), and the value at it is accepted."""
    spec = client.get("/api/openapi.json").json()
    schemas = spec["components"]["schemas"]
    (resolution,) = [
        p for p in spec["paths"]["/api/models/{model_id}/boundary"]["get"]["parameters"] if p["name"] == "resolution"
    ]
    assert (
        {
            "n_samples": schemas["DatasetParams"]["properties"]["n_samples"]["maximum"],
            "width": schemas["Layer"]["properties"]["width"]["maximum"],
            "layers": schemas["ModelCreate"]["properties"]["layers"]["maxItems"],
            "epochs": schemas["TrainingCreate"]["properties"]["epochs"]["maximum"],
            "batch_size": schemas["TrainingCreate"]["properties"]["batch_size"]["maximum"],
            "inputs": schemas["PredictRequest"]["properties"]["inputs"]["maxItems"],
            "resolution": resolution["schema"]["maximum"],
        }
        == {
            "n_samples": settings.max_samples,
            "width": settings.max_width,
            "layers": settings.max_layers,
            "epochs": settings.max_epochs,
            "batch_size": settings.max_batch_size,
            "inputs": settings.max_predict_rows,
            "resolution": settings.max_grid_resolution,
        }
        == {
            "n_samples": 2000,
            "width": 64,
            "layers": 6,
            "epochs": 2000,
            "batch_size": 512,
            "inputs": 500,
            "resolution": 100,
        }
    )
    at_limit = {
        **XOR_NET,
        "name": "at-the-limits",
        "dataset_params": {"n_samples": settings.max_samples},
        "layers": [{"width": settings.max_width, "activation": "relu"}] + [{"width": 2, "activation": "relu"}] * 5,
    }
    created = client.post("/api/models", json=at_limit)
    assert created.status_code == 201, created.text
    assert client.delete(f"/api/models/{created.json()['id']}").status_code == 204


def test_a_value_left_out_gets_its_default_lowered_to_a_lower_limit(settings: Settings) -> None:
    """MAX_SAMPLES below the default n_samples (400): a request that names none gets the limit, not a 422,
    and the document says so."""
    low = settings.model_copy(update={"max_samples": 100})
    with TestClient(create_app(low)) as client:
        become_owner(client)
        spec = client.get("/api/openapi.json").json()
        assert spec["components"]["schemas"]["DatasetParams"]["properties"]["n_samples"]["default"] == 100
        sample = client.get("/api/datasets/xor/sample")
        assert sample.status_code == 200, sample.text
        assert len(sample.json()["points"]) == 100
        created = client.post("/api/models", json={"name": "low-limits", "dataset": "xor"})
        assert created.status_code == 201, created.text
        assert created.json()["dataset_params"]["n_samples"] == 100
        assert client.post("/api/models", json={**XOR_NET, "dataset_params": {"n_samples": 101}}).status_code == 422
        assert client.delete(f"/api/models/{created.json()['id']}").status_code == 204


def test_invalid_json_is_422(client: TestClient) -> None:
    response = client.post("/api/models", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


def test_huge_payload_is_413(client: TestClient) -> None:
    body = b'{"name": "' + b"x" * 70_000 + b'"}'
    response = client.post("/api/models", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


def test_huge_chunked_payload_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 1000

    response = client.post("/api/models", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/api/models/0", "/api/models/-3", "/api/models/abc", f"/api/models/{2**31}"])
def test_bad_model_ids_are_422(client: TestClient, path: str) -> None:
    assert_422(client.get(path), "model_id")


def test_out_of_range_pagination_is_422(client: TestClient) -> None:
    assert_422(client.get("/api/models?limit=0"), "limit")
    assert_422(client.get("/api/models?offset=-1"), "offset")
