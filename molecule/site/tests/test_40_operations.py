"""What on-call does besides deploying, on the stack test_30 left (both hosts on the first release again, `live`):
the deploy lock every fleet-changing run takes, maintenance mode, and a rollout limited to one host with
the load aimed at that host only (a group with one host). Uses test_30's fixtures (conftest.py)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from stack import (
    FIGURES,
    Load,
    Run,
    deploy,
    docker_exec,
    haproxy_servers,
    host_client,
    host_get,
    lb_client,
    live_releases,
    live_slot,
    notifications,
    playbook,
    slot_started,
    wait_for_alert,
)

LEASE = "/var/lib/nnp-deploy/lease.json"


def write_lease(holder: str, expires_in: int) -> None:
    """A lease on web1 (the lock host) as another run would have left it."""

    def utc(offset: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))

    lease = {
        "token": f"token-of-{holder}",
        "holder": {"user": holder, "controller": "elsewhere", "commit": "0123abc", "playbook": "manual"},
        "started_at": utc(-300),
        "expires_at": utc(expires_in),
    }
    docker_exec("web1", "mkdir", "-p", "-m", "0700", str(Path(LEASE).parent))
    docker_exec("web1", "tee", LEASE, stdin=json.dumps(lease))


def lease_exists() -> bool:
    return subprocess.run(["docker", "exec", "web1", "test", "-e", LEASE], check=False).returncode == 0


def unit_state(host: str, unit: str) -> str:
    """systemctl is-active (which exits non-zero for any state but active)."""
    done = subprocess.run(
        ["docker", "exec", host, "systemctl", "is-active", unit], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def refused_before_any_change(run: Run) -> None:
    assert run.rc != 0
    assert "PLAY [Stage the release on every app host]" not in run.output, run.output[-3000:]
    assert run.changed() == 0


def test_two_deploys_started_at_once_one_runs_the_other_is_refused(
    state: dict[str, Any], sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    runs: list[Run] = []
    # Two operators: each controller has its own fact cache.
    caches = [
        str(tmp / "facts") for tmp in (Path(tmp_path_factory.mktemp("one")), Path(tmp_path_factory.mktemp("two")))
    ]

    def one_deploy(cache: str) -> None:
        runs.append(deploy(sources["live"], env={"ANSIBLE_CACHE_PLUGIN_CONNECTION": cache}))

    threads = [threading.Thread(target=one_deploy, args=(cache,)) for cache in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(run.rc == 0 for run in runs) == [False, True], [run.output[-2000:] for run in runs]
    refused = next(run for run in runs if run.rc != 0)
    refused_before_any_change(refused)
    assert "is held by" in refused.output, refused.output[-3000:]
    assert "deploy_lock_break=true" in refused.output
    assert not lease_exists(), "the run that held the lock did not release it"
    assert live_releases() == {"web1": state["live"], "web2": state["live"]}


def test_an_expired_lease_is_taken_over() -> None:
    # Every entry point takes the lease through the same role; the maintenance play is the quickest.
    write_lease("crashed-run", expires_in=-60)
    run = playbook("playbooks/maintenance.yml", "-e", "maintenance=off")

    assert run.rc == 0, run.output[-3000:]
    assert "Took over the expired deploy lock of crashed-run" in run.output, run.output[-3000:]
    assert run.changed() == 0
    assert not lease_exists()


def test_a_live_lease_refuses_until_broken_on_purpose(sources: dict[str, Path]) -> None:
    write_lease("alice", expires_in=3600)
    refused = deploy(sources["live"])
    refused_before_any_change(refused)
    assert "is held by alice" in refused.output, refused.output[-3000:]
    refused_rollback = playbook("playbooks/rollback.yml")
    assert refused_rollback.rc != 0
    assert "is held by alice" in refused_rollback.output
    assert lease_exists()

    broken = playbook("playbooks/maintenance.yml", "-e", "maintenance=off", "-e", "deploy_lock_break=true")

    assert broken.rc == 0, broken.output[-3000:]
    assert "Broke the deploy lock of alice" in broken.output, broken.output[-3000:]
    assert "on purpose (deploy_lock_break)" in broken.output
    assert not lease_exists()


def test_bad_lock_and_bake_settings_are_refused_before_any_change(sources: dict[str, Path]) -> None:
    bake = deploy(sources["live"], "-e", "deploy_canary_bake_seconds=-5")
    refused_before_any_change(bake)
    assert "deploy_canary_bake_seconds must be a whole number of seconds, 0 or more, got '-5'" in bake.output
    run = deploy(sources["live"], "-e", "deploy_lock_expiry_seconds=0")
    refused_before_any_change(run)
    assert "deploy_lock_expiry_seconds must be a positive number of seconds, got 0" in run.output, run.output[-3000:]


def test_maintenance_serves_the_503_page_while_the_load_balancer_keeps_the_hosts(model_id: int) -> None:
    assert playbook("playbooks/maintenance.yml", "-e", "maintenance=sometimes").rc != 0
    run = playbook("playbooks/maintenance.yml", "-e", "maintenance=on")
    assert run.rc == 0, run.output[-3000:]
    rerun = playbook("playbooks/maintenance.yml", "-e", "maintenance=on")
    assert rerun.rc == 0, rerun.output[-3000:]
    assert rerun.changed() == 0, rerun.output[-3000:]

    with lb_client() as client:
        page = client.get("/")
        api = client.get("/api/models")
        ready = client.get("/readyz")
    assert page.status_code == 503, page.text
    assert "text/html" in page.headers["content-type"]
    assert "maintenance" in page.text.lower()
    assert api.status_code == 503, api.text
    assert api.headers["content-type"].startswith("application/json")
    assert api.json()["status"] == "maintenance"
    for response in (page, api):
        assert int(response.headers["retry-after"]) > 0
        assert response.headers["x-content-type-options"] == "nosniff"
    assert ready.status_code == 200
    with host_client("web2") as client:
        assert host_get(client, "/api/models").status_code == 503
    # Three check intervals later the load balancer still counts both hosts healthy.
    time.sleep(7)
    assert all(server["status"] == "UP" for server in haproxy_servers().values()), haproxy_servers()

    run = playbook("playbooks/maintenance.yml", "-e", "maintenance=off")
    assert run.rc == 0, run.output[-3000:]
    with Load(model_id, "lb", clients=16) as load:
        time.sleep(10)
    assert load.total >= 300, load.figures()
    assert load.results["failed"] == 0, (dict(load.reasons), load.failures[:10])


def test_a_rollout_limited_to_one_host_under_load_aimed_at_it(
    state: dict[str, Any], sources: dict[str, Path], model_id: int
) -> None:
    """A group with one host: nothing else can take its traffic, so the host itself must never stop serving."""
    with Load(model_id, "web1", clients=16) as load:
        run = deploy(sources["single"], "--limit", "web1")
    after = live_releases()

    assert run.rc == 0, run.output[-3000:]
    assert load.total >= 300, load.figures()
    assert load.results["failed"] == 0, (dict(load.reasons), load.failures[:10])
    assert after["web2"] == state["live"]
    assert after["web1"] != state["live"]
    assert set(load.releases) == {state["live"], after["web1"]}, load.releases
    FIGURES["single_host_rollout"] = {"seconds": round(run.seconds, 1), "load": load.figures()}


def test_a_burst_of_5xx_on_one_host_pages_naming_that_host() -> None:
    """The release web1 now runs has a planted failing route (conftest.py): requests to it are 500s, which
    the app counts, until the monitoring host's NnpHigh5xxRatio reaches the webhook, naming web1 only. The
    burst lasts until then, not a moment: a counter that first appears already at its total shows no rate."""
    started = time.time()
    statuses: list[int] = []
    stop = threading.Event()

    def burst() -> None:
        with host_client("web1") as client:
            while not stop.is_set():
                statuses.append(host_get(client, "/api/planted-failure").status_code)
                time.sleep(0.02)

    sender = threading.Thread(target=burst)
    sender.start()
    try:
        paged = wait_for_alert("NnpHigh5xxRatio", "web1", "firing", since=started, timeout=60)
    finally:
        stop.set()
        sender.join()
    assert statuses
    assert set(statuses) == {500}, sorted(set(statuses))
    assert "web1" in paged["annotations"]["summary"], paged
    assert paged["annotations"]["runbook_url"].endswith("#nnphigh5xxratio"), paged
    pages = [
        alert["labels"]["instance"]
        for received, body in notifications()
        if received >= started
        for alert in body["alerts"]
        if alert["labels"]["alertname"] == "NnpHigh5xxRatio"
    ]
    assert set(pages) == {"web1"}, pages
    FIGURES["alert_5xx_burst"] = {
        "requests": len(statuses),
        "seconds_until_paged": round(paged["received"] - started, 1),
    }


def test_a_killed_app_process_fails_no_read_through_the_load_balancer(model_id: int) -> None:
    """kill -9 of every process of web1's live slot (a crash) under 64 clients reading through the load
    balancer: systemd starts the slot again, web1's nginx answers 502 meanwhile, and HAProxy retries each
    of those reads on web2 (retry-on 502, GET and HEAD only). No read fails. The ALB retries nothing: see
    docs/RUNBOOK.md, "When an app process dies". Reported: the seconds from the kill until web1 serves again
    (to within the 0.5 s of the polls)."""
    slot = live_slot("web1")
    unit = f"nnp-app@{slot}.service"
    before = slot_started("web1", slot)
    with Load(model_id, "lb", clients=64, reads_only=True) as load:
        time.sleep(3)
        killed = time.monotonic()
        docker_exec("web1", "systemctl", "kill", "--signal=SIGKILL", unit)
        deadline = killed + 120
        while slot_started("web1", slot) == before or unit_state("web1", unit) != "active":
            assert time.monotonic() < deadline, f"{unit} did not come back"
            time.sleep(0.5)
        with host_client("web1") as client:
            while host_get(client, "/readyz").status_code != 200:
                assert time.monotonic() < deadline, "web1 did not serve again"
                time.sleep(0.5)
        recovery_s = time.monotonic() - killed
        time.sleep(3)

    assert load.total >= 300, load.figures()
    assert load.results["failed"] == 0, (dict(load.reasons), load.failures[:10])
    FIGURES["killed_app_process"] = {
        "recovery_s": round(recovery_s, 1),
        "load": load.figures(),
        "servers_after": haproxy_servers(),
    }


def test_a_database_restart_fails_no_request(model_id: int) -> None:
    """PostgreSQL (the RDS stand-in) restarts under the saturating mix through the load balancer, as a
    minor-version upgrade or a reboot restarts RDS: every pooled connection of every app process breaks.
    Reads retry on a new connection (DB_READ_RETRY_SECONDS) and the predictions read the same way, so no
    request fails; the load balancer keeps both hosts (the restart is shorter than its three checks)."""
    units = docker_exec("db", "systemctl", "list-units", "postgresql@*", "--plain", "--no-legend", "--state=running")
    [unit] = [line.split()[0] for line in units.splitlines()]  # postgresql@15-rds on Debian 12
    before = docker_exec("db", "systemctl", "show", unit, "--property=MainPID").strip()
    with Load(model_id, "lb", clients=64) as load:
        time.sleep(3)
        start = time.monotonic()
        docker_exec("db", "systemctl", "restart", unit)
        restart_s = time.monotonic() - start
        time.sleep(5)
    after = docker_exec("db", "systemctl", "show", unit, "--property=MainPID").strip()

    assert after != before, (before, after)
    assert load.total >= 300, load.figures()
    assert load.results["failed"] == 0, (dict(load.reasons), load.failures[:10])
    FIGURES["database_restart"] = {"restart_s": round(restart_s, 1), "load": load.figures()}
