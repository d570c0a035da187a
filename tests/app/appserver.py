"""Run the app under a real uvicorn process on a free loopback port (tests and benchmark)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pgcluster import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class AppServer:
    """`uvicorn app.main:app` with the given environment; output goes to a log file we can inspect."""

    def __init__(self, env: dict[str, str], workers: int = 1, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LOG_LEVEL": "info", **env}
        self.workers = workers
        handle, path = tempfile.mkstemp(prefix="nnp-app-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, wait: bool = True, timeout: float = 60.0) -> AppServer:
        command = [
            sys.executable, "-m", "uvicorn", "app.main:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--timeout-graceful-shutdown", "20",
            # As in a slot (release.env's UVICORN_HTTP): each response in one write (app/core/server.py).
            "--http", "app.core.server:HttpProtocol",
            "--log-config", str(REPO_ROOT / "app" / "log_config.json"),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from process start until /readyz first answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.started_at
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"app not ready after {timeout} s:\n{self.log_text()[-4000:]}")

    def client(self, *, owner: bool = True, **kwargs: Any) -> httpx.Client:
        """A client of this server; with owner (the default) it holds a new owner token, as a Bearer header."""
        client = httpx.Client(base_url=self.base_url, timeout=30, **kwargs)
        if owner:  # asked for by another client: httpx refuses `with` on a client that has sent a request
            client.headers.update(self.owner_header(verify=kwargs.get("verify", True)))
        return client

    def owner_header(self, verify: Any = True) -> dict[str, str]:
        """`Authorization: Bearer` with a new owner token from this server."""
        answer = httpx.post(f"{self.base_url}/api/owners", timeout=30, verify=verify)
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: uvicorn's graceful shutdown, lifespan shutdown included."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def pids(self) -> list[int]:
        """The uvicorn process and, with --workers, its worker children."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        extra = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.proc.pid, *extra]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first log record matching `predicate`; the access line is written just after the response."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.log_records():
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log record within {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        """Always safe to call: ends the process (gracefully if possible) and deletes the log."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(timeout=20)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
