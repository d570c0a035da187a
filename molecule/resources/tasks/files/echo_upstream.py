"""A stand-in for the app's Uvicorn backend: answers every request with what it received, as JSON.

Usage: echo_upstream.py PORT. Listens on 127.0.0.1 only, speaks HTTP/1.1 with keep-alive so a
proxy's upstream keepalive can be observed (the same client port across requests). A path under /slow/
answers after 2 s, so a test can hold requests in progress. OPTIONS gets what the app answers to it (it
serves GET and POST only): 405 with Allow, its JSON body saying what arrived.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode("utf-8", "replace") if length else ""

    def _echo(self) -> None:
        if self.path.startswith("/slow/"):
            time.sleep(2)
        body = self._body()
        payload = {
            "method": self.command,
            "path": self.path,
            "http_version": self.request_version,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body,
            "upstream_port": self.server.server_address[1],
            "client_port": self.client_address[1],
        }
        data = json.dumps(payload, sort_keys=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # A header the proxy must replace with its own value.
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._echo()

    def do_POST(self) -> None:
        self._echo()

    def do_OPTIONS(self) -> None:
        data = json.dumps({"detail": "Method Not Allowed", "method": self.command, "body": self._body()}).encode()
        self.send_response(405)
        self.send_header("Allow", "GET, POST")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), EchoHandler).serve_forever()
