"""The monitoring host (mon1, role monitoring): Prometheus scrapes the app, the worker and the node exporter
of every host, named by host; the probe of the front door succeeds through the stack's CA; no page is
firing in the steady state; every host's journal reaches mon1 (roles common and journal_remote), where
on-call reads the fleet's logs in one place. The alerts themselves are fired by the faults of test_25 (a worker's host
killed) and test_40 (a 5xx burst)."""

from __future__ import annotations

import json
import time
from typing import Any

from stack import FIGURES, LB_URL, docker_exec, host_client, host_get, live_releases, prometheus

FLEET_JOURNAL = "--directory=/var/log/journal/remote"

# Job -> the hosts it must scrape: the inventory's groups (inventories/local/hosts.yml).
EXPECTED = {
    "node": {"web1", "web2", "gpu1", "mon1"},
    "app": {"web1", "web2"},
    "worker": {"web1", "web2", "gpu1"},
    "prometheus": {"mon1"},
    "alertmanager": {"mon1"},
    "blackbox": {"mon1"},
    "probe": {f"{LB_URL}/"},
}
# Pages that must not be firing while the stack is healthy.
QUIET = {"NnpHostDown", "NnpAppNotReady", "NnpHigh5xxRatio", "NnpWorkerHeartbeatMissing", "NnpFrontDoorDown"}


def targets() -> dict[str, dict[str, str]]:
    """job -> instance -> health, of Prometheus's active targets."""
    found: dict[str, dict[str, str]] = {}
    for target in prometheus("targets", state="active")["activeTargets"]:
        found.setdefault(target["labels"]["job"], {})[target["labels"]["instance"]] = target["health"]
    return found


def series(query: str) -> dict[str, dict[str, Any]]:
    """instance -> labels and value of an instant query's result."""
    return {
        row["metric"]["instance"]: {**row["metric"], "value": float(row["value"][1])}
        for row in prometheus("query", query=query)["result"]
    }


def test_every_host_is_scraped_by_job_and_named_after_itself() -> None:
    # A target is "unknown" until its first scrape (every 2 s here); give the stack a few rounds.
    deadline = time.monotonic() + 60
    while (found := targets()) != {job: dict.fromkeys(hosts, "up") for job, hosts in EXPECTED.items()}:
        assert time.monotonic() < deadline, found
        time.sleep(1)
    samples = series("scrape_samples_scraped")
    FIGURES["monitoring"] = {
        "targets": sum(len(hosts) for hosts in EXPECTED.values()),
        "scrape_interval_seconds": 2,
        "samples_per_round": int(sum(row["value"] for row in samples.values())),
    }


def test_the_app_and_the_workers_report_the_live_release_of_every_host() -> None:
    releases = live_releases()
    build = series("nnp_build_info")
    assert {host: row["release"] for host, row in build.items()} == releases, build
    workers = series("nnp_worker_info")
    # gpu1 runs the same release as the web hosts (one deploy for web:gpu).
    assert {host: row["release"] for host, row in workers.items()} == {**releases, "gpu1": releases["web1"]}, workers
    assert {row["device"] for row in workers.values()} == {"cpu"}, workers
    ready = series("nnp_app_ready")
    assert {host: row["value"] for host, row in ready.items()} == {"web1": 1.0, "web2": 1.0}, ready
    # The node exporter reports each host's worker unit active (the systemd collector's chosen units).
    units = series('node_systemd_unit_state{name="nnp-worker.service", state="active"}')
    assert {host: row["value"] for host, row in units.items()} == {"web1": 1.0, "web2": 1.0, "gpu1": 1.0}, units


def test_the_front_door_probe_succeeds_and_no_page_fires_in_the_steady_state() -> None:
    probe = series('probe_success{job="probe"}')
    assert {instance: row["value"] for instance, row in probe.items()} == {f"{LB_URL}/": 1.0}, probe
    expiry = series('probe_ssl_earliest_cert_expiry{job="probe"}')[f"{LB_URL}/"]["value"]
    assert expiry - time.time() > 30 * 86400, expiry  # the stack CA signs the balancer's certificate for 825 days
    # (The first deploy paged, as on a new environment: mon1 is configured before the app is deployed.)
    firing = [alert for alert in prometheus("alerts")["alerts"] if alert["labels"]["alertname"] in QUIET]
    assert firing == [], firing


def remote_entries(*matches: str) -> list[dict[str, Any]]:
    """The entries of the fleet's journal on mon1 that match (journalctl's FIELD=value matches)."""
    out = docker_exec("mon1", "journalctl", FLEET_JOURNAL, "--no-pager", "-o", "json", *matches)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_every_hosts_journal_is_readable_on_the_monitoring_host() -> None:
    marker = f"site-{time.time_ns()}"
    hosts = ("web1", "web2", "gpu1", "mon1")
    sent = time.monotonic()
    for host in hosts:
        docker_exec(host, "logger", "-t", "nnp-site-test", f"{marker} from {host}")
    # nginx's errors travel too: a static file that is not there is one (open() failed, at error level).
    with host_client("web1") as client:
        assert host_get(client, f"/static/{marker}.css").status_code == 404
    deadline = time.monotonic() + 60
    while True:
        found = {e["_HOSTNAME"]: e["MESSAGE"] for e in remote_entries("SYSLOG_IDENTIFIER=nnp-site-test")
                 if marker in e["MESSAGE"]}  # fmt: skip
        errors = remote_entries("_HOSTNAME=web1", "SYSLOG_IDENTIFIER=nginx")
        nginx = [e for e in errors if f"{marker}.css" in e["MESSAGE"]]
        if (set(found) == set(hosts) and nginx) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    arrived = time.monotonic() - sent
    assert found == {host: f"{marker} from {host}" for host in hosts}, found
    assert nginx, "web1's nginx error for the missing static file is not on mon1"
    # What on-call reads there: web1's app slots, worker and nginx (their units' messages), and the deploys
    # the converge recorded on web1, the deploy lock's host (role deploy_history's nnp-deploy entries).
    web1 = remote_entries("_HOSTNAME=web1")
    units = {e.get("_SYSTEMD_UNIT", "") for e in web1} | {e.get("UNIT", "") for e in web1}
    assert "nnp-worker.service" in units, sorted(units)
    assert any(unit.startswith("nnp-app@") for unit in units), sorted(units)
    assert "nginx.service" in units, sorted(units)
    deploys = [json.loads(e["MESSAGE"]) for e in web1 if e.get("SYSLOG_IDENTIFIER") == "nnp-deploy"]
    assert any(d["kind"] == "deploy" and d["result"] == "succeeded" for d in deploys), deploys
    FIGURES["central_logs"] = {"hosts": len(hosts), "seconds_until_all_arrived": round(arrived, 1)}
