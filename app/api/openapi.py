"""The OpenAPI document as a client generated from it needs it: this deployment's limits in place of the
schemas' ceilings, and every status the app can answer, each with the body it really sends."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.limits import within_limit
from app.core.config import Settings

# Where each configured limit stands, in place of the schema's own ceiling:
# (schema component, property, JSON Schema keyword, setting).
SCHEMA_LIMITS = (
    ("DatasetParams", "n_samples", "maximum", "max_samples"),
    ("Layer", "width", "maximum", "max_width"),
    ("ModelCreate", "layers", "maxItems", "max_layers"),
    ("TrainingCreate", "epochs", "maximum", "max_epochs"),
    ("TrainingCreate", "batch_size", "maximum", "max_batch_size"),
    ("PredictRequest", "inputs", "maxItems", "max_predict_rows"),
)
# (path, method, query parameter, keyword, setting).
QUERY_LIMITS = (
    ("/api/models/{model_id}/boundary", "get", "resolution", "maximum", "max_grid_resolution"),
    ("/api/datasets/{name}/sample", "get", "n_samples", "maximum", "max_samples"),
)

# Paths that never touch the database (the datasets are generated in the process).
NO_DATABASE = ("/api/datasets", "/healthz", "/version")


def _error(description: str, schema: str = "ErrorOut") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def finish_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace the app's OpenAPI generator with one that, once, on FastAPI's document:
    - sets each maximum to this deployment's limit (SCHEMA_LIMITS, QUERY_LIMITS), so a client sends nothing
      refused for size, and each default to what an omitted value gets (lowered to a lower limit);
    - documents the app's own 422 body (ValidationErrorOut: a message naming each field, and the list)
      instead of FastAPI's default, 400 (unreadable) and 413 (MAX_BODY_BYTES) on every operation with a
      body, and 503 on every /api operation that reads the database (unavailable, or its schema behind
      this release).
    A component or parameter that is no longer where these tables say fails the generation (KeyError,
    ValueError): the tests build the document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()  # FastAPI keeps it in app.openapi_schema: this runs once per app
            schemas = spec["components"]["schemas"]
            fields = [(schemas[c]["properties"][p], k, s) for c, p, k, s in SCHEMA_LIMITS]
            for path, method, name, keyword, setting in QUERY_LIMITS:
                [param] = [p for p in spec["paths"][path][method]["parameters"] if p["name"] == name]
                fields.append((param["schema"], keyword, setting))
            for field, keyword, setting in fields:
                field[keyword] = getattr(settings, setting)
                if "default" in field:  # what the app does with an omitted value (app/api/limits.py)
                    field["default"] = within_limit(field["default"], getattr(settings, setting))
            for path, item in spec["paths"].items():
                for operation in item.values():
                    responses = operation["responses"]
                    if "422" in responses:
                        responses["422"] = _error(
                            "A value is invalid: the message names each field.", "ValidationErrorOut"
                        )
                    if "requestBody" in operation:
                        responses["400"] = _error("The body could not be read (not UTF-8).")
                        responses["413"] = _error(f"The body is larger than {settings.max_body_bytes} bytes.")
                    if path.startswith("/api/") and not path.startswith(NO_DATABASE):
                        responses.setdefault(
                            "503",
                            _error("The database is unavailable or behind this release: retry after Retry-After."),
                        )
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
