"""Helpers to run a role against localhost in check mode, for input validation tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_plugin(role: str, kind: str, name: str) -> ModuleType:
    """Import a role's plugin file (e.g. roles/pytorch/filter_plugins/pytorch_driver.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "roles" / role / kind / f"{name}.py")
    assert spec, (role, kind, name)
    assert spec.loader, (role, kind, name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment of a role run here: the project's config, roles and collections, no colour."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CACHE_PLUGIN": "memory",
        **extra,
    }


def run_role(
    tmp_path: Path, role: str, variables: dict, tasks_from: str = "main", interpreter: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """Apply one role entry point to localhost in --check mode with the given extra vars.

    Check mode guarantees a role whose validation wrongly passes still changes nothing here. The modules
    run under the venv's Python unless `interpreter` names another (the system one, for apt's module).
    """
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Apply {role}
              hosts: localhost
              connection: local
              gather_facts: true
              gather_subset: [min]
              tasks:
                - name: Include {role}
                  ansible.builtin.include_role:
                    name: {role}
                    tasks_from: {tasks_from}
            """
        )
    )
    env = ansible_env()
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "--check",
            "-e",
            f"ansible_python_interpreter={interpreter}",
            "-e",
            json.dumps(variables),
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )


@pytest.fixture
def apply_role(tmp_path: Path):
    def _apply(
        role: str, variables: dict, tasks_from: str = "main", interpreter: str = sys.executable
    ) -> subprocess.CompletedProcess[str]:
        return run_role(tmp_path, role, variables, tasks_from, interpreter)

    return _apply


SENTINEL = "roles_batch_sentinel"


@dataclass
class HostOutcome:
    """What one host of a batch run did: its failure messages, the tasks it reached and its recap."""

    failed: bool
    changed: int
    reached: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def run_roles_batch(tmp_path: Path, cases: dict[str, tuple[str, str, dict]]) -> dict[str, HostOutcome]:
    """Apply many role entry points in one --check run: each case is a host of its own (local connection)
    whose host variables are the case's, so one ansible-playbook start serves them all. A case's failure
    ends only that host's run. Measured with test_bad_vars' 62 cases on the 2-core machine: 24 s together
    against 131 s as one run each.

    cases: host name -> (role, entry point, variables). Returns host name -> HostOutcome, read from the
    ansible.posix.json callback.
    """
    # One play per role entry point, on the hosts of its cases: the hosts of a play run its tasks together,
    # each with its own variables, and entry points never mix. A play whose hosts all fail would end the
    # run, so every play also has a sentinel host that skips the include and keeps the run going.
    entries = sorted({(role, entry) for role, entry, _ in cases.values()})
    groups = {
        f"entry_{n:02d}": {"hosts": {host: {} for host, (r, e, _) in cases.items() if (r, e) == (role, entry)}}
        for n, (role, entry) in enumerate(entries)
    }
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {**{host: variables for host, (_, _, variables) in cases.items()}, SENTINEL: {}},
                    "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                    "children": groups,
                }
            }
        )
    )
    plays = [
        {
            "name": f"Apply {role} {entry}",
            "hosts": f"entry_{n:02d}:{SENTINEL}",
            "gather_facts": True,
            "gather_subset": ["min"],
            "tasks": [
                {
                    "name": f"Include {role} {entry}",
                    "ansible.builtin.include_role": {"name": role, "tasks_from": entry},
                    "when": f"inventory_hostname != '{SENTINEL}'",
                }
            ],
        }
        for n, (role, entry) in enumerate(entries)
    ]
    playbook = tmp_path / "batch.yml"
    playbook.write_text(json.dumps(plays))
    # Facts are gathered once, on the first case, and the fact cache hands them to every host: gathering
    # them on each of 60 local hosts would cost more than the cases themselves.
    facts = tmp_path / "facts"
    cache = {"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(facts)}
    first = next(iter(cases))
    gather = tmp_path / "gather.yml"
    gather.write_text(f"- name: Gather\n  hosts: {first}\n  gather_facts: true\n  gather_subset: [min]\n  tasks: []\n")
    gathered = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(gather)],
        capture_output=True,
        text=True,
        env=ansible_env(**cache),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    # The jsonfile cache names a host's file with a prefix of its own (ansible-core 2.19: "s1_").
    cached = [path for path in facts.glob(f"*{first}") if path.name.endswith(first)]
    assert gathered.returncode == 0, gathered.stdout + gathered.stderr
    assert len(cached) == 1, (cached, list(facts.iterdir()))
    prefix = cached[0].name[: -len(first)]
    for host in [*cases, SENTINEL]:
        if host != first:
            shutil.copyfile(cached[0], facts / f"{prefix}{host}")
    done = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "--check", str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_GATHERING="smart", **cache),
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        message = f"no JSON report from the batch run ({exc}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
        raise AssertionError(message) from exc
    outcomes = {
        host: HostOutcome(failed=stats.get("failures", 0) > 0, changed=stats.get("changed", 0))
        for host, stats in report["stats"].items()
        if host != SENTINEL
    }
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if host == SENTINEL:
                    continue
                # The json callback names a role's task "role : name".
                outcomes[host].reached.append(task["task"]["name"].split(" : ", 1)[-1])
                if result.get("failed"):
                    outcomes[host].messages.extend(_strings(result))
    missing = set(cases) - set(outcomes)
    assert not missing, f"hosts missing from the batch report: {sorted(missing)}; {done.stderr[-2000:]}"
    return outcomes
