#!/usr/bin/env python3
"""The CPU time each container used while this runs: the container side of `make test`'s cost.

    scripts/container_cpu.py OUTPUT [INTERVAL]

Every INTERVAL seconds (default 2) it reads each running container's CPU counter from its cgroup
(cgroup v1 `cpuacct.usage`, or cgroup v2 `cpu.stat` usage_usec) and keeps the last reading; a
container's total is its last reading before it went away. On SIGTERM or SIGINT it writes one line per
container name to OUTPUT, the largest first, with the CPU seconds and how many containers of that name
ran (a scenario run twice, or on two images, reuses the name). The processes of the test run itself
(Ansible, pytest, the load clients) are counted by the stages (`times`); this counts what ran inside
the containers: the roles' modules, the app, PostgreSQL, package installs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

CGROUP_V1 = Path("/sys/fs/cgroup/cpuacct/docker")
CGROUP_V2 = Path("/sys/fs/cgroup/system.slice")


def usage_seconds(container_id: str) -> float | None:
    """The container's CPU time so far, or None when its cgroup is gone (or this machine has neither layout)."""
    try:
        v1 = CGROUP_V1 / container_id / "cpuacct.usage"
        if v1.exists():
            return int(v1.read_text()) / 1e9
        for line in (CGROUP_V2 / f"docker-{container_id}.scope" / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        return None
    return None


def running() -> dict[str, str]:
    """Running containers: full id -> name."""
    done = subprocess.run(
        ["docker", "ps", "--no-trunc", "--format", "{{json .}}"], capture_output=True, text=True, check=False
    )
    found = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        found[entry["ID"]] = entry["Names"]
    return found


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    output = Path(argv[1])
    interval = float(argv[2]) if len(argv) == 3 else 2.0
    names: dict[str, str] = {}
    last: dict[str, float] = {}
    stop = False

    def finish(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    while not stop:
        for container_id, name in running().items():
            names.setdefault(container_id, name)
        for container_id in names:
            seconds = usage_seconds(container_id)
            if seconds is not None:
                last[container_id] = seconds
        time.sleep(interval)
    totals: dict[str, list[float]] = {}
    for container_id, seconds in last.items():
        entry = totals.setdefault(names[container_id], [0.0, 0])
        entry[0] += seconds
        entry[1] += 1
    lines = [
        f"{name:<28} {seconds:7.0f}s CPU  ({int(count)} container{'s' if count > 1 else ''})"
        for name, (seconds, count) in sorted(totals.items(), key=lambda item: -item[1][0])
    ]
    total = sum(seconds for seconds, _ in totals.values())
    lines.append(f"{'all containers':<28} {total:7.0f}s CPU")
    output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
