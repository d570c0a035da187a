#!/usr/bin/env python3
"""Install the collections pinned in requirements.yml without Galaxy.

Galaxy is unreachable on our machines, so the same collection versions are
taken from PyPI's `ansible` community bundle, whose wheel ships them. Only
the pinned collections are unpacked into ./collections, which ansible.cfg
puts on the collections path. Whatever the source, the installed versions
are then checked against requirements.yml: a mismatch is a hard error.

Usage: collections.py [--check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.yml"
DEST = ROOT / "collections" / "ansible_collections"
WHEELS = ROOT / ".cache" / "wheels"
# The community bundle whose wheel carries exactly the versions in requirements.yml.
BUNDLE = "ansible==12.3.0"


def pinned() -> dict[str, str]:
    """Return {namespace.name: version} from requirements.yml."""
    data = yaml.safe_load(REQUIREMENTS.read_text())
    pins: dict[str, str] = {}
    for entry in data.get("collections", []):
        version = str(entry.get("version", ""))
        if not version or any(c in version for c in "<>=*,!"):
            sys.exit(f"requirements.yml: {entry['name']} must be pinned to one exact version, got {version!r}")
        pins[entry["name"]] = version
    return pins


def installed_version(fqcn: str) -> str | None:
    namespace, name = fqcn.split(".")
    manifest = DEST / namespace / name / "MANIFEST.json"
    if not manifest.is_file():
        return None
    return str(json.loads(manifest.read_text())["collection_info"]["version"])


def mismatches(pins: dict[str, str]) -> list[str]:
    problems = []
    for fqcn, want in sorted(pins.items()):
        have = installed_version(fqcn)
        if have != want:
            problems.append(f"{fqcn}: requirements.yml pins {want}, installed: {have or 'missing'}")
    return problems


def bundle_wheel() -> Path:
    WHEELS.mkdir(parents=True, exist_ok=True)
    name, version = BUNDLE.split("==")
    found = sorted(WHEELS.glob(f"{name}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(WHEELS),
                BUNDLE,
            ],
            check=True,
        )
        found = sorted(WHEELS.glob(f"{name}-{version}-*.whl"))
    if not found:
        sys.exit(f"could not download the {BUNDLE} wheel into {WHEELS}")
    return found[0]


def unpack(pins: dict[str, str], wheel: Path) -> None:
    wanted = {f"ansible_collections/{fqcn.replace('.', '/')}/": fqcn for fqcn in pins}
    with zipfile.ZipFile(wheel) as zf:
        for prefix in wanted:
            target = DEST.parent / prefix
            if target.exists():
                subprocess.run(["rm", "-rf", str(target)], check=True)
        for member in zf.namelist():
            if any(member.startswith(prefix) for prefix in wanted):
                zf.extract(member, DEST.parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify installed versions")
    args = parser.parse_args()
    pins = pinned()
    problems = mismatches(pins)
    if problems and not args.check:
        unpack({fqcn: pins[fqcn] for fqcn in pins if installed_version(fqcn) != pins[fqcn]}, bundle_wheel())
        problems = mismatches(pins)
    if problems:
        print("Installed collections do not satisfy requirements.yml:", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        print(f"Fix requirements.yml or the bundle pin ({BUNDLE}) in {Path(__file__).name}.", file=sys.stderr)
        return 1
    print(f"collections OK: {', '.join(f'{k} {v}' for k, v in sorted(pins.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
