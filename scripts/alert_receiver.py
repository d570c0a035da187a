#!/usr/bin/env python3
"""The local stack's webhook receiver: where Alertmanager on the monitoring host sends its notifications
(on AWS they go to the alarm topic instead). Each notification is appended to a JSON-lines file as
{"received": <unix time>, "body": <Alertmanager's webhook payload>}; GET / answers the same lines.

    scripts/alert_receiver.py --port 26095 --file .local/services/alerts.jsonl

Loopback only. `make up` starts it (scripts/local_services.py) and prints where it writes; the site
scenario's tests read the file to see which alerts fired, when, and naming which host.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Alertmanager's payloads are a few KB; anything far larger is not one.
MAX_BODY = 1 << 20


class Receiver(BaseHTTPRequestHandler):
    server: AlertServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._answer(400, b"expected a JSON body of at most 1 MiB\n")
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._answer(400, b"the body is not JSON\n")
            return
        line = json.dumps({"received": time.time(), "body": body}, separators=(",", ":")) + "\n"
        with self.server.lock, self.server.file.open("a") as out:
            out.write(line)
        self._answer(200, b"ok\n")

    def do_GET(self) -> None:
        with self.server.lock:
            data = self.server.file.read_bytes() if self.server.file.exists() else b""
        self._answer(200, data, "application/x-ndjson")

    def _answer(self, status: int, data: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the file is the log


class AlertServer(ThreadingHTTPServer):
    def __init__(self, port: int, file: Path) -> None:
        super().__init__(("127.0.0.1", port), Receiver)
        self.file = file
        self.lock = threading.Lock()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args()
    args.file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    AlertServer(args.port, args.file).serve_forever()


if __name__ == "__main__":
    main()
