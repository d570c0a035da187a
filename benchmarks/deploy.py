#!/usr/bin/env python3
"""Deploy benchmark on the local stack (inventories/local): how long on-call waits.

  .venv/bin/python benchmarks/deploy.py            # on a running stack (make up)
  .venv/bin/python benchmarks/deploy.py --fresh    # also: make down, then time make up fresh and rerun

Measures, on this machine:
  * `make up` on fresh containers and on a converged stack (--fresh only);
  * `site.yml --tags deploy` for a code-only change on the 2 web hosts (wall time), and per host the
    time from "out of the load balancer" to "back in and healthy" (drain, switch, /readyz, enable),
    from the tasks' own start and end times (ansible.posix.json callback);
  * a no-op deploy (the live release again);
then rolls back to the release that was live before. Writes artifacts/benchmarks/deploy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "molecule" / "site" / "tests"))

from stack import AWS_ENV, INVENTORY, live_releases, snapshot  # noqa: E402

OUT = REPO / "artifacts" / "benchmarks" / "deploy.json"
ROLLOUT_PLAY = "Roll out host by host"
LAST_TASK = "lb_target : Enable the host in HAProxy and wait until its health checks pass"


def run(argv: list[str], *, json_output: bool = False) -> tuple[float, str]:
    env = {**os.environ, **AWS_ENV, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout


def playbook(*args: str, json_output: bool = False) -> tuple[float, str]:
    return run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), *args], json_output=json_output)


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def per_host_out_of_service(report: dict[str, Any]) -> dict[str, float]:
    """Per host, seconds from the first task of its rollout batch (drain) to the end of the wait for the
    load balancer to see it healthy again. Batches hold one host each here (2 hosts: [1, 50%])."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for play in report["plays"]:
        if play["play"]["name"] != ROLLOUT_PLAY:
            continue
        for task in play["tasks"]:
            duration = task["task"].get("duration", {})
            for host, result in task["hosts"].items():
                if result.get("skipped") or "start" not in duration:
                    continue
                starts.setdefault(host, stamp(duration["start"]))
                if task["task"]["name"] == LAST_TASK:
                    ends[host] = stamp(duration["end"])
    return {host: round(ends[host] - starts[host], 1) for host in ends}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true", help="make down, then time make up twice")
    args = parser.parse_args()
    figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}

    if args.fresh:
        run(["make", "down"])
        figures["make_up_fresh_s"] = round(run(["make", "up"])[0], 1)
        figures["make_up_rerun_s"] = round(run(["make", "up"])[0], 1)

    before = live_releases()
    with tempfile.TemporaryDirectory() as folder:
        change = f"# benchmark {time.time_ns()}\n"
        source = snapshot(Path(folder), "benchmark", append={"app/__init__.py": change})
        seconds, output = playbook("site.yml", "--tags", "deploy", "-e", f"app_source_dir={source}", json_output=True)
        figures["deploy_code_change_s"] = round(seconds, 1)
        figures["out_of_service_per_host_s"] = per_host_out_of_service(json.loads(output))
        figures["deploy_noop_s"] = round(
            playbook("site.yml", "--tags", "deploy", "-e", f"app_source_dir={source}")[0], 1
        )
    after = live_releases()
    figures["releases"] = {"before": before, "after": after}
    playbook("playbooks/rollback.yml", "-e", f"rollback_release={before['web1']}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
