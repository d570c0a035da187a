"""The provisioning tests' harness: a moto server (the AWS API) and a playbook runner.

The server listens on a free loopback port and records every request (moto's recorder), so a test can
tell which AWS actions a run called and through which endpoint. The playbooks get the server through
`aws_endpoint_url` as http://127.0.0.1:PORT; the dynamic inventory through AWS_URL as
http://localhost:PORT. The Host header of each recorded request therefore says who sent it, which
proves that every playbook call went through aws_endpoint_url and that a refused run sent none.
Each run signs with an access key id of its own, so the calls of overlapping runs (staging and
production at once) are told apart; query-protocol calls keep their parameters (tags on creation).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.session
import urllib3

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
MOTO_VARS = Path(__file__).with_name("moto-vars.yml")
# The IAM policies of each environment (scripts/iam_policies.py writes them).
IAM_DIR = REPO_ROOT / "docs" / "iam"
REGION = "eu-central-1"
# Long, unusual dummy credentials: Ansible masks every string equal to a no_log value in its output,
# so a short value such as "x" would blank out unrelated text.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAPROVISIONTESTS01",
    "AWS_SECRET_ACCESS_KEY": "provision-tests-dummy-secret-access-key",
}
# Seconds after which moto marks a DNS-validated ACM certificate ISSUED (its default is 60; AWS takes
# minutes and needs the records in public DNS). Short, but long enough that a run sees PENDING_VALIDATION.
ACM_VALIDATION_WAIT = 2
# Services whose API is REST (method + path) rather than an Action parameter or a target header.
REST_SERVICES = {"route53"}
# SigV4 signing names that differ from the IAM action prefix.
IAM_PREFIX = {"monitoring": "cloudwatch"}
SSH_ALLOWED = ["203.0.113.0/24"]
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)",
    re.MULTILINE,
)
# A role's task is shown as "role : name"; tests refer to tasks by name alone.
TASK = re.compile(r"^TASK \[(?:[a-z0-9_.]+ : )?(?P<name>.*)\] \*+$")


@dataclass(frozen=True)
class ApiCall:
    action: str  # IAM form, e.g. "ec2:RunInstances"
    host: str  # Host header: which endpoint setting the caller used
    key: str = ""  # access key id that signed it: which run sent it (each run signs with its own)
    # Parameters of a query-protocol request (EC2, RDS, ELB, SNS...), e.g. ("TagSpecification.1.Tag.1.Key", "Env").
    params: tuple[tuple[str, str], ...] = ()

    def tag_specifications(self) -> dict[str, dict[str, str]]:
        """EC2 tag-on-create: the tags of each resource type in the request's TagSpecification.N."""
        values = dict(self.params)
        out: dict[str, dict[str, str]] = {}
        for key, kind in values.items():
            if match := re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", key):
                spec = f"TagSpecification.{match[1]}.Tag"
                count = sum(1 for name in values if re.fullmatch(rf"{re.escape(spec)}\.\d+\.Key", name))
                pairs = range(1, count + 1)
                out[kind] = {values[f"{spec}.{n}.Key"]: values.get(f"{spec}.{n}.Value", "") for n in pairs}
        return out


@dataclass
class Run:
    args: list[str]
    rc: int
    output: str
    seconds: float
    calls: list[ApiCall]
    cpu_seconds: float = 0.0  # user + system time of the Ansible process and its modules

    @property
    def recap(self) -> dict[str, int]:
        match = RECAP.search(self.output)
        assert match, f"no PLAY RECAP in the output of {self.args}:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in match.groupdict().items()}

    @property
    def changed_tasks(self) -> set[str]:
        """Names of the tasks that reported a change."""
        task, changed = "", set()
        for line in self.output.splitlines():
            if match := TASK.match(line):
                task = match["name"]
            elif line.startswith("changed:"):
                changed.add(task)
        return changed

    def playbook_calls(self, aws: MotoServer) -> list[ApiCall]:
        """Calls sent through aws_endpoint_url (the inventory's own calls use AWS_URL)."""
        return [call for call in self.calls if call.host == aws.playbook_host]


@functools.cache
def rest_routes(service: str) -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path pattern, operation) of a REST service (Route 53), most literal path first."""
    if service not in REST_SERVICES:
        return []
    model = botocore.session.get_session().get_service_model(service)
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        path = http["requestUri"].split("?", 1)[0].rstrip("/") or "/"
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        routes.append((http["method"], re.compile(pattern + "/?"), name))
    return sorted(routes, key=lambda route: -len(route[1].pattern.replace("[^/]+", "")))


def rest_operation(service: str, method: str, path: str) -> str | None:
    for route_method, pattern, name in rest_routes(service):
        if route_method == method and pattern.fullmatch(path):
            return name
    return None


def parse_call(entry: dict[str, Any]) -> ApiCall | None:
    """The IAM action of one request in moto's recording (query, JSON and CBOR protocols)."""
    url = urlsplit(entry["url"])
    if url.path.startswith("/moto-api"):
        return None
    headers = {key.lower(): value for key, value in entry["headers"].items()}
    scope = re.search(r"Credential=([^/]+)/\d{8}/[^/]+/([^/]+)/aws4_request", headers.get("authorization", ""))
    key, service = (scope.group(1), scope.group(2)) if scope else ("", "unsigned")
    if target := headers.get("x-amz-target"):
        operation = target.rsplit(".", 1)[-1]
    elif "/operation/" in url.path:
        operation = url.path.rsplit("/", 1)[-1]
    elif rest := rest_operation(service, entry.get("method", ""), url.path):
        operation = rest
    else:
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        params = parse_qs(url.query) | parse_qs(body)
        operation = params.get("Action", ["unknown"])[0]
        flat = tuple((key, value) for key, values in params.items() for value in values)
        return ApiCall(f"{IAM_PREFIX.get(service, service)}:{operation}", headers.get("host", ""), key, flat)
    return ApiCall(f"{IAM_PREFIX.get(service, service)}:{operation}", headers.get("host", ""), key)


def policy_actions(env: str, kind: str = "provision") -> set[str]:
    """Every action docs/iam/<env>-<kind>.json allows (all its statements are Allow)."""
    policy = json.loads((IAM_DIR / f"{env}-{kind}.json").read_text())
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoServer:
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    runs: list[Run] = field(default_factory=list)
    # Figures printed at the end of the session (timings, resource counts).
    measurements: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keys: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def playbook_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def inventory_endpoint(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def recording(self) -> Path:
        return self.workdir / "moto-recording.jsonl"

    def start(self) -> None:
        self.port = free_port()
        env = os.environ | {
            "MOTO_RECORDER_FILEPATH": str(self.recording),
            "MOTO_ACM_VALIDATION_WAIT": str(ACM_VALIDATION_WAIT),
        }
        log = (self.workdir / "moto-server.log").open("wb")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.api("reset")
                break
            except (OSError, urllib3.exceptions.HTTPError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: see {self.workdir / 'moto-server.log'}") from None
                time.sleep(0.2)
        self.api("recorder/reset-recording")
        self.api("recorder/start-recording")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str) -> None:
        response = urllib3.request("POST", f"{self.endpoint}/moto-api/{path}", timeout=10, retries=False)
        if response.status != 200:
            raise OSError(f"moto-api/{path} answered {response.status}")

    def reset(self) -> None:
        """Forget every resource (the recording stays)."""
        self.api("reset")

    def recorded(self) -> list[ApiCall]:
        if not self.recording.exists():
            return []
        with self.recording.open() as lines:
            calls = (parse_call(json.loads(line)) for line in lines if line.strip())
            return [call for call in calls if call]

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def ansible(self, command: str, *args: str, env: dict[str, str] | None = None) -> Run:
        """Run an Ansible CLI from the repository root against this server, recording its API calls."""
        clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
        # An access key id of its own: runs overlap (Background), and the recording tells them apart by it.
        with self._lock:
            self._keys += 1
            access_key = f"AKIAPROVISIONRUN{self._keys:04d}"
        run_env = clean | CREDENTIALS | {"AWS_ACCESS_KEY_ID": access_key}
        run_env |= {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_URL": self.inventory_endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            # Per-task timings at the end of each run: where the time goes when a run is slow.
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        run_env |= env or {}
        before = len(self.recorded())
        started = time.monotonic()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            [str(VENV_BIN / command), *args],
            cwd=REPO_ROOT,
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
        )
        seconds = time.monotonic() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
        calls = [call for call in self.recorded()[before:] if call.key == access_key]
        run = Run(list(args), result.returncode, result.stdout, seconds, calls, cpu)
        with self._lock:
            self.runs.append(run)
            number = len(self.runs)
        (self.workdir / f"run-{number:02d}.log").write_text(
            f"{command} {' '.join(args)}\n{seconds:.1f} s, {cpu:.1f} s CPU\n\n{run.output}"
        )
        return run

    def playbook(
        self,
        playbook: str,
        inventory: str = "staging",
        extra_vars: dict[str, Any] | None = None,
        *,
        key: Path,
        verbosity: str = "-v",
        cli_args: tuple[str, ...] = (),
        static_inventory: bool = False,
        expect_success: bool = True,
    ) -> Run:
        """ansible-playbook with the test settings: endpoint, moto-vars.yml, a test key and SSH range.

        static_inventory: only hosts.yml and group_vars, without the aws_ec2.yml dynamic inventory, so a
        run that must not reach AWS sends no request at all (and starts faster).
        """
        test_vars = {
            "aws_endpoint_url": self.endpoint,
            "ec2_public_key_file": str(key),
            "ssh_allowed_cidrs": SSH_ALLOWED,
        }
        run = self.ansible(
            "ansible-playbook",
            "-i",
            f"inventories/{inventory}/hosts.yml" if static_inventory else f"inventories/{inventory}",
            playbook,
            "-e",
            f"@{MOTO_VARS}",
            "-e",
            json.dumps(test_vars | (extra_vars or {})),
            verbosity,
            *cli_args,
        )
        if expect_success:
            assert run.rc == 0, f"{playbook} failed (rc {run.rc}):\n{run.output[-6000:]}"
        return run


class Background:
    """A playbook run in a thread, so that work on the other environment overlaps it (2-core machines).

    The environments share no resource, only the moto server, which serves requests in parallel.
    """

    def __init__(self, work: Callable[[], Run]) -> None:
        self._work = work
        self._run: Run | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, daemon=True)
        self._thread.start()

    def _target(self) -> None:
        try:
            self._run = self._work()
        except BaseException as error:  # re-raised in the test that waits for the run
            self._error = error

    def result(self, timeout: float = 600) -> Run:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the background playbook run did not finish")
        if self._error:
            raise self._error
        assert self._run
        return self._run
