"""The deploy's pre-migration snapshot (the app_db role's `snapshot` entry point) against moto's RDS: a name
unique to each run (release + UTC time), so a redeploy of a release takes a new restore point; the older
pre-migration snapshots beyond app_db_snapshot_keep deleted, any other snapshot left alone; check mode and
bad input change nothing. A moto server of its own, so these calls stay out of the provisioning runs'
recording (their IAM check is about provisioning; the snapshot calls belong to the deploy)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from provision_harness import REGION, MotoServer, Run, policy_actions

INSTANCE = "nnp-snaptest"
PLAYBOOK = "tests/provision/playbooks/db_snapshot.yml"
WRITES = {"rds:CreateDBSnapshot", "rds:DeleteDBSnapshot"}


@pytest.fixture(scope="module")
def rds_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto-snapshots"))
    server.start()
    try:
        server.client("rds").create_db_instance(
            DBInstanceIdentifier=INSTANCE,
            DBInstanceClass="db.t4g.micro",
            Engine="postgres",
            MasterUsername="nnp_admin",
            MasterUserPassword="snapshot-tests-password",
            AllocatedStorage=20,
        )
        yield server
    finally:
        server.stop()


def snapshot(server: MotoServer, label: str, *args: str, **extra: Any) -> Run:
    variables = {
        "aws_region": REGION,
        "aws_endpoint_url": server.endpoint,
        "app_db_snapshot_instance_id": INSTANCE,
        "app_db_snapshot_label": label,
        # A string, as the deploy play hands it on ("{{ deploy_snapshot_keep | default(5) }}").
        "app_db_snapshot_keep": "2",
        **extra,
    }
    return server.ansible("ansible-playbook", "-i", "localhost,", PLAYBOOK, "-e", json.dumps(variables), *args)


def names(server: MotoServer) -> list[str]:
    found = server.client("rds").describe_db_snapshots(DBInstanceIdentifier=INSTANCE, SnapshotType="manual")[
        "DBSnapshots"
    ]
    return sorted(snap["DBSnapshotIdentifier"] for snap in found)


def writes(run: Run) -> list[str]:
    return [call.action for call in run.calls if call.action in WRITES]


def test_each_run_takes_a_new_snapshot_and_only_the_newest_are_kept(rds_server: MotoServer) -> None:
    # A manual snapshot of the same instance that is not a pre-migration one is never pruned.
    rds_server.client("rds").create_db_snapshot(
        DBSnapshotIdentifier=f"{INSTANCE}-manual", DBInstanceIdentifier=INSTANCE
    )
    runs = [snapshot(rds_server, label) for label in ("rel-1", "rel-2", "rel-2", "v3.0_rc1")]

    for run in runs:
        assert run.rc == 0, run.output[-3000:]
    pattern = rf"{INSTANCE}-pre-\d{{8}}-\d{{6}}-"
    kept = names(rds_server)
    assert kept[0] == f"{INSTANCE}-manual", kept
    # The same release twice gave two snapshots; the last run's label is made a valid identifier.
    assert re.fullmatch(pattern + "rel-2", kept[1]), kept
    assert re.fullmatch(pattern + "v3-0-rc1", kept[2]), kept
    assert len(kept) == 3, kept
    # The third run found three pre-migration snapshots and deleted the oldest; the fourth, the next one.
    assert [writes(run) for run in runs] == [
        ["rds:CreateDBSnapshot"],
        ["rds:CreateDBSnapshot"],
        ["rds:CreateDBSnapshot", "rds:DeleteDBSnapshot"],
        ["rds:CreateDBSnapshot", "rds:DeleteDBSnapshot"],
    ]


def test_check_mode_takes_and_deletes_nothing(rds_server: MotoServer) -> None:
    before = names(rds_server)
    run = snapshot(rds_server, "rel-check", "--check")

    assert run.rc == 0, run.output[-3000:]
    assert writes(run) == []
    assert names(rds_server) == before


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"app_db_snapshot_keep": 0}, "app_db_snapshot_keep 1 or more"),
        ({"app_db_snapshot_keep": "many"}, "app_db_snapshot_keep"),
        ({"app_db_snapshot_label": "../../x"}, "app_db_snapshot_label must be a release id"),
        ({"app_db_snapshot_instance_id": "1-not-an-id"}, "app_db_snapshot_instance_id an RDS instance identifier"),
        ({"app_db_snapshot_wait_seconds": "soon"}, "app_db_snapshot_wait_seconds"),
    ],
    ids=["keep 0", "keep not a number", "label with slashes", "bad instance id", "wait not a number"],
)
def test_bad_input_is_refused_before_any_aws_call(rds_server: MotoServer, bad: dict[str, Any], message: str) -> None:
    label = bad.pop("app_db_snapshot_label", "rel-bad")
    before = names(rds_server)
    run = snapshot(rds_server, label, **bad)

    assert run.rc != 0
    assert message in run.output, run.output[-3000:]
    assert run.calls == [], run.calls
    assert names(rds_server) == before


def test_every_call_is_in_the_deploy_policies(rds_server: MotoServer) -> None:
    """The deploy role of each environment (docs/iam/<env>-deploy.json) may make every call the
    snapshot entry point made above."""
    called = {call.action for run in rds_server.runs for call in run.calls}
    assert {"rds:CreateDBSnapshot", "rds:DeleteDBSnapshot", "rds:DescribeDBSnapshots"} <= called
    for env in ("staging", "production"):
        assert called - policy_actions(env, "deploy") == set(), f"not in docs/iam/{env}-deploy.json"


def test_the_deploy_play_calls_the_entry_point_with_its_settings() -> None:
    """deploy.yml hands the instance, the release and deploy_snapshot_keep to this entry point."""
    deploy = (Path(__file__).resolve().parents[2] / "playbooks" / "deploy.yml").read_text()
    assert "tasks_from: snapshot" in deploy
    assert 'app_db_snapshot_label: "{{ app_release }}"' in deploy
    assert 'app_db_snapshot_keep: "{{ deploy_snapshot_keep | default(5) }}"' in deploy
