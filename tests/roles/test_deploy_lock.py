"""The deploy_lock role and its deploy_lease module, run for real with ansible-playbook against localhost.

Every host of the test inventory is this machine (connection local); the lease lives under tmp_path, so no
become. Each test states one promise the lead relies on when wiring the lock into the playbooks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "roles" / "deploy_lock" / "library" / "deploy_lease.py"

# app2 is listed before app1: the default lock host is the first app host by name, not by listing order.
INVENTORY = """\
localhost ansible_connection=local
other ansible_connection=local
# Nothing listens on port 1: a lock host that cannot be reached.
gone ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh

[web]
app2 ansible_connection=local
app1 ansible_connection=local
"""

# Take the lock, record what the role returned, then "change the fleet" (a marker a refused run must not reach).
ACQUIRE = """\
- name: Change the fleet
  hosts: web
  gather_facts: false
  tasks:
    - name: Take the deploy lock
      ansible.builtin.include_role:
        name: deploy_lock
        tasks_from: acquire
    - name: Record the lock result
      ansible.builtin.copy:
        content: "{{ deploy_lock_result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      delegate_to: localhost
      run_once: true
      check_mode: false
      changed_when: false
    - name: Change the fleet
      ansible.builtin.debug:
        msg: FLEET CHANGED
"""

RELEASE = """\
- name: Give the lock back
  hosts: web
  gather_facts: false
  tasks:
    - name: Give back the deploy lock
      ansible.builtin.include_role:
        name: deploy_lock
        tasks_from: release
    - name: Record the release result
      ansible.builtin.copy:
        content: "{{ deploy_lock_release_result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      delegate_to: localhost
      run_once: true
      check_mode: false
      changed_when: false
"""

# One run of three plays, as deploy.yml is: the second play runs on a host the first did not include.
WHOLE_RUN = """\
- name: Stage
  hosts: web
  gather_facts: false
  tasks:
    - name: Take the deploy lock
      ansible.builtin.include_role:
        name: deploy_lock
- name: Migrate elsewhere
  hosts: other
  gather_facts: false
  tasks:
    - name: Renew the deploy lock
      ansible.builtin.include_role:
        name: deploy_lock
        tasks_from: acquire
    - name: Record the lock result
      ansible.builtin.copy:
        content: "{{ deploy_lock_result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
      changed_when: false
- name: Finish
  hosts: web
  gather_facts: false
  tasks:
    - name: Give back the deploy lock
      ansible.builtin.include_role:
        name: deploy_lock
        tasks_from: release
"""

# A deploy that fails after losing its lease: the rescue's release must not hide the real failure.
RESCUE = """\
- name: Deploy that breaks
  hosts: web
  gather_facts: false
  tasks:
    - name: Take the deploy lock
      ansible.builtin.include_role:
        name: deploy_lock
    - name: Roll out
      block:
        - name: Lose the lease (someone removed it by hand)
          ansible.builtin.file:
            path: "{{ deploy_lock_path }}"
            state: absent
          delegate_to: localhost
          run_once: true
        - name: Fail the rollout
          ansible.builtin.fail:
            msg: rollout broke on purpose
      rescue:
        - name: Give back the deploy lock
          ansible.builtin.include_role:
            name: deploy_lock
            tasks_from: release
        - name: Record the release result
          ansible.builtin.copy:
            content: "{{ deploy_lock_release_result | to_json }}"
            dest: "{{ result_file }}"
            mode: "0600"
          delegate_to: localhost
          run_once: true
          changed_when: false
        - name: Stop with the original failure
          ansible.builtin.fail:
            msg: "Rollout failed: {{ ansible_failed_result.msg }}"
"""

TOKEN_RE = re.compile(r"^[a-z0-9]{20}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
REFUSAL_TAIL = "wait, or break it with -e deploy_lock_break=true if that run is dead"


class Lab:
    """A lease path, an inventory and a way to run playbooks against them, all under tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.lease = tmp_path / "locks" / "lease.json"
        self.result = tmp_path / "result.json"
        self.inventory = tmp_path / "hosts.ini"
        self.inventory.write_text(INVENTORY)

    def command(
        self,
        playbook: str,
        *,
        user: str = "alice",
        check: bool = False,
        lock_host: str | None = "localhost",
        **variables: object,
    ) -> tuple[list[str], dict[str, str]]:
        path = self.tmp / f"play-{len(list(self.tmp.glob('play-*.yml')))}.yml"
        path.write_text(playbook)
        extra = {
            **({"deploy_lock_host": lock_host} if lock_host else {}),
            "deploy_lock_path": str(self.lease),
            "deploy_lock_become": False,
            "ansible_python_interpreter": sys.executable,
            "result_file": str(self.result),
            **variables,
        }
        # The holder comes from the environment: make it ours, whatever CI runs this under.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
        env.update(
            {
                "USER": user,
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
                "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_CACHE_PLUGIN": "memory",
                "ANSIBLE_LOCAL_TEMP": str(self.tmp / ".ansible-tmp"),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.tmp / ".ansible-cp"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        args = ["ansible-playbook", "-i", str(self.inventory), "-e", json.dumps(extra), str(path)]
        if check:
            args.insert(1, "--check")
        return args, env

    def run(self, playbook: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.result.unlink(missing_ok=True)
        args, env = self.command(playbook, **kwargs)
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)

    def read_lease(self) -> dict:
        return json.loads(self.lease.read_text())

    def read_result(self) -> dict:
        return json.loads(self.result.read_text())

    def write_lease(self, lease: dict) -> bytes:
        self.lease.parent.mkdir(mode=0o700, exist_ok=True)
        self.lease.write_text(json.dumps(lease))
        return self.lease.read_bytes()


def output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with runs of white space made one space (the yaml callback wraps long messages)."""
    return " ".join((result.stdout + result.stderr).split())


def assert_ok_and_unchanged(result: subprocess.CompletedProcess[str]) -> None:
    out = output(result)
    assert result.returncode == 0, out
    # The lease is bookkeeping: no host reports a change (a redeploy of the live release stays changed=0).
    assert re.findall(r"changed=(\d+)", out), out
    assert set(re.findall(r"changed=(\d+)", out)) == {"0"}, out


def git_commit() -> str:
    """What the role's default holder should say: this repository's short commit, or unknown without git."""
    if shutil.which("git") is None:
        return "unknown"
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def test_acquire_writes_a_private_lease_naming_the_holder(lab):
    result = lab.run(ACQUIRE)
    assert_ok_and_unchanged(result)
    assert "FLEET CHANGED" in output(result)

    lease = lab.read_lease()
    assert TOKEN_RE.match(lease["token"]), lease
    assert lease["holder"] == {
        "user": "alice",
        "controller": socket.gethostname(),
        "commit": git_commit(),
        "playbook": "Change the fleet",
    }
    for key in ("started_at", "renewed_at", "expires_at"):
        assert ISO_RE.match(lease[key]), lease
        assert lease[key] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lease[key + "_epoch"]))
    assert lease["expires_at_epoch"] - lease["renewed_at_epoch"] == 1800
    assert abs(lease["started_at_epoch"] - time.time()) < 120
    assert lab.lease.stat().st_mode & 0o777 == 0o600
    assert lab.lease.parent.stat().st_mode & 0o777 == 0o700
    assert lab.read_result()["action"] == "acquired"


def test_another_run_is_refused_before_anything_else_and_told_who_holds_it(lab):
    assert_ok_and_unchanged(lab.run(ACQUIRE, user="alice"))
    held = lab.lease.read_bytes()
    lease = lab.read_lease()

    refused = lab.run(ACQUIRE, user="bob")
    out = output(refused)
    assert refused.returncode != 0, out
    assert "FLEET CHANGED" not in out  # neither app host went past the lock
    assert "Record the lock result" not in out
    expected = (
        f"Deploy lock {lab.lease} is held by alice on {socket.gethostname()} "
        f"(commit {git_commit()}, playbook 'Change the fleet') since {lease['started_at']}; "
        f"it expires at {lease['expires_at']} (in "
    )
    assert expected in out, out
    assert re.search(r"\(in 1[78]\d\d s\); " + re.escape(REFUSAL_TAIL), out), out
    assert lab.lease.read_bytes() == held


def test_the_same_token_renews_and_keeps_the_start(lab):
    assert_ok_and_unchanged(lab.run(ACQUIRE, deploy_lock_token="ci-run-42", deploy_lock_expiry_seconds=60))
    first = lab.read_lease()

    result = lab.run(ACQUIRE, user="bob", deploy_lock_token="ci-run-42", deploy_lock_expiry_seconds=3600)
    assert_ok_and_unchanged(result)
    assert "FLEET CHANGED" in output(result)
    renewed = lab.read_lease()
    assert lab.read_result()["action"] == "renewed"
    assert renewed["token"] == "ci-run-42"
    assert renewed["started_at"] == first["started_at"]
    assert renewed["expires_at_epoch"] - renewed["renewed_at_epoch"] == 3600
    assert renewed["expires_at_epoch"] > first["expires_at_epoch"]
    assert renewed["holder"]["user"] == "bob"


def test_later_plays_of_one_run_renew_with_its_token_and_release_it(lab):
    result = lab.run(WHOLE_RUN)
    assert_ok_and_unchanged(result)
    # The second play's host was not in the first play: it found the token on the lock host.
    middle = lab.read_result()
    assert middle["action"] == "renewed", middle
    assert TOKEN_RE.match(middle["lease"]["token"])
    assert middle["lease"]["holder"]["playbook"] == "Migrate elsewhere"
    assert not lab.lease.exists()


def test_an_expired_lease_is_taken_over_and_the_run_says_so(lab):
    # Hand-written, as an operator or an older run might leave it: ISO 8601 only, no epoch fields.
    lab.write_lease(
        {
            "token": "dead-run",
            "holder": {"user": "carol", "controller": "ci-runner", "commit": "deadbee", "playbook": "Deploy"},
            "started_at": "2020-01-01T00:00:00Z",
            "expires_at": "2020-01-01T00:30:00Z",
        }
    )
    result = lab.run(ACQUIRE)
    assert_ok_and_unchanged(result)
    assert (
        "Took over the expired deploy lock of carol on ci-runner (commit deadbee, playbook 'Deploy'), "
        "which expired at 2020-01-01T00:30:00Z"
    ) in output(result)
    assert "FLEET CHANGED" in output(result)
    done = lab.read_result()
    assert done["action"] == "took_over"
    assert done["took_over"]["holder"]["user"] == "carol"
    lease = lab.read_lease()
    assert lease["token"] != "dead-run"
    assert lease["holder"]["user"] == "alice"


def test_break_lock_breaks_a_live_lease_and_the_run_says_so(lab):
    assert_ok_and_unchanged(lab.run(ACQUIRE, user="alice"))
    old_token = lab.read_lease()["token"]

    result = lab.run(ACQUIRE, user="bob", deploy_lock_break=True)
    assert_ok_and_unchanged(result)
    assert re.search(
        r"Broke the deploy lock of alice on \S+ \(commit \w+, playbook 'Change the fleet'\)\s+on purpose",
        output(result),
    )
    assert "(deploy_lock_break)" in output(result)
    lease = lab.read_lease()
    assert lease["token"] != old_token
    assert lease["holder"]["user"] == "bob"
    assert lab.read_result()["broke"]["token"] == old_token


def test_release_with_another_token_leaves_the_lease_with_a_warning(lab):
    assert_ok_and_unchanged(lab.run(ACQUIRE, deploy_lock_token="run-a"))
    held = lab.lease.read_bytes()

    result = lab.run(RELEASE, user="bob", deploy_lock_token="run-b")
    assert_ok_and_unchanged(result)
    assert "[WARNING]: Deploy lock" in output(result)
    assert "is held by another run, alice on" in output(result)
    assert lab.read_result()["action"] == "held_by"
    assert lab.lease.read_bytes() == held


def test_release_removes_our_own_lease_and_a_second_release_is_fine(lab):
    assert_ok_and_unchanged(lab.run(ACQUIRE, deploy_lock_token="run-a"))

    assert_ok_and_unchanged(lab.run(RELEASE, deploy_lock_token="run-a"))
    assert lab.read_result()["action"] == "released"
    assert not lab.lease.exists()

    assert_ok_and_unchanged(lab.run(RELEASE, deploy_lock_token="run-a"))
    assert lab.read_result()["action"] == "absent"


def test_release_of_a_run_that_never_took_the_lock_does_nothing(lab):
    result = lab.run(RELEASE)
    assert_ok_and_unchanged(result)
    assert lab.read_result().get("skipped") is True
    assert not lab.lease.parent.exists()


def test_release_in_a_rescue_with_the_lease_gone_keeps_the_original_failure(lab):
    result = lab.run(RESCUE)
    out = output(result)
    assert result.returncode != 0, out
    assert "Rollout failed: rollout broke on purpose" in out
    assert lab.read_result()["action"] == "absent"
    assert "Could not give back" not in out
    assert "rescued=1" in out


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs an ssh client to fail to connect")
def test_release_never_fails_the_play_when_the_lock_host_is_unreachable(lab):
    result = lab.run(RELEASE, lock_host="gone", deploy_lock_token="run-a")
    assert_ok_and_unchanged(result)
    assert "Could not give back the deploy lock" in output(result)
    assert lab.read_result()["unreachable"] is True  # the play went on past it, on every host


def test_runs_started_at_the_same_moment_get_exactly_one_lease(lab):
    users = ["alice", "bob", "carol"]
    commands = [lab.command(ACQUIRE, user=user) for user in users]
    procs = [
        subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for args, env in commands
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    winners = [i for i, p in enumerate(procs) if p.returncode == 0]
    assert len(winners) == 1, outs
    assert lab.read_lease()["holder"]["user"] == users[winners[0]]
    for i, out in enumerate(outs):
        if i not in winners:
            assert f"is held by {users[winners[0]]} on" in out, out
            assert "FLEET CHANGED" not in out


def test_many_module_calls_at_once_leave_exactly_one_holder(tmp_path):
    """The flock, without Ansible's start-up time spreading the racers out: 12 module processes, 5 rounds."""
    lease = tmp_path / "lease.json"
    for round_no in range(5):
        lease.unlink(missing_ok=True)
        procs = []
        for i in range(12):
            args = tmp_path / f"args-{round_no}-{i}.json"
            params = {"path": str(lease), "token": f"racer-{i}", "holder": {"user": f"u{i}"}, "expiry_seconds": 60}
            args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
            procs.append(subprocess.Popen([sys.executable, str(MODULE), str(args)], stdout=subprocess.PIPE, text=True))
        results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
        winners = [i for i, r in enumerate(results) if not r.get("failed")]
        assert len(winners) == 1, results
        assert results[winners[0]]["action"] == "acquired"
        assert json.loads(lease.read_text())["token"] == f"racer-{winners[0]}"
        assert all(r["action"] == "held_by" for i, r in enumerate(results) if i not in winners)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lease.")] == []


def test_check_mode_writes_nothing(lab):
    # No lease yet: says it would take it, creates neither the folder nor the file.
    result = lab.run(ACQUIRE, check=True)
    assert_ok_and_unchanged(result)
    assert lab.read_result()["action"] == "acquired"
    assert not lab.lease.parent.exists()

    # A live lease of another run: refused exactly as a real run would be, and the file is untouched.
    held = lab.write_lease(
        {
            "token": "live-run",
            "holder": {"user": "carol"},
            "started_at": "2020-01-01T00:00:00Z",
            "expires_at_epoch": int(time.time()) + 600,
        }
    )
    refused = lab.run(ACQUIRE, check=True)
    assert refused.returncode != 0
    assert REFUSAL_TAIL in output(refused)

    # Breaking it, or giving back our own, only reports.
    for playbook, variables, action in (
        (ACQUIRE, {"deploy_lock_break": True}, "broke"),
        (RELEASE, {"deploy_lock_token": "live-run"}, "released"),
    ):
        result = lab.run(playbook, check=True, **variables)
        assert_ok_and_unchanged(result)
        assert lab.read_result()["action"] == action
        assert lab.lease.read_bytes() == held
        assert sorted(p.name for p in lab.lease.parent.iterdir()) == ["lease.json"]

    # An expired lease: would be taken over, is not.
    held = lab.write_lease({"token": "dead-run", "holder": {"user": "carol"}, "expires_at": "2020-01-01T00:30:00Z"})
    result = lab.run(ACQUIRE, check=True)
    assert_ok_and_unchanged(result)
    assert "Took over the expired deploy lock of carol" in output(result)
    assert lab.lease.read_bytes() == held


def test_default_lock_host_is_the_first_app_host_by_name(lab):
    # The inventory lists app2 first; the role's default picks app1 all the same.
    result = lab.run(ACQUIRE, lock_host=None)
    assert_ok_and_unchanged(result)
    assert "Take the deploy lock on app1" in output(result)
    assert "[app2 -> app1]" in output(result) or "[app1]" in output(result)
