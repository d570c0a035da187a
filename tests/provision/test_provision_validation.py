"""Bad input stops provisioning before its first AWS call, with a message naming the variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from provision_harness import REPO_ROOT, MotoServer

STAGING_GROUPS = yaml.safe_load((REPO_ROOT / "inventories/staging/group_vars/all/ec2.yml").read_text())[
    "ec2_instance_groups"
]


def groups_with(group: str, **changes: Any) -> dict[str, Any]:
    """ec2_instance_groups of staging with one group's settings changed."""
    return {"ec2_instance_groups": {**STAGING_GROUPS, group: {**STAGING_GROUPS[group], **changes}}}


CASES = {
    "unknown environment": (
        "staging",
        {"env_name": "qa"},
        ["aws_env_name must be one of: local, staging, production", "qa"],
    ),
    "negative count": ("staging", groups_with("web", count=-1), ["ec2_instance_groups.web", "count a whole number"]),
    "fractional count": ("staging", groups_with("web", count=2.5), ["ec2_instance_groups.web", "got 2.5"]),
    "malformed SSH CIDR": (
        "staging",
        {"ssh_allowed_cidrs": ["203.0.113.300/32"]},
        ["ssh_allowed_cidrs", "203.0.113.300"],
    ),
    "SSH CIDR as a string": (
        "staging",
        {"ssh_allowed_cidrs": "203.0.113.0/24"},
        ["ssh_allowed_cidrs must be a non-empty list"],
    ),
    "no SSH CIDR (the inventory default)": (
        "staging",
        {"ssh_allowed_cidrs": []},
        ["ssh_allowed_cidrs must be a non-empty list"],
    ),
    "SSH from anywhere in production": (
        "production",
        {"ssh_allowed_cidrs": ["203.0.113.0/24", "0.0.0.0/0"]},
        ["ssh_allowed_cidrs", "may not contain 0.0.0.0/0", "(or any /0)", "203.0.113.0/24"],
    ),
    # Only the front door may be open to the world, in every environment (the security group audit).
    "SSH from anywhere in staging": (
        "staging",
        {"ssh_allowed_cidrs": ["0.0.0.0/0"]},
        ["ssh_allowed_cidrs", "may not contain 0.0.0.0/0", "(or any /0)"],
    ),
    "missing public key file": (
        "staging",
        {"ec2_public_key_file": "/nonexistent/id.pub"},
        ["ec2_public_key_file", "/nonexistent/id.pub"],
    ),
    "CPU type in the gpu group": (
        "staging",
        groups_with("gpu", instance_type="t3.large"),
        ["ec2_instance_groups.gpu.instance_type is t3.large", "needs an NVIDIA GPU family"],
    ),
    "host group not in the inventory": (
        "staging",
        {"ec2_instance_groups": {**STAGING_GROUPS, "workers": STAGING_GROUPS["web"]}},
        ["ec2_instance_groups.workers: the key must be a host group of the inventory"],
    ),
    # Production's policy: one refusal per setting, each naming it (the database role's defaults are the policy).
    "production without Multi-AZ": (
        "production",
        {"aws_database_multi_az": False},
        ["Refusing to provision production: aws_database_multi_az must be true (got False)"],
    ),
    "production without deletion protection": (
        "production",
        {"aws_database_deletion_protection": False},
        ["Refusing to provision production: aws_database_deletion_protection must be true (got False)"],
    ),
    "production with a week of backups": (
        "production",
        {"aws_database_backup_retention_days": 7},
        ["Refusing to provision production: aws_database_backup_retention_days must be at least 14 (got 7)"],
    ),
    "production with less than a week of backups": (
        "production",
        {"aws_database_backup_retention_days": 3},
        ["aws_database_backup_retention_days", "(7-35, got 3)"],
    ),
    "production with unencrypted storage": (
        "production",
        {"aws_database_storage_encrypted": False},
        ["Refusing to provision production: aws_database_storage_encrypted must be true (got False)"],
    ),
    "production without a final snapshot": (
        "production",
        {"aws_database_final_snapshot": False},
        ["Refusing to provision production: aws_database_final_snapshot must be true (got False)"],
    ),
    "production without a certificate source": (
        "production",
        {"aws_front_door_dns_zone": "", "aws_front_door_certificate_arn": ""},
        [
            "Refusing to provision production",
            "(web) need a certificate source",
            "aws_front_door_certificate_arn",
            "aws_front_door_dns_zone",
        ],
    ),
    # The certificate and the DNS records are written for these names in this zone: a name outside it fails
    # here, not halfway through (after the hosts exist).
    "front door name outside its zone": (
        "staging",
        {"aws_front_door_domain_names": ["www.example.org"]},
        ["aws_front_door_domain_names must list the names to serve, each in that zone", '(got ["www.example.org"])'],
    ),
    "front door zone without names": (
        "staging",
        {"aws_front_door_domain_names": []},
        ["aws_front_door_dns_zone is staging.nnp.example.com", "aws_front_door_domain_names must list", "(got [])"],
    ),
    "storage type not offered": (
        "staging",
        {"aws_database_storage_type": "magnetic"},
        ["aws_database_storage_type must be one of: gp2, gp3, io1"],
    ),
    # AWS refuses a health check timeout that is not shorter than the interval: fail before any host exists.
    "ALB health check timeout as long as the interval": (
        "staging",
        {"aws_front_door_health_check_interval_seconds": 10, "aws_front_door_health_check_timeout_seconds": 10},
        [
            "aws_front_door_health_check_timeout_seconds < aws_front_door_health_check_interval_seconds",
            "shorter than the interval, got 10)",
        ],
    ),
    "ALB unhealthy threshold below AWS's minimum": (
        "staging",
        {"aws_front_door_unhealthy_threshold_count": 1},
        ["aws_front_door_unhealthy_threshold_count (2-10", "and 1)"],
    ),
    "lb_target drain no longer than the deregistration delay": (
        "production",
        {"aws_front_door_deregistration_delay_seconds": 60, "lb_target_drain_timeout_s": 60},
        ["lb_target_drain_timeout_s (longer than the deregistration", "delay, got 60)"],
    ),
}


@pytest.mark.parametrize(("inventory", "bad_vars", "messages"), CASES.values(), ids=CASES.keys())
def test_bad_input_fails_before_any_api_call(
    aws: MotoServer, ssh_key: Path, inventory: str, bad_vars: dict[str, Any], messages: list[str]
) -> None:
    run = aws.playbook(
        "playbooks/provision.yml", inventory, bad_vars, key=ssh_key, static_inventory=True, expect_success=False
    )

    assert run.rc != 0
    assert run.recap["failed"] == 1
    assert run.recap["changed"] == 0
    failure = run.output[run.output.index("fatal:") if "fatal:" in run.output else run.output.index("failed:") :]
    # The YAML callback wraps long messages: compare with the line breaks folded to spaces.
    failure = " ".join(failure.split())
    for message in messages:
        assert message in failure, f"{message!r} missing from:\n{failure[:3000]}"
    assert run.calls == []


@pytest.mark.parametrize("inventory", ["local", "staging", "production"])
def test_every_inventory_passes_the_checks_without_an_api_call(aws: MotoServer, ssh_key: Path, inventory: str) -> None:
    """What the roles' defaults and each inventory leave is valid: the local stack (make up, the site scenario) too."""
    run = aws.playbook(
        "playbooks/provision.yml", inventory, key=ssh_key, static_inventory=True, cli_args=("--tags", "validate")
    )

    assert run.recap["failed"] == 0
    assert run.calls == []
