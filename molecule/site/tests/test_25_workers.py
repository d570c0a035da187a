"""The training pool: gpu1 (group gpu) runs a worker and serves nothing; a worker's host stopped hard
(`docker kill`) mid-training loses nothing: another host's worker finishes the training from its last
checkpoint, each epoch once. The monitoring host pages it (NnpWorkerHeartbeatMissing naming gpu1, at the
stack's webhook) and sends the resolution once gpu1's worker is back."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from stack import (
    FIGURES,
    deploy,
    docker_exec,
    lb_client,
    live_releases,
    training_epochs,
    wait_for_alert,
    wait_for_training,
)

POOL = "gpu1"
WEB = ("web1", "web2")
# WORKER_STALLED_SECONDS (the app's default, which the stack keeps): a worker whose heartbeat is older is
# dead, and the others' sweeps put its jobs back in the queue.
STALLED_SECONDS = 30


def workers() -> list[dict[str, Any]]:
    with lb_client() as client:
        response = client.get("/api/workers")
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


def alive_hosts() -> dict[str, dict[str, Any]]:
    return {worker["host"]: worker for worker in workers() if worker["alive"]}


def session(session_id: int) -> dict[str, Any]:
    with lb_client() as client:
        return dict(client.get(f"/api/sessions/{session_id}").json())


def wait(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.5)
    return time.monotonic() - started


def test_the_gpu_group_trains_and_serves_nothing() -> None:
    release = live_releases()["web1"]
    alive = alive_hosts()
    assert set(alive) == {*WEB, POOL}, workers()
    assert {(w["release_id"], w["device"]) for w in alive.values()} == {(release, "cpu")}, alive
    # The worker runs the release `current` names; no app slot, no nginx, no port but SSH.
    assert docker_exec(POOL, "readlink", "/opt/nnp/current").strip() == f"/opt/nnp/releases/{release}"
    assert docker_exec(POOL, "systemctl", "is-active", "nnp-worker.service").strip() == "active"
    units = docker_exec(POOL, "systemctl", "list-units", "--all", "--no-legend", "--plain", "nnp-app*")
    assert units.strip() == "", units
    nginx = subprocess.run(["docker", "exec", POOL, "dpkg-query", "-W", "nginx"], capture_output=True, check=False)
    assert nginx.returncode != 0, "nginx is installed on a host that only trains"
    rules = docker_exec(POOL, "ufw", "show", "added")
    allowed = [line for line in rules.splitlines() if line.startswith("ufw ")]
    assert allowed == ["ufw allow 22/tcp comment 'ssh'"], rules


def test_a_training_finishes_on_another_worker_when_its_host_is_killed(sources: dict[str, Path]) -> None:
    """Only gpu1's worker runs while the training starts (the web hosts' workers are stopped), so the
    training is on gpu1; the web workers start again, and gpu1 is stopped hard: no graceful stop, no
    checkpoint, its heartbeat ends. The training must finish on a web host's worker, each epoch once.
    A deploy started while gpu1 is down is refused before any change, naming it."""
    for host in WEB:
        docker_exec(host, "systemctl", "stop", "nnp-worker.service")
    try:
        with lb_client(owner=True) as client:
            body = {"name": f"pool-{time.time_ns()}", "dataset": "xor", "dataset_params": {"n_samples": 1000}}
            model = client.post("/api/models", json=body)
            assert model.status_code == 201, model.text
            # 200 epochs of 200 batches, a checkpoint every second: about 20 s of one core.
            started = client.post(
                f"/api/models/{model.json()['id']}/sessions",
                json={"epochs": 200, "batch_size": 5, "device": "auto", "checkpoint_interval_seconds": 1},
            )
            assert started.status_code == 202, started.text
        session_id = started.json()["id"]
        wait(lambda: (session(session_id)["current_epoch"] or 0) >= 20, 120, "gpu1's worker trains 20 epochs")
        running = session(session_id)
        assert (running["status"], running["owner_host"]) == ("running", POOL), running
    finally:
        for host in WEB:
            docker_exec(host, "systemctl", "start", "nnp-worker.service")

    subprocess.run(["docker", "kill", POOL], check=True, capture_output=True)
    killed = time.monotonic()
    killed_at = time.time()
    # The epoch reached is read after the kill: gpu1 writes its checkpoint and the session's epoch in one
    # transaction, so a read taken before the kill could miss the last checkpoint (a read at epoch 29, then
    # a checkpoint at 30 before the kill, was seen under load). A second's wait lets a COMMIT already sent
    # by the killed worker finish on the server.
    time.sleep(1)
    killed_at_epoch = session(session_id)["current_epoch"]
    try:
        # A deploy now would migrate without gpu1: it is refused before any change, naming the host.
        releases = live_releases()
        refused = deploy(sources["next"], "-e", "deploy_reach_timeout_seconds=5")
        assert refused.rc != 0
        assert f"{POOL} failed or could not be reached" in refused.output, refused.output[-3000:]
        assert "Run the migrations" not in refused.output
        assert "Take the deploy lock" not in refused.output.split("Check that every host of the deploy")[1]
        assert live_releases() == releases
        wait(
            lambda: session(session_id)["owner_host"] in WEB and session(session_id)["status"] == "running",
            STALLED_SECONDS + 60,
            "the training runs again on a web host's worker",
        )
        moved = time.monotonic() - killed
        paged = wait_for_alert("NnpWorkerHeartbeatMissing", POOL, "firing", since=killed_at, timeout=60)
        finished = wait_for_training(session_id, timeout=300)
    finally:
        restarted_at = time.time()
        restart_pool_host()
    resolved = wait_for_alert("NnpWorkerHeartbeatMissing", POOL, "resolved", since=paged["received"], timeout=60)

    assert finished["status"] == "completed", finished
    assert finished["owner_host"] in WEB, finished
    assert finished["attempts"] >= 2, finished
    assert finished["resumed_from_epoch"] is not None, finished
    assert 0 < finished["resumed_from_epoch"] <= killed_at_epoch, (killed_at_epoch, finished)
    assert training_epochs(session_id) == list(range(1, 201))
    FIGURES["worker_host_killed"] = {
        "killed_at_epoch": killed_at_epoch,
        "resumed_from_epoch": finished["resumed_from_epoch"],
        "seconds_until_running_elsewhere": round(moved, 1),
        "stalled_seconds": STALLED_SECONDS,
        # From the kill, and from `docker start` (boot, worker start, a scrape), to the webhook's notification.
        "seconds_until_paged": round(paged["received"] - killed_at, 1),
        "seconds_from_restart_until_resolved": round(resolved["received"] - restarted_at, 1),
    }


def restart_pool_host() -> None:
    """Start gpu1 again (its systemd boots and starts the worker) and wait until its new worker is alive."""
    subprocess.run(["docker", "start", POOL], check=True, capture_output=True)
    subprocess.run(
        ["docker", "exec", POOL, "systemctl", "is-system-running", "--wait"], check=False, capture_output=True
    )
    wait(lambda: POOL in alive_hosts(), 120, "gpu1's worker is alive again after the restart")
