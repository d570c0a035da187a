#!/usr/bin/python
"""Ansible module app_record: record the live release in the local fact and prune old releases, in one call."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: app_record
short_description: Record what an app host runs and remove releases and virtualenvs nothing keeps
description:
  - Writes the app role's local fact (release, slot, previous_release, alembic_head, venv, git_sha,
    deployed_at) after a switch, then prunes old releases and the virtualenvs no kept release uses.
    One call instead of a dozen tasks, each of which is a round trip to the host.
  - The fact is rewritten only when the release, its slot, its virtualenv, its commit or the schema head
    changed, so a rerun of the same release leaves it (and deployed_at) alone.
  - Keeps the I(keep) newest releases (by modification time) and always I(release) and the recorded
    previous release; then removes every virtualenv under I(venvs_dir) that no remaining release's
    C(.venv) link points at, never the live release's.
author: nnp-infra
options:
  releases_dir: {description: Folder of the releases., type: path, required: true}
  venvs_dir: {description: Folder of the virtualenvs the releases link to., type: path, required: true}
  release: {description: The live release., type: str, required: true}
  slot: {description: The slot it runs in., type: str, required: true}
  release_before:
    description: What the host served before this run; it becomes previous_release when it differs from I(release).
    type: str
    default: ""
  alembic_head:
    description: The schema revision the live release reported; empty keeps the recorded one.
    type: str
    default: ""
  fact_file: {description: The JSON local fact., type: path, required: true}
  keep: {description: Releases kept besides the live and the previous one (at least 2)., type: int, default: 5}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Record the live release and prune
  app_record:
    releases_dir: /opt/nnp/releases
    venvs_dir: /opt/nnp/venvs
    release: 4a1b2c3d4e-0123456789
    slot: green
    release_before: 9f8e7d6c5b-9876543210
    alembic_head: "0002"
    fact_file: /etc/ansible/facts.d/nnp_app.fact
    keep: 5
"""

RETURN = r"""
record: {description: The local fact as it now is., returned: always, type: dict}
recorded: {description: Whether the fact was (re)written., returned: always, type: bool}
removed_releases: {description: Paths of the releases removed., returned: always, type: list}
removed_venvs: {description: Paths of the virtualenvs removed., returned: always, type: list}
"""

GIT_SHA = re.compile(r'^GIT_SHA="([^"]*)"', re.M)


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def venv_of(release_path: str) -> str | None:
    """The resolved target of a release's .venv link (as ansible's stat lnk_source), or None."""
    link = os.path.join(release_path, ".venv")
    return os.path.realpath(link) if os.path.islink(link) else None


def git_sha_of(release_path: str) -> str:
    try:
        with open(os.path.join(release_path, "release.env"), encoding="utf-8") as handle:
            found = GIT_SHA.search(handle.read())
    except OSError:
        found = None
    return found[1] if found else "unknown"


def new_record(params: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    release_path = os.path.join(params["releases_dir"], params["release"])
    head = params["alembic_head"] or old.get("alembic_head")
    current = {
        "release": params["release"],
        "slot": params["slot"],
        "alembic_head": head,
        "venv": venv_of(release_path),
        "git_sha": git_sha_of(release_path),
    }
    if all(old.get(key) == value for key, value in current.items()):
        return old
    before = params["release_before"]
    previous = before if before and before != params["release"] else old.get("previous_release")
    return {
        **current,
        "previous_release": previous,
        # timezone.utc, not datetime.UTC: modules run on the host's Python, 3.10 on Ubuntu 22.04.
        "deployed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_record(module: AnsibleModule, path: str, record: dict[str, Any]) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".nnp-fact-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(record, indent=4, sort_keys=True) + "\n")
    os.chmod(temp, 0o644)
    module.atomic_move(temp, path)


def subfolders(path: str, *, hidden: bool) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [
                entry
                for entry in entries
                if entry.is_dir(follow_symlinks=False) and (hidden or not entry.name.startswith("."))
            ]
    except FileNotFoundError:
        return []


def prune(params: dict[str, Any], record: dict[str, Any], check: bool) -> tuple[list[str], list[str]]:
    releases = sorted(
        subfolders(params["releases_dir"], hidden=False), key=lambda e: e.stat(follow_symlinks=False).st_mtime
    )
    releases.reverse()
    keep = {entry.path for entry in releases[: params["keep"]]}
    keep.add(os.path.join(params["releases_dir"], params["release"]))
    if record.get("previous_release"):
        keep.add(os.path.join(params["releases_dir"], record["previous_release"]))
    removed_releases = [entry.path for entry in releases if entry.path not in keep]
    if not check:
        for path in removed_releases:
            shutil.rmtree(path)
    left = [entry.path for entry in subfolders(params["releases_dir"], hidden=True)]
    left = [path for path in left if path not in removed_releases]
    used = {venv for venv in (venv_of(path) for path in left) if venv}
    if record.get("venv"):
        used.add(record["venv"])
    removed_venvs = [entry.path for entry in subfolders(params["venvs_dir"], hidden=False) if entry.path not in used]
    if not check:
        for path in removed_venvs:
            shutil.rmtree(path)
    return removed_releases, removed_venvs


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "releases_dir": {"type": "path", "required": True},
            "venvs_dir": {"type": "path", "required": True},
            "release": {"type": "str", "required": True},
            "slot": {"type": "str", "required": True},
            "release_before": {"type": "str", "default": ""},
            "alembic_head": {"type": "str", "default": ""},
            "fact_file": {"type": "path", "required": True},
            "keep": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["keep"] < 2:
        module.fail_json(msg=f"keep must be at least 2, got {params['keep']}")
    if not os.path.isdir(os.path.join(params["releases_dir"], params["release"])):
        module.fail_json(msg=f"release {params['release']} is not in {params['releases_dir']}")
    old = read_json(params["fact_file"])
    record = new_record(params, old)
    recorded = record != old
    if recorded and not module.check_mode:
        write_record(module, params["fact_file"], record)
    removed_releases, removed_venvs = prune(params, record, module.check_mode)
    module.exit_json(
        changed=recorded or bool(removed_releases) or bool(removed_venvs),
        record=record,
        recorded=recorded,
        removed_releases=removed_releases,
        removed_venvs=removed_venvs,
    )


if __name__ == "__main__":
    main()
