"""An HTTP proxy on a free loopback port that answers 502 in place of some GETs, as a load balancer that
does not retry (the ALB) answers for a host whose app process just died. Everything else is forwarded."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from pgcluster import free_port

# Hop-by-hop headers a proxy must not forward (RFC 9110, 7.6.1), and what httpx sets itself.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


class FaultProxy:
    """Forwards to upstream; every `every`-th GET whose path starts with `prefix` (and that carries the
    header `marker`, when given) gets a 502 instead."""

    def __init__(self, upstream: str, prefix: str, every: int, marker: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.injected = 0
        self.forwarded = 0
        self._matching = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.startswith(prefix) and (marker is None or self.headers.get(marker[0]) == marker[1]):
                    with proxy._lock:
                        proxy._matching += 1
                        fail = proxy._matching % every == 0
                        proxy.injected += fail
                    if fail:
                        self.reply(502, b'{"detail": "bad gateway (injected)"}', {"Content-Type": "application/json"})
                        return
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def do_DELETE(self) -> None:
                self.forward()

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                answer = proxy._client.request(self.command, self.path, content=body, headers=headers)
                with proxy._lock:
                    proxy.forwarded += 1
                self.reply(answer.status_code, answer.content, {
                    k: v for k, v in answer.headers.items() if k.lower() not in HOP | {"content-encoding"}
                })  # fmt: skip

            def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
