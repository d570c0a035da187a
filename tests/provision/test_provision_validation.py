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
        ["env_name must be one of local, staging, production", "qa"],
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
    "production without deletion protection": (
        "production",
        {"rds_deletion_protection": False},
        ["In production rds_deletion_protection and rds_final_snapshot must be true"],
    ),
    # AWS refuses a health check timeout that is not shorter than the interval: fail before any host exists.
    "ALB health check timeout as long as the interval": (
        "staging",
        {"alb_health_check_interval_seconds": 10, "alb_health_check_timeout_seconds": 10},
        ["alb_health_check_timeout_seconds < alb_health_check_interval_seconds", "shorter than the interval, got 10)"],
    ),
    "ALB unhealthy threshold below AWS's minimum": (
        "staging",
        {"alb_unhealthy_threshold_count": 1},
        ["alb_unhealthy_threshold_count (2-10", "and 1)"],
    ),
    "lb_target drain no longer than the deregistration delay": (
        "production",
        {"alb_deregistration_delay_seconds": 60, "lb_target_drain_timeout_s": 60},
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
    for message in messages:
        assert message in failure, f"{message!r} missing from:\n{failure[:3000]}"
    assert run.calls == []
