#!/usr/bin/python
"""Ansible module: an ACM certificate validated by DNS records in a Route 53 hosted zone."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: acm_certificate_dns
short_description: Request an ACM certificate and validate it by DNS in a Route 53 hosted zone
description:
  - Requests a public certificate from AWS Certificate Manager (ACM) for O(domain_name) and
    O(subject_alternative_names), writes the CNAME validation records that ACM asks for into a
    Route 53 hosted zone, and waits until the certificate is issued.
  - Idempotent. A certificate of type C(AMAZON_ISSUED) for exactly the same set of names, carrying
    every tag of O(tags) with the same value, and in status C(ISSUED) or C(PENDING_VALIDATION) is
    reused instead of requesting another (an issued one is preferred). The request also sends an
    C(IdempotencyToken) derived from the names and tags, so a retried request within the hour returns
    the same certificate.
  - With O(state=absent) every matching certificate (any status) is deleted together with its
    validation records. A certificate that is in use (by a load balancer listener, for example) is
    not deleted; the module fails and names the resources that use it, before deleting anything.
  - "Differences from real AWS when testing against moto 5.2: moto marks a DNS-validated certificate
    as issued C(MOTO_ACM_VALIDATION_WAIT) seconds (default 60) after the request, whether or not the
    records exist; it publishes the validation C(ResourceRecord) immediately; it adds a listener's ARN
    to C(InUseBy) but never removes it, and deletes a certificate in use. Real ACM publishes the records
    after a few seconds, needs them resolvable from the public internet (a public hosted zone delegated
    from the parent domain), usually issues within a few minutes (up to 72 hours before
    C(VALIDATION_TIMED_OUT)), refuses to delete a certificate in use (C(ResourceInUseException)), and
    clears a deleted load balancer from C(InUseBy) only minutes later."
  - A user in C(InUseBy) that is an ELBv2 listener or load balancer which no longer exists does not
    count (the module asks ELBv2); while ACM still refuses the deletion, the module retries until
    O(wait_timeout).
  - Not part of a collection, so the play's C(module_defaults) for C(group/amazon.aws.aws) do not reach
    it. Pass O(region) and O(endpoint_url) on the task, or add a C(module_defaults) entry named
    C(acm_certificate_dns).
version_added: "1.0.0"
author:
  - nn-playground infrastructure
options:
  state:
    description: Whether the certificate and its validation records should exist.
    type: str
    choices: [present, absent]
    default: present
  domain_name:
    description:
      - The certificate's main name (C(CN)), for example C(app.example.org) or C(*.example.org).
    type: str
    required: true
  subject_alternative_names:
    description:
      - Further names on the certificate. The main name need not be repeated.
      - Every name must lie in the hosted zone.
    type: list
    elements: str
    default: []
  hosted_zone_id:
    description:
      - The public Route 53 hosted zone that holds the names, as C(Z0123...) or C(/hostedzone/Z0123...).
      - Exactly one of O(hosted_zone_id) and O(hosted_zone_name) is required (an empty string counts as
        not given).
    type: str
  hosted_zone_name:
    description:
      - The public hosted zone's name, for example C(example.org). It must match exactly one public zone.
    type: str
  tags:
    description:
      - Tags of a new certificate, for example C(Project) and C(Env). They are part of the identity,
        so a certificate lacking one of them is not reused.
    type: dict
    default: {}
  validation_record_ttl:
    description: TTL in seconds of the CNAME validation records.
    type: int
    default: 300
  wait:
    description:
      - With O(state=present), wait until the certificate is C(ISSUED). Without it the module returns
        once the validation records are written (status C(PENDING_VALIDATION)).
      - The module always waits (at most O(wait_timeout)) for ACM to publish the validation records.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the validation records and for the issue.
    type: int
    default: 900
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - Supports check mode fully; in check mode no write API is called (C(RequestCertificate),
    C(ChangeResourceRecordSets), C(DeleteCertificate)).
  - ACM reuses one validation record per name and account, so a record that another remaining
    certificate also lists is kept by O(state=absent) (returned in RV(kept_records)).
  - The certificate is requested in O(region); an ALB needs it in its own region (CloudFront in us-east-1).
"""

EXAMPLES = r"""
- name: Certificate for the front door is issued
  acm_certificate_dns:
    domain_name: app.staging.example.org
    subject_alternative_names: [www.app.staging.example.org]
    hosted_zone_name: staging.example.org
    tags: {Project: nnp, Env: staging}
    region: "{{ aws_region }}"
    endpoint_url: "{{ aws_endpoint_url | default(omit) }}"
  register: front_door_certificate

- name: Certificate and its validation records are gone
  acm_certificate_dns:
    state: absent
    domain_name: app.staging.example.org
    subject_alternative_names: [www.app.staging.example.org]
    hosted_zone_id: Z0123456789ABCDEFGHIJ
    tags: {Project: nnp, Env: staging}
    region: "{{ aws_region }}"
    endpoint_url: "{{ aws_endpoint_url | default(omit) }}"
"""

RETURN = r"""
certificate_arn:
  description:
    - ARN of the certificate. With O(state=absent), the first deleted certificate.
    - Empty in check mode when a certificate would be requested.
  returned: always
  type: str
  sample: arn:aws:acm:eu-central-1:123456789012:certificate/0b2d5a4c-1234-4f56-9abc-0123456789ab
status:
  description: ACM status of the certificate (C(ISSUED), C(PENDING_VALIDATION)), or C(ABSENT).
  returned: always
  type: str
  sample: ISSUED
validation_records:
  description: The CNAME records that validate the names (one per distinct record).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Record name, with the trailing dot.
      type: str
    type:
      description: Always C(CNAME).
      type: str
    value:
      description: Record value, with the trailing dot.
      type: str
  sample: [{name: _x1.app.example.org., type: CNAME, value: _x2.acm-validations.aws.}]
deleted_certificates:
  description: ARNs deleted (or, in check mode, that would be deleted) by O(state=absent).
  returned: always
  type: list
  elements: str
kept_records:
  description: Validation records that O(state=absent) left because another certificate lists them.
  returned: always
  type: list
  elements: dict
hosted_zone_id:
  description: Id of the hosted zone, without the C(/hostedzone/) prefix.
  returned: always
  type: str
"""

import contextlib
import hashlib
import time
from typing import Any

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    from botocore.exceptions import BotoCoreError, ClientError

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

LIVE_STATUSES = ["ISSUED", "PENDING_VALIDATION"]
ALL_STATUSES = [*LIVE_STATUSES, "INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED"]
FAILED_STATUSES = {"FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED", "INACTIVE"}

Record = dict[str, str]


def normalize(name: str) -> str:
    return name.strip().lower().rstrip(".")


def in_zone(name: str, zone: str) -> bool:
    base = name[2:] if name.startswith("*.") else name
    return base == zone or base.endswith("." + zone)


def idempotency_token(names: set[str], tags: dict[str, str]) -> str:
    """32 word characters (the API's limit), the same for the same names and tags."""
    text = "|".join(sorted(names)) + "#" + "|".join(f"{k}={v}" for k, v in sorted(tags.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Certificates:
    """The ACM and Route 53 calls, behind check mode."""

    def __init__(self, module: AnsibleAWSModule) -> None:
        self.module = module
        retry = AWSRetry.jittered_backoff(retries=8)
        self.acm = module.client("acm", retry_decorator=retry)
        self.route53 = module.client("route53", retry_decorator=retry)
        self.elbv2 = module.client("elbv2", retry_decorator=retry)
        params = module.params
        self.domain_name = normalize(params["domain_name"])
        self.names = {self.domain_name} | {normalize(n) for n in params["subject_alternative_names"]}
        self.tags = {str(k): str(v) for k, v in params["tags"].items()}
        self.deadline = time.monotonic() + params["wait_timeout"]
        self.zone_id = ""
        self.zone_name = ""

    # --- inputs -------------------------------------------------------------------------------------
    def resolve_zone(self) -> None:
        """Find the hosted zone and check that every name lies in it (read calls only)."""
        params = self.module.params
        try:
            if (params["hosted_zone_id"] or "").strip():
                zone_id = params["hosted_zone_id"].strip().rsplit("/", 1)[-1]
                try:
                    zone = self.route53.get_hosted_zone(Id=zone_id, aws_retry=True)["HostedZone"]
                except ClientError as error:
                    if error.response["Error"]["Code"] != "NoSuchHostedZone":
                        raise
                    self.module.fail_json(msg=f"hosted_zone_id: no hosted zone {params['hosted_zone_id']}")
                field = "hosted_zone_id"
            else:
                wanted = normalize(params["hosted_zone_name"])
                answer = self.route53.list_hosted_zones_by_name(DNSName=wanted + ".", aws_retry=True)
                zones = [
                    z
                    for z in answer["HostedZones"]
                    if normalize(z["Name"]) == wanted and not z.get("Config", {}).get("PrivateZone")
                ]
                if len(zones) != 1:
                    self.module.fail_json(
                        msg=f"hosted_zone_name: {len(zones)} public hosted zones are named {wanted}, need exactly one"
                        " (pass hosted_zone_id instead)"
                    )
                zone = zones[0]
                field = "hosted_zone_name"
        except (BotoCoreError, ClientError) as error:
            self.module.fail_json_aws(error, msg="Could not read the hosted zone")
        if zone.get("Config", {}).get("PrivateZone"):
            self.module.fail_json(
                msg=f"{field}: {zone['Name']} is a private hosted zone; ACM validates through public DNS"
            )
        self.zone_id = zone["Id"].rsplit("/", 1)[-1]
        self.zone_name = normalize(zone["Name"])
        if not in_zone(self.domain_name, self.zone_name):
            self.module.fail_json(msg=f"domain_name: {self.domain_name} is not in the hosted zone {self.zone_name}")
        outside = sorted(n for n in self.names - {self.domain_name} if not in_zone(n, self.zone_name))
        if outside:
            self.module.fail_json(
                msg=f"subject_alternative_names: {', '.join(outside)} not in the hosted zone {self.zone_name}"
            )

    # --- ACM ----------------------------------------------------------------------------------------
    def describe(self, arn: str) -> dict[str, Any]:
        return self.acm.describe_certificate(CertificateArn=arn, aws_retry=True)["Certificate"]

    def all_certificates(self, statuses: list[str]) -> list[dict[str, Any]]:
        """Every AMAZON_ISSUED certificate of the region in these statuses, described."""
        paginator = self.acm.get_paginator("list_certificates")
        found = []
        for page in paginator.paginate(CertificateStatuses=statuses):
            for summary in page["CertificateSummaryList"]:
                if summary.get("Type", "AMAZON_ISSUED") != "AMAZON_ISSUED":
                    continue
                found.append(self.describe(summary["CertificateArn"]))
        return found

    def matches(self, certificate: dict[str, Any]) -> bool:
        names = {normalize(n) for n in certificate.get("SubjectAlternativeNames", [])}
        names.add(normalize(certificate["DomainName"]))
        if names != self.names or normalize(certificate["DomainName"]) != self.domain_name:
            return False
        if not self.tags:
            return True
        answer = self.acm.list_tags_for_certificate(CertificateArn=certificate["CertificateArn"], aws_retry=True)
        tags = {tag["Key"]: tag.get("Value", "") for tag in answer.get("Tags", [])}
        return all(tags.get(key) == value for key, value in self.tags.items())

    def live_users(self, in_use_by: list[str]) -> list[str]:
        """The users of InUseBy that still exist. ACM clears a deleted load balancer from InUseBy minutes
        later (moto never does), so a listener or load balancer that ELBv2 no longer knows does not count."""
        live = []
        for arn in in_use_by:
            try:
                if ":elasticloadbalancing:" in arn and ":listener/" in arn:
                    self.elbv2.describe_listeners(ListenerArns=[arn], aws_retry=True)
                elif ":elasticloadbalancing:" in arn and ":loadbalancer/app/" in arn:
                    self.elbv2.describe_load_balancers(LoadBalancerArns=[arn], aws_retry=True)
            except ClientError as error:
                if error.response["Error"]["Code"] in ("ListenerNotFound", "LoadBalancerNotFound"):
                    continue
                raise
            live.append(arn)
        return live

    def delete(self, arn: str) -> None:
        """Delete a certificate, waiting (up to wait_timeout) while ACM still counts a deleted user."""
        delay = 2.0
        while True:
            try:
                self.acm.delete_certificate(CertificateArn=arn, aws_retry=True)
                return
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code == "ResourceNotFoundException":
                    return
                if code != "ResourceInUseException" or time.monotonic() + delay > self.deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 30)

    def request(self) -> str:
        arguments: dict[str, Any] = {
            "DomainName": self.domain_name,
            "ValidationMethod": "DNS",
            "IdempotencyToken": idempotency_token(self.names, self.tags),
        }
        if len(self.names) > 1:
            arguments["SubjectAlternativeNames"] = sorted(self.names)
        if self.tags:
            arguments["Tags"] = [{"Key": k, "Value": v} for k, v in sorted(self.tags.items())]
        try:
            arn = self.acm.request_certificate(**arguments)["CertificateArn"]
            self.describe(arn)
            return arn
        except ClientError as error:
            # A token reused within the hour after its certificate was deleted (teardown, then provision):
            # AWS may answer with the deleted ARN, moto 5.2 answers 500. Ask once more with a fresh token.
            code = error.response["Error"]["Code"]
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code != "ResourceNotFoundException" and status < 500:
                raise
        arguments["IdempotencyToken"] = idempotency_token(self.names, self.tags | {"": str(time.time())})
        return self.acm.request_certificate(**arguments, aws_retry=True)["CertificateArn"]

    def wait_for_records(self, arn: str) -> dict[str, Any]:
        """ACM publishes the ResourceRecord of each name a few seconds after the request."""
        delay = 1.0
        while True:
            certificate = self.describe(arn)
            options = certificate.get("DomainValidationOptions", [])
            if options and all("ResourceRecord" in option for option in options):
                return certificate
            if time.monotonic() + delay > self.deadline:
                self.module.fail_json(
                    msg=f"ACM published no validation records for {arn} within wait_timeout",
                    certificate_arn=arn,
                )
            time.sleep(delay)
            delay = min(delay * 2, 10)

    def wait_until_issued(self, arn: str) -> dict[str, Any]:
        delay = 1.0
        while True:
            certificate = self.describe(arn)
            status = certificate["Status"]
            if status == "ISSUED":
                return certificate
            if status in FAILED_STATUSES:
                reasons = {o["DomainName"]: o.get("ValidationStatus") for o in certificate["DomainValidationOptions"]}
                self.module.fail_json(
                    msg=f"ACM certificate {arn} is {status} ({certificate.get('FailureReason', 'no reason given')})",
                    certificate_arn=arn,
                    status=status,
                    validation_status=reasons,
                )
            if time.monotonic() + delay > self.deadline:
                self.module.fail_json(
                    msg=f"ACM certificate {arn} is still {status} after wait_timeout; the validation records are in "
                    f"zone {self.zone_name}: check that the zone is delegated publicly",
                    certificate_arn=arn,
                    status=status,
                )
            time.sleep(delay)
            delay = min(delay * 2, 15)

    # --- Route 53 -----------------------------------------------------------------------------------
    def current_record(self, name: str) -> dict[str, Any] | None:
        answer = self.route53.list_resource_record_sets(
            HostedZoneId=self.zone_id, StartRecordName=name, StartRecordType="CNAME", MaxItems="1", aws_retry=True
        )
        for record in answer["ResourceRecordSets"]:
            if normalize(record["Name"]) == normalize(name) and record["Type"] == "CNAME":
                return record
        return None

    def change_records(self, action: str, records: list[Record], ttl_of: dict[str, int]) -> None:
        changes = [
            {
                "Action": action,
                "ResourceRecordSet": {
                    "Name": record["name"],
                    "Type": "CNAME",
                    "TTL": ttl_of[record["name"]],
                    "ResourceRecords": [{"Value": record["value"]}],
                },
            }
            for record in records
        ]
        answer = self.route53.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch={"Comment": f"ACM DNS validation of {self.domain_name}", "Changes": changes},
            aws_retry=True,
        )
        change_id = answer["ChangeInfo"]["Id"]
        while answer["ChangeInfo"]["Status"] != "INSYNC" and time.monotonic() < self.deadline:
            time.sleep(2)
            answer = self.route53.get_change(Id=change_id, aws_retry=True)


def validation_records(certificate: dict[str, Any]) -> list[Record]:
    """The distinct CNAME records of a certificate (a wildcard and its base name share one)."""
    records: dict[str, Record] = {}
    for option in certificate.get("DomainValidationOptions", []):
        record = option.get("ResourceRecord")
        if record:
            name = normalize(record["Name"]) + "."
            records[name] = {"name": name, "type": record["Type"], "value": normalize(record["Value"]) + "."}
    return sorted(records.values(), key=lambda r: r["name"])


def describe_user(arn: str) -> str:
    """A user of a certificate as a person reads it: the load balancer's name where the ARN has one."""
    if ":elasticloadbalancing:" in arn:
        kind, _, rest = arn.partition(":")[2].rpartition(":")[2].partition("/")
        parts = rest.split("/")
        if kind in ("listener", "loadbalancer") and len(parts) >= 2:
            return f"load balancer {parts[1]} ({arn})"
    return arn


def ensure_present(module: AnsibleAWSModule, certs: Certificates) -> dict[str, Any]:
    candidates = [c for c in certs.all_certificates(LIVE_STATUSES) if certs.matches(c)]
    # An issued certificate first, then the newest pending one.
    candidates.sort(key=lambda c: (c["Status"] != "ISSUED", -c["CreatedAt"].timestamp() if "CreatedAt" in c else 0))
    changed = False
    if candidates:
        certificate = candidates[0]
        arn = certificate["CertificateArn"]
    elif module.check_mode:
        return {"changed": True, "certificate_arn": "", "status": "PENDING_VALIDATION", "validation_records": []}
    else:
        arn = certs.request()
        changed = True
        certificate = certs.describe(arn)

    if certificate["Status"] != "ISSUED" and not module.check_mode:
        certificate = certs.wait_for_records(arn)
    records = validation_records(certificate)

    missing = []
    for record in records:
        current = certs.current_record(record["name"])
        values = [normalize(r["Value"]) + "." for r in (current or {}).get("ResourceRecords", [])]
        if values != [record["value"]] or current.get("TTL") != module.params["validation_record_ttl"]:
            missing.append(record)
    if missing:
        changed = True
        if not module.check_mode:
            ttl = module.params["validation_record_ttl"]
            certs.change_records("UPSERT", missing, {r["name"]: ttl for r in missing})

    if module.params["wait"] and certificate["Status"] != "ISSUED" and not module.check_mode:
        certificate = certs.wait_until_issued(arn)
    return {
        "changed": changed,
        "certificate_arn": arn,
        "status": certificate["Status"],
        "validation_records": records,
    }


def ensure_absent(module: AnsibleAWSModule, certs: Certificates) -> dict[str, Any]:
    everything = certs.all_certificates(ALL_STATUSES)
    doomed = [c for c in everything if certs.matches(c)]
    result: dict[str, Any] = {
        "changed": bool(doomed),
        "certificate_arn": doomed[0]["CertificateArn"] if doomed else "",
        "status": "ABSENT",
        "validation_records": [],
        "deleted_certificates": [c["CertificateArn"] for c in doomed],
        "kept_records": [],
    }
    in_use = {c["CertificateArn"]: certs.live_users(c.get("InUseBy", [])) for c in doomed}
    in_use = {arn: users for arn, users in in_use.items() if users}
    if in_use:
        users = "; ".join(f"{arn} is used by {', '.join(map(describe_user, by))}" for arn, by in in_use.items())
        module.fail_json(
            msg=f"Not deleting the certificate of {certs.domain_name}: {users}. Remove it from the listener first.",
            in_use_by=in_use,
        )
    doomed_arns = {c["CertificateArn"] for c in doomed}
    still_listed = {
        r["name"] for c in everything if c["CertificateArn"] not in doomed_arns for r in validation_records(c)
    }
    wanted: dict[str, Record] = {r["name"]: r for c in doomed for r in validation_records(c)}
    to_delete, ttl_of = [], {}
    for name, record in sorted(wanted.items()):
        if name in still_listed:
            result["kept_records"].append(record)
            continue
        current = certs.current_record(name)
        if current is None:
            continue
        values = [normalize(r["Value"]) + "." for r in current.get("ResourceRecords", [])]
        if values != [record["value"]]:
            continue  # someone else's record under that name: leave it
        to_delete.append(record)
        ttl_of[name] = current["TTL"]
    result["validation_records"] = to_delete
    if to_delete:
        result["changed"] = True
    if module.check_mode:
        return result
    # Certificates first: if one cannot go, its records stay and a rerun finds both.
    for arn in result["deleted_certificates"]:
        certs.delete(arn)
    if to_delete:
        certs.change_records("DELETE", to_delete, ttl_of)
    return result


def main() -> None:
    argument_spec = {
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "domain_name": {"type": "str", "required": True},
        "subject_alternative_names": {"type": "list", "elements": "str", "default": []},
        "hosted_zone_id": {"type": "str"},
        "hosted_zone_name": {"type": "str"},
        "tags": {"type": "dict", "default": {}},
        "validation_record_ttl": {"type": "int", "default": 300},
        "wait": {"type": "bool", "default": True},
        "wait_timeout": {"type": "int", "default": 900},
    }
    # Not required_one_of/mutually_exclusive: they count an option passed as null or "" (a template that
    # rendered empty) as given.
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if not params["domain_name"].strip():
        module.fail_json(msg="domain_name: must not be empty")
    zones = [key for key in ("hosted_zone_id", "hosted_zone_name") if (params[key] or "").strip()]
    if len(zones) != 1:
        got = "both" if zones else "neither"
        module.fail_json(msg=f"hosted_zone_id or hosted_zone_name: give exactly one (a public hosted zone), got {got}")
    if params["wait_timeout"] < 1:
        module.fail_json(msg=f"wait_timeout: must be a positive number of seconds, got {params['wait_timeout']}")
    certs = Certificates(module)
    certs.resolve_zone()
    try:
        ensure = ensure_present if module.params["state"] == "present" else ensure_absent
        result = ensure(module, certs)
    except (BotoCoreError, ClientError) as error:
        module.fail_json_aws(error, msg=f"ACM/Route 53 call failed for {certs.domain_name}")
    result.setdefault("deleted_certificates", [])
    result.setdefault("kept_records", [])
    module.exit_json(hosted_zone_id=certs.zone_id, **result)


if __name__ == "__main__":
    main()
