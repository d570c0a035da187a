"""Helpers to run a role against localhost in check mode, for input validation tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_role(tmp_path: Path, role: str, variables: dict, tasks_from: str = "main") -> subprocess.CompletedProcess[str]:
    """Apply one role entry point to localhost in --check mode with the given extra vars.

    Check mode guarantees a role whose validation wrongly passes still changes nothing here.
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
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CACHE_PLUGIN": "memory",
    }
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "--check",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
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
    def _apply(role: str, variables: dict, tasks_from: str = "main") -> subprocess.CompletedProcess[str]:
        return run_role(tmp_path, role, variables, tasks_from)

    return _apply
