#!/usr/bin/env python3
"""Deploy benchmark on the local stack (inventories/local): how long on-call waits, and what it costs.

  .venv/bin/python benchmarks/deploy.py            # on a running stack (make up)
  .venv/bin/python benchmarks/deploy.py --fresh    # also: make down, then time make up fresh and rerun

Measures, on this machine:
  * `make up` on fresh containers and on a converged stack (--fresh only);
  * `site.yml --tags deploy` of a code-only change on the 2 web hosts with no load (wall time), and per
    host the time from "new slot started" to "traffic on the new slot" (the start of the task that starts
    the idle slot to the end of the wait for nginx's old workers), from the tasks' own times
    (ansible.posix.json callback);
  * time out of service as the load balancer sees it: HAProxy's state of each host, sampled every 0.25 s
    during the rollout, and its UP->DOWN transition counter (0 by design: no host leaves service);
  * RSS of each slot on web1 (ps, every 0.25 s): one slot alone, and both while the rollout runs them;
  * a no-op deploy (the live release again);
  * the same code-only rollout under the load that saturates this machine (64 clients through the load
    balancer with no pause, 8 straight at web1's nginx): wall time, requests, failures by reason;
then rolls back to the release that was live before. Writes artifacts/benchmarks/deploy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "molecule" / "site" / "tests"))

from stack import (  # noqa: E402
    AWS_ENV,
    INVENTORY,
    docker_exec,
    haproxy_servers,
    lb_client,
    live_releases,
    saturating_load,
    snapshot,
)

OUT = REPO / "artifacts" / "benchmarks" / "deploy.json"
ROLLOUT_PLAY = "Roll out, canary first"
FIRST_TASK = "app : Start the idle slot"
LAST_TASK = "app : Point the live socket link at the idle slot's socket"
SLOT_PROCESS = re.compile(r"^\s*(\d+)\s+\S*?/opt/nnp/slots/(\w+)/\.venv/bin/python")


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


def slot_switch_seconds(report: dict[str, Any]) -> dict[str, float]:
    """Per host, seconds from the start of the idle slot to the moment only the new slot gets traffic."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for play in report["plays"]:
        if play["play"]["name"] != ROLLOUT_PLAY:
            continue
        for task in play["tasks"]:
            name, duration = task["task"]["name"], task["task"].get("duration", {})
            for host, result in task["hosts"].items():
                if result.get("skipped") or "start" not in duration:
                    continue
                if name.startswith(FIRST_TASK):
                    starts.setdefault(host, stamp(duration["start"]))
                if name.startswith(LAST_TASK):
                    ends[host] = stamp(duration["end"])
    return {host: round(ends[host] - starts[host], 1) for host in ends if host in starts}


class Sampler:
    """Samples HAProxy's view of each host and web1's slot RSS every 0.25 s while a rollout runs."""

    def __init__(self) -> None:
        self.down_s: dict[str, float] = {}
        self.rss_mib: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            servers = haproxy_servers()
            now = time.monotonic()
            for name, server in servers.items():
                self.down_s.setdefault(name, 0.0)
                if server["status"] != "UP":
                    self.down_s[name] += now - last
            last = now
            self.rss_mib.append(slot_rss_mib("web1"))
            self._stop.wait(0.25)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def slot_rss_mib(host: str) -> dict[str, float]:
    """RSS of each running slot's processes on the host (Uvicorn's supervisor and workers), in MiB."""
    totals: dict[str, float] = {}
    for line in docker_exec(host, "ps", "-eo", "rss=,args=").splitlines():
        if match := SLOT_PROCESS.match(line):
            totals[match[2]] = totals.get(match[2], 0.0) + int(match[1]) / 1024
    return {slot: round(mib, 1) for slot, mib in totals.items()}


def rollout(source: Path) -> tuple[float, dict[str, Any], Sampler, dict[str, dict[str, str]]]:
    checks = haproxy_servers()
    with Sampler() as sampler:
        seconds, output = playbook("site.yml", "--tags", "deploy", "-e", f"app_source_dir={source}", json_output=True)
    after = haproxy_servers()
    transitions = {name: int(after[name]["chkdown"]) - int(checks[name]["chkdown"]) for name in after}
    return seconds, json.loads(output), sampler, transitions


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
    figures["slot_rss_alone_mib"] = slot_rss_mib("web1")
    with tempfile.TemporaryDirectory() as folder:
        quiet = snapshot(Path(folder), "quiet", append={"app/__init__.py": f"# benchmark {time.time_ns()}\n"})
        seconds, report, sampler, transitions = rollout(quiet)
        both = [sample for sample in sampler.rss_mib if len(sample) == 2]
        figures["rollout_no_load"] = {
            "wall_s": round(seconds, 1),
            "slot_start_to_traffic_s": slot_switch_seconds(report),
            "out_of_service_at_lb_s": {name: round(value, 2) for name, value in sampler.down_s.items()},
            "lb_down_transitions": transitions,
            "rss_two_slots_peak_mib": max((sum(sample.values()) for sample in both), default=None),
        }
        figures["deploy_noop_s"] = round(
            playbook("site.yml", "--tags", "deploy", "-e", f"app_source_dir={quiet}")[0], 1
        )

        with lb_client() as client:
            models = [item for item in client.get("/api/models?limit=500").json()["items"] if item["weights_version"]]
        if not models:
            sys.exit("no model to predict with: train one first (the site scenario's tests do)")
        model_id = models[0]["id"]
        loaded = snapshot(Path(folder), "loaded", append={"app/__init__.py": f"# benchmark {time.time_ns()}\n"})
        with saturating_load(model_id) as loads:
            seconds, report, sampler, transitions = rollout(loaded)
        figures["rollout_saturating_load"] = {
            "wall_s": round(seconds, 1),
            "slot_start_to_traffic_s": slot_switch_seconds(report),
            "out_of_service_at_lb_s": {name: round(value, 2) for name, value in sampler.down_s.items()},
            "lb_down_transitions": transitions,
            "loads": [load.figures() for load in loads],
        }
    figures["releases"] = {"before": before, "after": live_releases()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    # Back to what was live, when every host ran the same release (a one-host rollout may have left two).
    if len(set(before.values())) == 1:
        playbook("playbooks/rollback.yml", "-e", f"rollback_release={next(iter(before.values()))}")


if __name__ == "__main__":
    main()
