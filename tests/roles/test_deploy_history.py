"""The deploy_history role and its deploy_record module, run for real with ansible-playbook against localhost:
the record of each run, its notifications (a webhook on loopback, SNS in moto with a queue subscribed), the
node exporter textfile, `show`, and the runs that fail, die or cannot reach the history host.

Every host of the test inventory is this machine (connection local); the history lives under tmp_path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[2]

INVENTORY = """\
localhost ansible_connection=local
# Nothing listens on port 1: a history host that cannot be reached.
gone ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh

[web]
app2 ansible_connection=local
app1 ansible_connection=local
"""

# One run as the playbooks wire it: lock, start, work (which may fail on one host: rescue with the failure,
# twice, as two rescues of one run would), end, unlock.
RUN = """\
- name: Change the fleet
  hosts: web
  gather_facts: false
  tasks:
    - name: Take the deploy lock
      ansible.builtin.include_role: {name: deploy_lock, tasks_from: acquire}
    - name: Record the start
      ansible.builtin.include_role: {name: deploy_history, tasks_from: start}
      vars:
        deploy_history_release: "{{ release_at_start | default('rel-1') }}"
    - name: Work
      block:
        - name: Pass the gate
          ansible.builtin.fail:
            msg: the gate said no
          when: fail_at | default('') == inventory_hostname
      rescue:
        - name: Record the failure
          ansible.builtin.include_role: {name: deploy_history, tasks_from: finish}
          vars:
            deploy_history_result_of_run: failed
            deploy_history_failed_host: "{{ inventory_hostname }}"
            deploy_history_failed_check: "{{ ansible_failed_task.name }}: {{ ansible_failed_result.msg }}"
        - name: Record it again, as a later rescue of the same run would
          ansible.builtin.include_role: {name: deploy_history, tasks_from: finish}
          vars:
            deploy_history_result_of_run: failed
            deploy_history_failed_host: elsewhere
            deploy_history_failed_check: a later check
        - name: Stop
          ansible.builtin.fail:
            msg: stopped
    - name: Record the end
      ansible.builtin.include_role: {name: deploy_history, tasks_from: finish}
      vars:
        deploy_history_release: "{{ release_at_end | default('') }}"
    - name: Give back the deploy lock
      ansible.builtin.include_role: {name: deploy_lock, tasks_from: release}
"""

# A run that dies after its start (the controller killed): no finish.
DIES = """\
- name: Change the fleet and die
  hosts: web
  gather_facts: false
  tasks:
    - name: Record the start
      ansible.builtin.include_role: {name: deploy_history, tasks_from: start}
      vars:
        deploy_history_id: "{{ run_id }}"
"""

SHOW = """\
- name: Show the history
  hosts: web
  gather_facts: false
  tasks:
    - name: Print it
      ansible.builtin.include_role: {name: deploy_history, tasks_from: show}
"""


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/deploys", Receiver.received
    server.shutdown()


@pytest.fixture(scope="module")
def sns() -> Iterator[dict[str, Any]]:
    """moto as SNS and SQS: the alarm topic, with a queue subscribed to it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="eu-central-1",
    )
    client, sqs = session.client("sns", endpoint_url=endpoint), session.client("sqs", endpoint_url=endpoint)
    topic = client.create_topic(Name="nnp-test-alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def messages() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while answer := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages"):
            found += [json.loads(m["Body"]) for m in answer]
            sqs.delete_message_batch(
                QueueUrl=queue, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in answer]
            )
        return found

    yield {"endpoint": endpoint, "topic": topic, "messages": messages}
    server.stop()


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.history = tmp_path / "history" / "history.jsonl"
        self.textfile_dir = tmp_path / "textfile"
        self.textfile_dir.mkdir()
        self.inventory = tmp_path / "hosts.ini"
        self.inventory.write_text(INVENTORY)

    def run(self, playbook: str, **variables: object) -> subprocess.CompletedProcess[str]:
        path = self.tmp / f"play-{len(list(self.tmp.glob('play-*.yml')))}.yml"
        path.write_text(playbook)
        extra = {
            "deploy_lock_host": "localhost",
            "deploy_lock_path": str(self.tmp / "lock" / "lease.json"),
            "deploy_lock_become": False,
            "deploy_history_host": "localhost",
            "deploy_history_path": str(self.history),
            "deploy_history_become": False,
            "deploy_history_textfile_dir": str(self.textfile_dir),
            "deploy_history_env_name": "test",
            "ansible_python_interpreter": sys.executable,
            **variables,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "AWS_"))}
        env.update(
            {
                "USER": "alice",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
                "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_CACHE_PLUGIN": "memory",
                "ANSIBLE_LOCAL_TEMP": str(self.tmp / ".ansible-tmp"),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.tmp / ".ansible-cp"),
                "ANSIBLE_TIMEOUT": "5",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory), str(path)]
        argv += ["-e", json.dumps(extra)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.tmp, timeout=300, check=False)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.history.read_text().splitlines()]

    def metrics(self) -> dict[str, float]:
        text = (self.textfile_dir / "nnp_deploy.prom").read_text()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def printed(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines `show` printed (the callback prints its msg as a YAML block)."""
    section = result.stdout.split("TASK [deploy_history : Print them]", 1)[1].split("\n\n")[0]
    body = section.split("=>", 1)[1]
    return str(yaml.safe_load(body)["msg"]).splitlines()


def recap_changed(result: subprocess.CompletedProcess[str]) -> int:
    return sum(int(part.split("=")[1]) for part in result.stdout.split() if part.startswith("changed="))


def test_a_run_is_recorded_notified_at_start_and_end_and_counted(lab: Lab, webhook, sns) -> None:
    url, received = webhook
    result = lab.run(
        RUN, deploy_history_webhook_url=url, deploy_history_sns_topic_arn=sns["topic"],
        deploy_history_sns_region="eu-central-1", deploy_history_aws_endpoint_url=sns["endpoint"],
        release_at_end="",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap_changed(result) == 0, "recording and notifying must not count as changes to the fleet"
    [record] = lab.records()
    assert record["kind"] == "deploy"
    assert record["release"] == "rel-1"
    assert record["user"] == "alice"
    assert record["hosts"] == ["app1", "app2"]
    assert record["env"] == "test"
    assert record["result"] == "succeeded"
    assert record["seconds"] >= 0
    assert record["finished_at_epoch"] >= record["started_at_epoch"]
    assert (record["failed_host"], record["failed_check"]) == ("", "")
    assert len(record["id"]) == 20  # the deploy lock's token
    assert oct(lab.history.stat().st_mode & 0o777) == "0o600"
    assert oct(lab.history.parent.stat().st_mode & 0o777) == "0o700"

    assert [(n["source"], n["event"]) for n in received] == [("nnp-deploy", "started"), ("nnp-deploy", "succeeded")]
    assert received[0]["subject"] == "[nnp test] deploy started: rel-1"
    assert received[1]["text"].startswith("Deploy of rel-1 succeeded after ")
    assert "Run by alice from " in received[1]["text"]
    assert received[1]["text"].rstrip().endswith("on app1, app2.")
    assert received[1]["record"]["id"] == record["id"]
    published = sns["messages"]()
    subjects = [m["Subject"] for m in published]
    assert subjects == ["[nnp test] deploy started: rel-1", "[nnp test] deploy succeeded: rel-1"]
    assert published[1]["Message"] == received[1]["text"]

    metrics = lab.metrics()
    assert metrics['nnp_deploy_running{kind="deploy"}'] == 0
    assert metrics['nnp_deploy_runs{kind="deploy",result="succeeded"}'] == 1
    assert metrics['nnp_deploy_started_timestamp_seconds{kind="deploy"}'] == record["started_at_epoch"]
    key = 'nnp_deploy_finished_timestamp_seconds{kind="deploy",release="rel-1",result="succeeded"}'
    assert metrics[key] == record["finished_at_epoch"]


def test_a_failure_names_its_host_and_check_once_and_the_first_finish_wins(lab: Lab, webhook) -> None:
    url, received = webhook
    result = lab.run(RUN, deploy_history_webhook_url=url, fail_at="app1", release_at_end="rel-2")
    assert result.returncode != 0
    [record] = lab.records()
    assert record["result"] == "failed"
    assert record["failed_host"] == "app1"
    assert record["failed_check"] == "Pass the gate: the gate said no"
    assert [n["event"] for n in received] == ["started", "failed"], received
    text = received[1]["text"]
    assert "Deploy of rel-1 FAILED after " in text
    assert "at app1: Pass the gate: the gate said no." in text
    # app2 went on to "Record the end": the failure stays, and nobody is told the run succeeded.
    assert lab.metrics()['nnp_deploy_runs{kind="deploy",result="failed"}'] == 1


def test_a_release_known_only_at_the_end_fills_the_record(lab: Lab) -> None:
    result = lab.run(RUN, release_at_start="", release_at_end="rel-9")
    assert result.returncode == 0, result.stdout[-3000:]
    assert lab.records()[0]["release"] == "rel-9"


def test_a_run_that_died_is_marked_abandoned_by_the_next_and_stuck_meanwhile(lab: Lab) -> None:
    assert lab.run(DIES, run_id="dead-run-0000000001").returncode == 0
    assert lab.records()[0]["result"] == "running"
    assert lab.metrics()['nnp_deploy_running{kind="deploy"}'] == 1  # what NnpDeployStuck reads
    assert lab.run(RUN).returncode == 0
    dead, new = lab.records()
    assert (dead["id"], dead["result"], dead["finished_at"]) == ("dead-run-0000000001", "abandoned", None)
    assert new["result"] == "succeeded"
    metrics = lab.metrics()
    assert metrics['nnp_deploy_running{kind="deploy"}'] == 0
    assert metrics['nnp_deploy_runs{kind="deploy",result="abandoned"}'] == 1


def test_only_the_newest_records_are_kept(lab: Lab) -> None:
    for number in range(4):
        assert lab.run(DIES, run_id=f"run-{number}", deploy_history_keep=3).returncode == 0
    assert [r["id"] for r in lab.records()] == ["run-1", "run-2", "run-3"]


def test_show_prints_one_line_per_run_oldest_first(lab: Lab) -> None:
    empty = lab.run(SHOW)
    assert empty.returncode == 0, empty.stdout[-3000:]
    assert printed(empty) == [f"No run recorded yet in {lab.history} on localhost"]
    assert lab.run(RUN, deploy_history_kind="maintenance", release_at_start="on").returncode == 0
    assert lab.run(RUN, fail_at="app2").returncode != 0
    result = lab.run(SHOW, deploy_history_count=5)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = printed(result)
    assert len(lines) == 2, result.stdout
    assert "  maintenance  on  succeeded in " in lines[0]
    assert "  deploy  rel-1  failed in " in lines[1]
    assert lines[1].endswith("| failed at app2: Pass the gate: the gate said no")


def test_an_unreachable_history_host_or_webhook_never_stops_the_run(lab: Lab) -> None:
    result = lab.run(RUN, deploy_history_host="gone", deploy_history_webhook_url=f"http://127.0.0.1:{free_port()}/")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Could not record this run in" in result.stdout
    assert "The started notification did not reach http://127.0.0.1:" in result.stdout
    assert "The succeeded notification did not reach http://127.0.0.1:" in result.stdout
    assert not lab.history.exists()
