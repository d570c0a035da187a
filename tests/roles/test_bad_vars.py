"""Bad role variables are rejected at role entry, with a message naming the problem, before any change."""

from __future__ import annotations

import re

import pytest

# The app_db arguments that are required, valid, so each case below breaks one thing.
APP_DB_REQUIRED = {
    "app_db_host": "db",
    "app_db_master_user": "master",
    "app_db_master_password": "m",
    "app_db_password": "p",
}

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
    ("common", "main", {"common_unattended_upgrades_enabled": "maybe"}, "common_unattended_upgrades_enabled"),
    ("python", "main", {"python_version": "banana"}, 'python_version must be "system" or a version'),
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
    ("lb_target", "drain", {"lb_target_kind": "f5"}, "lb_target_kind"),
    ("lb_target", "drain", {"lb_target_kind": "haproxy"}, "needs lb_target_haproxy_host"),
    (
        "lb_target",
        "enable",
        {"lb_target_kind": "alb", "lb_target_alb_target_group": "tg"},
        "EC2 lb_target_alb_instance_id",
    ),
    ("pytorch", "main", {"pytorch_variant": "gpu"}, "value of pytorch_variant must be one of: cpu, cuda"),
    ("pytorch", "host", {"pytorch_variant": "gpu"}, "value of pytorch_variant must be one of: cpu, cuda"),
    ("pytorch", "main", {"pytorch_cpu_version": "latest"}, "pytorch_cpu_version must pin one version"),
    ("pytorch", "main", {"pytorch_venv_path": "venv"}, "pytorch_venv_path (absolute path, got 'venv')"),
    ("nginx", "main", {"nginx_http_port": 70000}, "nginx_http_port (70000)"),
    ("nginx", "main", {"nginx_upstreams": []}, "nginx_upstreams must list at least one backend"),
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
    ("app", "stage", {"app_port": 70000}, "app_port (1-65535, got 70000)"),
    ("app", "stage", {"app_workers": 0}, "app_workers (1-64, got 0)"),
    ("app", "stage", {"app_keep_releases": 1}, "app_keep_releases must be at least 2"),
    ("app", "stage", {"app_environment": {"DATABASE_URL": "x"}}, "app_environment key DATABASE_URL"),
    ("app", "stage", {"app_listen_address": "localhost"}, "an IPv4 address, got"),
    ("app_db", "main", {**APP_DB_REQUIRED, "app_db_master_password": ""}, "app_db_master_password is empty"),
    ("app_db", "main", {**APP_DB_REQUIRED, "app_db_schema": "public"}, "app_db_schema must not be"),
    (
        "app_db",
        "main",
        {**APP_DB_REQUIRED, "app_db_name": "Bad-Name"},
        "app_db_name must be a lower-case PostgreSQL name",
    ),
]


@pytest.mark.parametrize(("role", "entry", "variables", "message"), CASES, ids=[f"{c[0]}-{c[3][:40]}" for c in CASES])
def test_bad_variable_is_rejected_before_any_change(apply_role, role, entry, variables, message):
    result = apply_role(role, variables, entry)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    # Nothing ran past validation: the only tasks reached are the spec check and asserts.
    reached = re.findall(r"^TASK \[[^\]]*?: ([^\]]+)\]", output, flags=re.MULTILINE)
    assert all(t.startswith(("Validating arguments", "Check", "Include")) for t in reached), reached
    assert re.search(r"changed=0\s", output), output


def test_good_variables_pass_validation(apply_role):
    """The same harness accepts valid input, so the failures above are about the values."""
    result = apply_role("python", {"python_venv_path": "/nonexistent/venv"}, "venv")
    output = result.stdout + result.stderr
    assert "python_venv_path must be an absolute path" not in output
    assert "Validating arguments against arg spec 'venv'" in output
