"""The Pythons the app supports (3.10 to 3.13): one minimum everywhere, and the lint checks that hold to it.

- pyproject's requires-python, the python role's python_min_version, ruff's target and vermin's target agree.
- vermin, as `make lint` runs it, fails on a 3.11-only feature (a planted StrEnum).
- scripts/wheel_check.py builds the pip command it means to, caches only passes, and (one real pip run
  against PyPI, 4-15 s) fails with the package, Python and platform named for a pin that needs 3.11.
- The python role fails on an interpreter older than python_min_version, naming the OS and the version
  (applied to this machine in --check mode, about 25 s each).
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import wheel_check  # noqa: E402 - found through the sys.path entry above
from wheel_check import Check, Target  # noqa: E402


def pyproject(key: str) -> str:
    """A top-level string setting of pyproject.toml (no tomllib: it is 3.11+)."""
    match = re.search(rf'^{re.escape(key)} = "([^"]*)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, f"pyproject.toml has no {key}"
    return match.group(1)


def min_python() -> str:
    requires = pyproject("requires-python")
    match = re.fullmatch(r">=(3\.\d+)", requires)
    assert match, f"requires-python should be a plain lower bound, got {requires!r}"
    return match.group(1)


def vermin_argv() -> list[str]:
    """The vermin command of scripts/test.sh's lint stage."""
    match = re.search(r"^VERMIN=\((.+)\)$", (ROOT / "scripts" / "test.sh").read_text(), re.MULTILINE)
    assert match, "scripts/test.sh defines no VERMIN=(...) command"
    return shlex.split(match.group(1))


# ---- one minimum everywhere ------------------------------------------------------------------------


def test_the_python_role_and_the_lint_targets_use_requires_python() -> None:
    minimum = min_python()
    role = ROOT / "roles" / "python"
    assert yaml.safe_load((role / "defaults" / "main.yml").read_text())["python_min_version"] == minimum
    assert pyproject("target-version") == "py" + minimum.replace(".", "")
    assert f"--target={minimum}-" in vermin_argv()
    assert wheel_check.PYTHONS[0] == minimum


# ---- vermin ----------------------------------------------------------------------------------------


def vermin(*paths: Path) -> subprocess.CompletedProcess[str]:
    argv = [arg for arg in vermin_argv() if arg.startswith("-") or arg == "vermin"]
    vermin_bin = Path(sys.executable).parent / "vermin"
    return subprocess.run(
        [str(vermin_bin), *argv[1:], *map(str, paths)], capture_output=True, text=True, check=False, timeout=60
    )


def test_vermin_fails_on_a_planted_strenum(tmp_path: Path) -> None:
    planted = tmp_path / "models.py"
    planted.write_text("from enum import StrEnum\n\n\nclass Status(StrEnum):\n    QUEUED = 'queued'\n")
    result = vermin(planted)
    assert result.returncode != 0, result.stdout
    assert "'enum.StrEnum' member requires !2, 3.11" in result.stdout


def test_vermin_passes_what_replaced_it(tmp_path: Path) -> None:
    fixed = tmp_path / "models.py"
    fixed.write_text(
        "from datetime import datetime, timezone\nfrom enum import Enum\n\n\n"
        "class Status(str, Enum):\n    QUEUED = 'queued'\n\n\nNOW = datetime.now(timezone.utc)\n"
    )
    result = vermin(fixed)
    assert result.returncode == 0, result.stdout


# ---- wheel check: the pieces -------------------------------------------------------------------------


def test_read_pins_takes_pinned_lines_and_rejects_the_rest(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# comment\nfastapi==0.162.5\n\npsycopg[binary]==3.3.9  # why\n")
    assert wheel_check.read_pins(good) == ["fastapi==0.162.5", "psycopg[binary]==3.3.9"]
    loose = tmp_path / "loose.txt"
    loose.write_text("fastapi>=0.100\n")
    with pytest.raises(ValueError, match="not pinned"):
        wheel_check.read_pins(loose)
    option = tmp_path / "option.txt"
    option.write_text("--index-url https://example.org/simple\nfastapi==1\n")
    with pytest.raises(ValueError, match="--index-url"):
        wheel_check.read_pins(option)


def test_the_app_and_torch_files_are_fully_pinned() -> None:
    assert wheel_check.read_pins(ROOT / "app" / "requirements.txt")
    assert wheel_check.read_pins(ROOT / "app" / "requirements-torch.txt") == ["torch==" + torch_pin()]


def torch_pin() -> str:
    return (ROOT / "app" / "requirements-torch.txt").read_text().split("torch==", 1)[1].split()[0]


def test_platform_tags_reach_the_oldest_hosts_glibc_and_no_further() -> None:
    x86 = Target("3.10", "x86_64").platforms()
    assert {"manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux1_x86_64"} <= set(x86)
    assert "manylinux_2_35_x86_64" in x86
    assert "manylinux_2_36_x86_64" not in x86
    arm = Target("3.13", "aarch64").platforms()
    assert {"manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"} <= set(arm)
    assert all(tag.endswith("_aarch64") for tag in arm)


def test_pip_command_resolves_wheels_only_for_the_target_and_installs_nothing(tmp_path: Path) -> None:
    check = Check("app", tmp_path / "requirements.txt", "https://pypi.org/simple")
    command = wheel_check.pip_command(check, Target("3.10", "aarch64"), tmp_path / "report.json")
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    for flag in ("--dry-run", "--ignore-installed", "--only-binary=:all:"):
        assert flag in command
    assert "--no-deps" not in command
    pairs = set(itertools.pairwise(command))
    assert ("--python-version", "3.10") in pairs
    assert ("--implementation", "cp") in pairs
    assert ("--platform", "manylinux_2_28_aarch64") in pairs
    assert ("--index-url", "https://pypi.org/simple") in pairs
    assert ("--report", str(tmp_path / "report.json")) in pairs
    assert ("--requirement", str(tmp_path / "requirements.txt")) in pairs
    torch = Check("torch cpu", tmp_path / "t.txt", "https://download.pytorch.org/whl/cpu", deps=False)
    assert "--no-deps" in wheel_check.pip_command(torch, Target("3.10", "x86_64"), tmp_path / "r.json")


def test_pip_runs_without_the_machines_indexes_wheel_folders_or_constraints() -> None:
    env = wheel_check.pip_env(
        {"PATH": "/bin", "PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///x", "PIP_CERT": "/ca.pem"}
    )
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    assert "PIP_FIND_LINKS" not in env
    assert "PIP_EXTRA_INDEX_URL" not in env
    assert env["PIP_CERT"] == "/ca.pem"
    assert env["PATH"] == "/bin"


def test_the_cache_key_changes_with_each_input(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("fastapi==0.162.5\n")
    check = Check("app", reqs, "https://pypi.org/simple")
    base = wheel_check.cache_key(check, Target("3.10", "x86_64"))
    assert base == wheel_check.cache_key(check, Target("3.10", "x86_64"))
    others = {
        wheel_check.cache_key(check, Target("3.11", "x86_64")),
        wheel_check.cache_key(check, Target("3.10", "aarch64")),
        wheel_check.cache_key(Check("app", reqs, "https://mirror.example/simple"), Target("3.10", "x86_64")),
        wheel_check.cache_key(Check("app", reqs, "https://pypi.org/simple", deps=False), Target("3.10", "x86_64")),
    }
    reqs.write_text("fastapi==0.162.4\n")
    others.add(wheel_check.cache_key(check, Target("3.10", "x86_64")))
    assert base not in others
    assert len(others) == 5


def test_a_cached_pass_runs_no_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("fastapi==0.162.5\n")
    check, target = Check("app", reqs, "https://pypi.org/simple"), Target("3.10", "x86_64")
    (tmp_path / f"{wheel_check.cache_key(check, target)}.json").write_text('{"resolved": ["fastapi==0.162.5"]}')

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"pip ran: {args}")

    monkeypatch.setattr(wheel_check.subprocess, "run", no_pip)
    outcome = wheel_check.run_one(check, target, tmp_path, refresh=False)
    assert outcome.ok
    assert outcome.cached


def test_pip_errors_name_the_requirement() -> None:
    stderr = (
        "ERROR: Ignored the following versions that require a different python version: "
        "0.165.0 Requires-Python >=3.11\n"
        "ERROR: Could not find a version that satisfies the requirement fastapi==0.165.0 (from versions: 0.1.0, 0.2)\n"
        "ERROR: No matching distribution found for fastapi==0.165.0\n"
    )
    assert wheel_check.blamed_requirement(stderr) == "fastapi==0.165.0"
    assert "from versions" not in wheel_check.pip_errors(stderr)
    conflict = "ERROR: Cannot install a==1 and b==2 because these package versions have conflicting dependencies.\n"
    assert wheel_check.blamed_requirement(conflict) == "a==1 and b==2"
    assert wheel_check.blamed_requirement("something else") is None


def test_the_torch_indexes_are_the_pytorch_roles() -> None:
    role_vars = yaml.safe_load((ROOT / "roles" / "pytorch" / "vars" / "main.yml").read_text())
    assert wheel_check.torch_indexes() == role_vars["pytorch_official_index_urls"]


def test_an_index_that_does_not_answer_is_skipped_with_its_name(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements-torch.txt"
    reqs.write_text("torch==2.13.0\n")
    unreachable = "http://127.0.0.1:9/simple"  # the discard port: nothing listens
    check = Check("torch cpu", reqs, unreachable, optional=True, deps=False)
    outcomes, skipped = wheel_check.run_checks([check], [Target("3.10", "x86_64")], tmp_path, jobs=1, refresh=False)
    assert outcomes == []
    assert len(skipped) == 1
    assert "SKIP torch cpu" in skipped[0]
    assert unreachable in skipped[0]


# ---- wheel check: one real resolution against PyPI (4-15 s) ------------------------------------------


def test_a_pin_that_needs_python_3_11_fails_on_3_10_with_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not wheel_check.index_answers(wheel_check.PYPI, "fastapi"):
        pytest.skip("PyPI does not answer from here")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("fastapi==0.165.0\n")  # Requires-Python >=3.11; 0.162.5 was the last for 3.10
    argv = ["--requirements", str(reqs), "--python", "3.10", "--arch", "x86_64", "--cache-dir", str(tmp_path)]
    assert wheel_check.main(argv) == 1
    out = capsys.readouterr().out
    assert "FAIL requirements.txt: fastapi==0.165.0" in out
    assert "CPython 3.10 on manylinux x86_64" in out
    assert "Requires-Python >=3.11" in out
    assert not list(tmp_path.glob("*.json")), "a failure must not be cached"


# ---- the python role on this machine (localhost, --check) -------------------------------------------------
# Under the system Python, as on a host: apt's module needs python3-apt, which the venv lacks. Under the venv's
# interpreter the module re-executes itself under the system one, which Mitogen's strategy (ansible.cfg) does
# not support ("Module result deserialization failed").
SYSTEM_PYTHON = "/usr/bin/python3"


def test_the_python_role_fails_on_an_interpreter_older_than_the_minimum(apply_role) -> None:
    if not Path("/usr/bin/apt-get").exists():
        pytest.skip("the python role installs with apt: not a Debian or Ubuntu machine")
    result = apply_role("python", {"python_min_version": "3.99"}, interpreter=SYSTEM_PYTHON)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert re.search(r"/usr/bin/python3 on (Debian|Ubuntu) [\d.]+\s+is Python 3\.\d+\.\d+; the app needs", output)
    assert "Python 3.99 or newer" in output
    assert re.search(r"changed=0\s", output), output


def test_the_python_role_accepts_the_default_minimum_here(apply_role) -> None:
    if not Path("/usr/bin/apt-get").exists():
        pytest.skip("the python role installs with apt: not a Debian or Ubuntu machine")
    result = apply_role("python", {}, interpreter=SYSTEM_PYTHON)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(rf"/usr/bin/python3 is Python 3\.\d+\.\d+ \(>= {re.escape(min_python())}\)", output), output
