"""`make test` runs role scenarios several at a time (scripts/test.sh), on the host network: no two scenarios
may open the same fixed loopback port, or one of them fails to start its service. The site scenario's
ports are inventories/local's."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PORT = re.compile(r"""(?:port["']?\s*[:=]\s*|127\.0\.0\.1:|localhost:|\bbind\b[^\n]*:)(\d{4,5})\b""")


def ports(files: list[Path]) -> set[int]:
    found: set[int] = set()
    for file in files:
        found |= {int(port) for port in PORT.findall(file.read_text()) if 1024 <= int(port) < 32768}
    return found


def scenario_ports() -> dict[str, set[int]]:
    result: dict[str, set[int]] = {}
    for folder in sorted(p.parent for p in (REPO / "molecule").glob("*/molecule.yml")):
        files = [*folder.rglob("*.yml"), *folder.rglob("*.py")]
        if folder.name == "site":
            files = [*(REPO / "inventories" / "local").rglob("*.yml")]
        result[folder.name] = ports(files)
    return result


def test_no_two_scenarios_share_a_port() -> None:
    found = scenario_ports()
    for scenario in ("nginx", "loadbalancer", "certbot", "app", "site"):
        assert found[scenario], f"no port found for {scenario}: the pattern no longer matches its files"
    clashes = {(a, b): found[a] & found[b] for a, b in combinations(found, 2) if found[a] & found[b]}
    assert clashes == {}, f"scenarios that would collide when run at once: {clashes}"
