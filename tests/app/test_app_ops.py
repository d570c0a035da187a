"""Operational endpoints, request ids, logging, and the web page."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import psycopg
import pytest
import torch
from conftest import TEMPLATE_DB, alembic_config, make_settings, unhandled_errors
from fastapi.testclient import TestClient
from pgcluster import PgCluster
from tcpproxy import TcpProxy

from alembic import command
from app.core.logging import JsonFormatter, request_id_var
from app.factory import create_app


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_ready(client: TestClient) -> None:
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["schema_revision"] == body["expected_revision"] == "0001"


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


def test_cors_only_for_allowed_origins(database_url: str) -> None:
    settings = make_settings(database_url, allowed_origins="https://ui.example")
    with TestClient(create_app(settings)) as cors:
        allowed = cors.get("/healthz", headers={"Origin": "https://ui.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
        denied = cors.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in denied.headers


def test_readyz_is_503_when_the_schema_is_not_at_head(client: TestClient, database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not ready",
            "reason": "schema revision is none (not migrated), expected 0001; run alembic upgrade head",
        }
        assert client.get("/healthz").status_code == 200
        # The API answers 503 rather than 500 while the tables are missing.
        models = client.get("/api/models")
        assert models.status_code == 503
        assert "schema" in models.json()["detail"]
    finally:
        command.upgrade(cfg, "head")
    assert client.get("/readyz").status_code == 200


def test_readyz_stays_ready_on_a_newer_schema(client: TestClient, database_url: str) -> None:
    """A rolling deploy migrates once before any host switches: hosts on the old release must stay in service."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0002_from_a_newer_release'")
    try:
        response = client.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["schema_revision"] == "0002_from_a_newer_release"
        assert body["expected_revision"] == "0001"
        assert body["schema_newer"] is True
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert client.get("/readyz").json()["schema_newer"] is False


@pytest.fixture
def proxied_database(pg: PgCluster) -> Iterator[tuple[str, TcpProxy]]:
    """A migrated database reached through a proxy that the test can cut."""
    pg.create_database("ops_unreachable", template=TEMPLATE_DB)
    proxy = TcpProxy(pg.port)
    yield pg.url("ops_unreachable").replace(f":{pg.port}/", f":{proxy.port}/"), proxy
    proxy.cut()
    pg.drop_database("ops_unreachable")


def test_readyz_is_503_when_the_database_is_unreachable(pg: PgCluster, proxied_database: tuple[str, TcpProxy]) -> None:
    url, proxy = proxied_database
    app = create_app(make_settings(url))
    with TestClient(app) as local:
        assert local.get("/readyz").status_code == 200
        proxy.cut()
        response = local.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"].startswith("database unreachable:")
        assert pg.password not in response.text
        assert local.get("/healthz").status_code == 200
        assert local.get("/version").status_code == 200
        # API calls that need the database say so with 503, not 500.
        down = local.get("/api/models")
        assert down.status_code == 503
        assert down.json()["detail"] == "database unavailable; retry shortly"
        assert down.headers["Retry-After"] == "5"
    assert unhandled_errors(app) == 0


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


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/version"])
def test_operational_endpoints_are_outside_the_api_prefix(client: TestClient, path: str) -> None:
    assert client.get(f"/api{path}").status_code == 404
