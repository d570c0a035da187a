"""Operational endpoints, request ids, logging, and the web page (readiness: test_app_readiness.py)."""

from __future__ import annotations

import json
import logging
import re
from html.parser import HTMLParser

import pytest
import torch
from conftest import make_settings
from fastapi.testclient import TestClient

from app.core.logging import JsonFormatter, request_id_var
from app.factory import create_app


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_version(client: TestClient) -> None:
    assert client.get("/version").json() == {
        "release_id": "test-release",
        "git_sha": "0123abc",
        "torch_version": torch.__version__,
        "device": "cpu",
        "cuda_available": torch.cuda.is_available(),
    }


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123.x"}).headers["X-Request-ID"] == "abc-123.x"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # Ids that could inject into logs or headers are replaced, not echoed.
    replaced = client.get("/healthz", headers={"X-Request-ID": "x" * 200}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    # Error responses carry it too.
    assert client.get("/api/models/0", headers={"X-Request-ID": "err-1"}).headers["X-Request-ID"] == "err-1"


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("app.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.session_id = 7
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["msg"] == "hello world"
    assert entry["level"] == "info"
    assert entry["request_id"] == "rid-1"
    assert entry["session_id"] == 7
    assert "\n" not in line


def test_unknown_route_and_method_are_4xx(client: TestClient) -> None:
    assert client.get("/api/nope").status_code == 404
    assert client.put("/api/models").status_code == 405


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Resources served by two routes: Starlette's own 405 named only the first route's method.
        ("PUT", "/api/models", "GET, POST"),
        ("OPTIONS", "/api/models", "GET, POST"),
        ("PATCH", "/api/models/1", "DELETE, GET"),
        ("OPTIONS", "/api/models/1/sessions", "GET, POST"),
        ("GET", "/api/sessions/1/stop", "POST"),
        ("DELETE", "/readyz", "GET"),
    ],
)
def test_405_names_every_method_of_the_resource(client: TestClient, method: str, path: str, allow: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"detail": "Method Not Allowed"}


def test_cors_only_for_allowed_origins(database_url: str) -> None:
    settings = make_settings(database_url, allowed_origins="https://ui.example")
    with TestClient(create_app(settings)) as cors:
        allowed = cors.get("/healthz", headers={"Origin": "https://ui.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
        denied = cors.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in denied.headers


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_styles = 0
        self.style_tags = 0
        self.inline_handlers = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "script":
            self.scripts.append(attributes)
        if tag == "style":
            self.style_tags += 1
        self.inline_styles += "style" in attributes
        self.inline_handlers += any(name.startswith("on") for name in attributes)


def test_page_and_assets_fit_a_strict_csp(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parser = _PageParser()
    parser.feed(page.text)
    required = {"dataset", "add-layer", "layers", "train", "stop", "status", "loss-chart", "accuracy-chart", "boundary"}
    assert required <= parser.ids
    assert parser.scripts == [{"src": "/static/app.js", "defer": None}]
    assert (parser.inline_styles, parser.style_tags, parser.inline_handlers) == (0, 0, 0)
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "css")):
        response = client.get(asset)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert not re.search(r"https?://", response.text), f"{asset} must not load anything external"
    assert not re.search(r"https?://", page.text)
    js = client.get("/static/app.js").text
    for path in ("/datasets", "/models", "/sessions/", "/boundary"):
        assert path in js


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/selftest", "/version"])
def test_operational_endpoints_are_outside_the_api_prefix(client: TestClient, path: str) -> None:
    assert client.get(f"/api{path}").status_code == 404
