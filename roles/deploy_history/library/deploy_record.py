#!/usr/bin/python
"""Ansible module deploy_record: the fleet's history of deploys, rollbacks and maintenance switches, kept
as JSON lines in one file on one host, with a Prometheus textfile of it for the node exporter."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import syslog
import tempfile
import time
from collections.abc import Callable, Iterator

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: deploy_record
short_description: Append to, complete or read the history of runs that change the fleet
description:
  - Keeps one JSON object per run (a deploy, a rollback, a maintenance switch) in a JSON-lines file on the
    host it runs on, newest last, at most I(keep) of them.
  - C(state=started) appends the run's record (result C(running)); a record of the same I(id) is left as it
    is, so a rerun of the task in the same run changes nothing. Records of other runs still C(running) are
    marked C(abandoned) (their run died: the deploy lock admits one run at a time).
  - C(state=finished) completes the record of I(id) with its end, duration, result, and the failed host and
    check; the fields of I(record) fill those still empty (what became known during the run, such as the release);
    the first finish wins (a later one returns the record unchanged, I(finished_now) false).
  - C(state=listed) returns the newest I(count) records and writes nothing.
  - Writes happen under an exclusive C(flock) on I(path) + C(.flock), to a temporary file moved over the old
    one, so a reader sees the old history or the new one. With I(metrics_path), the same change rewrites a
    Prometheus textfile for the node exporter's textfile collector (nnp_deploy_*). Each change also logs the
    record as JSON to syslog (the journal) with the tag C(nnp-deploy).
author: nnp-infra
options:
  path:
    description: The history file; its folder is created 0700 when missing, the file is 0600.
    type: path
    required: true
  state:
    description: C(started), C(finished) or C(listed).
    type: str
    choices: [started, finished, listed]
    default: started
  id:
    description: The run's identity (its deploy lock token); required unless I(state=listed).
    type: str
  record:
    description:
      - For C(started), what the record says about the run; free-form strings and lists. C(kind) (deploy, rollback,
        maintenance), C(user), C(controller), C(commit), C(release) and C(hosts) are what the history shows.
    type: dict
    default: {}
  result:
    description: For C(finished), C(succeeded) or C(failed).
    type: str
    choices: [succeeded, failed]
  failed_host:
    description: For a failure, the host it happened on.
    type: str
    default: ""
  failed_check:
    description: For a failure, the task (check) that failed and its message.
    type: str
    default: ""
  keep:
    description: Records kept, the newest; older ones are dropped. Greater than 0.
    type: int
    default: 1000
  count:
    description: For C(listed), how many of the newest records to return.
    type: int
    default: 20
  metrics_path:
    description:
      - A C(.prom) file for the node exporter's textfile collector, rewritten with every change when its folder
        exists; empty, none.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Record the start of the run
  deploy_record:
    path: /var/lib/nnp-deploy/history.jsonl
    id: "{{ deploy_lock_token }}"
    record: {kind: deploy, user: alice, controller: laptop, commit: 1a2b3c4, release: 1a2b3c4-9f8e7d6c5b, hosts: [web1]}
    metrics_path: /var/lib/prometheus/node-exporter/nnp_deploy.prom

- name: Record its failure
  deploy_record:
    path: /var/lib/nnp-deploy/history.jsonl
    state: finished
    id: "{{ deploy_lock_token }}"
    result: failed
    failed_host: web1
    failed_check: 'Gate the new slot: /readyz answered 503'
"""

RETURN = r"""
record:
  description: The run's record after this call (for C(listed), null).
  returned: always
  type: dict
finished_now:
  description: True when this call finished the record (C(state=finished) on a running record).
  returned: always
  type: bool
records:
  description: For C(listed), the newest I(count) records, oldest first.
  returned: always
  type: list
"""

FLOCK_WAIT_SECONDS = 30
KINDS = ("deploy", "rollback", "maintenance")
RESULTS = ("succeeded", "failed", "abandoned")


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def read_records(path: str, warn: Callable[[str], None]) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            warn(f"{path} line {number} is not JSON; left out")
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def replace_file(path: str, text: str, mode: int) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics(records: list[dict]) -> str:
    """The history as Prometheus text: per kind, running or not, the newest start and end, counts by result."""
    lines = [
        "# HELP nnp_deploy_running 1 while a run of this kind has started and not finished.",
        "# TYPE nnp_deploy_running gauge",
    ]
    newest: dict[str, dict] = {}
    for record in records:
        kind = str(record.get("kind", ""))
        if kind in KINDS:
            newest[kind] = record
    for kind in KINDS:
        running = newest.get(kind, {}).get("result") == "running"
        lines.append(f'nnp_deploy_running{{kind="{kind}"}} {1 if running else 0}')
    lines += [
        "# HELP nnp_deploy_started_timestamp_seconds When the newest run of this kind started (graphs mark deploys).",
        "# TYPE nnp_deploy_started_timestamp_seconds gauge",
    ]
    for kind, record in sorted(newest.items()):
        lines.append(f'nnp_deploy_started_timestamp_seconds{{kind="{kind}"}} {record.get("started_at_epoch", 0)}')
    lines += [
        "# HELP nnp_deploy_finished_timestamp_seconds When the newest finished run of this kind ended, by its result.",
        "# TYPE nnp_deploy_finished_timestamp_seconds gauge",
    ]
    for kind in KINDS:
        done = [r for r in records if r.get("kind") == kind and r.get("finished_at_epoch")]
        if done:
            last = done[-1]
            lines.append(
                f'nnp_deploy_finished_timestamp_seconds{{kind="{kind}",release="{label(str(last.get("release", "")))}",'
                f'result="{last["result"]}"}} {last["finished_at_epoch"]}'
            )
    lines += [
        "# HELP nnp_deploy_runs Runs of each kind in the kept history, by result.",
        "# TYPE nnp_deploy_runs gauge",
    ]
    for kind in KINDS:
        for result in ("running", *RESULTS):
            count = sum(1 for r in records if r.get("kind") == kind and r.get("result") == result)
            lines.append(f'nnp_deploy_runs{{kind="{kind}",result="{result}"}} {count}')
    return "\n".join(lines) + "\n"


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
        os.close(fd)


def change(module: AnsibleModule, records: list[dict], now: float) -> tuple[dict, bool, bool]:
    """(the run's record, whether the history changed, whether this call finished the record)."""
    params = module.params
    found = [r for r in records if r.get("id") == params["id"]]
    if params["state"] == "started":
        if found:
            return found[-1], False, False
        for record in records:
            if record.get("result") == "running":
                record["result"] = "abandoned"
        record = {
            **params["record"],
            "id": params["id"],
            "started_at": iso(now),
            "started_at_epoch": round(now, 3),
            "finished_at": None,
            "finished_at_epoch": None,
            "seconds": None,
            "result": "running",
            "failed_host": "",
            "failed_check": "",
        }
        records.append(record)
        return record, True, False
    if found and found[-1].get("result") != "running":
        return found[-1], False, False
    if found:
        record = found[-1]
    else:  # the start was never recorded (the history host did not answer then)
        record = {**params["record"], "id": params["id"], "started_at": None, "started_at_epoch": None}
        records.append(record)
    # What became known during the run (a deploy's release id, worked out while staging) fills empty fields.
    for key, value in params["record"].items():
        if record.get(key) in ("", None, [], {}) and value not in ("", None, [], {}):
            record[key] = value
    started = record.get("started_at_epoch")
    record.update(
        {
            "finished_at": iso(now),
            "finished_at_epoch": round(now, 3),
            "seconds": round(now - started, 1) if isinstance(started, (int, float)) else None,
            "result": params["result"],
            "failed_host": params["failed_host"],
            "failed_check": params["failed_check"],
        }
    )
    return record, True, True


def run(module: AnsibleModule) -> dict:
    params = module.params
    path = os.path.abspath(params["path"])
    if params["state"] == "listed":
        if params["count"] <= 0:
            module.fail_json(msg=f"count must be greater than 0, got {params['count']}")
        records = read_records(path, module.warn)
        return {"changed": False, "record": None, "finished_now": False, "records": records[-params["count"] :]}
    if not params["id"]:
        module.fail_json(msg="id must not be empty")
    if params["keep"] <= 0:
        module.fail_json(msg=f"keep must be greater than 0, got {params['keep']}")
    if params["state"] == "finished" and not params["result"]:
        module.fail_json(msg="state=finished needs result (succeeded or failed)")
    folder = os.path.dirname(path)
    if module.check_mode:
        record, changed, finished_now = change(module, read_records(path, module.warn), time.time())
        return {"changed": changed, "record": record, "finished_now": finished_now, "records": []}
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
    with flocked(path + ".flock"):
        records = read_records(path, module.warn)
        record, changed, finished_now = change(module, records, time.time())
        if changed:
            records = records[-params["keep"] :]
            replace_file(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), 0o600)
            # Only where the node exporter's textfile folder exists (a host without the exporter has none).
            if params["metrics_path"] and os.path.isdir(os.path.dirname(params["metrics_path"])):
                replace_file(params["metrics_path"], metrics(records), 0o644)
            # And to the journal (tag nnp-deploy), which the journal upload ships to the monitoring host.
            syslog.openlog("nnp-deploy", 0, syslog.LOG_USER)
            syslog.syslog(syslog.LOG_INFO, json.dumps(record, sort_keys=True))
            syslog.closelog()
    return {"changed": changed, "record": record, "finished_now": finished_now, "records": []}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["started", "finished", "listed"], "default": "started"},
            "id": {"type": "str", "default": ""},
            "record": {"type": "dict", "default": {}},
            "result": {"type": "str", "choices": ["succeeded", "failed"]},
            "failed_host": {"type": "str", "default": ""},
            "failed_check": {"type": "str", "default": ""},
            "keep": {"type": "int", "default": 1000},
            "count": {"type": "int", "default": 20},
            "metrics_path": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except OSError as exc:
        module.fail_json(msg=f"Deploy history {module.params['path']}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
