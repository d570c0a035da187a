"""library/acm_certificate_dns.py against moto: request, DNS validation in Route 53, idempotence, check mode,
bad input and deletion.

Each test runs tests/provision/acm-module.yml (one module call per item) through the moto harness, which
records the API calls of each run. moto issues a DNS-validated certificate ACM_VALIDATION_WAIT seconds
after the request whether or not the records exist, so the tests check the records in the zone themselves.
The tests build on each other in file order (present, rerun, check mode, ..., absent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from provision_harness import ACM_VALIDATION_WAIT, REGION, MotoServer, Run

PLAYBOOK = "tests/provision/acm-module.yml"
ZONE = "acm-tests.example.org"
NAME = f"app.{ZONE}"
SANS = [f"www.{ZONE}", f"*.app.{ZONE}"]
TAGS = {"Project": "nnp", "Env": "acmtest"}
WRITE_ACTIONS = {
    "acm:RequestCertificate",
    "acm:DeleteCertificate",
    "acm:AddTagsToCertificate",
    "acm:RemoveTagsFromCertificate",
    "route53:ChangeResourceRecordSets",
}
# Every action the module may call: what an IAM policy must allow for it (asserted below).
MODULE_ACTIONS = WRITE_ACTIONS - {"acm:RemoveTagsFromCertificate", "acm:AddTagsToCertificate"} | {
    "acm:ListCertificates",
    "acm:DescribeCertificate",
    "acm:ListTagsForCertificate",
    "route53:GetHostedZone",
    "route53:ListHostedZonesByName",
    "route53:ListResourceRecordSets",
    "route53:GetChange",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancers",
}


@dataclass
class Calls:
    run: Run
    results: list[dict[str, Any]]

    @property
    def actions(self) -> set[str]:
        return {call.action for call in self.run.calls}

    @property
    def writes(self) -> set[str]:
        return self.actions & WRITE_ACTIONS


@dataclass
class Zone:
    id: str
    aws: MotoServer
    workdir: Path

    def call(self, *calls: dict[str, Any], check: bool = False) -> Calls:
        """One playbook run with one module call per argument dict (the zone's name unless stated)."""
        results_file = self.workdir / "results.json"
        results_file.unlink(missing_ok=True)
        items = [{"hosted_zone_name": ZONE, "tags": TAGS} | call for call in calls]
        extra = {
            "acm_calls": items,
            "acm_results_file": str(results_file),
            "aws_region": REGION,
            "aws_endpoint_url": self.aws.endpoint,
        }
        args = ["-i", "localhost,", PLAYBOOK, "-e", json.dumps(extra)]
        run = self.aws.ansible("ansible-playbook", *args, *(["--check"] if check else []))
        assert run.rc == 0, run.output[-4000:]
        return Calls(run, json.loads(results_file.read_text()))

    def records(self) -> dict[str, list[str]]:
        """The zone's CNAME records: name -> values."""
        answer = self.aws.client("route53").list_resource_record_sets(HostedZoneId=self.id)
        return {
            r["Name"]: [v["Value"] for v in r["ResourceRecords"]]
            for r in answer["ResourceRecordSets"]
            if r["Type"] == "CNAME"
        }

    def certificates(self, domain_name: str = NAME) -> list[dict[str, Any]]:
        acm = self.aws.client("acm")
        summaries = acm.list_certificates()["CertificateSummaryList"]
        return [
            acm.describe_certificate(CertificateArn=s["CertificateArn"])["Certificate"]
            for s in summaries
            if s["DomainName"] == domain_name
        ]


@pytest.fixture(scope="module")
def zone(aws: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    route53 = aws.client("route53")
    created = route53.create_hosted_zone(Name=ZONE, CallerReference="acm-module-tests")["HostedZone"]
    zone_id = created["Id"].rsplit("/", 1)[-1]
    yield Zone(zone_id, aws, tmp_path_factory.mktemp("acm"))
    acm = aws.client("acm")
    for summary in acm.list_certificates()["CertificateSummaryList"]:
        if summary["DomainName"].endswith(ZONE):
            acm.delete_certificate(CertificateArn=summary["CertificateArn"])
    leftovers = [
        {"Action": "DELETE", "ResourceRecordSet": r}
        for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        if r["Type"] not in ("SOA", "NS")
    ]
    if leftovers:
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": leftovers})
    route53.delete_hosted_zone(Id=zone_id)


@pytest.fixture(scope="module")
def issued(zone: Zone) -> Calls:
    return zone.call({"domain_name": NAME, "subject_alternative_names": SANS})


def test_present_requests_validates_and_waits_until_issued(zone: Zone, issued: Calls) -> None:
    (result,) = issued.results
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["status"] == "ISSUED"
    assert result["hosted_zone_id"] == zone.id
    # moto answers PENDING_VALIDATION first: the module waited for the issue.
    assert issued.run.seconds >= ACM_VALIDATION_WAIT
    (certificate,) = zone.certificates()
    assert certificate["CertificateArn"] == result["certificate_arn"]
    assert certificate["Status"] == "ISSUED"
    assert set(certificate["SubjectAlternativeNames"]) == {NAME, *SANS}
    tags = zone.aws.client("acm").list_tags_for_certificate(CertificateArn=result["certificate_arn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == TAGS
    # The wildcard shares the record of its base name: one record per distinct name, each in the zone.
    wanted = {
        o["ResourceRecord"]["Name"]: [o["ResourceRecord"]["Value"]] for o in certificate["DomainValidationOptions"]
    }
    assert len(wanted) == 2
    assert zone.records() == wanted
    assert {(r["name"], r["value"]) for r in result["validation_records"]} == {(k, v[0]) for k, v in wanted.items()}
    assert "acm:RequestCertificate" in issued.actions
    assert "route53:ChangeResourceRecordSets" in issued.actions


def test_every_call_went_to_the_endpoint_and_is_a_known_action(zone: Zone, issued: Calls) -> None:
    assert issued.run.calls
    assert {c.host for c in issued.run.calls} == {zone.aws.playbook_host}
    assert issued.actions <= MODULE_ACTIONS


def test_rerun_changes_nothing_and_writes_nothing(zone: Zone, issued: Calls) -> None:
    again = zone.call({"domain_name": NAME, "subject_alternative_names": list(reversed(SANS))})
    (result,) = again.results
    assert result["changed"] is False, result
    assert result["certificate_arn"] == issued.results[0]["certificate_arn"]
    assert again.run.recap["changed"] == 0
    assert again.writes == set()
    assert len(zone.certificates()) == 1


def test_check_mode_reports_changes_and_calls_no_write_api(zone: Zone, issued: Calls) -> None:
    records_before = zone.records()
    checked = zone.call(
        {"domain_name": f"new.{ZONE}"},  # would be requested
        {"domain_name": NAME, "subject_alternative_names": SANS, "tags": {**TAGS, "Env": "other"}},  # other tags
        {"domain_name": NAME, "subject_alternative_names": SANS},  # exists: no change
        {"domain_name": NAME, "subject_alternative_names": SANS, "state": "absent"},  # would be deleted
        check=True,
    )
    new, other_tags, existing, absent = checked.results
    assert (new["changed"], new["certificate_arn"]) == (True, "")
    assert other_tags["changed"] is True
    assert existing["changed"] is False
    assert absent["changed"] is True
    assert absent["deleted_certificates"] == [issued.results[0]["certificate_arn"]]
    assert checked.writes == set()
    assert zone.certificates(f"new.{ZONE}") == []
    assert len(zone.certificates()) == 1
    assert zone.records() == records_before


def test_bad_input_is_refused_naming_the_field_before_any_write(zone: Zone, issued: Calls) -> None:
    vpc_id = zone.aws.client("ec2").create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    private = zone.aws.client("route53").create_hosted_zone(
        Name="private.example.org",
        CallerReference="acm-module-tests-private",
        VPC={"VPCRegion": REGION, "VPCId": vpc_id},
        HostedZoneConfig={"PrivateZone": True},
    )["HostedZone"]
    cases = {
        "no zone": ({"domain_name": f"x.{ZONE}", "hosted_zone_name": None}, ["hosted_zone_id or hosted_zone_name"]),
        "empty zone name": ({"domain_name": f"x.{ZONE}", "hosted_zone_name": ""}, ["got neither"]),
        "two zones": ({"domain_name": NAME, "hosted_zone_id": "Z1"}, ["hosted_zone_id or hosted_zone_name", "both"]),
        "SAN outside the zone": (
            {"domain_name": NAME, "subject_alternative_names": ["app.elsewhere.net"]},
            ["subject_alternative_names", "app.elsewhere.net", ZONE],
        ),
        "name outside the zone": ({"domain_name": "example.org"}, ["domain_name: example.org", ZONE]),
        "unknown zone id": (
            {"domain_name": NAME, "hosted_zone_name": None, "hosted_zone_id": "ZNOSUCHZONE"},
            ["hosted_zone_id", "ZNOSUCHZONE"],
        ),
        "unknown zone name": ({"domain_name": NAME, "hosted_zone_name": "nope.example.org"}, ["hosted_zone_name"]),
        "private zone": (
            {"domain_name": "a.private.example.org", "hosted_zone_name": None, "hosted_zone_id": private["Id"]},
            ["hosted_zone_id", "private hosted zone"],
        ),
    }
    # None reaches the module as an option not set.
    refused = zone.call(*[args for args, _ in cases.values()])
    for (case, (_, fragments)), result in zip(cases.items(), refused.results, strict=True):
        assert result.get("failed") is True, f"{case}: {result}"
        for fragment in fragments:
            assert fragment in result["msg"], f"{case}: {result['msg']}"
    assert refused.writes == set()
    assert "acm:ListCertificates" not in refused.actions  # refused before looking for certificates
    assert len(zone.certificates()) == 1


def test_absent_refuses_a_certificate_in_use_naming_the_load_balancer(zone: Zone) -> None:
    name = f"inuse.{ZONE}"
    arn = zone.aws.client("acm").request_certificate(
        DomainName=name, ValidationMethod="DNS", Tags=[{"Key": k, "Value": v} for k, v in TAGS.items()]
    )["CertificateArn"]
    ec2, elb = zone.aws.client("ec2"), zone.aws.client("elbv2")
    vpc_id = ec2.create_vpc(CidrBlock="10.98.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.98.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]
        for i, az in enumerate("ab")
    ]
    lb = elb.create_load_balancer(Name="acm-tests-inuse", Subnets=[s["SubnetId"] for s in subnets])["LoadBalancers"][0]
    group = elb.create_target_group(Name="acm-tests-inuse", Protocol="HTTP", Port=80, VpcId=vpc_id)["TargetGroups"][0]
    elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTPS",
        Port=443,
        SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06",
        Certificates=[{"CertificateArn": arn}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}],
    )
    refused = zone.call({"domain_name": name, "state": "absent"})
    (result,) = refused.results
    assert result.get("failed") is True, result
    assert "load balancer acm-tests-inuse" in result["msg"]
    assert refused.writes == set()
    assert [c["CertificateArn"] for c in zone.certificates(name)] == [arn]

    # moto never removes the listener from InUseBy (AWS does, minutes later): the module asks ELBv2.
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    elb.delete_target_group(TargetGroupArn=group["TargetGroupArn"])
    (stale,) = zone.aws.client("acm").describe_certificate(CertificateArn=arn)["Certificate"]["InUseBy"]
    assert ":listener/app/acm-tests-inuse/" in stale
    (result,) = zone.call({"domain_name": name, "state": "absent"}).results
    assert result["deleted_certificates"] == [arn], result
    assert zone.certificates(name) == []


def test_absent_keeps_records_another_certificate_still_lists(zone: Zone, issued: Calls) -> None:
    # ACM gives every certificate of a name in an account the same validation record.
    other_result, result = zone.call(
        {"domain_name": f"www.{ZONE}", "wait": False}, {"domain_name": f"www.{ZONE}", "state": "absent"}
    ).results
    assert other_result["status"] == "PENDING_VALIDATION"
    assert result["changed"] is True
    assert [r["name"] for r in result["kept_records"]] == [r["name"] for r in other_result["validation_records"]]
    assert result["validation_records"] == []
    assert zone.certificates(f"www.{ZONE}") == []
    assert set(zone.records()) == {r["name"] for r in issued.results[0]["validation_records"]}


def test_absent_deletes_the_certificate_and_its_records_then_changes_nothing(zone: Zone, issued: Calls) -> None:
    absent = {"domain_name": NAME, "subject_alternative_names": SANS, "state": "absent"}
    gone = zone.call(absent, absent)
    first, second = gone.results
    assert first["changed"] is True
    assert first["deleted_certificates"] == [issued.results[0]["certificate_arn"]]
    assert len(first["validation_records"]) == 2
    assert (second["changed"], second["deleted_certificates"], second["validation_records"]) == (False, [], [])
    assert zone.certificates() == []
    assert zone.records() == {}
    assert gone.writes == {"acm:DeleteCertificate", "route53:ChangeResourceRecordSets"}


def test_present_again_within_the_hour_after_absent_gets_a_new_certificate(zone: Zone, issued: Calls) -> None:
    # The same names and tags give the same IdempotencyToken; its certificate is deleted. moto answers 500
    # (AWS may answer with the deleted ARN): the module asks again with a fresh token.
    present = {"domain_name": NAME, "subject_alternative_names": SANS, "wait": False}
    again, gone = zone.call(present, present | {"state": "absent"}).results
    assert not again.get("failed"), again
    assert again["changed"] is True
    assert again["certificate_arn"] not in ("", issued.results[0]["certificate_arn"])
    assert gone["deleted_certificates"] == [again["certificate_arn"]]
    assert zone.certificates() == []
    assert zone.records() == {}
