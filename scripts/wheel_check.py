#!/usr/bin/env python3
"""Check that the app's pins install from wheels on every Python and platform the app supports.

For each requirements file, CPython version (3.10 to 3.13) and architecture (manylinux x86_64 and
aarch64), pip resolves the file as it would on such a host, from binary wheels only, without installing
anything (`pip install --dry-run --report`). A failure names the requirements file, the package pip
could not place, the Python version and the platform.

- app/requirements.txt resolves against PyPI (WHEEL_CHECK_INDEX_URL or --index-url for a mirror).
- app/requirements-torch.txt against the official PyTorch indexes the pytorch role uses
  (roles/pytorch/vars/main.yml): the CPU build on both architectures, the CUDA build on x86_64 (the
  GPU instance types are). Only torch's own wheel is checked (--no-deps): its dependencies come from
  the same index, and resolving the CUDA ones would fetch gigabytes where an index lacks metadata.
  Where an index does not answer, its check is skipped with a message naming it; PyPI not answering
  is a failure.

pip runs with no configuration file and no PIP_* settings but the network ones, so a machine's own
wheel folders, mirrors or constraints cannot make a pin look installable when it is not.

A passing result is cached under .cache/wheel-check/, keyed by the requirements file's bytes, the
index, the Python version and the platform tags: a rerun with unchanged pins runs no pip at all.
Unpinned dependencies of the pins can still move; `--refresh` (or deleting the folder) checks again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ARCHS = ("x86_64", "aarch64")
# glibc of the oldest supported host (Ubuntu 22.04: 2.35). A wheel for an older glibc also installs there.
GLIBC_MINOR = 35
PYPI = "https://pypi.org/simple"
TORCH_INDEX_VARS = REPO_ROOT / "roles" / "pytorch" / "vars" / "main.yml"
CACHE_DIR = REPO_ROOT / ".cache" / "wheel-check"
# Part of every cache key: a change to how pip is asked invalidates the old results.
CACHE_SCHEMA = "1"
# PIP_* variables that say how to reach an index (proxy, certificates), kept; any other is dropped.
PIP_NETWORK_ENV = ("PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES")


@dataclass(frozen=True)
class Target:
    """A host the app may run on: a CPython version on a manylinux architecture."""

    python: str
    arch: str

    def platforms(self) -> list[str]:
        """Every manylinux tag such a host accepts, newest glibc first, with the legacy aliases."""
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(GLIBC_MINOR, 16, -1)]
        tags.append(f"manylinux2014_{self.arch}")
        if self.arch == "x86_64":
            tags += [f"manylinux_2_{minor}_{self.arch}" for minor in range(16, 4, -1)]
            tags += [f"manylinux2010_{self.arch}", f"manylinux1_{self.arch}"]
        return tags

    def label(self) -> str:
        return f"CPython {self.python} on manylinux {self.arch}"


@dataclass(frozen=True)
class Check:
    """One requirements file resolved against one index."""

    name: str
    requirements: Path
    index_url: str
    # Skip (with a message) rather than fail when the index does not answer.
    optional: bool = False
    # Resolve the pins' dependencies too (pip --no-deps when false).
    deps: bool = True
    archs: tuple[str, ...] = ARCHS


@dataclass(frozen=True)
class Outcome:
    check: Check
    target: Target
    ok: bool
    cached: bool
    seconds: float
    detail: str


def read_pins(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file; every one must be pinned with ==."""
    pins = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(f"{path}: options such as {line.split()[0]} are not supported here: {raw!r}")
        if "==" not in line:
            raise ValueError(f"{path}: {line!r} is not pinned with ==")
        pins.append(line)
    return pins


def pip_command(check: Check, target: Target, report: Path) -> list[str]:
    """pip resolving the check's file for the target from wheels only, installing nothing."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:"]
    command += ["--no-input", "--disable-pip-version-check", "--quiet"]
    if not check.deps:
        command.append("--no-deps")
    command += ["--implementation", "cp", "--python-version", target.python]
    for platform in target.platforms():
        command += ["--platform", platform]
    command += ["--index-url", check.index_url, "--report", str(report), "--requirement", str(check.requirements)]
    return command


def pip_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment pip runs in: no configuration file, no PIP_* setting but the network ones."""
    env = {key: value for key, value in environ.items() if not key.startswith("PIP_") or key in PIP_NETWORK_ENV}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def cache_key(check: Check, target: Target) -> str:
    """What a result depends on: the file's bytes, the index, dependencies or not, Python, platform tags."""
    digest = hashlib.sha256()
    parts = (CACHE_SCHEMA, check.requirements.read_bytes(), check.index_url, str(check.deps), target.python)
    for part in parts:
        digest.update((part if isinstance(part, bytes) else part.encode()) + b"\0")
    digest.update(" ".join(target.platforms()).encode())
    return digest.hexdigest()


def blamed_requirement(stderr: str) -> str | None:
    """The requirement pip names in its error, e.g. 'fastapi==0.165.0'; None when it names none."""
    patterns = (
        r"No matching distribution found for (\S+)",
        r"Could not find a version that satisfies the requirement (\S+)",
        r"Cannot install (.+?) because these package versions have conflicting dependencies",
    )
    for pattern in patterns:
        match = re.search(pattern, stderr)
        if match:
            return match.group(1)
    return None


def pip_errors(stderr: str) -> str:
    """pip's ERROR lines, without the list of every version it saw (hundreds for fastapi)."""
    lines = [re.sub(r" \(from versions: .*\)$", "", line) for line in stderr.splitlines() if line.startswith("ERROR")]
    return "\n".join(lines) or stderr.strip()[-2000:]


def resolved(report: Path) -> list[str]:
    data = json.loads(report.read_text())
    return sorted(f"{item['metadata']['name']}=={item['metadata']['version']}" for item in data["install"])


def run_one(check: Check, target: Target, cache_dir: Path, refresh: bool) -> Outcome:
    start = time.monotonic()
    cache_file = cache_dir / f"{cache_key(check, target)}.json"
    if cache_file.exists() and not refresh:
        packages = json.loads(cache_file.read_text())["resolved"]
        return Outcome(check, target, True, True, time.monotonic() - start, f"{len(packages)} packages")
    with tempfile.TemporaryDirectory(prefix="wheel-check-") as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.run(
            pip_command(check, target, report),
            capture_output=True,
            text=True,
            env=pip_env(dict(os.environ)),
            check=False,
        )
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            return Outcome(check, target, False, False, seconds, proc.stderr)
        packages = resolved(report)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"check": check.name, "target": target.label(), "resolved": packages}, indent=1))
    return Outcome(check, target, True, False, seconds, f"{len(packages)} packages")


def index_answers(index_url: str, project: str, timeout: float = 10.0) -> bool:
    """Whether the index serves the project's page (a PEP 503 simple index)."""
    request = urllib.request.Request(f"{index_url.rstrip('/')}/{project}/", method="GET")  # noqa: S310 - https URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the URL is ours
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def torch_indexes(path: Path = TORCH_INDEX_VARS) -> dict[str, str]:
    """The official PyTorch indexes of the pytorch role (variant -> URL), read from its vars file."""
    text = path.read_text()
    block = re.search(r"^pytorch_official_index_urls:\n((?:[ \t]+\S.*\n)+)", text, re.MULTILINE)
    if block is None:
        raise ValueError(f"{path}: no pytorch_official_index_urls mapping")
    return dict(re.findall(r"^\s+(\w+):\s*(\S+)\s*$", block.group(1), re.MULTILINE))


def default_checks(index_url: str, with_torch: bool) -> list[Check]:
    checks = [Check("app", REPO_ROOT / "app" / "requirements.txt", index_url)]
    if with_torch:
        torch_file = REPO_ROOT / "app" / "requirements-torch.txt"
        for variant, url in torch_indexes().items():
            archs = ("x86_64",) if variant == "cuda" else ARCHS
            checks.append(Check(f"torch {variant}", torch_file, url, optional=True, deps=False, archs=archs))
    return checks


def failure_message(outcome: Outcome) -> str:
    path = outcome.check.requirements
    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    blamed = blamed_requirement(outcome.detail) or "(pip named no package)"
    return (
        f"FAIL {outcome.check.name}: {blamed} from {where} has no wheel for {outcome.target.label()} "
        f"on {outcome.check.index_url}\n"
        + "\n".join(f"     {line}" for line in pip_errors(outcome.detail).splitlines())
    )


def run_checks(
    checks: Sequence[Check], targets: Iterable[Target], cache_dir: Path, jobs: int, refresh: bool
) -> tuple[list[Outcome], list[str]]:
    """Run every reachable check on every target; returns the outcomes and the skip messages."""
    skipped: list[str] = []
    runnable: list[Check] = []
    for check in checks:
        project = read_pins(check.requirements)[0].split("==")[0].split("[")[0]
        if check.optional and not index_answers(check.index_url, project):
            skipped.append(f"SKIP {check.name}: {check.index_url} does not answer from here; {check.requirements.name}")
            skipped[-1] += " is not checked (it is where that index is reachable, e.g. on GitHub)"
            continue
        runnable.append(check)
    work = [(check, target) for check in runnable for target in targets if target.arch in check.archs]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(lambda pair: run_one(pair[0], pair[1], cache_dir, refresh), work))
    return outcomes, skipped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, action="append", help="check only these files (default: app's)")
    parser.add_argument("--python", action="append", dest="pythons", help=f"default: {' '.join(PYTHONS)}")
    parser.add_argument("--arch", action="append", dest="archs", help=f"default: {' '.join(ARCHS)}")
    parser.add_argument("--index-url", default=os.environ.get("WHEEL_CHECK_INDEX_URL", PYPI))
    parser.add_argument("--no-torch", action="store_true", help="skip app/requirements-torch.txt")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--refresh", action="store_true", help="ignore cached results")
    parser.add_argument("--jobs", type=int, default=4, help="pip runs at a time")
    args = parser.parse_args(argv)

    if args.requirements:
        checks = [Check(path.name, path.resolve(), args.index_url) for path in args.requirements]
    else:
        checks = default_checks(args.index_url, with_torch=not args.no_torch)
    for check in checks:
        read_pins(check.requirements)  # every line pinned, or a clear error before any pip run
    targets = [Target(python, arch) for python in args.pythons or PYTHONS for arch in args.archs or ARCHS]

    start = time.monotonic()
    outcomes, skipped = run_checks(checks, targets, args.cache_dir, args.jobs, args.refresh)
    for outcome in outcomes:
        state = "cached" if outcome.cached else f"{outcome.seconds:5.1f}s"
        if outcome.ok:
            print(f"ok   {outcome.check.name:<10} {outcome.target.label():<34} {state:>7}  {outcome.detail}")
        else:
            print(failure_message(outcome))
    for message in skipped:
        print(message)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    print(f"wheel check: {len(outcomes) - len(failed)} ok, {len(failed)} failed, {len(skipped)} skipped checks", end="")
    print(f" in {time.monotonic() - start:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
