"""What on-call would check by hand on a host the common role configured."""

import pytest


@pytest.mark.parametrize(
    "name", ["acl", "ca-certificates", "curl", "locales", "tzdata", "ufw", "unattended-upgrades", "jq"]
)
def test_packages_installed(host, name):
    assert host.package(name).is_installed


def test_service_account_cannot_log_in(host):
    user = host.user("nnp")
    assert user.exists
    assert user.group == "nnp"
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == "/opt/nnp"
    assert user.uid < 1000, "service account must be a system user"
    assert host.file("/opt/nnp").is_directory


def test_timezone_and_locale(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Berlin"
    assert host.file("/etc/timezone").content_string == "Europe/Berlin\n"
    assert host.check_output("date +%Z") in {"CET", "CEST"}
    assert "en_US.utf8" in host.check_output("locale -a")
    assert host.file("/etc/default/locale").content_string == "LANG=en_US.UTF-8\n"


def test_unattended_upgrades_security_only(host):
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    patterns = [line for line in dump.splitlines() if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
    assert patterns, dump
    assert all("security" in line.lower() for line in patterns), patterns
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in host.check_output("apt-config dump")


def test_journald_limits(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-nnp.conf")
    assert conf.mode == 0o644
    assert "SystemMaxUse=512M" in conf.content_string
    assert "RuntimeMaxUse=64M" in conf.content_string
    assert "MaxRetentionSec=30day" in conf.content_string
    assert host.service("systemd-journald").is_running


def test_firewall_rules_written(host):
    rules = host.file("/etc/ufw/user.rules").content_string
    tuples = sorted(
        " ".join(line.split()[4:7]) for line in rules.splitlines() if line.startswith("### tuple ### allow")
    )
    # SSH first, then exactly the ports from the scenario's variables: nothing else is open.
    assert tuples == ["tcp 22 0.0.0.0/0", "tcp 443 0.0.0.0/0", "tcp 80 0.0.0.0/0", "udp 51820 0.0.0.0/0"]
    assert "allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=" in rules
    defaults = host.file("/etc/default/ufw").content_string
    assert 'DEFAULT_INPUT_POLICY="DROP"' in defaults
    assert 'DEFAULT_OUTPUT_POLICY="ACCEPT"' in defaults


def test_firewall_left_inactive_in_container(host):
    # common_firewall_activate=false: the scenario must not touch the host's iptables.
    assert "ENABLED=no" in host.file("/etc/ufw/ufw.conf").content_string


def test_node_exporter_reports_the_host_and_the_chosen_units_on_loopback_only(host):
    """prometheus-node-exporter on 127.0.0.1:18100 (the scenario's port): the host's memory and
    filesystems, and the state of the units common_node_exporter_systemd_units names, not others."""
    service = host.service("prometheus-node-exporter")
    assert service.is_running
    assert service.is_enabled
    assert host.socket("tcp://127.0.0.1:18100").is_listening
    assert not host.socket("tcp://0.0.0.0:18100").is_listening
    assert not host.package("prometheus-node-exporter-collectors").is_installed
    text = host.check_output("curl -sf http://127.0.0.1:18100/metrics")
    assert "\nnode_memory_MemAvailable_bytes " in text
    assert 'node_systemd_unit_state{name="systemd-journald.service",state="active"' in text
    assert 'node_scrape_collector_success{collector="systemd"} 1' in text
    # Every other unit is left out (this one exists on every systemd host).
    assert 'name="systemd-tmpfiles-setup.service"' not in text
