"""The inventories agree with each other, and no check of them needs AWS (IAM policies: test_iam_policies.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from provision_harness import REPO_ROOT, VENV_BIN

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


ROLE_DEFAULTS = {
    role: yaml.safe_load((REPO_ROOT / "roles" / role / "defaults/main.yml").read_text())
    for role in ("aws_database", "aws_front_door")
}


def dynamic_inventory(env: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "inventories" / env / "aws_ec2.yml").read_text())


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
    groups = ("web", "gpu", "monitoring")
    assert inventory["groups"] == {group: f"{prefix}tags.get('Role') == '{group}'" for group in groups}
    assert inventory["compose"]["ansible_host"].startswith(f"{prefix}public_ip_address")
    assert "endpoint_url" not in inventory, "the endpoint comes from AWS_URL, never from the committed file"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_web_hosts_get_the_cpu_build_and_gpu_hosts_cuda(env: str) -> None:
    files = group_vars(env)

    assert files["web/pytorch.yml"]["pytorch_variant"] == "cpu"
    assert files["gpu/pytorch.yml"]["pytorch_variant"] == "cuda"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_gpu_hosts_get_no_name_certificate_load_balancer_or_http_port(env: str) -> None:
    """The gpu group is the training pool: nothing of the web front door reaches it through group_vars."""
    files = group_vars(env)
    gpu = {
        key: value
        for path, content in files.items()
        if path.startswith(("all/", "gpu/"))
        for key, value in content.items()
    }

    assert not {"tls_domain_names", "lb_target_kind", "lb_target_alb_target_group"} & gpu.keys()
    # The metrics ports only, for the monitoring host (the security groups admit nothing else there).
    assert gpu.get("common_firewall_allowed_tcp_ports", []) == [9100, 9101]
    assert not {"gpu/tls.yml", "gpu/loadbalancer.yml"} & files.keys()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_monitoring_host_discovers_its_environment_and_opens_only_its_node_exporter(env: str) -> None:
    """EC2 discovery by the environment's own tags, alerts to its alarm topic, probes of its front door;
    metrics on the private address everywhere (the aws_ec2 inventory's, which Prometheus's discovery uses)."""
    files = group_vars(env)
    monitoring = files["monitoring/monitoring.yml"]

    assert set(files["monitoring/firewall.yml"]) == {"common_firewall_allowed_tcp_ports"}
    assert files["monitoring/firewall.yml"]["common_firewall_allowed_tcp_ports"] == [9100]
    assert monitoring["monitoring_discovery"] == "ec2"
    assert monitoring["monitoring_ec2_tags"] == {"Project": "{{ project_name }}", "Env": "{{ env_name }}"}
    assert monitoring["monitoring_alertmanager_sns_topic_arn"] == (
        "arn:aws:sns:{{ aws_region }}:{{ aws_ec2_owner_id }}:{{ project_name }}-{{ env_name }}-alarms"
    )
    assert files["all/metrics.yml"] == {
        "common_node_exporter_address": "{{ aws_ec2_private_ip_address }}",
        "app_worker_metrics_address": "{{ aws_ec2_private_ip_address }}",
    }
    assert (
        yaml.safe_load((REPO_ROOT / "inventories" / env / "group_vars/all/ec2.yml").read_text())["ec2_instance_groups"][
            "monitoring"
        ]["count"]
        == 1
    )


def test_production_is_the_careful_environment() -> None:
    """Production keeps the aws_database role's defaults, which are its policy; staging opts out of them."""
    staging, production = settings("staging"), settings("production")
    database = ROLE_DEFAULTS["aws_database"]

    assert (database["aws_database_multi_az"], database["aws_database_deletion_protection"]) == (True, True)
    assert (database["aws_database_storage_encrypted"], database["aws_database_final_snapshot"]) == (True, True)
    assert database["aws_database_backup_retention_days"] >= 14
    assert database["aws_database_secrets_recovery_window_days"] > 0
    assert not {key for key in production if key.startswith("aws_database_")} - {
        "aws_database_instance_class",
        "aws_database_allocated_storage_gb",
    }, "production overrides a setting of the database policy"
    assert staging["aws_database_backup_retention_days"] == 7
    assert production.get("aws_front_door_dns_zone") or production.get("aws_front_door_certificate_arn")
    assert "staging" in staging["tls_acme_directory"]
    assert "staging" not in production["tls_acme_directory"]
    assert staging["aws_network_vpc_cidr"] != production["aws_network_vpc_cidr"]
    for env in ENVIRONMENTS:
        assert "0.0.0.0/0" not in settings(env).get("ssh_allowed_cidrs", [])


def offline_env() -> dict[str, str]:
    """An environment for Ansible with no AWS credentials and no way to reach AWS."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
    return clean | {
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # botocore would otherwise ask the EC2 metadata address for credentials: only loopback here.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def syntax_check(env: str, extra_env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """The lint stage's syntax check, with no AWS credentials and no way to reach AWS."""
    started = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", f"inventories/{env}", "site.yml"],
        cwd=REPO_ROOT,
        env=offline_env() | extra_env,
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


# Puts a probe host into each app group (staging and production list their hosts only in the dynamic
# inventory) and prints what every app host resolves for the drain, as the lb_target role would see it.
DRAIN_PROBE = """\
- name: Put a probe host into every app group
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Add the probe host
      ansible.builtin.add_host:
        name: "probe-{{ item }}"
        groups: ["{{ item }}"]
      loop: "{{ ['web', 'gpu'] | intersect(groups.keys()) }}"

- name: Resolve the drain settings of every app host
  hosts: web:gpu
  gather_facts: false
  tasks:
    - name: Show the drain settings
      ansible.builtin.debug:
        msg:
          kind: "{{ lb_target_kind | default(none) }}"
          drain_timeout: "{{ lb_target_drain_timeout_s | default(none) }}"
          delay: "{{ lb_target_alb_deregistration_delay_s | default(none) }}"
          target_group_delay: "{{ aws_front_door_deregistration_delay_seconds | default(none) }}"
"""
LB_TARGET_DEFAULTS = yaml.safe_load((REPO_ROOT / "roles/lb_target/defaults/main.yml").read_text())


def drain_settings(env: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The drain settings each app host of an inventory resolves, role defaults filled in, by host."""
    playbook = tmp_path / "drain-probe.yml"
    playbook.write_text(DRAIN_PROBE)
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", f"inventories/{env}", str(playbook)],
        cwd=REPO_ROOT,
        env=offline_env()
        | {
            "ANSIBLE_INVENTORY_IGNORE_REGEX": r"aws_ec2\.yml$",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_CACHE_PLUGIN": "memory",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # One task; under Mitogen's strategy the json callback lists it once per host (seen: one entry for
    # each probe host), so its results are gathered from every entry.
    tasks = json.loads(result.stdout)["plays"][1]["tasks"]
    assert {entry["task"]["name"] for entry in tasks} == {"Show the drain settings"}, tasks
    results = {host: outcome for entry in tasks for host, outcome in entry["hosts"].items()}
    defaults = {"drain_timeout": "lb_target_drain_timeout_s", "delay": "lb_target_alb_deregistration_delay_s"}
    settings = {}
    for host, outcome in results.items():
        values = outcome["msg"]
        for key, default in defaults.items():
            values[key] = int(LB_TARGET_DEFAULTS[default] if values[key] is None else values[key])
        if values["target_group_delay"] is None:  # the aws_front_door role's default, as provisioning sees it
            values["target_group_delay"] = ROLE_DEFAULTS["aws_front_door"][
                "aws_front_door_deregistration_delay_seconds"
            ]
        settings[host] = values
    return settings


def test_role_default_drain_outlasts_the_default_deregistration_delay() -> None:
    assert LB_TARGET_DEFAULTS["lb_target_drain_timeout_s"] > LB_TARGET_DEFAULTS["lb_target_alb_deregistration_delay_s"]


@pytest.mark.parametrize("env", [*ENVIRONMENTS, "local"])
def test_every_app_host_drains_longer_than_the_target_group_delay(env: str, tmp_path: Path) -> None:
    """lb_target waits for "unused", which AWS reports only after the deregistration delay: the wait must be longer.

    The delay lb_target knows must also be the one provisioning gives the target group.
    """
    settings = drain_settings(env, tmp_path)

    assert {"probe-web", "probe-gpu"} <= settings.keys()
    for host, values in settings.items():
        assert values["delay"] == int(values["target_group_delay"]), (host, values)
        assert values["drain_timeout"] > values["delay"], (host, values)
    assert settings["probe-gpu"]["kind"] in (None, "none"), "the gpu group serves no HTTP: no load balancer"
    if env != "local":
        assert settings["probe-web"]["kind"] == "alb", "the web group (2+ hosts) is behind the ALB"


def test_front_door_and_lb_target_defaults_agree() -> None:
    """Without inventory lines in between, lb_target's defaults must be the target group provisioning makes."""
    front_door = ROLE_DEFAULTS["aws_front_door"]

    assert LB_TARGET_DEFAULTS["lb_target_alb_port"] == front_door["aws_front_door_target_port"]
    assert (
        LB_TARGET_DEFAULTS["lb_target_alb_deregistration_delay_s"]
        == front_door["aws_front_door_deregistration_delay_seconds"]
    )
