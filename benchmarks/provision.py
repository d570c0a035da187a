#!/usr/bin/env python3
"""Provisioning benchmark against moto: first run, rerun with nothing to change, teardown (issue 13).

  .venv/bin/python benchmarks/provision.py             # staging, once
  .venv/bin/python benchmarks/provision.py --rounds 2  # twice, keeps the better figures

Runs the provisioning as tests/provision/test_provision_lifecycle.py does (its harness, the same moto
settings; the first run at -vvv as there) and prints, per round: the seconds of the first run, the
rerun (and its percent of the first run), the teardown, the load average, and the rerun's slowest tasks
from ansible.posix.profile_tasks. Writes artifacts/benchmarks/provision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# In place of this folder, whose queue.py would shadow the standard library's (boto3 imports it).
sys.path[0] = str(REPO / "tests" / "provision")

from provision_harness import MotoServer, Run  # noqa: E402

OUT = REPO / "artifacts" / "benchmarks" / "provision.json"
ALARM_EMAIL = "oncall@example.org"
# profile_tasks' summary lines: "role : task name ---------- 1.23s"
TASK_TIME = re.compile(r"^(?P<task>.+?) -{3,} (?P<seconds>\d+\.\d+)s$", re.MULTILINE)


def task_times(run: Run, top: int) -> list[tuple[str, float]]:
    summary = run.output.rsplit("=" * 20, 1)[-1]
    times = [(m["task"].strip(), float(m["seconds"])) for m in TASK_TIME.finditer(summary)]
    return sorted(times, key=lambda item: -item[1])[:top]


def one_round(env: str, key: Path, top: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="provision-bench-") as workdir:
        aws = MotoServer(Path(workdir))
        aws.start()
        try:
            extra = {"aws_alarms_email": ALARM_EMAIL}
            load = os.getloadavg()
            first = aws.playbook("playbooks/provision.yml", env, extra, key=key, verbosity="-vvv")
            rerun = aws.playbook("playbooks/provision.yml", env, extra, key=key)
            teardown = aws.playbook("playbooks/teardown.yml", env, {"confirm_destroy": env}, key=key)
            assert rerun.recap["changed"] == 0, f"the rerun changed {rerun.changed_tasks}"
            return {
                "load_average": [round(value, 2) for value in (*load, *os.getloadavg())],
                "first_s": round(first.seconds, 1),
                "rerun_s": round(rerun.seconds, 1),
                "rerun_percent": round(100 * rerun.seconds / first.seconds),
                "rerun_cpu_s": round(rerun.cpu_seconds, 1),
                "rerun_calls": len(rerun.calls),
                "teardown_s": round(teardown.seconds, 1),
                "rerun_top_tasks": task_times(rerun, top),
                "first_top_tasks": task_times(first, top),
            }
        finally:
            aws.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="staging", choices=["staging", "production"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="provision-bench-key-") as keydir:
        key = Path(keydir) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        rounds = []
        for number in range(1, args.rounds + 1):
            result = one_round(args.env, key.with_suffix(".pub"), args.top)
            rounds.append(result)
            print(
                f"round {number}: first {result['first_s']} s, rerun {result['rerun_s']} s "
                f"({result['rerun_percent']} %, {result['rerun_cpu_s']} s CPU, {result['rerun_calls']} API calls), "
                f"teardown {result['teardown_s']} s; load average before/after {result['load_average']}"
            )
            for task, seconds in result["rerun_top_tasks"]:
                print(f"  {seconds:6.2f} s  {task}")
    best = min(rounds, key=lambda r: r["rerun_percent"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"env": args.env, "best": best, "rounds": rounds}, indent=2) + "\n")
    print(f"best: first {best['first_s']} s, rerun {best['rerun_s']} s ({best['rerun_percent']} %); see {OUT}")


if __name__ == "__main__":
    main()
