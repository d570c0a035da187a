#!/usr/bin/python
"""Ansible module app_slots_info: what an app host runs in its blue/green slots, read in one call."""

from __future__ import annotations

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: app_slots_info
short_description: Read which slot is live, what each slot runs, and what the host recorded
description:
  - Reads the blue/green layout of the app role on the host it runs on, in one call instead of a task
    per file, so deploys and rollbacks can decide from the host itself (never from a fact cache).
  - The live slot is the target of the I(live_link) symlink; each slot's release is the last path
    element of the target of C(<slots_dir>/<slot>); a slot is active when C(systemctl is-active)
    says C(active) for C(<unit_prefix><slot>.service).
  - Changes nothing; safe in check mode.
author: nnp-infra
options:
  slots_dir:
    description: Folder holding one link per slot and the live link.
    type: path
    required: true
  live_link:
    description: Symlink whose target names the live slot.
    type: path
    required: true
  slot_names:
    description: The slots, in order.
    type: list
    elements: str
    required: true
  first_slot:
    description: The slot a host with no live slot starts in.
    type: str
    required: true
  unit_prefix:
    description: systemd unit name of a slot without the slot and C(.service), e.g. C(nnp-app@).
    type: str
    required: true
  fact_file:
    description: The JSON local fact the app role writes (release, previous_release).
    type: path
    required: true
  restart_marker:
    description: File whose presence means settings changed and the next switch must start a new slot.
    type: path
    required: true
  release:
    description: A release whose staging to check (C(<releases_dir>/<release>/.venv/bin/python) exists).
    type: str
    default: ""
  releases_dir:
    description: Folder of the releases, with I(release).
    type: path
  upstream_file:
    description: The proxy's upstream file, whose content is returned ("" when missing).
    type: path
  legacy_unit_file:
    description: Unit file of the layout before slots, whose presence is returned.
    type: path
  worker_unit:
    description: systemd unit of the training worker; its state and the release its process runs are returned.
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read this host's slots
  app_slots_info:
    slots_dir: /opt/nnp/slots
    live_link: /opt/nnp/slots/live
    slot_names: [blue, green]
    first_slot: blue
    unit_prefix: nnp-app@
    fact_file: /etc/ansible/facts.d/nnp_app.fact
    restart_marker: /opt/nnp/shared/.restart-needed
  register: slots
"""

RETURN = r"""
state:
  description: What the host runs.
  returned: always
  type: dict
  contains:
    live_slot: {description: The live slot, or "" when none was made live yet., type: str}
    live_release: {description: The release the live slot runs, or ""., type: str}
    live_active: {description: Whether the live slot's service is active., type: bool}
    idle_slot: {description: The slot the next switch starts (first_slot when none is live)., type: str}
    slots: {description: Release of each slot ("" when its link is missing)., type: dict}
    active: {description: The slots whose service is active., type: list}
    previous_release: {description: The recorded release to roll back to, or ""., type: str}
    recorded_release: {description: The release the local fact records, or ""., type: str}
    restart_pending: {description: Whether settings changed since the live slot started., type: bool}
    states: {description: What systemctl is-active says of each slot's service., type: dict}
    mem_available_mib: {description: MemAvailable of /proc/meminfo in MiB (-1 when unreadable)., type: int}
    release_staged: {description: Whether I(release) is staged (false without I(release))., type: bool}
    upstream_content: {description: The content of I(upstream_file), or ""., type: str}
    legacy_unit_present: {description: Whether I(legacy_unit_file) exists., type: bool}
    worker_present: {description: Whether I(worker_unit) has a unit file under /etc/systemd/system., type: bool}
    worker_active: {description: Whether I(worker_unit) is active., type: bool}
    worker_release:
      description: The release the worker's main process runs (from its command line), or "".
      type: str
"""


RELEASE_IN_PATH = re.compile(r"/releases/([^/]+)/\.venv/bin/python[0-9.]*$")


def link_name(path: str) -> str:
    """The last element of the link's target, or "" when it is no link."""
    try:
        return os.path.basename(os.readlink(path).rstrip("/"))
    except OSError:
        return ""


def read_fact(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_text(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def mem_available_mib() -> int:
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return -1


def worker_state(module: AnsibleModule, unit: str | None) -> dict[str, object]:
    if not unit:
        return {"worker_present": False, "worker_active": False, "worker_release": ""}
    _, out, _ = module.run_command(["systemctl", "show", unit, "--property=ActiveState,MainPID"])
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    release = ""
    if props.get("MainPID", "0") not in ("", "0"):
        # ExecStart names the release: <releases_dir>/<release>/.venv/bin/python -m app.worker.
        argv = read_text(f"/proc/{props['MainPID']}/cmdline").split("\0")
        found = RELEASE_IN_PATH.search(argv[0]) if argv else None
        release = found[1] if found else ""
    return {
        "worker_present": os.path.exists(os.path.join("/etc/systemd/system", unit)),
        "worker_active": props.get("ActiveState") == "active",
        "worker_release": release,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "slots_dir": {"type": "path", "required": True},
            "live_link": {"type": "path", "required": True},
            "slot_names": {"type": "list", "elements": "str", "required": True},
            "first_slot": {"type": "str", "required": True},
            "unit_prefix": {"type": "str", "required": True},
            "fact_file": {"type": "path", "required": True},
            "restart_marker": {"type": "path", "required": True},
            "release": {"type": "str", "default": ""},
            "releases_dir": {"type": "path"},
            "upstream_file": {"type": "path"},
            "legacy_unit_file": {"type": "path"},
            "worker_unit": {"type": "str"},
        },
        supports_check_mode=True,
    )
    params = module.params
    names: list[str] = params["slot_names"]
    if params["first_slot"] not in names:
        module.fail_json(msg=f"first_slot {params['first_slot']} is not one of {names}")

    live = link_name(params["live_link"])
    live = live if live in names else ""
    slots = {name: link_name(os.path.join(params["slots_dir"], name)) for name in names}
    units = [f"{params['unit_prefix']}{name}.service" for name in names]
    # is-active exits non-zero when any unit is inactive; its output has one line per unit, in order.
    _, out, _ = module.run_command(["systemctl", "is-active", *units])
    lines = out.splitlines()
    states = {name: line.strip() for name, line in zip(names, lines, strict=False)}
    active = [name for name, value in states.items() if value == "active"]
    fact = read_fact(params["fact_file"])
    state = {
        "live_slot": live,
        "live_release": slots[live] if live else "",
        "live_active": live in active,
        "idle_slot": next(name for name in names if name != live) if live else params["first_slot"],
        "slots": slots,
        "active": active,
        "previous_release": fact.get("previous_release") or "",
        "recorded_release": fact.get("release") or "",
        "restart_pending": os.path.exists(params["restart_marker"]),
        "states": states,
        "mem_available_mib": mem_available_mib(),
        "release_staged": bool(params["release"] and params["releases_dir"])
        and os.path.exists(os.path.join(params["releases_dir"], params["release"], ".venv", "bin", "python")),
        "upstream_content": read_text(params["upstream_file"]),
        "legacy_unit_present": bool(params["legacy_unit_file"]) and os.path.exists(params["legacy_unit_file"]),
        **worker_state(module, params["worker_unit"]),
    }
    module.exit_json(changed=False, state=state)


if __name__ == "__main__":
    main()
