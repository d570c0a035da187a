"""A response leaves the app's process in one write (app/core/server.py), so a process killed at any instant
has sent a whole response or none: nothing half-sent that nginx and the load balancer could not retry.

A planted ASGI app sends a response's start and then SIGKILLs its own process before sending the body: the
worst instant for a kill. Under uvicorn's own httptools protocol (the control) the client gets the status
line and headers and then the end of the connection, a cut response; under ours it gets a connection
closed before any byte, which nginx answers 502 and HAProxy retries on the other host. Then ordinary
responses through our protocol: keep-alive, HEAD, a streamed body with waits between chunks, a large
body, a 400 for a malformed request.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pgcluster import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PLANTED = """
import asyncio
import os
import signal

LARGE = b"x" * (1 << 20)


async def app(scope, receive, send):
    path = scope["path"]
    body = LARGE if path == "/large" else b"hello"
    headers = [(b"content-type", b"text/plain")]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if path == "/die-after-headers":
        os.kill(os.getpid(), signal.SIGKILL)
    await send({"type": "http.response.body", "body": body})
"""


def _serve(tmp_path: Path, protocol: str) -> Iterator[int]:
    (tmp_path / "planted.py").write_text(PLANTED)
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "planted:app", "--app-dir", str(tmp_path), "--http", protocol,
        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"uvicorn --http {protocol} did not start: {output}") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def one_write_server(tmp_path: Path) -> Iterator[int]:
    yield from _serve(tmp_path, "app.core.server:HttpProtocol")


def _raw_get(port: int, path: str) -> bytes:
    """Everything the server sent for one request, up to the end of the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize(
    ("protocol", "sends_headers"),
    [("httptools", True), ("app.core.server:HttpProtocol", False)],
    ids=["uvicorn-httptools-cuts", "one-write-sends-nothing"],
)
def test_a_process_killed_between_headers_and_body_sends_all_or_nothing(
    tmp_path: Path, protocol: str, sends_headers: bool
) -> None:
    server = _serve(tmp_path, protocol)
    port = next(server)
    try:
        received = _raw_get(port, "/die-after-headers")
    finally:
        server.close()
    if sends_headers:
        # The control: the failure this protocol exists for (a status line, headers, and no body).
        assert received.startswith(b"HTTP/1.1 200"), received
        assert received.endswith(b"\r\n\r\n"), received
    else:
        assert received == b"", f"a killed process sent part of a response: {received!r}"


def test_ordinary_responses_through_the_one_write_protocol(one_write_server: int) -> None:
    base = f"http://127.0.0.1:{one_write_server}"
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(3):  # one keep-alive connection, three responses
            answer = client.get("/small")
            assert (answer.status_code, answer.content) == (200, b"hello")
        head = client.head("/small")
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "5", b"")
        streamed = client.get("/stream")
        assert (streamed.status_code, streamed.content) == (200, b"one two three")
        large = client.get("/large")
        assert (large.status_code, len(large.content), set(large.content)) == (200, 1 << 20, {ord("x")})
        assert client.get("/small").content == b"hello"
    # A malformed request: uvicorn's own 400, written and the connection closed, through the same transport.
    with socket.create_connection(("127.0.0.1", one_write_server), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400"), received
