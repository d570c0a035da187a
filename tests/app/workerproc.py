"""Run `python -m app.worker` as a real process (tests and benchmark): the only place trainings run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]

# Short timings so that the tests see heartbeats and stalls within seconds (checkpoint intervals are
# asked for per session where a test needs them).
FAST_WORKER_ENV = {
    "WORKER_HEARTBEAT_SECONDS": "0.5",
    "WORKER_STALLED_SECONDS": "2",
    "WORKER_POLL_SECONDS": "0.3",
    "JOB_MAX_FAILURES": "10",
}


class WorkerProcess:
    """A training worker on `database_url`; its JSON log goes to a file we can read."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.database_url = database_url
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "WORKER_DEVICE": "cpu",
            "TORCH_THREADS": "1",
            "RELEASE_ID": "test-worker",
            "LOG_LEVEL": "info",
            **FAST_WORKER_ENV,
            **env,
        }
        handle, path = tempfile.mkstemp(prefix="nnp-worker-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True, timeout: float = 60.0) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.worker"], cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_registered(timeout)
        return self

    def wait_registered(self, timeout: float = 60.0) -> None:
        """Until the worker is listed in training_workers (it then heartbeats and takes jobs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM training_workers WHERE pid = %s", (self.pid,)).fetchone():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"worker not registered after {timeout} s:\n{self.log_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no checkpoint, no unregistering; its heartbeat simply stops."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: running trainings checkpoint at the end of their epoch and go back to the queue."""
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

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(timeout=30)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
