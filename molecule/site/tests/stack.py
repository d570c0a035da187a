"""What the site scenario's tests share: the local stack's addresses, HTTPS clients that trust exactly
the stack's CAs, ansible-playbook runs against inventories/local, release snapshots and a load loop.

Everything is on 127.0.0.1; ports are those of inventories/local (group_vars/all/local.yml, host_vars/).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[3]
INVENTORY = REPO / "inventories" / "local"
STATE = REPO / ".local"
ARTIFACTS = REPO / "artifacts" / "site"
LOCAL = yaml.safe_load((INVENTORY / "group_vars" / "all" / "local.yml").read_text())
HOSTS = {name: yaml.safe_load((INVENTORY / "host_vars" / f"{name}.yml").read_text()) for name in ("web1", "web2")}
DOMAIN = LOCAL["local_domain_name"]
LB_URL = f"https://127.0.0.1:{LOCAL['local_lb_port']}"
CA = STATE / "tls" / "ca.pem"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


def lb_client(**kwargs: Any) -> httpx.Client:
    """A client for the front door (lb), trusting only the stack's CA."""
    return httpx.Client(base_url=LB_URL, verify=ssl.create_default_context(cafile=str(CA)), timeout=30, **kwargs)


def pebble_roots() -> str:
    """Pebble's current root (it makes a new one at every start), which issued the hosts' certificates."""
    api_ca = ssl.create_default_context(cafile=str(STATE / "services" / "pebble" / "api-ca.pem"))
    response = httpx.get(f"https://127.0.0.1:{LOCAL['local_pebble_management_port']}/roots/0", verify=api_ca)
    response.raise_for_status()
    return response.text


def host_client(host: str) -> httpx.Client:
    """A client for one web host's own nginx, checking its Pebble certificate for the site's name."""
    context = ssl.create_default_context(cadata=pebble_roots())
    return httpx.Client(
        base_url=f"https://127.0.0.1:{HOSTS[host]['nginx_https_port']}",
        verify=context,
        headers={"Host": DOMAIN},
        timeout=30,
    )


def host_get(client: httpx.Client, path: str) -> httpx.Response:
    return client.get(path, extensions={"sni_hostname": DOMAIN})


def live_releases() -> dict[str, str]:
    """The release each web host's app reports through its own nginx."""
    releases = {}
    for host in HOSTS:
        with host_client(host) as client:
            response = host_get(client, "/version")
            response.raise_for_status()
            releases[host] = response.json()["release_id"]
    return releases


@dataclass
class Run:
    args: list[str]
    rc: int
    output: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        found = {}
        for line in self.output.splitlines():
            if match := RECAP.match(line.strip()):
                found[match["host"]] = {k: int(match[k]) for k in ("changed", "unreachable", "failed")}
        return found

    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap().values())


RUNS: list[Run] = []  # every run of the session, for the secrets check


def playbook(*args: str, timeout: float = 900) -> Run:
    """ansible-playbook against inventories/local, at -v, from the repository root."""
    argv = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-v", "-i", str(INVENTORY), *args]
    env = {**os.environ, **AWS_ENV, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    run = Run(argv, done.returncode, done.stdout + done.stderr, time.monotonic() - start)
    RUNS.append(run)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"run-{len(RUNS):02d}.log").write_text(" ".join(argv) + "\n" + run.output)
    return run


def snapshot(
    folder: Path, name: str, *, files: dict[str, str] | None = None, append: dict[str, str] | None = None
) -> Path:
    """A release source: app/, alembic/ and alembic.ini of this checkout, changed as given, committed to
    a git repository of its own (so its release id is commit + digest, and never -dirty)."""
    source = folder / name
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for part in ("app", "alembic"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "alembic.ini", source / "alembic.ini")
    for path, text in (files or {}).items():
        (source / path).write_text(text)
    for path, text in (append or {}).items():
        with (source / path).open("a") as handle:
            handle.write(text)
    git = ["git", "-C", str(source), "-c", "user.name=site", "-c", "user.email=site@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", name], check=True)
    return source


@dataclass
class Load:
    """Clients sending requests through lb in a loop until stopped (or `limit` requests in all).

    Each client alternates GET /version and a prediction with a trained model, on its own keep-alive
    connection, pausing `pause` seconds between requests (so the load lasts as long as the rollout
    does instead of hitting `limit` early). Any status other than 200, and any transport error,
    counts as a failure."""

    model_id: int
    clients: int = 20
    pause: float = 0.1
    limit: int = 30000
    results: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    releases: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self) -> None:
        with lb_client() as client:
            turn = 0
            while not self._stop.is_set():
                with self._lock:
                    if sum(self.results.values()) >= self.limit:
                        return
                turn += 1
                try:
                    if turn % 2:
                        response = client.get("/version")
                    else:
                        response = client.post(f"/api/models/{self.model_id}/predict", json={"inputs": [[0.5, 0.5]]})
                    ok = response.status_code == 200
                    detail = f"{response.status_code} {response.request.url.path}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    ok, detail = False, f"{type(error).__name__}: {error}"
                with self._lock:
                    self.results["ok" if ok else "failed"] += 1
                    if not ok:
                        self.failures.append(detail)
                    elif turn % 2:
                        self.releases[response.json()["release_id"]] += 1
                self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    @property
    def total(self) -> int:
        return sum(self.results.values())
