"""What the site scenario's tests share: the local stack's addresses, HTTPS clients that trust exactly
the stack's CAs, ansible-playbook runs against inventories/local, release snapshots and a load loop.

Everything is on 127.0.0.1; ports are those of inventories/local (group_vars/all/local.yml, host_vars/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
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
FACT_CACHE = REPO / ".cache" / "facts"
MONITORING = yaml.safe_load((INVENTORY / "host_vars" / "mon1.yml").read_text())
PROMETHEUS_URL = f"http://127.0.0.1:{MONITORING['monitoring_prometheus_port']}"
# What the stack's webhook receiver got from Alertmanager (scripts/alert_receiver.py), one JSON line each.
ALERTS_FILE = STATE / "services" / "alerts.jsonl"
# Figures of the tests (the worker host kill, the rollouts, operations): artifacts/site/rollout-figures.json.
FIGURES: dict[str, Any] = {}
# App passwords replaced by the rotation test, for the secrets check.
OLD_PASSWORDS: list[str] = []
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


def lb_client(*, owner: bool = False, **kwargs: Any) -> httpx.Client:
    """A client for the front door (lb), trusting only the stack's CA; with owner, holding a new owner token
    (models and sessions belong to whoever created them)."""
    verify = ssl.create_default_context(cafile=str(CA))
    headers = owner_header() if owner else {}
    return httpx.Client(base_url=LB_URL, verify=verify, timeout=30, headers=headers, **kwargs)


def owner_header() -> dict[str, str]:
    """`Authorization: Bearer` with a new owner token, issued through the front door."""
    with httpx.Client(base_url=LB_URL, verify=ssl.create_default_context(cafile=str(CA)), timeout=30) as client:
        answer = client.post("/api/owners")
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}


def host_client(host: str, *, owner: dict[str, str] | None = None) -> httpx.Client:
    """A client for one web host's own nginx on its plain HTTP port, where the load balancer reaches it
    (TLS ends at the balancer, as at the ALB); OWNER: an owner_header() to send."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{HOSTS[host]['nginx_http_port']}",
        headers={"Host": DOMAIN, **(owner or {})},
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
# The site phase (conftest.py), in the runs' log names: the quiet phase's must not be overwritten.
PHASE = f"{os.environ['SITE_TESTS']}-" if os.environ.get("SITE_TESTS") else ""


_RUNS_LOCK = threading.Lock()


def playbook(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> Run:
    """ansible-playbook against inventories/local, at -v, from the repository root."""
    # The controller stands for a machine of its own (a laptop, a CI runner): it runs at a higher
    # priority than the saturated stack and the load, so the load slows the hosts, not the deploy tool.
    argv = ["nice", "-n", "-10", str(REPO / ".venv" / "bin" / "ansible-playbook"), "-v", "-i", str(INVENTORY), *args]
    environ = {
        **os.environ,
        **AWS_ENV,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        # Per-task durations in artifacts/site/run-NN.log.
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
    }
    start = time.monotonic()
    done = subprocess.run(
        argv, cwd=REPO, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    run = Run(argv, done.returncode, done.stdout + done.stderr, time.monotonic() - start)
    with _RUNS_LOCK:
        RUNS.append(run)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"run-{PHASE}{len(RUNS):02d}.log").write_text(" ".join(argv) + "\n" + run.output)
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


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat (idle and iowait are idle)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class Load:
    """Clients sending requests in a loop, as fast as they can (no pause), until stopped or after `limit`.

    `target` is "lb" (the front door) or a web host's name (its own nginx, as a group with one host is
    reached). Each client cycles GET /version, GET /api/models and a prediction with a trained model on
    its own keep-alive connection (with `reads_only`, GET /api/models/{id} in place of the prediction, a
    POST). Any status other than 200, and any transport error, is a failure,
    counted by reason ("503 /api/models", "ReadTimeout", ...). `busy` is the machine's CPU use while the
    load ran (0..1), to show that it saturated the machine."""

    model_id: int
    target: str = "lb"
    clients: int = 64
    pause: float = 0.0
    limit: int = 1_000_000
    reads_only: bool = False
    results: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    releases: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    busy: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _started: tuple[float, int, int] = (0.0, 0, 0)

    def _open(self) -> httpx.Client:
        if self.target == "lb":
            return lb_client()
        return host_client(self.target)

    def _send(self, client: httpx.Client, turn: int) -> httpx.Response:
        extensions = {} if self.target == "lb" else {"sni_hostname": DOMAIN}
        if turn % 3 == 0:
            return client.get("/version", extensions=extensions)
        if turn % 3 == 1:
            return client.get("/api/models?limit=5", extensions=extensions)
        if self.reads_only:
            return client.get(f"/api/models/{self.model_id}", extensions=extensions)
        body = {"inputs": [[0.5, 0.5], [-0.5, 0.5]]}
        return client.post(f"/api/models/{self.model_id}/predict", json=body, extensions=extensions)

    def _client(self) -> None:
        with self._open() as client:
            turn = 0
            while not self._stop.is_set():
                with self._lock:
                    if sum(self.results.values()) >= self.limit:
                        return
                path = ("/version", "/api/models", "/model" if self.reads_only else "/predict")[turn % 3]
                try:
                    response = self._send(client, turn)
                    ok = response.status_code == 200
                    reason = f"{response.status_code} {response.request.url.path}"
                    detail = f"{reason}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    ok, reason = False, f"{type(error).__name__} {path}"
                    detail = f"{reason} at {time.monotonic() - self._started[0]:.1f} s: {error}"
                with self._lock:
                    self.results["ok" if ok else "failed"] += 1
                    if not ok:
                        self.reasons[reason] += 1
                        if len(self.failures) < 50:
                            self.failures.append(detail)
                    elif turn % 3 == 0:
                        self.releases[response.json()["release_id"]] += 1
                turn += 1
                if self.pause:
                    self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self._started = (time.monotonic(), *cpu_busy())
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        start, busy, total = self._started
        now_busy, now_total = cpu_busy()
        self.seconds = time.monotonic() - start
        self.busy = (now_busy - busy) / max(now_total - total, 1)

    @property
    def total(self) -> int:
        return sum(self.results.values())

    def figures(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "clients": self.clients,
            "requests": self.total,
            "failed": self.results["failed"],
            "failed_by_reason": dict(self.reasons),
            "requests_per_s": round(self.total / max(self.seconds, 0.001), 1),
            "cpu_busy": round(self.busy, 3),
            "seconds": round(self.seconds, 1),
            "releases_seen": dict(self.releases),
        }


@contextmanager
def saturating_load(model_id: int, *, front_door: bool = True, host_clients: int = 8) -> Iterator[list[Load]]:
    """The load that saturates this machine: 64 clients through the load balancer (unless front_door is
    false) and host_clients straight at web1's own nginx, standing for a group with one host."""
    loads = ([Load(model_id, "lb", clients=64)] if front_door else []) + [Load(model_id, "web1", clients=host_clients)]
    with ExitStack() as stack:
        yield [stack.enter_context(load) for load in loads]


@contextmanager
def steady_load(model_id: int) -> Iterator[list[Load]]:
    """A paced load (each client pauses 50 ms): 20 clients through the load balancer, 4 at web1's nginx."""
    loads = [Load(model_id, "lb", clients=20, pause=0.05), Load(model_id, "web1", clients=4, pause=0.05)]
    with ExitStack() as stack:
        yield [stack.enter_context(load) for load in loads]


def assert_no_failure(loads: list[Load]) -> None:
    for load in loads:
        assert load.total >= 300, f"only {load.total} requests reached {load.target}"
        assert load.results["failed"] == 0, (load.target, dict(load.reasons), load.failures[:10])


def docker_exec(host: str, *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["docker", "exec", "-i", host, *argv], input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{host}: {' '.join(argv)}: {done.stderr}"
    return done.stdout


def live_slot(host: str) -> str:
    """The slot nginx sends this host's traffic to (the `live` link the app role keeps)."""
    return docker_exec(host, "readlink", "/opt/nnp/slots/live").strip()


def slot_started(host: str, slot: str) -> str:
    """When the slot's service last entered the active state (changes with every start)."""
    unit = f"nnp-app@{slot}.service"
    return docker_exec(host, "systemctl", "show", unit, "--property=ActiveEnterTimestampMonotonic").strip()


HAPROXY_STATS = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
    "s.sendall(b'show stat\\n'); print(s.makefile().read())"
)


def haproxy_servers() -> dict[str, dict[str, str]]:
    """Status and UP->DOWN transitions (chkdown) of each app server, from HAProxy's runtime API on lb."""
    lines = docker_exec("lb", "python3", "-c", HAPROXY_STATS).strip().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        row["svname"]: {"status": row["status"], "chkdown": row["chkdown"]}
        for row in rows
        if row["pxname"] == "app" and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def edit_fact_cache(changes: dict[str, str]) -> None:
    """Make the controller's fact cache lie about what the web hosts run (ansible_local.nnp_app)."""
    for host in HOSTS:
        # ansible-core 2.19 names the files <schema prefix>_<host> (s1_web1).
        paths = [path for path in FACT_CACHE.glob(f"*{host}") if path.name.split("_", 1)[-1] == host]
        assert len(paths) == 1, f"no single fact cache file for {host}: {list(FACT_CACHE.iterdir())}"
        path = paths[0]
        # The facts are a JSON document in the "__payload__" string of the file's JSON.
        wrapper = json.loads(path.read_text())
        facts = json.loads(wrapper["__payload__"])
        facts.setdefault("ansible_local", {}).setdefault("nnp_app", {}).update(changes)
        wrapper["__payload__"] = json.dumps(facts)
        path.write_text(json.dumps(wrapper))


def aws(service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{LOCAL['local_moto_port']}",
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto takes any key
    )


def secrets_manager() -> Any:
    return aws("secretsmanager")


def rds() -> Any:
    return aws("rds")


def secret(name: str) -> dict[str, Any]:
    return dict(json.loads(secrets_manager().get_secret_value(SecretId=name)["SecretString"]))


def operator_token() -> str:
    """The app's operator token, as provisioning generated it (aws_app_secrets)."""
    return str(secrets_manager().get_secret_value(SecretId="nnp/local/app-operator")["SecretString"])


def database_state() -> dict[str, Any]:
    """Tables, columns, migration head and row counts of the app's schema, as the app's login sees them."""
    login = secret("nnp/local/rds-app")
    with psycopg.connect(
        host="127.0.0.1",
        port=LOCAL["local_db_port"],
        dbname=login["dbname"],
        user=login["username"],
        password=login["password"],
        sslmode="require",
    ) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        ).fetchall()
        tables = sorted({(schema, table) for schema, table, _, _ in columns})
        counts = {
            f"{schema}.{table}": conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]  # noqa: S608
            for schema, table in tables
        }
        head = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return {"columns": columns, "counts": counts, "head": head}


def cut_app_connections() -> int:
    """Terminates every connection of the app's login (as the master, who may act for it); how many."""
    master, app = secret("nnp/local/rds-master"), secret("nnp/local/rds-app")
    with psycopg.connect(
        host="127.0.0.1",
        port=LOCAL["local_db_port"],
        dbname=app["dbname"],
        user=master["username"],
        password=master["password"],
        sslmode="require",
    ) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s", (app["username"],)
        ).fetchone()
    return int(row[0]) if row else 0


def deploy(source: Path, *extra: str, env: dict[str, str] | None = None) -> Run:
    return playbook("site.yml", "--tags", "deploy", "-e", f"app_source_dir={source}", *extra, env=env)


def start_long_training() -> dict[str, Any]:
    """A training that outlasts a rollout under the saturating load, checkpointing every 2 s: 200,000 steps
    (1000 epochs of 200 batches). Measured: about 730 steps/s under the load, so about 4.5 min, while the
    rollout restarts the workers after about 2 and 2.75 min."""
    with lb_client(owner=True) as client:
        body = {"name": f"long-{time.time_ns()}", "dataset": "xor", "dataset_params": {"n_samples": 1000}}
        model = client.post("/api/models", json=body)
        assert model.status_code == 201, model.text
        session = client.post(
            f"/api/models/{model.json()['id']}/sessions",
            json={"epochs": 1000, "batch_size": 5, "device": "cpu", "checkpoint_interval_seconds": 2},
        )
        assert session.status_code == 202, session.text
        deadline = time.monotonic() + 60
        while (current := client.get(f"/api/sessions/{session.json()['id']}").json())["status"] == "queued":
            assert time.monotonic() < deadline, f"no worker took the training: {current}"
            time.sleep(0.5)
        assert current["status"] == "running", current
        return current


def wait_for_training(session_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with lb_client() as client:
        while (current := client.get(f"/api/sessions/{session_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"the training did not finish in {timeout} s: {current}"
            time.sleep(1)
    return current


def training_epochs(session_id: int) -> list[int]:
    """The epochs of the session's metric rows, in order (duplicates and gaps show)."""
    with lb_client() as client:
        metrics = client.get(f"/api/sessions/{session_id}/metrics")
        assert metrics.status_code == 200, metrics.text
        return [item["epoch"] for item in metrics.json()["items"]]


def prometheus(path: str, **params: str) -> Any:
    """The `data` of an answer of mon1's Prometheus HTTP API (/api/v1/<path>)."""
    answer = httpx.get(f"{PROMETHEUS_URL}/api/v1/{path}", params=params, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def notifications() -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, Alertmanager's webhook payload) of every notification the receiver got."""
    if not ALERTS_FILE.exists():
        return []
    lines = [json.loads(line) for line in ALERTS_FILE.read_text().splitlines() if line.strip()]
    return [(line["received"], line["body"]) for line in lines]


def wait_for_alert(name: str, instance: str, status: str, *, since: float, timeout: float) -> dict[str, Any]:
    """The first notification that arrived after SINCE (a time.time()) in which alert NAME of INSTANCE has
    STATUS (firing or resolved), with its arrival time as "received"."""
    deadline = time.monotonic() + timeout
    while True:
        for received, body in notifications():
            if received < since:
                continue
            for alert in body.get("alerts", []):
                labels = alert.get("labels", {})
                if (labels.get("alertname"), labels.get("instance"), alert.get("status")) == (name, instance, status):
                    return {**alert, "received": received}
        got = [(a["labels"].get("alertname"), a["labels"].get("instance"), a["status"]) for _, b in notifications()
               for a in b.get("alerts", [])]  # fmt: skip
        assert time.monotonic() < deadline, f"no {status} {name} for {instance} at the webhook in {timeout} s: {got}"
        time.sleep(0.5)
