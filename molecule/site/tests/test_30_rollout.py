"""Rollouts through the real plays, the way on-call runs them (site.yml --tags deploy), on the live stack.

Each web host runs the app in two slots behind its nginx: a rollout starts the release in the idle slot,
gates it, moves nginx and stops the old slot, so no host leaves service and the load balancer is never
touched. The load is the one that saturates this 2-core machine: 64 clients with no pause through the
load balancer plus 8 straight at web1's own nginx (a group with one host), each cycling GET /version,
GET /api/models and a prediction. Every failure is counted by reason; the guarantee is 0.

In order (each test builds on the state the one before left): the steady state under that load, a new
release under it, a redeploy of the live release that changes nothing (whatever the fact cache says), a
release that cannot become ready (the live slot keeps serving), a release whose migration fails (no host
switches, the database is unchanged), rollback to the previous release under the saturating load (with a
stale fact cache), a named release (the live one: nothing changes; a missing one: refused before any
change), and a rotated database password under the saturating load, deployed with the live release (the
first one again, from this checkout): it reaches every process without a restart. test_40 continues
with the deploy lock, maintenance mode and a one-host rollout.
Ansible's output of every run is in artifacts/site/, the figures in artifacts/site/rollout-figures.json.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from stack import (
    FIGURES,
    OLD_PASSWORDS,
    assert_no_failure,
    cut_app_connections,
    database_state,
    deploy,
    docker_exec,
    edit_fact_cache,
    haproxy_servers,
    lb_client,
    live_releases,
    live_slot,
    playbook,
    rds,
    saturating_load,
    secret,
    secrets_manager,
    slot_started,
    start_long_training,
    steady_load,
    training_epochs,
    wait_for_training,
)


def test_the_steady_state_under_a_saturating_load_fails_no_request(model_id: int) -> None:
    """The load the rollouts run under saturates the machine, and by itself fails nothing: the health
    checks tolerate a busy host (no server ever went DOWN in HAProxy)."""
    before = haproxy_servers()
    with saturating_load(model_id) as loads:
        time.sleep(20)
    after = haproxy_servers()

    assert_no_failure(loads)
    assert loads[0].busy >= 0.9, f"the load did not saturate the machine: CPU {loads[0].busy:.0%} busy"
    assert all(after[name]["status"] == "UP" for name in after), after
    assert {name: after[name]["chkdown"] for name in after} == {name: before[name]["chkdown"] for name in before}
    FIGURES["steady_state"] = [load.figures() for load in loads]


def test_a_new_release_rolls_out_under_saturating_load_without_a_failed_request(
    state: dict[str, Any], sources: dict[str, Path], model_id: int
) -> None:
    """Web slots and training workers roll together: under the load, no request fails, and a long training
    started before the rollout goes on through both hosts' worker restarts (each one checkpoints it and
    gives it back to the queue) and completes with every epoch exactly once."""
    before = state["initial"]
    checks = haproxy_servers()
    training = start_long_training()
    # As in production: an RDS snapshot before migrating (moto's RDS), named for the run, and the older
    # pre-migration snapshots beyond the newest deploy_snapshot_keep deleted. Three older ones are planted.
    planted = [f"nnp-local-pre-20250101-00000{n}-planted" for n in (1, 2, 3)]
    for name in planted:
        rds().create_db_snapshot(DBSnapshotIdentifier=name, DBInstanceIdentifier="nnp-local")
    with saturating_load(model_id) as loads:
        run = deploy(
            sources["next"],
            "-e", "deploy_snapshot_before_migrate=true", "-e", "deploy_snapshot_keep=2",
            # With a 4 s bake: the canary is watched through its nginx before the other hosts switch.
            "-e", "deploy_canary_bake_seconds=4",
        )  # fmt: skip
    after = live_releases()

    assert run.rc == 0, run.output[-3000:]
    assert_no_failure(loads)
    # The bake's passes are labelled by their time: 0 s, 2 s, 4 s, on the canary only.
    assert "ok: [web1] => (item=4 s)" in run.output, run.output[-3000:]
    assert "ok: [web2] => (item=0 s)" not in run.output
    assert after["web1"] == after["web2"] != before["web1"], (before, after)
    with lb_client() as client:
        assert client.get("/version").json()["release_id"] == after["web1"]
    # Both releases answered during the rollout, through the load balancer and through web1 alone.
    for load in loads:
        assert set(load.releases) == {before["web1"], after["web1"]}, (load.target, load.releases)
    # No host left service: the load balancer never saw one go down, and no deploy task touched it.
    servers = haproxy_servers()
    assert {name: servers[name]["chkdown"] for name in servers} == {name: checks[name]["chkdown"] for name in checks}
    assert "lb_target" not in run.output
    state["next"] = after["web1"]
    snapshots = rds().describe_db_snapshots(DBInstanceIdentifier="nnp-local")["DBSnapshots"]
    kept = sorted(snap["DBSnapshotIdentifier"] for snap in snapshots if "-pre-" in snap["DBSnapshotIdentifier"])
    assert len(kept) == 2, kept
    assert kept[0] == planted[-1], kept
    assert re.fullmatch(rf"nnp-local-pre-\d{{8}}-\d{{6}}-{after['web1']}", kept[1]), kept
    FIGURES["rollout_under_saturating_load"] = {"seconds": round(run.seconds, 1), "loads": [x.figures() for x in loads]}
    # The training outlived both workers' restarts and ended as if never interrupted: one row per epoch.
    finished = wait_for_training(training["id"], timeout=600)
    assert finished["status"] == "completed", finished
    assert finished["attempts"] >= 2, f"no worker restart reached the training: {finished}"
    assert finished["resumed_from_epoch"] is not None, finished
    assert training_epochs(training["id"]) == list(range(1, training["epochs"] + 1))
    FIGURES["training_through_rollout"] = {
        key: finished[key] for key in ("attempts", "resumed_from_epoch", "started_at", "finished_at")
    }


def test_redeploying_the_live_release_changes_nothing_whatever_the_fact_cache_says(
    state: dict[str, Any], sources: dict[str, Path]
) -> None:
    # A stale cache naming another release must not make the deploy switch (it reads each host itself).
    edit_fact_cache({"release": "stale-cached-release", "slot": "stale"})
    run = deploy(sources["next"])

    assert run.rc == 0, run.output[-3000:]
    assert run.changed() == 0, [line for line in run.output.splitlines() if line.startswith("changed:")]
    assert live_releases() == {"web1": state["next"], "web2": state["next"]}
    FIGURES["noop_deploy_s"] = round(run.seconds, 1)


def test_a_release_that_cannot_become_ready_leaves_the_live_slot_serving(
    state: dict[str, Any], sources: dict[str, Path], model_id: int
) -> None:
    slots = {host: (live_slot(host), slot_started(host, live_slot(host))) for host in ("web1", "web2")}
    # A steady load (paced clients) rather than the saturating one: the failure path is what is tested.
    with steady_load(model_id) as loads:
        run = deploy(sources["broken"], "-e", "app_health_timeout_seconds=10")
    after = live_releases()

    assert run.rc != 0
    assert "stopped at web1" in run.output, run.output[-3000:]
    assert "did not become ready on web1" in run.output, run.output[-3000:]
    assert f"web1 serves {state['next']}" in run.output, run.output[-3000:]
    assert after == {"web1": state["next"], "web2": state["next"]}, after
    assert_no_failure(loads)
    # Neither host's live slot was restarted or replaced.
    assert {host: (live_slot(host), slot_started(host, live_slot(host))) for host in slots} == slots
    FIGURES["failed_rollout"] = {"seconds": round(run.seconds, 1), "loads": [load.figures() for load in loads]}


def test_a_failing_migration_goes_live_nowhere_and_leaves_the_database_as_it_was(
    state: dict[str, Any], sources: dict[str, Path]
) -> None:
    before = database_state()
    run = deploy(sources["bad-migration"])
    after = database_state()

    assert run.rc != 0
    assert "division by zero" in run.output, run.output[-3000:]
    assert after == before
    assert not any(table == "planted" for _, table, _, _ in after["columns"])
    assert live_releases() == {"web1": state["next"], "web2": state["next"]}


def test_rollback_to_the_previous_release_under_load_with_a_stale_fact_cache(
    state: dict[str, Any], model_id: int
) -> None:
    # The cache names a previous release no host has: the rollback must read the hosts, not the cache.
    edit_fact_cache({"previous_release": "stale-cached-release"})
    with saturating_load(model_id) as loads:
        run = playbook("playbooks/rollback.yml")

    assert run.rc == 0, run.output[-3000:]
    assert_no_failure(loads)
    target = state["initial"]["web1"]
    assert live_releases() == {"web1": target, "web2": target}
    state["live"] = target
    FIGURES["rollback_previous"] = {"seconds": round(run.seconds, 1), "loads": [load.figures() for load in loads]}


def test_rollback_to_a_named_release_that_is_live_changes_nothing(state: dict[str, Any]) -> None:
    """-e rollback_release=<id> takes the same switch as the rollback above (rollout_host.yml with the
    release chosen); what differs is the choice, shown here with the live release: found on every host,
    nothing to switch. A second full rollback under load (about 150 s of make test) would show the switch
    again, not the choice."""
    run = playbook("playbooks/rollback.yml", "-e", f"rollback_release={state['live']}")

    assert run.rc == 0, run.output[-3000:]
    assert run.changed() == 0, [line for line in run.output.splitlines() if line.startswith("changed:")]
    assert f"rollback_target: {state['live']}" in run.output, run.output[-3000:]  # the YAML callback's -v
    assert live_releases() == {"web1": state["live"], "web2": state["live"]}


def test_rollback_to_a_missing_release_is_refused_before_any_change(state: dict[str, Any]) -> None:
    before = live_releases()
    run = playbook("playbooks/rollback.yml", "-e", "rollback_release=no-such-release")

    assert run.rc != 0
    assert "has no release 'no-such-release'" in run.output, run.output[-3000:]
    assert run.changed() == 0
    assert live_releases() == before


def unit_started(host: str, unit: str) -> str:
    """When the unit last entered the active state (changes with every start)."""
    return docker_exec(host, "systemctl", "show", unit, "--property=ActiveEnterTimestampMonotonic").strip()


def test_a_rotated_app_password_reaches_every_process_under_load_without_a_restart(
    state: dict[str, Any], sources: dict[str, Path], model_id: int
) -> None:
    """The runbook's rotation: a new password in the secret, then a deploy of the live release (the first
    one, from this checkout, since the rollback above) under the saturating load. app_db sets the password
    on the server, every host's password file gets it right after, and the running slots and workers use
    it from their next connection: no slot switches, no process restarts, no request fails (the app
    retries a refused password for the seconds in between). Then every connection of the app login is cut
    on the server: each process connects again, with the new password, and serves."""
    login = secret("nnp/local/rds-app")
    OLD_PASSWORDS.append(login["password"])
    login["password"] = f"Rotated{uuid.uuid4().hex}"
    secrets_manager().put_secret_value(SecretId="nnp/local/rds-app", SecretString=json.dumps(login))
    releases, slots = live_releases(), {host: live_slot(host) for host in ("web1", "web2")}
    units = {(host, f"nnp-app@{slots[host]}.service") for host in slots}
    units |= {(host, "nnp-worker.service") for host in ("web1", "web2", "gpu1")}
    started = {unit: unit_started(*unit) for unit in units}

    with saturating_load(model_id) as loads:
        run = deploy(sources["live"])
        time.sleep(2)
        # Every connection the app login has, cut: the processes must come back with the new password.
        cut = cut_app_connections()
        time.sleep(8)

    assert run.rc == 0, run.output[-3000:]
    assert_no_failure(loads)
    assert cut > 0, "the app had no connection to cut"
    # The password file's task runs twice: in stage (a new host's only: ok) and right after app_db (changed).
    header = "TASK [app : Write the app login's password to /opt/nnp/shared/pgpass]"
    assert run.output.count(header) == 2, run.output[-3000:]
    after_app_db = run.output.split(header)[-1].split("TASK [")[0]
    for host in ("web1", "web2", "gpu1"):
        assert f"changed: [{host}]" in after_app_db, after_app_db
    assert live_releases() == releases
    assert {host: live_slot(host) for host in slots} == slots, "a host switched slots for a password"
    assert {unit: unit_started(*unit) for unit in units} == started, "a process was restarted for a password"
    assert database_state()["head"], "the app login no longer works with the rotated password"
    with lb_client() as client:
        assert client.get("/api/models").status_code == 200
    FIGURES["password_rotation"] = {"seconds": round(run.seconds, 1), "loads": [x.figures() for x in loads]}
