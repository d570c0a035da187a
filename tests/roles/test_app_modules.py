"""The app role's modules run directly (as Ansible runs them on a host) against folders under tmp_path.

app_record writes the local fact and prunes in one call; app_slots_info reads the host's slots and what a
switch decides from. A switch trusts both, so each promise is checked on its own here, where a failure
names the file and the value, before the Molecule scenarios exercise them through the role.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "roles" / "app" / "library"


def module(name: str, tmp_path: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    args = tmp_path / f"{name}-args.json"
    if check:
        params["_ansible_check_mode"] = True
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    done = subprocess.run(
        [sys.executable, str(LIBRARY / f"{name}.py"), str(args)], capture_output=True, text=True, check=False
    )
    return json.loads(done.stdout)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Releases r1..r4 staged a minute apart (r4 newest), r1-r3 on venv A, r4 on venv B, and venv C unused."""
    root = tmp_path / "opt"
    for venv in ("A", "B", "C"):
        (root / "venvs" / venv / "bin").mkdir(parents=True)
    for index, release in enumerate(("r1", "r2", "r3", "r4")):
        path = root / "releases" / release
        path.mkdir(parents=True)
        (path / ".venv").symlink_to(root / "venvs" / ("B" if release == "r4" else "A"))
        (path / "release.env").write_text(f'RELEASE_ID="{release}"\nGIT_SHA="sha-{release}"\n')
        stamp = time.time() - 3600 + index * 60
        os.utime(path, (stamp, stamp))
    return root


def record(host: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    base = {
        "releases_dir": str(host / "releases"),
        "venvs_dir": str(host / "venvs"),
        "fact_file": str(host / "facts.d" / "nnp_app.fact"),
        "keep": 2,
        "slot": "blue",
    }
    return module("app_record", host.parent, check=check, **{**base, **params})


def test_record_writes_the_fact_and_prunes_beyond_keep(host: Path) -> None:
    result = record(host, release="r4", release_before="r1", alembic_head="0001")

    assert result["changed"], result
    assert result["recorded"], result
    fact = json.loads((host / "facts.d" / "nnp_app.fact").read_text())
    assert fact == result["record"]
    assert {key: fact[key] for key in ("release", "slot", "previous_release", "alembic_head", "git_sha")} == {
        "release": "r4",
        "slot": "blue",
        "previous_release": "r1",
        "alembic_head": "0001",
        "git_sha": "sha-r4",
    }
    assert fact["venv"] == str(host / "venvs" / "B")
    assert oct((host / "facts.d" / "nnp_app.fact").stat().st_mode & 0o777) == "0o644"
    # Kept: the 2 newest (r4, r3) and the previous release r1; r2 goes. Venv C is used by nothing.
    assert sorted(p.name for p in (host / "releases").iterdir()) == ["r1", "r3", "r4"]
    assert result["removed_releases"] == [str(host / "releases" / "r2")]
    assert sorted(p.name for p in (host / "venvs").iterdir()) == ["A", "B"]


def test_record_of_the_same_release_changes_nothing_and_keeps_deployed_at(host: Path) -> None:
    first = record(host, release="r4", release_before="r3", alembic_head="0001")
    (host / "facts.d" / "nnp_app.fact").touch()
    # A rerun: the host already served r4 (release_before is r4 now), no schema head reported.
    again = record(host, release="r4", release_before="r4")

    assert not again["changed"], again
    assert again["record"] == first["record"]
    assert again["record"]["previous_release"] == "r3"


def test_a_new_slot_or_schema_head_rewrites_the_record_but_keeps_the_previous_release(host: Path) -> None:
    record(host, release="r4", release_before="r3", alembic_head="0001")
    moved = record(host, release="r4", release_before="r4", slot="green", alembic_head="0002")

    assert moved["recorded"], moved
    assert moved["record"]["slot"] == "green"
    assert moved["record"]["alembic_head"] == "0002"
    assert moved["record"]["previous_release"] == "r3"


def test_check_mode_writes_and_removes_nothing(host: Path) -> None:
    result = record(host, check=True, release="r4", release_before="r1")

    assert result["changed"], result
    assert not (host / "facts.d").exists()
    assert sorted(p.name for p in (host / "releases").iterdir()) == ["r1", "r2", "r3", "r4"]
    assert sorted(p.name for p in (host / "venvs").iterdir()) == ["A", "B", "C"]


def test_record_refuses_a_release_that_is_not_staged_and_a_keep_below_two(host: Path) -> None:
    missing = record(host, release="r9")
    low = record(host, release="r4", keep=1)

    assert missing["failed"], missing
    assert "release r9 is not in" in missing["msg"], missing
    assert low["failed"], low
    assert "keep must be at least 2, got 1" in low["msg"], low
    assert sorted(p.name for p in (host / "releases").iterdir()) == ["r1", "r2", "r3", "r4"]


def test_slots_info_reads_links_staging_upstream_and_memory(host: Path) -> None:
    slots = host / "slots"
    slots.mkdir()
    (slots / "blue").symlink_to(host / "releases" / "r3")
    (slots / "green").symlink_to(host / "releases" / "r4")
    (slots / "live").symlink_to("green")
    (host / "releases" / "r4" / ".venv" / "bin").mkdir(exist_ok=True)
    (host / "venvs" / "B" / "bin" / "python").write_text("")
    upstream = host / "nnp-upstream.conf"
    upstream.write_text("server unix:/opt/nnp/slots/live.sock;\n")

    result = module(
        "app_slots_info",
        host.parent,
        slots_dir=str(slots),
        live_link=str(slots / "live"),
        slot_names=["blue", "green"],
        first_slot="blue",
        # No such units: systemctl says inactive, or fails where systemd is not running; either way no slot is active.
        unit_prefix="nnp-test-no-such-unit@",
        fact_file=str(host / "facts.d" / "nnp_app.fact"),
        restart_marker=str(host / ".restart-needed"),
        release="r4",
        releases_dir=str(host / "releases"),
        upstream_file=str(upstream),
        legacy_unit_file=str(host / "nnp-app.service"),
    )

    state = result["state"]
    assert not result["changed"]
    assert (state["live_slot"], state["live_release"], state["idle_slot"]) == ("green", "r4", "blue")
    assert state["slots"] == {"blue": "r3", "green": "r4"}
    assert state["live_active"] is False
    assert state["release_staged"] is True
    assert state["upstream_content"] == "server unix:/opt/nnp/slots/live.sock;\n"
    assert state["legacy_unit_present"] is False
    assert state["restart_pending"] is False
    meminfo = Path("/proc/meminfo").read_text()
    expected = int(next(line for line in meminfo.splitlines() if line.startswith("MemAvailable:")).split()[1]) // 1024
    assert abs(state["mem_available_mib"] - expected) < 512, (state["mem_available_mib"], expected)
