"""Every role documents and validates its inputs, and defaults never drift from argument specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def spec_options(role: Path) -> dict[str, dict]:
    options: dict[str, dict] = {}
    for entry in load(role / "meta" / "argument_specs.yml")["argument_specs"].values():
        options.update(entry.get("options", {}))
    return options


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_readme_defaults_and_specs(role):
    for rel in ("README.md", "defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml"):
        assert (role / rel).is_file(), f"{role.name} lacks {rel}"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_defaults_match_argument_specs(role):
    defaults = load(role / "defaults" / "main.yml")
    options = spec_options(role)
    for name, value in defaults.items():
        assert name in options, f"{role.name}: default {name} is not in meta/argument_specs.yml"
        assert options[name].get("default") == value, f"{role.name}: {name} default differs from its spec"
    for name, spec in options.items():
        if "default" in spec:
            assert name in defaults, f"{role.name}: spec option {name} has a default but no entry in defaults/main.yml"
        assert spec.get("description"), f"{role.name}: {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_variables_are_role_prefixed(role):
    prefix = role.name + "_"
    names = list(load(role / "defaults" / "main.yml")) + list(spec_options(role))
    assert all(n.startswith(prefix) for n in names), [n for n in names if not n.startswith(prefix)]


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_default_has_a_comment(role):
    lines = (role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-", "---")) and ":" in line:
            assert i > 0, f"{role.name}: defaults/main.yml must start with a comment"
            assert lines[i - 1].startswith("#"), f"{role.name}: {line.split(':')[0]} has no comment above it"
