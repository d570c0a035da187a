"""The deploy history of the load phase's runs (test_30, test_40): every deploy, rollback and maintenance switch
left a record on web1 (the deploy lock's host, role deploy_history) that playbooks/history.yml prints; each
sent its start and its end to the stack's webhook and to the alarm topic in moto (a queue subscribed to it
before the first test, conftest.py); the failed ones name the host and the check; Prometheus on mon1 has the
runs from web1's node exporter. Runs refused before the deploy lock (a held lease, bad settings) never
started, and left nothing."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from stack import FIGURES, aws, docker_exec, notifications, playbook, prometheus

HISTORY = "/var/lib/nnp-deploy/history.jsonl"
FLEET = {"web1", "web2", "gpu1"}


def phase_runs(since: float) -> list[dict[str, Any]]:
    """The records of the runs started in this session, oldest first."""
    lines = docker_exec("web1", "cat", HISTORY).splitlines()
    return [r for r in map(json.loads, filter(str.strip, lines)) if (r["started_at_epoch"] or 0) >= since]


def test_every_run_left_a_record_that_the_history_playbook_prints(
    state: dict[str, Any], alarm_topic_queue: dict[str, Any]
) -> None:
    runs = phase_runs(alarm_topic_queue["since"])
    assert [r for r in runs if r["result"] not in ("succeeded", "failed")] == [], runs
    for run in runs:
        assert run["user"]
        assert run["controller"]
        assert run["commit"]
        assert set(run["hosts"]) <= FLEET, run
        assert run["seconds"] >= 0, run
        assert run["finished_at_epoch"] >= run["started_at_epoch"], run
    deploys = [r for r in runs if r["kind"] == "deploy"]
    # test_30: a new release rolled out, then the live one redeployed (a run too, changing nothing).
    assert [r["result"] for r in deploys if r["release"] == state["next"]][:2] == ["succeeded", "succeeded"], deploys
    # test_30: the release that cannot become ready (stopped at the canary, web1) and the failing migration.
    failed = [r for r in deploys if r["result"] == "failed"]
    assert len(failed) == 2, failed
    assert failed[0]["failed_host"] == "web1", failed[0]
    assert "did not become ready on web1" in failed[0]["failed_check"], failed[0]
    assert failed[1]["failed_host"] in FLEET, failed[1]
    assert failed[1]["failed_check"], failed[1]
    assert [r["result"] for r in runs if r["kind"] == "rollback"][:1] == ["succeeded"], runs
    # test_40: maintenance switched on and off (the lock tests' runs switch it off too); the rollout limited to web1.
    assert {(r["release"], r["result"]) for r in runs if r["kind"] == "maintenance"} == {
        ("on", "succeeded"),
        ("off", "succeeded"),
    }
    assert [r["result"] for r in deploys if r["hosts"] == ["web1"]] == ["succeeded"], deploys

    shown = playbook("playbooks/history.yml", "-e", "deploy_history_count=200")
    assert shown.rc == 0, shown.output[-3000:]
    for run in runs:
        assert f"{run['started_at']}  {run['kind']}  {run['release'] or '-'}  {run['result']} in " in shown.output, run
    assert f"| failed at web1: {failed[0]['failed_check'][:40]}" in shown.output
    FIGURES["deploy_history"] = dict(Counter(f"{r['kind']} {r['result']}" for r in runs))


def test_every_run_sent_its_start_and_its_end_to_the_webhook_and_the_alarm_topic(
    alarm_topic_queue: dict[str, Any],
) -> None:
    runs = phase_runs(alarm_topic_queue["since"])
    sent = [body for _, body in notifications() if body.get("source") == "nnp-deploy"]
    for run in runs:
        events = [body["event"] for body in sent if body["record"].get("id") == run["id"]]
        assert events == ["started", run["result"]], (run, events)
    for body in sent:
        if body["event"] == "failed":
            record = body["record"]
            assert (
                f"FAILED after {record['seconds']} s at {record['failed_host']}: {record['failed_check']}"
                in (body["text"])
            ), body
    ours = [body for body in sent if body["record"].get("id") in {run["id"] for run in runs}]

    sqs = aws("sqs")
    published: list[dict[str, Any]] = []
    while answer := sqs.receive_message(QueueUrl=alarm_topic_queue["queue"], MaxNumberOfMessages=10).get("Messages"):
        published += [json.loads(m["Body"]) for m in answer]
        sqs.delete_message_batch(
            QueueUrl=alarm_topic_queue["queue"],
            Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in answer],
        )
    # The topic also carries nothing else here (Alertmanager pages the webhook in the local stack).
    assert sorted((m["Subject"], m["Message"]) for m in published) == sorted((b["subject"], b["text"]) for b in ours)
    assert all(m["TopicArn"].endswith(":nnp-local-alarms") for m in published)


def test_prometheus_has_the_runs_from_the_lock_hosts_node_exporter() -> None:
    running = prometheus("query", query='nnp_deploy_running{instance="web1"}')["result"]
    assert {row["metric"]["kind"]: row["value"][1] for row in running} == {
        "deploy": "0",
        "rollback": "0",
        "maintenance": "0",
    }, running
    failed = prometheus("query", query='nnp_deploy_runs{instance="web1", kind="deploy", result="failed"}')["result"]
    assert len(failed) == 1, failed
    assert float(failed[0]["value"][1]) >= 2, failed
