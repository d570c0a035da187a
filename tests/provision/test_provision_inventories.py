"""The inventories and the IAM policy agree with each other, and no check of them needs AWS."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from provision_harness import IAM_POLICY, REPO_ROOT, VENV_BIN

ENVIRONMENTS = ("staging", "production")


def group_vars(env: str) -> dict[str, dict[str, Any]]:
    """Every group_vars file of an inventory, by its path below group_vars/."""
    root = REPO_ROOT / "inventories" / env / "group_vars"
    return {str(path.relative_to(root)): yaml.safe_load(path.read_text()) for path in sorted(root.rglob("*.yml"))}


def settings(env: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path, content in group_vars(env).items():
        if path.startswith("all/"):
            merged |= content
    return merged


def dynamic_inventory(env: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "inventories" / env / "aws_ec2.yml").read_text())


# Files whose variables have no role defaults behind them: each inventory must set every one.
PROVISIONING_FILES = [
    "all/aws.yml",
    "all/network.yml",
    "all/ec2.yml",
    "all/loadbalancer.yml",
    "all/database.yml",
    "all/alarms.yml",
    "all/tls.yml",
    "web/tls.yml",
    "gpu/tls.yml",
    "web/loadbalancer.yml",
    "gpu/loadbalancer.yml",
    "web/pytorch.yml",
    "gpu/pytorch.yml",
]


def test_both_environments_set_the_same_provisioning_variables() -> None:
    staging, production = group_vars("staging"), group_vars("production")

    for path in PROVISIONING_FILES:
        assert staging[path].keys() == production[path].keys(), path
    assert set(staging) == set(production)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dynamic_inventory_filters_on_the_environment_and_groups_by_role(env: str) -> None:
    inventory, values = dynamic_inventory(env), settings(env)

    assert inventory["plugin"] == "amazon.aws.aws_ec2"
    assert inventory["regions"] == [values["aws_region"]]
    assert inventory["filters"] == {
        "tag:Project": values["project_name"],
        "tag:Env": values["env_name"],
        "instance-state-name": "running",
    }
    assert inventory["hostnames"][0] == "tag:Name"
    prefix = inventory["hostvars_prefix"]
    assert inventory["groups"] == {group: f"{prefix}tags.get('Role') == '{group}'" for group in ("web", "gpu")}
    assert inventory["compose"]["ansible_host"].startswith(f"{prefix}public_ip_address")
    assert "endpoint_url" not in inventory, "the endpoint comes from AWS_URL, never from the committed file"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_web_hosts_get_the_cpu_build_and_gpu_hosts_cuda(env: str) -> None:
    files = group_vars(env)

    assert files["web/pytorch.yml"]["pytorch_variant"] == "cpu"
    assert files["gpu/pytorch.yml"]["pytorch_variant"] == "cuda"


def test_production_is_the_careful_environment() -> None:
    staging, production = settings("staging"), settings("production")

    assert (production["rds_multi_az"], production["rds_deletion_protection"], production["rds_final_snapshot"]) == (
        True,
        True,
        True,
    )
    assert production["rds_backup_retention_days"] >= 14
    assert staging["rds_backup_retention_days"] == 7
    assert production["secrets_recovery_window_days"] > 0
    assert "staging" in staging["tls_acme_directory"]
    assert "staging" not in production["tls_acme_directory"]
    assert staging["vpc_cidr"] != production["vpc_cidr"]
    for env in ENVIRONMENTS:
        assert "0.0.0.0/0" not in settings(env)["ssh_allowed_cidrs"]


def test_iam_policy_only_reaches_the_project_in_its_region() -> None:
    policy = json.loads(IAM_POLICY.read_text())
    values = settings("staging")
    region, project = values["aws_region"], values["project_name"]
    assert settings("production")["aws_region"] == region

    for statement in policy["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if resources == ["*"]:
            # Describe calls and EC2 creation cannot be limited by ARN: they are limited to the region.
            regions = statement.get("Condition", {}).get("StringEquals", {}).get("aws:RequestedRegion")
            assert regions == region or statement["Action"] == ["sts:GetCallerIdentity"], statement["Sid"]
        elif statement["Sid"] != "ServiceRolesOfAlbAndRds":
            for arn in resources:
                assert f":{region}:" in arn, arn
                assert f"{project}-" in arn or f"{project}/" in arn or ":pg:default." in arn or ":og:default:" in arn, (
                    arn
                )


def syntax_check(env: str, extra_env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """The lint stage's syntax check, with no AWS credentials and no way to reach AWS."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
    run_env = clean | {
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # botocore would otherwise ask the EC2 metadata address for credentials: only loopback here.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    started = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", f"inventories/{env}", "site.yml"],
        cwd=REPO_ROOT,
        env=run_env | extra_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_syntax_check_passes_without_aws(env: str) -> None:
    """As the lint stage runs it today: the dynamic inventory fails fast (no credentials) and only warns."""
    result, seconds = syntax_check(env, {})

    assert result.returncode == 0, result.stdout + result.stderr
    assert seconds < 30


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_syntax_check_skipping_the_dynamic_inventory_is_silent(env: str) -> None:
    """With ANSIBLE_INVENTORY_IGNORE_REGEX the dynamic inventory is not even read: no warning about it."""
    result, _ = syntax_check(env, {"ANSIBLE_INVENTORY_IGNORE_REGEX": r"aws_ec2\.yml$"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "aws_ec2" not in result.stderr
    assert Path(REPO_ROOT / "inventories" / env / "aws_ec2.yml").is_file()
