#!/usr/bin/python
"""Ansible module deploy_lease: a deploy lock (lease) kept in a JSON file on one host."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: deploy_lease
short_description: Take, renew or release a deploy lock (lease) kept in a JSON file
description:
  - Keeps one lease in a JSON file on the host it runs on, so that only one run at a time changes the fleet.
  - The read, the decision and the write happen under an exclusive C(flock) on a sibling file
    (I(path) + C(.flock)); the new lease is written to a temporary file in the same folder and
    moved over the old one with C(os.replace), so a reader sees the old lease or the new one, never half of one.
  - Time is this host's clock, in UTC. The file holds ISO 8601 times and epoch seconds.
  - C(state=acquired) takes the lease when there is none, when it has expired (taken over),
    when I(break_lock) is set (broken), or renews it when I(token) is the one that holds it.
    Otherwise it fails with a message naming the holder, when the lease started and when it expires.
  - C(state=released) removes the lease only when I(token) holds it; a missing lease is fine and a
    lease held by another token is left alone with a warning.
author: nnp-infra
options:
  path:
    description:
      - The lease file. Its folder is created with mode 0700 when missing; the file gets mode 0600.
    type: path
    required: true
  state:
    description:
      - C(acquired) takes or renews the lease; C(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  token:
    description:
      - Identity of the run. Acquiring with the token that holds the lease renews it
        (extends its expiry and keeps its start).
    type: str
    required: true
  holder:
    description:
      - Who takes the lease, shown to anyone refused. Free-form strings; C(user), C(controller), C(commit) and
        C(playbook) are the keys the messages show.
    type: dict
    default: {}
  expiry_seconds:
    description:
      - Seconds from now until the lease expires unless it is renewed. Must be greater than 0.
    type: int
    default: 1800
  break_lock:
    description:
      - Take the lease even when another token holds a live one (for a run known to be dead).
    type: bool
    default: false
notes:
  - In check mode it reports what it would do, and fails where a real run would, without writing anything.
  - The C(.flock) file stays beside the lease; removing it while a run waits on it would let two runs in.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Take the deploy lock for this run
  deploy_lease:
    path: /var/lib/nnp-deploy/lease.json
    token: "{{ deploy_lock_token }}"
    holder:
      user: alice
      controller: laptop
      commit: 1a2b3c4
      playbook: Roll out host by host
    expiry_seconds: 1800

- name: Give the deploy lock back
  deploy_lease:
    path: /var/lib/nnp-deploy/lease.json
    token: "{{ deploy_lock_token }}"
    state: released
"""

RETURN = r"""
action:
  description:
    - What happened (or would happen in check mode).
    - C(acquired) (no lease before), C(renewed) (same token), C(took_over) (an expired lease of another token),
      C(broke) (a live lease of another token, with I(break_lock)), C(released), C(absent) (release with no lease),
      C(held_by) (another token holds the lease; a failure for C(state=acquired), a warning for C(state=released)).
  returned: always
  type: str
  sample: acquired
lease:
  description:
    - The lease in the file after this call (or what it would be, in check mode); for C(state=released) the lease
      that was removed or left in place; null when there is none, and when an acquire is refused (see I(held_by)).
  returned: always
  type: dict
  sample:
    token: k3l9x0c2m1q8z7r4t5y6
    holder: {user: alice, controller: laptop, commit: 1a2b3c4, playbook: Roll out host by host}
    started_at: "2025-01-31T10:00:00Z"
    started_at_epoch: 1738317600
    renewed_at: "2025-01-31T10:05:00Z"
    renewed_at_epoch: 1738317900
    expires_at: "2025-01-31T10:35:00Z"
    expires_at_epoch: 1738319700
took_over:
  description: The expired lease that was taken over (its holder is under C(holder)); null otherwise.
  returned: always
  type: dict
broke:
  description: The live lease that was broken on purpose with I(break_lock); null otherwise.
  returned: always
  type: dict
held_by:
  description: The lease of another token that refused an acquire or was left in place by a release; null otherwise.
  returned: always
  type: dict
now:
  description: This host's time when the decision was made, UTC ISO 8601.
  returned: always
  type: str
  sample: "2025-01-31T10:05:00Z"
now_epoch:
  description: The same time in epoch seconds.
  returned: always
  type: int
msg:
  description: What happened, in one line (for C(took_over) and C(broke) it names the previous holder).
  returned: always
  type: str
  sample: Took over the expired deploy lock of alice on laptop (commit 1a2b3c4, playbook 'Deploy'), which expired at ...
expires_in:
  description: Seconds until I(lease) expires (negative once expired); null when there is no lease.
  returned: always
  type: int
"""

# The flock is held for a read and one small write; waiting longer means something is wrong on the host.
FLOCK_WAIT_SECONDS = 30


def iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_time(lease: dict, key: str) -> int | None:
    """Epoch seconds of lease[key], from key + '_epoch' or else the ISO 8601 text (a hand-written lease)."""
    epoch = lease.get(key + "_epoch")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        return int(epoch)
    text = lease.get(key)
    if not isinstance(text, str) or not text:
        return None
    try:
        # Python 3.10 (the hosts' python3 on jammy) does not accept a trailing Z.
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # not datetime.UTC (3.11+): hosts may run 3.10
    return int(parsed.timestamp())


def describe_holder(lease: dict) -> str:
    holder = lease.get("holder")
    if not isinstance(holder, dict):
        holder = {}

    def field(name: str) -> str:
        value = holder.get(name)
        return str(value) if value not in (None, "") else "unknown"

    return f"{field('user')} on {field('controller')} (commit {field('commit')}, playbook '{field('playbook')}')"


def read_lease(path: str) -> tuple[dict | None, str | None]:
    """The lease in path (None when there is none), or an error text when the file cannot be used."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read the lease file {path}: {exc}"
    try:
        lease = json.loads(text)
    except ValueError as exc:
        return None, f"the lease file {path} is not valid JSON ({exc})"
    if not isinstance(lease, dict):
        return None, f"the lease file {path} does not hold a JSON object"
    return lease, None


def write_lease(path: str, lease: dict) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lease.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(lease, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_folder(folder)


def sync_folder(folder: str) -> None:
    """Make the rename or unlink durable, so a crash of the host cannot bring back an old lease."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def ensure_folder(folder: str) -> None:
    if os.path.isdir(folder):
        return
    os.makedirs(folder, mode=0o700, exist_ok=True)
    # makedirs honours the umask; the lease folder is for root (the become user) only.
    os.chmod(folder, 0o700)


@contextlib.contextmanager
def flocked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + FLOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def acquire(module: AnsibleModule, path: str, lease: dict | None, error: str | None, now: int) -> dict:
    params = module.params
    token = params["token"]
    result: dict = {"took_over": None, "broke": None, "held_by": None}
    if error and not params["break_lock"]:
        module.fail_json(
            msg=f"Deploy lock: {error}; fix or remove it, or break it with -e deploy_lock_break=true",
            action="held_by",
            lease=None,
            now=iso(now),
            now_epoch=now,
            expires_in=None,
            **result,
        )
    started = now
    if lease is None and not error:
        action = "acquired"
    elif lease is not None and lease.get("token") == token:
        action = "renewed"
        started = parse_time(lease, "started_at") or now
    else:
        expires = parse_time(lease or {}, "expires_at")
        if lease is not None and expires is not None and expires <= now:
            action = "took_over"
            result["took_over"] = lease
        elif params["break_lock"]:
            action = "broke"
            result["broke"] = lease if lease is not None else {"error": error}
        else:
            held = lease or {}
            expires_text = iso(expires) if expires is not None else "never (no expires_at in the lease)"
            remaining = f"in {expires - now} s" if expires is not None else "until broken"
            module.fail_json(
                msg=(
                    f"Deploy lock {path} is held by {describe_holder(held)} since {held.get('started_at', 'unknown')}; "
                    f"it expires at {expires_text} ({remaining}); "
                    "wait, or break it with -e deploy_lock_break=true if that run is dead"
                ),
                action="held_by",
                lease=None,
                now=iso(now),
                now_epoch=now,
                expires_in=(expires - now) if expires is not None else None,
                **{**result, "held_by": held},
            )
    expires_at = now + params["expiry_seconds"]
    new = {
        "token": token,
        "holder": params["holder"],
        "started_at": iso(started),
        "started_at_epoch": started,
        "renewed_at": iso(now),
        "renewed_at_epoch": now,
        "expires_at": iso(expires_at),
        "expires_at_epoch": expires_at,
    }
    if not module.check_mode:
        write_lease(path, new)
    old = result["took_over"] or result["broke"] or {}
    old_expiry = parse_time(old, "expires_at")
    msg = {
        "acquired": f"Took the deploy lock {path} until {new['expires_at']}",
        "renewed": f"Renewed the deploy lock {path} until {new['expires_at']}",
        "took_over": (
            f"Took over the expired deploy lock of {describe_holder(old)}, "
            f"which expired at {iso(old_expiry) if old_expiry is not None else 'unknown'}"
        ),
        "broke": f"Broke the deploy lock of {describe_holder(old)}",
    }[action]
    return {**result, "changed": True, "action": action, "msg": msg, "lease": new, "expires_in": expires_at - now}


def release(module: AnsibleModule, path: str, lease: dict | None, error: str | None, now: int) -> dict:
    result: dict = {"took_over": None, "broke": None, "held_by": None, "changed": False}
    if error:
        module.warn(f"Deploy lock: {error}; left it in place")
        return {**result, "action": "held_by", "msg": error, "lease": None, "expires_in": None}
    if lease is None:
        return {
            **result,
            "action": "absent",
            "msg": f"No deploy lock {path} to give back",
            "lease": None,
            "expires_in": None,
        }
    expires = parse_time(lease, "expires_at")
    expires_in = expires - now if expires is not None else None
    if lease.get("token") != module.params["token"]:
        msg = (
            f"Deploy lock {path} is held by another run, {describe_holder(lease)} since "
            f"{lease.get('started_at', 'unknown')}; left it in place"
        )
        module.warn(msg)
        return {**result, "action": "held_by", "msg": msg, "lease": lease, "held_by": lease, "expires_in": expires_in}
    if not module.check_mode:
        os.unlink(path)
        sync_folder(os.path.dirname(path))
    msg = f"Gave back the deploy lock {path}"
    return {**result, "changed": True, "action": "released", "msg": msg, "lease": lease, "expires_in": expires_in}


def run(module: AnsibleModule) -> dict:
    params = module.params
    path = os.path.abspath(params["path"])
    folder = os.path.dirname(path)
    if not params["token"]:
        module.fail_json(msg="token must not be empty")
    if params["expiry_seconds"] <= 0:
        module.fail_json(msg=f"expiry_seconds must be greater than 0, got {params['expiry_seconds']}")
    decide = acquire if params["state"] == "acquired" else release

    if module.check_mode or (params["state"] == "released" and not os.path.isdir(folder)):
        # Nothing is written, so no flock: os.replace means the read sees a whole lease or none.
        now = int(time.time())
        lease, error = read_lease(path)
        return {**decide(module, path, lease, error, now), "now": iso(now), "now_epoch": now}

    ensure_folder(folder)
    with flocked(path + ".flock"):
        now = int(time.time())
        lease, error = read_lease(path)
        return {**decide(module, path, lease, error, now), "now": iso(now), "now_epoch": now}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "token": {"type": "str", "required": True, "no_log": False},
            "holder": {"type": "dict", "default": {}},
            "expiry_seconds": {"type": "int", "default": 1800},
            "break_lock": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except OSError as exc:
        module.fail_json(msg=f"Deploy lock {module.params['path']}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
