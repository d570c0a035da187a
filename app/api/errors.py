"""Exception handlers: every expected failure becomes a 4xx/503 with a message; never a bare 500."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg.errors import UndefinedColumn, UndefinedTable
from psycopg_pool import PoolTimeout
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.db import db_error_reason
from app.services.errors import AppError

logger = logging.getLogger(__name__)


def _field_name(loc: Sequence[Any]) -> str:
    """('body', 'layers', 0, 'activation') -> 'layers[0].activation'; query/path params are labelled."""
    kind, rest = (loc[0], loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else ("body", loc)
    name = ""
    for part in rest:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    if not name:
        return "request body"
    return name if kind == "body" else f"{name} ({kind} parameter)"


def validation_message(errors: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"{_field_name(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)


def field_error(loc: tuple[str | int, ...], message: str) -> RequestValidationError:
    """A 422 for checks that need runtime settings or the model, shaped like FastAPI's own."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": None}])


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Inputs are not echoed back: they may be megabytes long.
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse({"message": validation_message(exc.errors()), "detail": detail}, status_code=422)


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    body = {"detail": exc.message} if exc.quota is None else {"detail": exc.message, "quota": exc.quota}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers())


async def _integrity_handler(request: Request, exc: Exception) -> JSONResponse:
    # Routes turn the conflicts they expect into specific messages; this is the safety net.
    logger.warning("integrity error: %s", db_error_reason(exc))
    return JSONResponse({"detail": "the request conflicts with existing data"}, status_code=409)


async def _data_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("data error: %s", db_error_reason(exc))
    message = "a value is out of range for the database"
    return JSONResponse(
        {"message": f"request: {message}", "detail": [{"loc": ["request"], "msg": message, "type": "value_error"}]},
        status_code=422,
    )


async def _db_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s", db_error_reason(exc))
    return JSONResponse(
        {"detail": "database unavailable; retry shortly"}, status_code=503, headers={"Retry-After": "5"}
    )


async def _programming_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # A missing table or column means the schema is behind this release (mid-deploy): unavailable, not
    # a bug. Any other programming error is one, and goes on to the catch-all 500.
    if isinstance(exc, ProgrammingError) and isinstance(exc.orig, UndefinedTable | UndefinedColumn):
        return _schema_not_ready(exc)
    raise exc


def _schema_not_ready(exc: Exception) -> JSONResponse:
    logger.error("database schema not ready: %s", db_error_reason(exc))
    return JSONResponse(
        {"detail": "database schema is not at the expected revision; retry shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _psycopg_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Raw driver errors come from the async read path (prediction), which bypasses SQLAlchemy.
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return await _db_unavailable_handler(request, exc)
    if isinstance(exc, UndefinedTable | UndefinedColumn):
        return _schema_not_ready(exc)
    raise exc


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.cache
def _path_pattern(template: str) -> re.Pattern[str]:
    """/api/models/{model_id} -> a pattern that matches /api/models/7."""
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)))


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this request's path. Starlette's 405 names only the
    methods of the first route whose path matched, but a resource is often several routes (GET and POST
    /api/models), and the document is what clients read."""
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if _path_pattern(template).fullmatch(request.url.path):
            methods |= {method.upper() for method in item if method in _METHODS}
    return sorted(methods)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        # A path the document leaves out (the page) keeps Starlette's own list.
        allow = ", ".join(allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow})
    return await http_exception_handler(request, exc)


def register_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(IntegrityError, _integrity_handler)
    app.add_exception_handler(DataError, _data_error_handler)
    app.add_exception_handler(OperationalError, _db_unavailable_handler)
    app.add_exception_handler(PoolTimeoutError, _db_unavailable_handler)
    app.add_exception_handler(ProgrammingError, _programming_error_handler)
    app.add_exception_handler(psycopg.Error, _psycopg_error_handler)
    app.add_exception_handler(PoolTimeout, _psycopg_error_handler)
