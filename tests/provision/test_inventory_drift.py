"""Staging and production differ only where they should, and repeat nothing the roles' defaults could hold.

Each host group's effective inventory variables (group_vars/all merged with the group's own, as
`ansible-inventory --export` lists them, templates unrendered) are compared between the two inventories.
A key set in one and not the other, or to another value, is a difference; a key set to the same value in
both is a repeat. Both sets must be exactly the lists below: a new difference, or a repeated line that
belongs in a role's defaults, fails here and has to be listed (with a reason) or moved.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from provision_harness import REPO_ROOT, VENV_BIN
from test_provision_inventories import offline_env

GROUPS = ("web", "gpu")

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
}

# Keys both inventories set to the same value. Each is read outside the roles' defaults (deploy plays,
# other roles, the dynamic inventory), so no role default can hold it yet.
SHARED = {
    "all": {
        # environment identity, read by the deploy plays and checked against aws_ec2.yml
        "project_name",
        "aws_region",
        # database names, read by the app wiring (app.yml) as well as by provisioning
        "rds_database_name",
        "rds_master_username",
        "rds_app_username",
        "deploy_rds_instance_id",
        # deploy wiring of the app, app_db and common roles
        "app_db_host",
        "app_db_port",
        "app_db_name",
        "app_db_master_user",
        "app_db_master_password",
        "app_db_user",
        "app_db_password",
        "app_database_host",
        "app_database_port",
        "app_database_name",
        "app_database_user",
        "app_database_password",
        "app_database_ca_bundle_url",
        "common_timezone",
        "common_service_user",
        "common_service_group",
        "common_service_home",
        "tls_acme_email",
    },
    "web": {
        # nginx, certbot and app wiring of the web group
        "tls_domain_names",  # the front door's names (aws_front_door_domain_names), read by webserver.yml
        "certbot_enabled",
        "certbot_domains",
        "certbot_email",
        "certbot_acme_server",
        "nginx_server_names",
        "nginx_tls_enabled",
        "nginx_tls_certificate",
        "nginx_tls_certificate_key",
        "nginx_tls_trusted_certificate",
        "nginx_upstream_file",
        "app_proxy_upstream_file",
        "nginx_upstream_keepalive",
        "nginx_static_root",
        "nginx_extra_groups",
        "app_health_base_url",
        "app_health_headers",
        "app_health_validate_certs",
        "common_firewall_allowed_tcp_ports",
        "lb_target_kind",
        # TLS at the balancer or on the host, and whose forwarded headers nginx trusts (webserver.yml)
        "web_tls_on_host",
        "web_load_balancer_addresses",
        "nginx_trusted_proxies",
        "lb_target_alb_target_group",
        "pytorch_variant",
    },
    "gpu": {"app_web_enabled", "pytorch_variant"},
}


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
def test_staging_and_production_repeat_only_the_listed_keys(
    inventories: dict[str, dict[str, dict[str, Any]]], group: str
) -> None:
    staging, production = inventories["staging"][group], inventories["production"][group]
    expected = SHARED["all"] | SHARED[group]

    repeated = {key for key in staging.keys() & production.keys() if staging[key] == production[key]}

    assert repeated == expected, (
        f"repeated lines (move them to a role's defaults, or list them here with the reason): "
        f"{sorted(repeated - expected)}; no longer repeated: {sorted(expected - repeated)}"
    )
