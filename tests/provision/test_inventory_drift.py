"""Staging and production differ only where they should, and repeat nothing: what they share is set once.

Each host group's effective inventory variables (group_vars/all merged with the group's own, as
`ansible-inventory --export` lists them, templates unrendered) are compared between the two inventories.
A key set in one and not the other, or to another value, is a difference; a key set to the same value in
both is a repeat. The differences must be exactly DIFFERENT below (a new one has to be listed, with its
reason), and the repeats exactly what the shared base (inventories/shared/group_vars, linked into both
inventories) sets: a value repeated in both environments' own files fails here and has to move there.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml
from provision_harness import REPO_ROOT, VENV_BIN
from test_provision_inventories import offline_env

GROUPS = ("web", "gpu", "monitoring")

# Keys whose values differ between staging and production, per host group: sizes, counts, names,
# domains and policy switches.
DIFFERENT = {
    "all": {
        "env_name",  # the environment itself
        "ec2_public_key_file",  # one key pair per environment
        "ec2_instance_groups",  # host counts and instance types
        "aws_network_vpc_cidr",  # non-overlapping ranges
        "aws_network_public_subnet_cidrs",
        "aws_network_private_subnet_cidrs",
        "aws_database_instance_class",  # sizes
        "aws_database_allocated_storage_gb",
        # staging opts out of production's database policy (the aws_database role's defaults)
        "aws_database_multi_az",
        "aws_database_deletion_protection",
        "aws_database_backup_retention_days",
        "aws_database_apply_immediately",
        "aws_database_final_snapshot",
        "aws_database_secrets_recovery_window_days",
        "aws_app_secrets_recovery_window_days",
        "aws_front_door_dns_zone",  # each environment's hosted zone (the certificate source)
        "aws_front_door_domain_names",  # the names each environment serves
        "aws_alarms_email",  # on-call in production only
        "aws_alarms_ec2_cpu_percent",  # staging's looser thresholds
        "aws_alarms_rds_free_storage_gb",
        "aws_alarms_alb_5xx_count",
        "app_allow_dirty_release",  # production runs committed code only
        "common_journald_system_max_use_mb",  # production keeps a longer journal
        "common_journald_max_retention_days",
        "tls_acme_directory",  # Let's Encrypt staging or production
    },
    "web": set(),
    "gpu": set(),
    "monitoring": set(),
}

# The shared base: inventories/shared/group_vars/<group>/*.yml, linked (symlinks) into both environments'
# group_vars. What both environments set to the same value lives there, once; everything an environment's
# own files set must differ from the other environment's.
SHARED_ROOT = REPO_ROOT / "inventories" / "shared" / "group_vars"


def shared_keys(group: str) -> set[str]:
    """The keys the shared base sets for a host group (its all/ files and the group's own)."""
    keys: set[str] = set()
    for folder in {"all", group}:
        for path in sorted((SHARED_ROOT / folder).glob("*.yml")):
            keys |= set(yaml.safe_load(path.read_text()) or {})
    return keys


def unwrap(value: Any) -> Any:
    """ansible-core 2.19 marks template strings as unsafe in --list output."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def effective(env: str) -> dict[str, dict[str, Any]]:
    """Per host group, group_vars/all merged with the group's own variables."""
    result = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", f"inventories/{env}", "--list", "--export"],
        cwd=REPO_ROOT,
        env=offline_env() | {"ANSIBLE_INVENTORY_IGNORE_REGEX": r"aws_ec2\.yml$"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listing = unwrap(json.loads(result.stdout))
    common = listing["all"].get("vars", {})
    return {"all": common} | {group: common | listing.get(group, {}).get("vars", {}) for group in GROUPS}


@pytest.fixture(scope="module")
def inventories() -> dict[str, dict[str, dict[str, Any]]]:
    return {env: effective(env) for env in ("staging", "production")}


@pytest.mark.parametrize("group", ["all", *GROUPS])
def test_staging_and_production_differ_exactly_in_the_listed_keys(
    inventories: dict[str, dict[str, dict[str, Any]]], group: str
) -> None:
    staging, production = inventories["staging"][group], inventories["production"][group]
    expected = DIFFERENT["all"] | DIFFERENT[group]

    different = {key for key in staging.keys() | production.keys() if staging.get(key) != production.get(key)}

    assert different == expected, (
        f"new differences: {sorted(different - expected)}; no longer different: {sorted(expected - different)}"
    )


@pytest.mark.parametrize("group", ["all", *GROUPS])
def test_what_both_environments_repeat_comes_from_the_shared_base(
    inventories: dict[str, dict[str, dict[str, Any]]], group: str
) -> None:
    staging, production = inventories["staging"][group], inventories["production"][group]

    repeated = {key for key in staging.keys() & production.keys() if staging[key] == production[key]}
    shared = shared_keys(group)

    assert repeated == shared, (
        f"set to the same value in both environments' own files (move them to inventories/shared/group_vars): "
        f"{sorted(repeated - shared)}; shared but not the same in both: {sorted(shared - repeated)}"
    )


@pytest.mark.parametrize("env", ["staging", "production"])
def test_each_environment_links_the_whole_shared_base_and_overrides_none_of_it(env: str) -> None:
    """Every shared file is a link in the environment's group_vars (same folder, same name), and no file
    of the environment's own sets a key of the shared base: a value that differs leaves the base."""
    root = REPO_ROOT / "inventories" / env / "group_vars"
    shared = sorted(path.relative_to(SHARED_ROOT) for path in SHARED_ROOT.rglob("*.yml"))
    assert shared, "the shared base is empty"
    for relative in shared:
        link = root / relative
        assert link.is_symlink(), f"inventories/{env}/group_vars/{relative} is not a link to the shared base"
        assert link.resolve() == (SHARED_ROOT / relative).resolve(), f"{link} points elsewhere"
    for path in sorted(root.rglob("*.yml")):
        if path.is_symlink():
            assert path.resolve().is_relative_to(SHARED_ROOT.resolve()), f"{path} links outside the shared base"
            continue
        group = path.relative_to(root).parts[0]
        own = set(yaml.safe_load(path.read_text()) or {})
        assert not own & shared_keys(group), f"{path} overrides the shared base: {sorted(own & shared_keys(group))}"
