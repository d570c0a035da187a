"""Bad role variables are rejected at role entry, with a message naming the problem, before any change."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HostOutcome, run_roles_batch

# The tasks a case may reach: fact gathering, the include, the argument spec check and the role's asserts.
ALLOWED = ("Gathering Facts", "Include", "Validating arguments", "Check")

# The app_db arguments that are required, valid, so each case below breaks one thing.
APP_DB_REQUIRED = {
    "app_db_host": "db",
    "app_db_master_user": "master",
    "app_db_master_password": "m",
    "app_db_password": "p",
}

# What every aws_* role's defaults read from the inventory, valid, so each case below breaks one thing.
AWS_INVENTORY = {
    "env_name": "staging",
    "project_name": "nnp",
    "aws_region": "eu-central-1",
    "ec2_instance_groups": {},
    "ec2_public_key_file": "/nonexistent/id.pub",
    "rds_database_name": "nnp",
    "rds_master_username": "nnp_admin",
    "rds_app_username": "nnp_app",
}

# The network aws_network's checks need before they reach the one a case breaks.
AWS_NETWORK = {
    "aws_network_vpc_cidr": "10.20.0.0/16",
    "aws_network_public_subnet_cidrs": ["10.20.0.0/24", "10.20.1.0/24"],
    "aws_network_private_subnet_cidrs": ["10.20.10.0/24", "10.20.11.0/24"],
    "ssh_allowed_cidrs": ["203.0.113.0/24"],
}

# A certificate's shape, for the cases that need the TLS material present but for one part.
FAKE_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"

CASES = [
    # role, entry point, variables, text the error must contain
    ("common", "main", {"common_firewall_allowed_tcp_ports": ["http"]}, "common_firewall_allowed_tcp_ports"),
    ("common", "main", {"common_firewall_allowed_tcp_ports": [80, 70000]}, "must be an integer within 1-65535"),
    ("common", "main", {"common_firewall_ssh_port": 0}, "common_firewall_ssh_port contains 0"),
    (
        "common",
        "main",
        {"common_journald_system_max_use_mb": -5},
        "common_journald_system_max_use_mb must be a positive integer, got -5",
    ),
    ("common", "main", {"common_unattended_upgrades_reboot_time": "25:00"}, "HH:MM, got 25:00"),
    ("common", "main", {"common_locale": "english"}, "like en_US.UTF-8, got english"),
    ("common", "main", {"common_node_exporter_port": 0}, "common_node_exporter_port contains 0"),
    ("common", "main", {"common_node_exporter_address": "localhost"}, "common_node_exporter_address must be an IP"),
    ("common", "main", {"common_node_exporter_extra_args": ["--a b"]}, "flags like --name=value"),
    ("common", "main", {"common_unattended_upgrades_enabled": "maybe"}, "common_unattended_upgrades_enabled"),
    ("common", "main", {"common_journal_upload_url": "http://mon1:19532/"}, "common_journal_upload_url must be"),
    (
        "common",
        "main",
        {"common_journal_upload_url": "https://mon1:70000/"},
        "port within 1-65535 (got 'https://mon1:70000/')",
    ),
    (
        "common",
        "main",
        {
            "common_journal_upload_url": "https://mon1:19532/",
            "common_journal_upload_ca_pem": FAKE_PEM,
            "common_journal_upload_cert_pem": FAKE_PEM,
        },
        "common_journal_upload_key_pem is empty or not PEM",
    ),
    ("journal_remote", "main", {"journal_remote_port": 70000}, "must be two different ports within 1-65535 (got 70000"),
    ("journal_remote", "main", {"journal_remote_address": "mon1"}, "journal_remote_address an IPv4 address"),
    ("journal_remote", "main", {"journal_remote_enabled": True}, "journal_remote_ca_pem is empty or not PEM"),
    (
        "journal_remote",
        "main",
        {"journal_remote_retention_days": 0},
        "journal_remote_retention_days must be a positive",
    ),
    ("python", "main", {"python_version": "banana"}, 'python_version must be "system" or a version'),
    ("python", "main", {"python_min_version": "3.x"}, 'python_min_version must be a version like "3.10", got "3.x"'),
    ("python", "venv", {"python_venv_path": "relative/venv"}, "python_venv_path must be an absolute path"),
    ("python", "venv", {}, "python_venv_path"),
    ("loadbalancer", "main", {"loadbalancer_port": 70000}, "must be within 1-65535"),
    (
        "loadbalancer",
        "main",
        {"loadbalancer_backends": [{"name": "web1", "address": "127.0.0.1", "port": "https"}]},
        "loadbalancer_backends",
    ),
    (
        "loadbalancer",
        "main",
        {"loadbalancer_backends": [{"name": "a", "address": "x", "port": 1}, {"name": "a", "address": "y", "port": 2}]},
        "backend names unique",
    ),
    ("loadbalancer", "main", {"loadbalancer_health_timeout_ms": 0}, "must be positive milliseconds"),
    ("loadbalancer", "main", {"loadbalancer_health_timeout_ms": "5s"}, "loadbalancer_health_timeout_ms"),
    ("lb_target", "drain", {"lb_target_kind": "f5"}, "lb_target_kind"),
    ("lb_target", "drain", {"lb_target_kind": "haproxy"}, "needs lb_target_haproxy_host"),
    (
        "lb_target",
        "enable",
        {"lb_target_kind": "alb", "lb_target_alb_target_group": "tg"},
        "EC2 lb_target_alb_instance_id",
    ),
    (
        "lb_target",
        "drain",
        {
            "lb_target_kind": "alb",
            "lb_target_alb_target_group": "tg",
            "lb_target_alb_instance_id": "i-0123456789abcdef0",
            "lb_target_drain_timeout_s": 30,
            "lb_target_alb_deregistration_delay_s": 30,
        },
        "lb_target_drain_timeout_s (30 s) must be longer than the target group's",
    ),
    ("pytorch", "main", {"pytorch_variant": "gpu"}, "value of pytorch_variant must be one of: cpu, cuda"),
    ("pytorch", "host", {"pytorch_variant": "gpu"}, "value of pytorch_variant must be one of: cpu, cuda"),
    (
        "pytorch",
        "host",
        {"pytorch_nvidia_driver_install": "yes"},
        "value of pytorch_nvidia_driver_install must be one of: auto, always, never",
    ),
    ("pytorch", "main", {"pytorch_cpu_version": "latest"}, "pytorch_cpu_version must pin one version"),
    ("pytorch", "main", {"pytorch_venv_path": "venv"}, "pytorch_venv_path (absolute path, got 'venv')"),
    ("nginx", "main", {"nginx_http_port": 70000}, "nginx_http_port (70000)"),
    ("nginx", "main", {"nginx_upstreams": []}, "nginx_upstreams must list at least one backend"),
    ("nginx", "main", {"nginx_rate_limit_owners_per_minute": 0}, "nginx_rate_limit_owners_per_minute (0)"),
    ("nginx", "main", {"nginx_tls_enabled": True}, "nginx_tls_enabled is true, so nginx_tls_certificate"),
    (
        "certbot",
        "main",
        {"certbot_domains": [], "certbot_email": "ops@example.com"},
        "certbot_domains must list at least one",
    ),
    (
        "certbot",
        "main",
        {"certbot_domains": ["app.example.com"], "certbot_email": "ops"},
        "certbot_email must be an e-mail address",
    ),
    ("certbot", "main", {"certbot_key_type": "dsa"}, "value of certbot_key_type must be one of: ecdsa, rsa"),
    ("app", "stage", {"app_release_id": "../etc"}, "app_release_id must be empty (derived from the code)"),
    ("app", "switch", {"app_first_slot": "purple"}, "value of app_first_slot must be one of: blue, green"),
    ("app", "switch", {"app_slot_memory_mib": 0}, "app_slot_memory_mib (>= 1, got 0)"),
    ("app", "switch", {"app_gate_known_answer": []}, "app_gate_known_answer must list the numbers"),
    ("app", "stage", {"app_workers": 0}, "app_workers (1-64, got 0)"),
    ("app", "stage", {"app_worker_metrics_port": 70000}, "app_worker_metrics_port (0-65535, got 70000)"),
    ("app", "stage", {"app_worker_metrics_address": "localhost"}, "app_worker_metrics_address (an IP address, got"),
    (
        "app",
        "switch",
        {"app_web_enabled": False, "app_worker_enabled": False},
        "has app_web_enabled and app_worker_enabled both off: it would run nothing",
    ),
    ("app", "switch", {"app_web_enabled": "sometimes"}, "app_web_enabled"),
    ("app", "stage", {"app_keep_releases": 1}, "app_keep_releases must be at least 2"),
    ("app", "stage", {"app_environment": {"DATABASE_URL": "x"}}, "app_environment key DATABASE_URL"),
    ("app", "stage", {"app_environment": {"OPERATOR_TOKEN": "x"}}, "app_environment key OPERATOR_TOKEN"),
    ("app", "stage", {"app_retention_cron": "daily"}, "app_retention_cron five cron fields (got 'daily')"),
    ("app", "stage", {"app_owner_max_models": 0}, "app_owner_max_models 1-100000 (got 0)"),
    ("app", "stage", {"app_operator_token": "short"}, "app_operator_token must be empty (no operator) or a generated"),
    ("app", "stage", {"app_proxy_upstream_file": "nnp-upstream.conf"}, "an absolute path, got 'nnp-upstream.conf'"),
    (
        "app",
        "stage",
        {"app_database_host": "db", "app_database_password": "p", "app_database_ca_bundle_url": "http://x/ca.pem"},
        "app_database_ca_bundle_url must be an https:// or file:// URL",
    ),
    (
        "app",
        "stage",
        {"app_database_host": "db", "app_database_password": "p", "app_database_sslrootcert": "ca.pem"},
        "an absolute path, needed for sslmode verify-full, got 'ca.pem'",
    ),
    ("nginx", "maintenance", {"nginx_maintenance_retry_after_seconds": 0}, "a positive number of seconds (got 0)"),
    ("nginx", "main", {"nginx_upstream_file": "upstream.conf"}, "nginx_upstream_file must be"),
    ("nginx", "main", {"nginx_internal_networks": ["internal"]}, "nginx_internal_networks must hold IPv4"),
    ("nginx", "main", {"nginx_internal_paths": ["version"]}, "nginx_internal_paths must hold paths that start"),
    ("nginx", "main", {"nginx_internal_paths": ["/a;b"]}, "nginx_internal_paths must hold paths that start"),
    ("nginx", "main", {"nginx_metrics_path": "metrics"}, "nginx_metrics_path must be the absolute path"),
    ("monitoring", "main", {"monitoring_prometheus_port": 0}, "monitoring_prometheus_port must be a port"),
    ("monitoring", "main", {"monitoring_alertmanager_address": "localhost"}, "_alertmanager_address must be an IP"),
    ("monitoring", "main", {"monitoring_discovery": "consul"}, "monitoring_discovery"),
    ("monitoring", "main", {"monitoring_discovery": "ec2"}, "ec2 needs monitoring_ec2_region"),
    (
        "monitoring",
        "main",
        {"monitoring_static_targets": {"node": [{"name": "web1", "address": "web1"}]}},
        "every static target needs a name and an address host:port",
    ),
    ("monitoring", "main", {"monitoring_probe_urls": ["http://x/"]}, "monitoring_probe_urls must be https:// URLs"),
    ("monitoring", "main", {"monitoring_probe_ca_file": "ca.pem"}, "monitoring_probe_ca_file must be an absolute"),
    ("monitoring", "main", {"monitoring_alert_host_down_for": "2 minutes"}, "must be a Prometheus duration"),
    ("monitoring", "main", {"monitoring_alert_5xx_ratio": 5}, "must be between 0 and 1"),
    ("monitoring", "main", {"monitoring_alertmanager_sns_topic_arn": "nnp-alarms"}, "an SNS topic ARN"),
    ("monitoring", "main", {"monitoring_alertmanager_sns_access_key": "AKIA"}, "both set or both empty"),
    ("nginx", "main", {"nginx_metrics_path": "/a b"}, "nginx_metrics_path must be the absolute path"),
    ("nginx", "main", {"nginx_rate_limit_api_per_second": 0}, "must be positive whole numbers"),
    ("nginx", "main", {"nginx_rate_limit_training_burst": -1}, "nginx_rate_limit_training_burst (-1)"),
    ("nginx", "main", {"nginx_rate_limit_connections": "many"}, "nginx_rate_limit_connections"),
    ("app_db", "main", {**APP_DB_REQUIRED, "app_db_master_password": ""}, "app_db_master_password is empty"),
    ("app_db", "main", {**APP_DB_REQUIRED, "app_db_schema": "public"}, "app_db_schema must not be"),
    (
        "app_db",
        "main",
        {**APP_DB_REQUIRED, "app_db_name": "Bad-Name"},
        "app_db_name must be a lower-case PostgreSQL name",
    ),
    (
        "deploy_lock",
        "main",
        {"deploy_lock_expiry_seconds": 0},
        "deploy_lock_expiry_seconds must be a positive number of seconds, got 0",
    ),
    (
        "deploy_lock",
        "acquire",
        {"deploy_lock_expiry_seconds": -5},
        "deploy_lock_expiry_seconds must be a positive number of seconds, got -5",
    ),
    ("deploy_lock", "acquire", {"deploy_lock_expiry_seconds": "soon"}, "deploy_lock_expiry_seconds"),
    ("deploy_lock", "acquire", {"deploy_lock_break": "maybe"}, "deploy_lock_break"),
    (
        "deploy_lock",
        "release",
        {"deploy_lock_host": "localhost", "deploy_lock_path": "lease.json"},
        "deploy_lock_path must be an absolute file path, got 'lease.json'",
    ),
    (
        "aws_env",
        "validate",
        {**AWS_INVENTORY, "env_name": "qa"},
        "aws_env_name must be one of: local, staging, production",
    ),
    ("aws_env", "provision", {**AWS_INVENTORY, "project_name": "NNP"}, "aws_env_project) must be 2-15 lowercase"),
    (
        "aws_network",
        "validate",
        {**AWS_INVENTORY, **AWS_NETWORK, "aws_network_monitoring_log_port": 70000},
        "aws_network_monitoring_log_port must be a port",
    ),
    (
        "aws_network",
        "validate",
        {**AWS_INVENTORY, "aws_network_alb_target_port": "https"},
        "aws_network_alb_target_port",
    ),
    (
        "aws_network",
        "provision",
        {**AWS_INVENTORY, "aws_network_vpc_cidr": "10.0.0.0"},
        "aws_network_vpc_cidr an IPv4 CIDR",
    ),
    (
        "aws_network",
        "validate",
        {**AWS_INVENTORY, **AWS_NETWORK, "aws_network_monitoring_scrape_ports": {"web": [80, "metrics"]}},
        "aws_network_monitoring_scrape_ports.web must be a list of ports within 1-65535",
    ),
    (
        "aws_network",
        "validate",
        {**AWS_INVENTORY, **AWS_NETWORK, "aws_network_monitoring_scrape_ports": {"gpu": [9100, 0]}},
        "aws_network_monitoring_scrape_ports.gpu must be a list of ports",
    ),
    (
        "aws_network",
        "provision",
        {**AWS_INVENTORY, "aws_network_monitoring_scrape_ports": "9100"},
        "aws_network_monitoring_scrape_ports",
    ),
    (
        "aws_database",
        "validate",
        {**AWS_INVENTORY, "aws_database_storage_type": "magnetic"},
        "aws_database_storage_type must be one of: gp2, gp3, io1",
    ),
    (
        "aws_app_secrets",
        "validate",
        {**AWS_INVENTORY, "aws_app_secrets_operator_token_length": 16},
        "aws_app_secrets_operator_token_length must be 32-128 (got 16)",
    ),
    ("aws_compute", "validate", {**AWS_INVENTORY, "ec2_instance_groups": "web"}, "aws_compute_instance_groups"),
    (
        "aws_compute",
        "validate",
        {**AWS_INVENTORY, "aws_compute_group_policies": ["monitoring"]},
        "aws_compute_group_policies",
    ),
    (
        "aws_compute",
        "provision",
        {**AWS_INVENTORY, "aws_compute_group_policies": {"monitoring": [{"Effect": "Allow", "Action": "sns:Publish"}]}},
        "aws_compute_group_policies.monitoring must be a non-empty list of IAM policy statements",
    ),
    (
        "aws_compute",
        "validate",
        {
            **AWS_INVENTORY,
            "aws_compute_group_policies": {"monitoring": [{"Effect": "Permit", "Action": "*", "Resource": "*"}]},
        },
        "Effect (Allow or Deny)",
    ),
    (
        "aws_front_door",
        "teardown",
        {**AWS_INVENTORY, "aws_front_door_target_protocol": "TCP"},
        "aws_front_door_target_protocol must be one of: HTTP, HTTPS",
    ),
    (
        "aws_alarms",
        "provision",
        {**AWS_INVENTORY, "aws_alarms_period_seconds": 120},
        "aws_alarms_period_seconds must be one of",
    ),
    (
        "deploy_history",
        "start",
        {"deploy_history_host": "localhost", "deploy_history_sns_topic_arn": "nnp-staging-alarms"},
        "deploy_history_sns_topic_arn must be an SNS topic ARN",
    ),
    (
        "deploy_history",
        "finish",
        {"deploy_history_host": "localhost", "deploy_history_webhook_url": "ftp://hooks.example.com/"},
        "deploy_history_webhook_url an http(s) URL",
    ),
    (
        "deploy_history",
        "finish",
        {"deploy_history_host": "localhost", "deploy_history_result_of_run": "done"},
        "deploy_history_result_of_run succeeded or failed",
    ),
    ("deploy_history", "show", {"deploy_history_host": "localhost", "deploy_history_count": 0}, "deploy_history_count"),
    ("deploy_history", "start", {"deploy_history_host": "nowhere"}, "deploy_history_host must name an inventory host"),
    ("monitoring", "main", {"monitoring_alert_deploy_stuck_seconds": 0}, "deploy stuck"),
    # No web or gpu hosts (this inventory is "localhost,") and no deploy_lock_host: nowhere to keep the lease.
    ("deploy_lock", "acquire", {}, "deploy_lock_host must name an inventory host"),
]


IDS = [f"{c[0]}-{c[3][:40]}" for c in CASES]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostOutcome]:
    """Every case in one --check run, each on a host of its own (see run_roles_batch)."""
    cases = {f"case{n:02d}": (role, entry, variables) for n, (role, entry, variables, _) in enumerate(CASES)}
    return run_roles_batch(tmp_path_factory.mktemp("bad-vars"), cases)


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_bad_variable_is_rejected_before_any_change(outcomes: dict[str, HostOutcome], case: int) -> None:
    role, entry, variables, message = CASES[case]
    outcome = outcomes[f"case{case:02d}"]
    assert outcome.failed, (role, entry, variables, outcome.reached)
    assert any(message in text for text in outcome.messages), outcome.messages
    # Nothing ran past validation: the only tasks reached are fact gathering, the include, the spec check
    # and asserts.
    assert all(t.startswith(ALLOWED) for t in outcome.reached), outcome.reached
    assert outcome.changed == 0, outcome


def test_the_batch_tells_the_cases_apart(tmp_path: Path) -> None:
    """One host's bad value fails that host alone: a valid case beside two bad ones in the same role entry
    point passes validation (and goes on in check mode), so the failures above belong to their own values."""
    found = run_roles_batch(
        tmp_path,
        {
            "bad_port": ("loadbalancer", "main", {"loadbalancer_port": 70000}),
            "good": ("python", "venv", {"python_venv_path": "/nonexistent/venv"}),
            "bad_venv": ("python", "venv", {"python_venv_path": "relative/venv"}),
        },
    )
    assert found["bad_port"].failed
    assert found["bad_venv"].failed
    assert any("must be within 1-65535" in text for text in found["bad_port"].messages)
    assert any("python_venv_path must be an absolute path" in text for text in found["bad_venv"].messages)
    assert not any("python_venv_path must be an absolute path" in text for text in found["good"].messages)
    assert any(t.startswith("Validating arguments against arg spec 'venv'") for t in found["good"].reached)
    # The valid host went past validation; the bad one beside it did not.
    assert not all(t.startswith(ALLOWED) for t in found["good"].reached), found["good"].reached
