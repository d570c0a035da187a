"""Staging and production end to end against moto, as a reviewer would check them by hand.

The tests run in file order and share the two environments: provision staging, inspect it, rerun,
scale and list the dynamic inventory (meanwhile production is provisioned in the background), tear
staging down (production stays), tear production down (a final snapshot stays), then compare every
AWS action called with the provisioning policy of its environment (docs/iam/<env>-provision.json).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from provision_harness import REPO_ROOT, SSH_ALLOWED, Background, MotoServer, Run, policy_actions

PROJECT = "nnp"
# moto's account: the owner of everything the tests create.
ACCOUNT = "123456789012"
STAGING_EC2 = yaml.safe_load((REPO_ROOT / "inventories/staging/group_vars/all/ec2.yml").read_text())
STAGING_GROUPS = STAGING_EC2["ec2_instance_groups"]
PRODUCTION_GROUPS = yaml.safe_load((REPO_ROOT / "inventories/production/group_vars/all/ec2.yml").read_text())[
    "ec2_instance_groups"
]
ALARM_EMAIL = "oncall@example.org"
# Each environment's hosted zone and front door names (the zone is given: the tests create it, as the operator would).
FRONT_DOOR = {
    env: yaml.safe_load((REPO_ROOT / f"inventories/{env}/group_vars/all/aws.yml").read_text())
    for env in ("staging", "production")
}
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
ANYWHERE = "0.0.0.0/0"

# Tasks allowed to report a change when only the web group changes.
HOSTS_TASK = "Every host exists with IMDSv2 required and an encrypted gp3 root volume"
SURPLUS_TASK = "Hosts beyond each group's count (or of a group no longer listed) are terminated"
TARGETS_TASK = "The target group of each multi-host HTTP group checks the app's readiness endpoint"
ALARMS_TASK = "Every alarm exists as listed and notifies the alarm topic"
STALE_ALARMS_TASK = "Alarms of hosts and load balancers that are gone are deleted"
WAIT_TASK = "Every host is running"
GROUP_SG_TASK = "Each host group's security group admits SSH from ssh_allowed_cidrs and HTTP only from its front door"
ALB_SG_TASK = "The ALB security group admits the listener ports from anywhere, or nothing while no group has an ALB"
EIP_TASK = "The single host of an HTTP group holds an Elastic IP"
EIP_TAG_TASK = "Each new Elastic IP carries the environment's tags"
STALE_ALB_TASK = "Groups with at most one host, and groups that serve no HTTP, have no load balancer"
STALE_TG_TASK = "Groups with at most one host, and groups that serve no HTTP, have no target group"
ALIAS_TASK = "Each name of the front door is an alias record of its load balancer"
EIP_RECORD_TASK = "Each name of the front door is an A record of the single host's Elastic IP"

# Policy actions the tests do not see called, with the reason the playbooks need them.
NOT_SEEN_IN_TESTS = {
    # AWS creates these service-linked roles with the account's first ALB / RDS instance.
    "iam:CreateServiceLinkedRole",
    # Only when a listener's certificate, policy or action changes (a new ARN, another policy).
    "elasticloadbalancing:ModifyListener",
    # DeleteDBInstance with a final snapshot is also authorised as CreateDBSnapshot on the snapshot.
    "rds:CreateDBSnapshot",
    # Parameter groups (aws_database_parameters) are off in the tests: see moto-vars.yml.
    "rds:CreateDBParameterGroup",
    "rds:ModifyDBParameterGroup",
    "rds:DescribeDBParameters",
    "rds:DeleteDBParameterGroup",
    # Restoring a secret that a teardown scheduled for deletion, on the next provisioning.
    "secretsmanager:RestoreSecret",
    # Undoing changes made by hand or changed settings: tags, routes, subnets, health checks, targets.
    "ec2:DeleteTags",
    "ec2:DeleteRoute",
    "ec2:ReplaceRoute",
    "ec2:ModifyInstanceMetadataOptions",
    "elasticloadbalancing:RemoveTags",
    "elasticloadbalancing:ModifyTargetGroup",
    # AWS (and moto) drop terminated hosts from target groups themselves.
    "elasticloadbalancing:DeregisterTargets",
    "rds:ModifyDBSubnetGroup",
    "rds:RemoveTagsFromResource",
    "secretsmanager:UntagResource",
    "sns:UntagResource",
    # Creating a resource with tags is also authorised as the service's tagging action.
    "rds:AddTagsToResource",
    "secretsmanager:TagResource",
    "sns:TagResource",
    # ACM checks it for the tags of a RequestCertificate; it is no call of its own.
    "acm:AddTagsToCertificate",
    # moto reports every Route 53 change INSYNC at once, so acm_certificate_dns never polls (AWS: up to a minute).
    "route53:GetChange",
    # Launching or associating a host with an instance profile is also authorised as PassRole of its role.
    "iam:PassRole",
    # Creating a role or instance profile with tags is also authorised as tagging it.
    "iam:TagRole",
    "iam:TagInstanceProfile",
    # Undoing changes made by hand to the monitoring hosts' role: its tags, trust policy, description, a
    # managed policy attached.
    "iam:UntagRole",
    "iam:UntagInstanceProfile",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateRole",
    "iam:DetachRolePolicy",
}


def tag_filters(env: str) -> list[dict[str, Any]]:
    return [{"Name": "tag:Project", "Values": [PROJECT]}, {"Name": "tag:Env", "Values": [env]}]


def tags_of(resource: dict[str, Any], key: str = "Tags") -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get(key) or []}


def running_instances(aws: MotoServer, env: str) -> list[dict[str, Any]]:
    filters = [*tag_filters(env), {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}]
    reservations = aws.client("ec2").describe_instances(Filters=filters)["Reservations"]
    return sorted((i for r in reservations for i in r["Instances"]), key=lambda i: tags_of(i)["Name"])


def hosts_by_name(aws: MotoServer, env: str) -> dict[str, dict[str, Any]]:
    return {tags_of(i)["Name"]: i for i in running_instances(aws, env)}


def security_group(aws: MotoServer, name: str) -> dict[str, Any]:
    groups = aws.client("ec2").describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])
    (group,) = groups["SecurityGroups"]
    return group


def rules(group: dict[str, Any], direction: str = "IpPermissions") -> set[tuple[str, int, int, str]]:
    """Ingress (or egress) rules as (protocol, from, to, source) with one source per entry."""
    out = set()
    for perm in group[direction]:
        key = (perm["IpProtocol"], perm.get("FromPort", -1), perm.get("ToPort", -1))
        out |= {(*key, r["CidrIp"]) for r in perm.get("IpRanges", [])}
        out |= {(*key, r["CidrIpv6"]) for r in perm.get("Ipv6Ranges", [])}
        out |= {(*key, p["GroupId"]) for p in perm.get("UserIdGroupPairs", [])}
        out |= {(*key, p["PrefixListId"]) for p in perm.get("PrefixListIds", [])}
    return out


WORLD = {"0.0.0.0/0", "::/0"}
# What each group admits from the monitoring group's security group (role aws_network's default): nginx's
# /metrics, the node exporter, the worker's metrics.
SCRAPE_PORTS = {"web": (80, 9100, 9101), "gpu": (9100, 9101)}
# Ports of the metrics and of the monitoring host's UIs (Prometheus, Alertmanager, blackbox exporter): never
# open to an address range.
MONITORING_PORTS = {9090, 9093, 9100, 9101, 9115}
# Rule: (security group name, protocol, from port, to port, source); a group source by its name.
Rule = tuple[str, str, int, int, str]


def ingress_rules(aws: MotoServer) -> set[Rule]:
    """Every ingress rule of every security group in the account, one source per rule."""
    groups = aws.client("ec2").describe_security_groups()["SecurityGroups"]
    names = {g["GroupId"]: g["GroupName"] for g in groups}
    out: set[Rule] = set()
    for group in groups:
        for perm in group["IpPermissions"]:
            key = (group["GroupName"], perm["IpProtocol"], perm.get("FromPort", -1), perm.get("ToPort", -1))
            sources = [r["CidrIp"] for r in perm.get("IpRanges", [])]
            sources += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
            sources += [f"sg:{names.get(p['GroupId'], p['GroupId'])}" for p in perm.get("UserIdGroupPairs", [])]
            sources += [p["PrefixListId"] for p in perm.get("PrefixListIds", [])]
            out |= {(*key, source) for source in sources}
    return out


def intended_rules(env: str, web_hosts: int, listener_ports: tuple[int, ...] = (80, 443)) -> dict[Rule, str]:
    """Each rule one environment should have, with why: the front door is the only thing open to the world."""
    prefix = f"{PROJECT}-{env}"
    intended: dict[Rule, str] = {}
    for group in ("web", "gpu", "monitoring"):
        for cidr in SSH_ALLOWED:
            intended[(f"{prefix}-{group}", "tcp", 22, 22, cidr)] = "SSH from ssh_allowed_cidrs"
    for group in ("web", "gpu"):
        intended[(f"{prefix}-db", "tcp", 5432, 5432, f"sg:{prefix}-{group}")] = f"PostgreSQL from the {group} hosts"
        # Prometheus on the monitoring host scrapes the node exporter and the worker; nothing else reaches them.
        for port in SCRAPE_PORTS[group]:
            intended[(f"{prefix}-{group}", "tcp", port, port, f"sg:{prefix}-monitoring")] = (
                "metrics, by the monitoring hosts"
            )
    if web_hosts == 1:
        for port in (80, 443):
            intended[(f"{prefix}-web", "tcp", port, port, ANYWHERE)] = "front door: the single web host's Elastic IP"
    elif web_hosts > 1:
        for port in listener_ports:
            intended[(f"{prefix}-alb", "tcp", port, port, ANYWHERE)] = "front door: ALB listener"
        intended[(f"{prefix}-web", "tcp", 80, 80, f"sg:{prefix}-alb")] = "ALB to the web hosts (target port)"
    return intended


def assert_security_groups_pass_the_audit(aws: MotoServer, shapes: dict[str, int]) -> None:
    """Every ingress rule in the account is one of the intended ones (shapes: web hosts per environment).

    AWS's own default groups may admit their own members (moto leaves them empty); nothing of ours uses them.
    """
    intended: dict[Rule, str] = {}
    for env, web_hosts in shapes.items():
        intended |= intended_rules(env, web_hosts)
    found = {r for r in ingress_rules(aws) if not (r[0] == "default" and r[4] == "sg:default")}
    listing = "\n".join(f"  {r}: {intended.get(r, 'NOT INTENDED')}" for r in sorted(found))
    unexpected = found - intended.keys()
    assert not unexpected, f"rules nobody intended:\n{sorted(unexpected)}\nall rules:\n{listing}"
    assert found == intended.keys(), f"intended rules missing: {sorted(intended.keys() - found)}"
    world_open = {r for r in found if r[4] in WORLD}
    assert all(intended[r].startswith("front door") for r in world_open), listing
    aws.measurements[f"security group audit ({', '.join(shapes)})"] = "\n" + listing


def database(aws: MotoServer, env: str) -> dict[str, Any]:
    (db,) = aws.client("rds").describe_db_instances(DBInstanceIdentifier=f"{PROJECT}-{env}")["DBInstances"]
    return db


def secret_value(aws: MotoServer, name: str) -> dict[str, Any]:
    return json.loads(aws.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"])


def operator_token(aws: MotoServer, env: str) -> str:
    return str(aws.client("secretsmanager").get_secret_value(SecretId=f"{PROJECT}/{env}/app-operator")["SecretString"])


def login_secrets(aws: MotoServer, env: str) -> dict[str, dict[str, Any]]:
    return {name: secret_value(aws, f"{PROJECT}/{env}/rds-{name}") for name in ("master", "app")}


def assert_secrets_hold_the_endpoint(aws: MotoServer, env: str) -> None:
    """Both logins carry the layout of AWS's own RDS secrets, with the instance's endpoint."""
    endpoint = database(aws, env)["Endpoint"]
    for name, secret in login_secrets(aws, env).items():
        assert set(secret) == {"engine", "host", "port", "username", "password", "dbname"}, name
        assert (secret["host"], secret["port"]) == (endpoint["Address"], endpoint["Port"]), name
        assert (secret["engine"], secret["dbname"]) == ("postgres", "nnp"), name


def environment_resources(aws: MotoServer, env: str) -> dict[str, list[str]]:
    """Every resource of one environment, per type, found by its tags or its name prefix."""
    ec2, rds, elb = aws.client("ec2"), aws.client("rds"), aws.client("elbv2")
    prefix = f"{PROJECT}-{env}"
    tagged = tag_filters(env)
    load_balancers = [
        lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["LoadBalancerName"].startswith(prefix)
    ]
    secrets = aws.client("secretsmanager").list_secrets()["SecretList"]
    topics = [t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]]
    return {
        "vpc": [v["VpcId"] for v in ec2.describe_vpcs(Filters=tagged)["Vpcs"]],
        "subnet": [s["SubnetId"] for s in ec2.describe_subnets(Filters=tagged)["Subnets"]],
        "internet gateway": [
            g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=tagged)["InternetGateways"]
        ],
        "route table": [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=tagged)["RouteTables"]],
        "security group": [g["GroupId"] for g in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]],
        "key pair": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"] == prefix],
        "instance": [i["InstanceId"] for i in running_instances(aws, env)],
        "volume": [v["VolumeId"] for v in ec2.describe_volumes(Filters=tagged)["Volumes"]],
        "elastic ip": [a["AllocationId"] for a in ec2.describe_addresses(Filters=tagged)["Addresses"]],
        "db instance": [
            d["DBInstanceIdentifier"]
            for d in rds.describe_db_instances()["DBInstances"]
            if d["DBInstanceIdentifier"] == prefix
        ],
        "db subnet group": [
            g["DBSubnetGroupName"]
            for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]
            if g["DBSubnetGroupName"] == prefix
        ],
        "secret": [s["Name"] for s in secrets if s["Name"].startswith(f"{PROJECT}/{env}/")],
        "load balancer": [lb["LoadBalancerName"] for lb in load_balancers],
        "listener": [
            listener["ListenerArn"]
            for lb in load_balancers
            for listener in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        ],
        "target group": [
            t["TargetGroupName"]
            for t in elb.describe_target_groups()["TargetGroups"]
            if t["TargetGroupName"].startswith(prefix)
        ],
        "alarm": [
            a["AlarmName"]
            for a in aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{prefix}-")["MetricAlarms"]
        ],
        "sns topic": [t for t in topics if t.endswith(f":{prefix}-alarms")],
        "certificate": [c["CertificateArn"] for c in certificates(aws, env)],
        "dns record": [f"{r['Name']} {r['Type']}" for r in zone_records(aws, env)],
        "iam role": [
            r["RoleName"] for r in aws.client("iam").list_roles()["Roles"] if r["RoleName"].startswith(prefix)
        ],
        "instance profile": [
            p["InstanceProfileName"]
            for p in aws.client("iam").list_instance_profiles()["InstanceProfiles"]
            if p["InstanceProfileName"].startswith(prefix)
        ],
    }


def zone_id(aws: MotoServer, env: str) -> str:
    zone = FRONT_DOOR[env]["aws_front_door_dns_zone"]
    (found,) = [z for z in aws.client("route53").list_hosted_zones()["HostedZones"] if z["Name"] == f"{zone}."]
    return found["Id"].split("/")[-1]


def zone_records(aws: MotoServer, env: str) -> list[dict[str, Any]]:
    """Every record of the environment's zone besides the zone's own SOA and NS."""
    route53 = aws.client("route53")
    zones = {z["Name"] for z in route53.list_hosted_zones()["HostedZones"]}
    if f"{FRONT_DOOR[env]['aws_front_door_dns_zone']}." not in zones:
        return []
    records = route53.list_resource_record_sets(HostedZoneId=zone_id(aws, env))["ResourceRecordSets"]
    return [r for r in records if r["Type"] not in ("SOA", "NS")]


def certificates(aws: MotoServer, env: str) -> list[dict[str, Any]]:
    """The environment's ACM certificates (by their Project and Env tags), described."""
    acm = aws.client("acm")
    found = []
    for summary in acm.list_certificates()["CertificateSummaryList"]:
        arn = summary["CertificateArn"]
        if tags_of(acm.list_tags_for_certificate(CertificateArn=arn)) == {"Project": PROJECT, "Env": env}:
            found.append(acm.describe_certificate(CertificateArn=arn)["Certificate"])
    return found


def create_given_zones(aws: MotoServer) -> None:
    """The public hosted zones the operator provides (delegated from the parent zone in real AWS)."""
    route53 = aws.client("route53")
    for env, settings in FRONT_DOOR.items():
        route53.create_hosted_zone(Name=settings["aws_front_door_dns_zone"], CallerReference=f"given-{env}")


def assert_https_front_door(aws: MotoServer, env: str) -> None:
    """The certificate is issued for the names and validated in the zone; HTTPS with it and TLS 1.2/1.3, 80
    redirects to 443, and each name is an alias record of the load balancer."""
    names = FRONT_DOOR[env]["aws_front_door_domain_names"]
    elb = aws.client("elbv2")
    (lb,) = elb.describe_load_balancers(Names=[f"{PROJECT}-{env}-web"])["LoadBalancers"]
    (target_group,) = elb.describe_target_groups(Names=[f"{PROJECT}-{env}-web"])["TargetGroups"]
    (certificate,) = certificates(aws, env)
    listeners = {
        listener["Port"]: listener
        for listener in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    }

    assert certificate["Status"] == "ISSUED"
    assert certificate["Type"] == "AMAZON_ISSUED"
    assert [certificate["DomainName"], *certificate["SubjectAlternativeNames"][1:]] == names
    assert sorted(certificate["SubjectAlternativeNames"]) == sorted(names)
    (validation,) = certificate["DomainValidationOptions"]
    assert validation["ValidationMethod"] == "DNS"
    cname = validation["ResourceRecord"]
    records = {(r["Name"], r["Type"]): r for r in zone_records(aws, env)}
    assert records[(cname["Name"], "CNAME")]["ResourceRecords"] == [{"Value": cname["Value"]}]

    assert set(listeners) == {80, 443}
    https = listeners[443]
    assert (https["Protocol"], https["SslPolicy"]) == ("HTTPS", TLS_POLICY)
    assert https["Certificates"] == [{"CertificateArn": certificate["CertificateArn"]}]
    (forward,) = https["DefaultActions"]
    assert (forward["Type"], forward["TargetGroupArn"]) == ("forward", target_group["TargetGroupArn"])
    http = listeners[80]
    assert http["Protocol"] == "HTTP"
    (redirect,) = http["DefaultActions"]
    assert redirect["Type"] == "redirect"
    assert {k: redirect["RedirectConfig"][k] for k in ("Protocol", "Port", "StatusCode")} == {
        "Protocol": "HTTPS",
        "Port": "443",
        "StatusCode": "HTTP_301",
    }

    aliases = {name: records[(f"{name}.", "A")] for name in names}
    for name, record in aliases.items():
        assert record["AliasTarget"] == {
            "HostedZoneId": lb["CanonicalHostedZoneId"],
            "DNSName": f"{lb['DNSName'].lower()}.",
            "EvaluateTargetHealth": True,
        }, name
    # The load balancer is IPv4 only: no AAAA record. Nothing else was written into the given zone.
    assert set(records) == {(f"{n}.", "A") for n in names} | {(cname["Name"], "CNAME")}
    aws.measurements[f"{env}: front door"] = (
        f"{', '.join(names)} -> {lb['DNSName']}, certificate {certificate['Status']}, {https['SslPolicy']}"
    )


def count(resources: dict[str, list[str]]) -> int:
    return sum(len(ids) for ids in resources.values())


def assert_only_changed(run: Run, allowed: set[str], required: set[str]) -> None:
    changed = run.changed_tasks
    assert changed <= allowed, f"unexpected changes: {changed - allowed}"
    assert required <= changed, f"expected changes missing: {required - changed}"


@pytest.fixture(scope="module")
def staging(aws: MotoServer, ssh_key: Path) -> Run:
    """The first provisioning of staging, at -vvv so the secret check below sees the most output."""
    aws.reset()
    create_given_zones(aws)
    run = aws.playbook(
        "playbooks/provision.yml", "staging", {"aws_alarms_email": ALARM_EMAIL}, key=ssh_key, verbosity="-vvv"
    )
    aws.measurements["staging: first provision"] = f"{run.seconds:.1f} s, {run.recap['changed']} changed tasks"
    created = environment_resources(aws, "staging")
    aws.measurements["staging: resources created"] = f"{count(created)} " + json.dumps(
        {k: len(v) for k, v in created.items()}
    )
    return run


@pytest.fixture(scope="module")
def production_provisioning(aws: MotoServer, ssh_key: Path, staging: Run) -> Iterator[Background]:
    """Production is provisioned in the background while staging scales: they share no resource."""
    background = Background(lambda: aws.playbook("playbooks/provision.yml", "production", key=ssh_key))
    yield background
    background.result()


@pytest.fixture(scope="module")
def production_teardown(aws: MotoServer, ssh_key: Path, staging: Run) -> Iterator[Background]:
    """Production is torn down in the background while staging's second teardown runs."""
    background = Background(
        lambda: aws.playbook("playbooks/teardown.yml", "production", {"confirm_destroy": "production"}, key=ssh_key)
    )
    yield background
    background.result()


def test_first_run_creates_the_environment(staging: Run) -> None:
    assert staging.recap["failed"] == 0
    assert staging.recap["changed"] >= 15


def test_security_groups_admit_exactly_the_intended_traffic(aws: MotoServer, staging: Run) -> None:
    """The audit: web behind its ALB, gpu SSH only, the database from both host groups, nothing else."""
    groups = {
        name: security_group(aws, f"{PROJECT}-staging-{name}") for name in ("web", "gpu", "monitoring", "alb", "db")
    }

    assert_security_groups_pass_the_audit(aws, {"staging": STAGING_GROUPS["web"]["count"]})
    assert len({g["VpcId"] for g in groups.values()}) == 1
    # Egress stays AWS's default (everything out): hosts fetch packages and models.
    assert {name: rules(g, "IpPermissionsEgress") for name, g in groups.items()} == {
        name: {("-1", -1, -1, ANYWHERE)} for name in groups
    }


def test_the_monitoring_host_admits_ssh_only_and_alone_reaches_the_metrics_ports(aws: MotoServer, staging: Run) -> None:
    """Its UIs are reached through an SSH tunnel; the metrics ports admit its security group, by id, and no range."""
    monitoring = hosts_by_name(aws, "staging")["nnp-staging-monitoring-01"]
    monitoring_sg = security_group(aws, "nnp-staging-monitoring")
    web_sg, gpu_sg = security_group(aws, "nnp-staging-web"), security_group(aws, "nnp-staging-gpu")

    assert [g["GroupId"] for g in monitoring["SecurityGroups"]] == [monitoring_sg["GroupId"]]
    assert rules(monitoring_sg) == {("tcp", 22, 22, cidr) for cidr in SSH_ALLOWED}
    for group, ports in (("web", {80, 9100, 9101}), ("gpu", {9100, 9101})):
        sg = {"web": web_sg, "gpu": gpu_sg}[group]
        scraped = {r for r in rules(sg) if r[3] == monitoring_sg["GroupId"]}
        assert scraped == {("tcp", port, port, monitoring_sg["GroupId"]) for port in ports}, group
        metrics_ports = {r for r in rules(sg) if r[1] in ports - {80}}
        assert metrics_ports == {r for r in scraped if r[1] != 80}, f"{group}: only the monitoring group"
    # Port 80 of the web hosts: the ALB (traffic) and the monitoring hosts (/metrics), no range.
    assert {r[3] for r in rules(web_sg) if r[1] == 80} == {
        security_group(aws, "nnp-staging-alb")["GroupId"],
        monitoring_sg["GroupId"],
    }
    opened = {r for r in ingress_rules(aws) if r[2] <= max(MONITORING_PORTS) and r[3] >= min(MONITORING_PORTS)}
    to_ranges = {r for r in opened if not r[4].startswith("sg:") and any(r[2] <= p <= r[3] for p in MONITORING_PORTS)}
    assert to_ranges == set()
    assert {r[4] for r in opened} == {"sg:nnp-staging-monitoring"}


def test_gpu_hosts_have_no_public_http_elastic_ip_load_balancer_certificate_or_dns_name(
    aws: MotoServer, staging: Run
) -> None:
    """The gpu group is the training pool: reachable on SSH from ssh_allowed_cidrs only."""
    gpu = hosts_by_name(aws, "staging")["nnp-staging-gpu-01"]
    gpu_sg = security_group(aws, "nnp-staging-gpu")
    elb = aws.client("elbv2")
    targets = {
        t["Target"]["Id"]
        for group in elb.describe_target_groups()["TargetGroups"]
        for t in elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    }

    assert [g["GroupId"] for g in gpu["SecurityGroups"]] == [gpu_sg["GroupId"]]
    monitoring_sg = security_group(aws, "nnp-staging-monitoring")["GroupId"]
    assert rules(gpu_sg) == {("tcp", 22, 22, c) for c in SSH_ALLOWED} | {
        ("tcp", port, port, monitoring_sg) for port in SCRAPE_PORTS["gpu"]
    }
    assert [
        a for a in aws.client("ec2").describe_addresses()["Addresses"] if a.get("InstanceId") == gpu["InstanceId"]
    ] == []
    assert gpu["InstanceId"] not in targets
    assert [t["TargetGroupName"] for t in elb.describe_target_groups()["TargetGroups"]] == ["nnp-staging-web"]
    assert [lb["LoadBalancerName"] for lb in elb.describe_load_balancers()["LoadBalancers"]] == ["nnp-staging-web"]
    # The certificate and the DNS records name the web group's front door only.
    (certificate,) = certificates(aws, "staging")
    assert certificate["SubjectAlternativeNames"] == FRONT_DOOR["staging"]["aws_front_door_domain_names"]
    named = {r["Name"] for r in zone_records(aws, "staging") if r["Type"] == "A"}
    assert named == {f"{n}." for n in FRONT_DOOR["staging"]["aws_front_door_domain_names"]}
    assert all("gpu" not in r["Name"] for r in zone_records(aws, "staging"))


def test_database_is_private_encrypted_and_backed_up(aws: MotoServer, staging: Run) -> None:
    db = database(aws, "staging")
    private_subnets = aws.client("ec2").describe_subnets(
        Filters=[*tag_filters("staging"), {"Name": "tag:Tier", "Values": ["private"]}]
    )

    assert db["Engine"] == "postgres"
    assert db["EngineVersion"] == "17.6"
    assert db["AutoMinorVersionUpgrade"] is False
    assert db["StorageEncrypted"] is True
    assert db["PubliclyAccessible"] is False
    assert db["StorageType"] == "gp3"
    assert db["BackupRetentionPeriod"] == 7
    assert db["MultiAZ"] is False
    assert db["DeletionProtection"] is False
    assert db["DBName"] == "nnp"
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [
        security_group(aws, f"{PROJECT}-staging-db")["GroupId"]
    ]
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == {
        s["SubnetId"] for s in private_subnets["Subnets"]
    }
    assert {s["SubnetAvailabilityZone"]["Name"] for s in db["DBSubnetGroup"]["Subnets"]} == {
        "eu-central-1a",
        "eu-central-1b",
    }
    route_tables = aws.client("ec2").describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": [s["SubnetId"] for s in private_subnets["Subnets"]]}]
    )
    routes = [r for t in route_tables["RouteTables"] for r in t["Routes"]]
    assert routes
    assert all(r.get("GatewayId") == "local" for r in routes), f"the database subnets must not route out: {routes}"


def test_hosts_match_their_group_with_imdsv2_and_encrypted_gp3(aws: MotoServer, staging: Run) -> None:
    ec2 = aws.client("ec2")
    hosts = running_instances(aws, "staging")
    public_subnets = {
        s["SubnetId"]
        for s in ec2.describe_subnets(Filters=[*tag_filters("staging"), {"Name": "tag:Tier", "Values": ["public"]}])[
            "Subnets"
        ]
    }

    assert [tags_of(h)["Name"] for h in hosts] == [
        "nnp-staging-gpu-01",
        "nnp-staging-monitoring-01",
        "nnp-staging-web-01",
        "nnp-staging-web-02",
    ]
    for host in hosts:
        role = tags_of(host)["Role"]
        spec = STAGING_GROUPS[role]
        assert tags_of(host) == {"Project": PROJECT, "Env": "staging", "Role": role, "Name": tags_of(host)["Name"]}
        assert host["InstanceType"] == spec["instance_type"]
        assert host["MetadataOptions"]["HttpTokens"] == "required"
        assert host["MetadataOptions"]["HttpEndpoint"] == "enabled"
        assert host["KeyName"] == f"{PROJECT}-staging"
        assert [g["GroupId"] for g in host["SecurityGroups"]] == [
            security_group(aws, f"{PROJECT}-staging-{role}")["GroupId"]
        ]
        assert host["SubnetId"] in public_subnets
        assert host.get("PublicIpAddress")
        (volume,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [host["InstanceId"]]}])[
            "Volumes"
        ]
        assert (volume["VolumeType"], volume["Size"], volume["Encrypted"]) == ("gp3", spec["root_volume_gb"], True)
    web_zones = {h["Placement"]["AvailabilityZone"] for h in hosts if tags_of(h)["Role"] == "web"}
    assert web_zones == {"eu-central-1a", "eu-central-1b"}, "the web hosts must be spread over both zones"
    gpu_image = next(h["ImageId"] for h in hosts if tags_of(h)["Role"] == "gpu")
    web_image = next(h["ImageId"] for h in hosts if tags_of(h)["Role"] == "web")
    assert web_image == "ami-785db401"  # pinned in moto-vars.yml
    assert gpu_image == "ami-785db401"  # the only catalogue image matching the look-up pattern
    # Only the monitoring group has an instance profile (aws_compute_group_policies).
    assert {tags_of(h)["Role"]: h.get("IamInstanceProfile", {}).get("Arn") for h in hosts} == {
        "gpu": None,
        "web": None,
        "monitoring": f"arn:aws:iam::{ACCOUNT}:instance-profile/nnp-staging-monitoring",
    }


def test_the_monitoring_host_may_list_hosts_and_publish_to_the_alarm_topic_only(aws: MotoServer, staging: Run) -> None:
    """Its instance profile: a role only EC2 may assume, no managed policy, one inline policy of two statements."""
    iam = aws.client("iam")
    (profile,) = iam.list_instance_profiles()["InstanceProfiles"]
    (topic,) = [
        t["TopicArn"]
        for t in aws.client("sns").list_topics()["Topics"]
        if t["TopicArn"].endswith(":nnp-staging-alarms")
    ]
    role = iam.get_role(RoleName="nnp-staging-monitoring")["Role"]
    (policy_name,) = iam.list_role_policies(RoleName="nnp-staging-monitoring")["PolicyNames"]
    document = iam.get_role_policy(RoleName="nnp-staging-monitoring", PolicyName=policy_name)["PolicyDocument"]

    assert profile["InstanceProfileName"] == "nnp-staging-monitoring"
    assert [r["RoleName"] for r in profile["Roles"]] == ["nnp-staging-monitoring"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    assert iam.list_attached_role_policies(RoleName="nnp-staging-monitoring")["AttachedPolicies"] == []
    statements = document["Statement"]
    assert all(s["Effect"] == "Allow" and "Condition" not in s and "NotAction" not in s for s in statements)
    allowed = {(action, s["Resource"]) for s in statements for action in s["Action"]}
    assert len(allowed) == 2
    assert ("ec2:DescribeInstances", "*") in allowed  # no resource-level permissions for it
    ((publish, resource),) = allowed - {("ec2:DescribeInstances", "*")}
    # IAM puts the role's own account in for the policy variable.
    assert publish == "sns:Publish"
    assert resource.replace("${aws:PrincipalAccount}", ACCOUNT) == topic


def test_the_web_group_of_two_gets_an_alb_and_nothing_gets_an_elastic_ip(aws: MotoServer, staging: Run) -> None:
    hosts = hosts_by_name(aws, "staging")
    elb = aws.client("elbv2")
    (lb,) = elb.describe_load_balancers(Names=["nnp-staging-web"])["LoadBalancers"]
    (target_group,) = elb.describe_target_groups(Names=["nnp-staging-web"])["TargetGroups"]
    targets = elb.describe_target_health(TargetGroupArn=target_group["TargetGroupArn"])["TargetHealthDescriptions"]

    assert aws.client("ec2").describe_addresses()["Addresses"] == []
    assert lb["Scheme"] == "internet-facing"
    assert lb["SecurityGroups"] == [security_group(aws, "nnp-staging-alb")["GroupId"]]
    assert {z["ZoneName"] for z in lb["AvailabilityZones"]} == {"eu-central-1a", "eu-central-1b"}
    assert (
        target_group["HealthCheckPath"],
        target_group["HealthCheckProtocol"],
        target_group["Matcher"]["HttpCode"],
    ) == ("/readyz", "HTTP", "200")
    assert (target_group["Protocol"], target_group["Port"]) == ("HTTP", 80)
    assert {(t["Target"]["Id"], t["Target"]["Port"]) for t in targets} == {
        (hosts[n]["InstanceId"], 80) for n in ("nnp-staging-web-01", "nnp-staging-web-02")
    }
    assert elb.describe_load_balancers()["LoadBalancers"] == [lb], "the gpu group serves no HTTP: no ALB"


def test_the_alb_serves_https_with_a_certificate_validated_in_the_zone_and_named_there(
    aws: MotoServer, staging: Run
) -> None:
    assert_https_front_door(aws, "staging")
    called = {call.action for call in staging.calls}
    assert {"acm:RequestCertificate", "route53:ChangeResourceRecordSets"} <= called


def assert_target_group_is_as_the_inventory_says(aws: MotoServer, env: str) -> None:
    """Health check and deregistration delay of the web target group are the aws_front_door role's, none AWS's default.

    Neither inventory overrides them (the inventory drift test would list it).
    """
    wanted = yaml.safe_load((REPO_ROOT / "roles/aws_front_door/defaults/main.yml").read_text())
    elb = aws.client("elbv2")
    (target_group,) = elb.describe_target_groups(Names=[f"{PROJECT}-{env}-web"])["TargetGroups"]
    attributes = elb.describe_target_group_attributes(TargetGroupArn=target_group["TargetGroupArn"])["Attributes"]

    assert {
        "interval": target_group["HealthCheckIntervalSeconds"],
        "timeout": target_group["HealthCheckTimeoutSeconds"],
        "healthy": target_group["HealthyThresholdCount"],
        "unhealthy": target_group["UnhealthyThresholdCount"],
        "codes": target_group["Matcher"]["HttpCode"],
    } == {
        "interval": wanted["aws_front_door_health_check_interval_seconds"],
        "timeout": wanted["aws_front_door_health_check_timeout_seconds"],
        "healthy": wanted["aws_front_door_healthy_threshold_count"],
        "unhealthy": wanted["aws_front_door_unhealthy_threshold_count"],
        "codes": wanted["aws_front_door_successful_response_codes"],
    }
    delay = {a["Key"]: a["Value"] for a in attributes}["deregistration_delay.timeout_seconds"]
    assert int(delay) == wanted["aws_front_door_deregistration_delay_seconds"] != 300


def test_target_group_health_check_and_deregistration_delay_are_the_inventorys(aws: MotoServer, staging: Run) -> None:
    assert_target_group_is_as_the_inventory_says(aws, "staging")


def test_alarms_watch_hosts_database_and_alb_and_notify_the_topic(aws: MotoServer, staging: Run) -> None:
    alarms = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix="nnp-staging-")["MetricAlarms"]
    (topic,) = [
        t["TopicArn"]
        for t in aws.client("sns").list_topics()["Topics"]
        if t["TopicArn"].endswith(":nnp-staging-alarms")
    ]
    subscriptions = aws.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    hosts = hosts_by_name(aws, "staging")
    by_name = {a["AlarmName"]: a for a in alarms}

    assert set(by_name) == {f"{name}-cpu-high" for name in hosts} | {
        "nnp-staging-db-cpu-high",
        "nnp-staging-db-free-storage-low",
        "nnp-staging-web-alb-5xx",
    }
    assert all(a["AlarmActions"] == [topic] for a in alarms)
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", ALARM_EMAIL)]
    assert by_name["nnp-staging-web-01-cpu-high"]["Dimensions"] == [
        {"Name": "InstanceId", "Value": hosts["nnp-staging-web-01"]["InstanceId"]}
    ]
    storage = by_name["nnp-staging-db-free-storage-low"]
    assert (storage["MetricName"], storage["ComparisonOperator"], storage["Threshold"]) == (
        "FreeStorageSpace",
        "LessThanThreshold",
        5 * 1024**3,
    )
    (lb,) = aws.client("elbv2").describe_load_balancers(Names=["nnp-staging-web"])["LoadBalancers"]
    assert by_name["nnp-staging-web-alb-5xx"]["Dimensions"] == [
        {"Name": "LoadBalancer", "Value": lb["LoadBalancerArn"].split(":loadbalancer/")[1]}
    ]


def test_every_resource_carries_the_environment_tags(aws: MotoServer, staging: Run) -> None:
    ec2, rds, elb = aws.client("ec2"), aws.client("rds"), aws.client("elbv2")
    vpc_id = security_group(aws, "nnp-staging-web")["VpcId"]
    in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    found: dict[str, dict[str, str]] = {}
    found |= {v["VpcId"]: tags_of(v) for v in ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]}
    found |= {s["SubnetId"]: tags_of(s) for s in ec2.describe_subnets(Filters=in_vpc)["Subnets"]}
    found |= {
        g["InternetGatewayId"]: tags_of(g)
        for g in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])[
            "InternetGateways"
        ]
    }
    # The VPC's main route table and default security group are made by AWS, not by the playbook.
    found |= {
        t["RouteTableId"]: tags_of(t)
        for t in ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]
        if not any(a.get("Main") for a in t["Associations"])
    }
    found |= {
        g["GroupId"]: tags_of(g)
        for g in ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]
        if g["GroupName"] != "default"
    }
    found |= {k["KeyName"]: tags_of(k) for k in ec2.describe_key_pairs()["KeyPairs"]}
    for host in running_instances(aws, "staging"):
        found[host["InstanceId"]] = tags_of(host)
        for mapping in host["BlockDeviceMappings"]:
            volume_id = mapping["Ebs"]["VolumeId"]
            found[volume_id] = tags_of(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])
    found |= {a["AllocationId"]: tags_of(a) for a in ec2.describe_addresses()["Addresses"]}
    db = database(aws, "staging")
    found[db["DBInstanceArn"]] = tags_of(db, "TagList")
    subnet_group_arn = db["DBSubnetGroup"]["DBSubnetGroupArn"]
    found[subnet_group_arn] = tags_of(rds.list_tags_for_resource(ResourceName=subnet_group_arn), "TagList")
    found |= {s["Name"]: tags_of(s) for s in aws.client("secretsmanager").list_secrets()["SecretList"]}
    elb_arns = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    elb_arns += [t["TargetGroupArn"] for t in elb.describe_target_groups()["TargetGroups"]]
    found |= {d["ResourceArn"]: tags_of(d) for d in elb.describe_tags(ResourceArns=elb_arns)["TagDescriptions"]}
    for topic in aws.client("sns").list_topics()["Topics"]:
        found[topic["TopicArn"]] = tags_of(aws.client("sns").list_tags_for_resource(ResourceArn=topic["TopicArn"]))
    iam = aws.client("iam")
    found["role nnp-staging-monitoring"] = tags_of(iam.list_role_tags(RoleName="nnp-staging-monitoring"))
    # moto has no ListInstanceProfileTags; GetInstanceProfile carries the tags too.
    found["instance profile nnp-staging-monitoring"] = tags_of(
        iam.get_instance_profile(InstanceProfileName="nnp-staging-monitoring")["InstanceProfile"]
    )

    assert len(found) >= 20
    untagged = {
        r: t for r, t in found.items() if t.get("Project") != PROJECT or t.get("Env") != "staging" or not t.get("Name")
    }
    assert untagged == {}


def test_credentials_are_kept_in_secrets_manager_and_never_printed(aws: MotoServer, staging: Run) -> None:
    master = secret_value(aws, "nnp/staging/rds-master")
    app = secret_value(aws, "nnp/staging/rds-app")

    assert master["username"] == database(aws, "staging")["MasterUsername"] == "nnp_admin"
    assert app["username"] == "nnp_app"
    assert len(master["password"]) == len(app["password"]) == 40
    assert master["password"] != app["password"]
    assert_secrets_hold_the_endpoint(aws, "staging")
    # The app's operator token (aws_app_secrets): generated, letters and digits, long enough for the app.
    token = operator_token(aws, "staging")
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token), len(token)
    for run in aws.runs:
        assert master["password"] not in run.output
        assert app["password"] not in run.output
        assert token not in run.output


def test_every_playbook_call_used_aws_endpoint_url(aws: MotoServer, staging: Run) -> None:
    """module_defaults carry aws_endpoint_url to every module and the lookup; AWS_URL only reaches the inventory."""
    others = {call.action for call in staging.calls if call.host != aws.playbook_host}

    assert len(staging.playbook_calls(aws)) > 50
    assert others == {"ec2:DescribeInstances"}


def test_rerun_changes_nothing(aws: MotoServer, ssh_key: Path, staging: Run) -> None:
    before = login_secrets(aws, "staging")
    token = operator_token(aws, "staging")
    hosts = {n: h["InstanceId"] for n, h in hosts_by_name(aws, "staging").items()}

    rerun = aws.playbook("playbooks/provision.yml", "staging", {"aws_alarms_email": ALARM_EMAIL}, key=ssh_key)

    aws.measurements["staging: rerun"] = (
        f"{rerun.seconds:.1f} s ({rerun.seconds / staging.seconds:.0%} of the first run)"
    )
    assert rerun.recap["changed"] == 0, f"changed: {rerun.changed_tasks}"
    assert rerun.recap["failed"] == 0
    # Passwords, host and port are as the first run left them, and still never printed.
    assert login_secrets(aws, "staging") == before
    assert operator_token(aws, "staging") == token  # generated once, never replaced
    assert_secrets_hold_the_endpoint(aws, "staging")
    assert all(secret["password"] not in rerun.output for secret in before.values())
    assert {n: h["InstanceId"] for n, h in hosts_by_name(aws, "staging").items()} == hosts


def test_the_journal_uploads_are_admitted_from_the_host_groups_alone_and_only_when_asked(
    aws: MotoServer, ssh_key: Path, staging: Run
) -> None:
    """aws_network_monitoring_log_port (role journal_remote's stunnel, 19532): the monitoring group admits it from
    the web and gpu groups by id, never a range; a rerun changes nothing; back to 0, the rule goes."""
    monitoring_sg = security_group(aws, "nnp-staging-monitoring")
    web_id, gpu_id = (security_group(aws, f"nnp-staging-{group}")["GroupId"] for group in ("web", "gpu"))
    extra = {"aws_alarms_email": ALARM_EMAIL, "aws_network_monitoring_log_port": 19532}

    opened = aws.playbook("playbooks/provision.yml", "staging", extra, key=ssh_key)
    admitted = rules(security_group(aws, "nnp-staging-monitoring"))
    rerun = aws.playbook("playbooks/provision.yml", "staging", extra, key=ssh_key)
    closed = aws.playbook("playbooks/provision.yml", "staging", {"aws_alarms_email": ALARM_EMAIL}, key=ssh_key)

    assert opened.recap["failed"] == 0
    assert admitted == rules(monitoring_sg) | {("tcp", 19532, 19532, web_id), ("tcp", 19532, 19532, gpu_id)}
    assert rerun.recap["changed"] == 0, f"changed: {rerun.changed_tasks}"
    assert closed.recap["failed"] == 0
    assert rules(security_group(aws, "nnp-staging-monitoring")) == rules(monitoring_sg)


def test_a_third_web_host_changes_only_the_web_group_and_hand_made_rules_go(
    aws: MotoServer, ssh_key: Path, staging: Run, production_provisioning: Background
) -> None:
    """Through site.yml: the inventory refresh after provisioning must see the new host."""
    before = hosts_by_name(aws, "staging")
    groups = {**STAGING_GROUPS, "web": {**STAGING_GROUPS["web"], "count": 3}}
    web_sg = security_group(aws, "nnp-staging-web")
    # Someone opened SSH to the world by hand: the run must close it again.
    world_ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": ANYWHERE}]}
    aws.client("ec2").authorize_security_group_ingress(GroupId=web_sg["GroupId"], IpPermissions=[world_ssh])
    # ...and took the monitoring host's instance profile off: the run must put it back.
    monitoring_id = before["nnp-staging-monitoring-01"]["InstanceId"]
    (association,) = aws.client("ec2").describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [monitoring_id]}]
    )["IamInstanceProfileAssociations"]
    aws.client("ec2").disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
    assert "IamInstanceProfile" not in hosts_by_name(aws, "staging")["nnp-staging-monitoring-01"]

    run = aws.playbook(
        "site.yml",
        "staging",
        {"aws_alarms_email": ALARM_EMAIL, "ec2_instance_groups": groups},
        key=ssh_key,
        cli_args=("--tags", "provision"),
    )

    expected = {HOSTS_TASK, TARGETS_TASK, ALARMS_TASK, GROUP_SG_TASK}
    assert_only_changed(run, allowed=expected | {WAIT_TASK}, required=expected)
    assert rules(security_group(aws, "nnp-staging-web")) == rules(web_sg)
    after = hosts_by_name(aws, "staging")
    assert after["nnp-staging-monitoring-01"]["IamInstanceProfile"]["Arn"] == (
        f"arn:aws:iam::{ACCOUNT}:instance-profile/nnp-staging-monitoring"
    )
    assert "ec2:AssociateIamInstanceProfile" in {call.action for call in run.calls}
    assert set(after) == set(before) | {"nnp-staging-web-03"}
    assert all(after[name]["InstanceId"] == host["InstanceId"] for name, host in before.items())
    assert after["nnp-staging-web-03"]["Placement"]["AvailabilityZone"] == "eu-central-1a"
    assert aws.client("ec2").describe_addresses(Filters=tag_filters("staging"))["Addresses"] == []
    assert "TASK [Check that every provisioned host is in its group]" in run.output
    assert run.recap["failed"] == 0


def test_back_to_two_larger_web_hosts_changes_only_those(aws: MotoServer, ssh_key: Path, staging: Run) -> None:
    before = hosts_by_name(aws, "staging")
    db_before = database(aws, "staging")
    groups = {**STAGING_GROUPS, "web": {**STAGING_GROUPS["web"], "count": 2, "instance_type": "t3.large"}}

    run = aws.playbook(
        "playbooks/provision.yml",
        "staging",
        {"aws_alarms_email": ALARM_EMAIL, "ec2_instance_groups": groups},
        key=ssh_key,
    )

    assert_only_changed(
        run,
        allowed={SURPLUS_TASK, HOSTS_TASK, TARGETS_TASK, STALE_ALARMS_TASK, WAIT_TASK},
        # AWS deregisters terminated targets itself, so the target group may already be right.
        required={SURPLUS_TASK, HOSTS_TASK, STALE_ALARMS_TASK},
    )
    after = hosts_by_name(aws, "staging")
    assert set(after) == {"nnp-staging-gpu-01", "nnp-staging-monitoring-01", "nnp-staging-web-01", "nnp-staging-web-02"}
    assert all(after[name]["InstanceId"] == before[name]["InstanceId"] for name in after)
    assert {name: h["InstanceType"] for name, h in after.items()} == {
        "nnp-staging-gpu-01": "g5.xlarge",
        "nnp-staging-monitoring-01": "t3.small",
        "nnp-staging-web-01": "t3.large",
        "nnp-staging-web-02": "t3.large",
    }
    alarms = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix="nnp-staging-web-03")["MetricAlarms"]
    assert alarms == []
    assert database(aws, "staging")["DBInstanceClass"] == db_before["DBInstanceClass"]


def test_dynamic_inventory_lists_the_hosts_by_group(aws: MotoServer, staging: Run) -> None:
    """The committed aws_ec2.yml, pointed at moto by AWS_URL alone."""
    run = aws.ansible("ansible-inventory", "-i", "inventories/staging/aws_ec2.yml", "--list")
    assert run.rc == 0, run.output
    inventory = json.loads(run.output[run.output.index("{\n") :])
    hosts = hosts_by_name(aws, "staging")

    def unwrap(value: Any) -> Any:  # ansible-core 2.19 marks unsafe strings in --list output
        return value.get("__ansible_unsafe", value) if isinstance(value, dict) else value

    assert sorted(inventory["web"]["hosts"]) == ["nnp-staging-web-01", "nnp-staging-web-02"]
    assert inventory["gpu"]["hosts"] == ["nnp-staging-gpu-01"]
    assert inventory["monitoring"]["hosts"] == ["nnp-staging-monitoring-01"]
    for name, host in hosts.items():
        hostvars = inventory["_meta"]["hostvars"][name]
        assert unwrap(hostvars["ansible_host"]) == host["PublicIpAddress"]
        assert unwrap(hostvars["instance_id"]) == host["InstanceId"]  # what the lb_target role registers
        # The reservation's owner: the account of the alarm topic's ARN (group_vars/monitoring).
        assert unwrap(hostvars["aws_ec2_owner_id"]) == ACCOUNT
        assert unwrap(hostvars["aws_ec2_private_ip_address"]) == host["PrivateIpAddress"]


def test_the_monitoring_host_sends_alerts_to_the_provisioned_topic_and_discovers_its_environment(
    aws: MotoServer, staging: Run, tmp_path: Path
) -> None:
    """Through the real dynamic inventory (AWS_URL at moto): the monitoring role's checks pass on what it
    resolves, its alertmanager.yml names the alarm topic moto has, and every host's metrics listen on the
    private address that Prometheus's EC2 discovery scrapes."""
    run = aws.ansible(
        "ansible-playbook",
        "-i",
        "inventories/staging",
        "tests/provision/playbooks/monitoring_config.yml",
        "-e",
        json.dumps({"monitoring_config_dir": str(tmp_path)}),
    )
    assert run.rc == 0, run.output[-4000:]
    (topic,) = [
        t["TopicArn"]
        for t in aws.client("sns").list_topics()["Topics"]
        if t["TopicArn"].endswith(":nnp-staging-alarms")
    ]
    hosts = hosts_by_name(aws, "staging")
    resolved = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in hosts}
    alertmanager = yaml.safe_load((tmp_path / "nnp-staging-monitoring-01-alertmanager.yml").read_text())
    prometheus = yaml.safe_load((tmp_path / "nnp-staging-monitoring-01-prometheus.yml").read_text())

    assert resolved["nnp-staging-monitoring-01"]["monitoring_alertmanager_sns_topic_arn"] == topic
    (receiver,) = alertmanager["receivers"]
    (sns,) = receiver["sns_configs"]
    assert (sns["topic_arn"], sns["sigv4"]) == (topic, {"region": "eu-central-1"})  # the instance profile signs
    assert alertmanager["route"]["receiver"] == receiver["name"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for job in ("node", "app", "worker"):
        (discovery,) = jobs[job]["ec2_sd_configs"]
        assert discovery["region"] == "eu-central-1"
        filters = {f["name"]: f["values"] for f in discovery["filters"]}
        assert (filters["tag:Project"], filters["tag:Env"]) == (["nnp"], ["staging"]), job
    assert jobs["probe"]["static_configs"] == [
        {"targets": [f"https://{n}/" for n in FRONT_DOOR["staging"]["aws_front_door_domain_names"]]}
    ]
    assert prometheus["global"]["external_labels"] == {"env": "staging"}
    for name, host in hosts.items():
        settings = resolved[name]
        assert settings["common_node_exporter_address"] == host["PrivateIpAddress"], name
        assert settings["app_worker_metrics_address"] == host["PrivateIpAddress"], name
        ports = {"web": [80, 443, 9100, 9101], "gpu": [9100, 9101], "monitoring": [9100]}[tags_of(host)["Role"]]
        assert settings["common_firewall_allowed_tcp_ports"] == ports, name


def test_a_single_web_host_is_its_own_front_door(
    aws: MotoServer, ssh_key: Path, staging: Run, production_provisioning: Background
) -> None:
    """web down to one host: its Elastic IP replaces the ALB, and its 80/443 are then open to the world."""
    before = hosts_by_name(aws, "staging")
    groups = {**STAGING_GROUPS, "web": {**STAGING_GROUPS["web"], "count": 1}}

    run = aws.playbook(
        "playbooks/provision.yml",
        "staging",
        {"aws_alarms_email": ALARM_EMAIL, "ec2_instance_groups": groups},
        key=ssh_key,
    )

    expected = {
        GROUP_SG_TASK,
        ALB_SG_TASK,
        SURPLUS_TASK,
        EIP_TASK,
        EIP_TAG_TASK,
        STALE_ALB_TASK,
        STALE_TG_TASK,
        EIP_RECORD_TASK,
    }
    assert_only_changed(run, allowed=expected | {STALE_ALARMS_TASK, HOSTS_TASK, WAIT_TASK}, required=expected)
    after = hosts_by_name(aws, "staging")
    assert set(after) == {"nnp-staging-gpu-01", "nnp-staging-monitoring-01", "nnp-staging-web-01"}
    assert after["nnp-staging-gpu-01"]["InstanceId"] == before["nnp-staging-gpu-01"]["InstanceId"]
    (address,) = aws.client("ec2").describe_addresses(Filters=tag_filters("staging"))["Addresses"]
    assert address["InstanceId"] == after["nnp-staging-web-01"]["InstanceId"]
    assert tags_of(address)["Role"] == "web"
    # The names moved from the load balancer to the address: plain A records, nothing left pointing at the ALB.
    names = FRONT_DOOR["staging"]["aws_front_door_domain_names"]
    a_records = {r["Name"]: r for r in zone_records(aws, "staging") if r["Type"] == "A"}
    assert {name: (r.get("AliasTarget"), r["ResourceRecords"], r["TTL"]) for name, r in a_records.items()} == {
        f"{n}.": (None, [{"Value": address["PublicIp"]}], 300) for n in names
    }
    assert environment_resources(aws, "staging")["load balancer"] == []
    assert environment_resources(aws, "staging")["target group"] == []
    assert rules(security_group(aws, "nnp-staging-alb")) == set()
    # Every rule in the account, once production (provisioned in the background) is complete too.
    production_provisioning.result()
    assert_security_groups_pass_the_audit(aws, {"staging": 1, "production": PRODUCTION_GROUPS["web"]["count"]})


def test_production_gets_multi_az_deletion_protection_and_two_weeks_of_backups(
    aws: MotoServer, production_provisioning: Background
) -> None:
    run = production_provisioning.result()

    aws.measurements["production: first provision (beside staging's scaling)"] = f"{run.seconds:.1f} s"
    assert run.recap["failed"] == 0
    db = database(aws, "production")
    assert (db["MultiAZ"], db["DeletionProtection"], db["BackupRetentionPeriod"]) == (True, True, 14)
    assert (db["StorageEncrypted"], db["PubliclyAccessible"], db["DBInstanceClass"]) == (True, False, "db.m7g.large")
    hosts = running_instances(aws, "production")
    expected = sorted(["g5.2xlarge", "t3.small"] + ["t3.large"] * PRODUCTION_GROUPS["web"]["count"])
    assert sorted(h["InstanceType"] for h in hosts) == expected
    assert security_group(aws, "nnp-production-web")["VpcId"] != security_group(aws, "nnp-staging-web")["VpcId"]
    # The whole account: production behind its ALB, staging down to the one web host of the test before.
    assert_security_groups_pass_the_audit(aws, {"staging": 1, "production": PRODUCTION_GROUPS["web"]["count"]})
    assert_secrets_hold_the_endpoint(aws, "production")
    assert_target_group_is_as_the_inventory_says(aws, "production")
    assert_https_front_door(aws, "production")
    passwords = [secret["password"] for secret in login_secrets(aws, "production").values()]
    assert all(password not in r.output for password in passwords for r in aws.runs)


def test_production_rerun_changes_nothing(aws: MotoServer, ssh_key: Path, production_provisioning: Background) -> None:
    """The certificate, its validation records, the listeners and the alias records are found as they are."""
    production_provisioning.result()

    rerun = aws.playbook("playbooks/provision.yml", "production", key=ssh_key)

    aws.measurements["production: rerun"] = f"{rerun.seconds:.1f} s"
    assert rerun.recap["changed"] == 0, f"changed: {rerun.changed_tasks}"
    assert_https_front_door(aws, "production")


@pytest.mark.parametrize(
    ("inventory", "confirm"),
    [("staging", None), ("staging", "production"), ("production", "staging")],
    ids=["staging unconfirmed", "staging confirmed as production", "production confirmed as staging"],
)
def test_teardown_refuses_without_the_matching_confirmation(
    aws: MotoServer, ssh_key: Path, staging: Run, inventory: str, confirm: str | None
) -> None:
    """Static inventory only: the refused run must not send a single request."""
    before = environment_resources(aws, inventory)

    run = aws.playbook(
        "playbooks/teardown.yml",
        inventory,
        {"confirm_destroy": confirm} if confirm else {},
        key=ssh_key,
        static_inventory=True,
        expect_success=False,
    )

    assert run.rc != 0
    assert f"run with -e confirm_destroy={inventory}" in run.output
    assert run.calls == []
    assert environment_resources(aws, inventory) == before


def test_teardown_removes_staging_and_leaves_production(aws: MotoServer, ssh_key: Path, staging: Run) -> None:
    production_before = environment_resources(aws, "production")

    run = aws.playbook("playbooks/teardown.yml", "staging", {"confirm_destroy": "staging"}, key=ssh_key)

    aws.measurements["staging: teardown"] = f"{run.seconds:.1f} s, {run.recap['changed']} changed tasks"
    left = {kind: ids for kind, ids in environment_resources(aws, "staging").items() if ids}
    assert left == {}
    assert aws.client("rds").describe_db_snapshots(DBInstanceIdentifier="nnp-staging")["DBSnapshots"] == []
    assert environment_resources(aws, "production") == production_before


def test_second_teardown_changes_nothing(
    aws: MotoServer, ssh_key: Path, staging: Run, production_teardown: Background
) -> None:
    run = aws.playbook("playbooks/teardown.yml", "staging", {"confirm_destroy": "staging"}, key=ssh_key)

    assert run.recap["changed"] == 0, f"changed: {run.changed_tasks}"


def test_production_teardown_keeps_a_final_snapshot(aws: MotoServer, production_teardown: Background) -> None:
    run = production_teardown.result()

    assert "Deletion protection of the database is off" in run.changed_tasks
    (snapshot,) = aws.client("rds").describe_db_snapshots(DBInstanceIdentifier="nnp-production")["DBSnapshots"]
    assert snapshot["DBSnapshotIdentifier"].startswith("nnp-production-final-")
    secrets = aws.client("secretsmanager").list_secrets(IncludePlannedDeletion=True)["SecretList"]
    assert sorted(s["Name"] for s in secrets) == [
        "nnp/production/app-operator",
        "nnp/production/rds-app",
        "nnp/production/rds-master",
    ]
    assert all(s.get("DeletedDate") for s in secrets), "production secrets stay restorable for 30 days"
    left = {kind: ids for kind, ids in environment_resources(aws, "production").items() if ids}
    assert left == {}


def test_nothing_is_left_in_the_account(aws: MotoServer, staging: Run) -> None:
    """Besides the final snapshot and the secrets in their recovery window, both teardowns left nothing."""
    ec2, rds, elb = aws.client("ec2"), aws.client("rds"), aws.client("elbv2")
    reservations = ec2.describe_instances()["Reservations"]

    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    assert [
        g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []
    assert [i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"] == []
    assert ec2.describe_volumes()["Volumes"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]] == []
    assert rds.describe_db_instances()["DBInstances"] == []
    assert rds.describe_db_subnet_groups()["DBSubnetGroups"] == []
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert aws.client("sns").list_topics()["Topics"] == []
    assert aws.client("secretsmanager").list_secrets()["SecretList"] == []
    assert aws.client("acm").list_certificates()["CertificateSummaryList"] == []
    assert aws.client("iam").list_roles()["Roles"] == []
    assert aws.client("iam").list_instance_profiles()["InstanceProfiles"] == []
    # The given zones stay, holding only their own SOA and NS records.
    route53 = aws.client("route53")
    zones = route53.list_hosted_zones()["HostedZones"]
    assert sorted(z["Name"] for z in zones) == sorted(f"{s['aws_front_door_dns_zone']}." for s in FRONT_DOOR.values())
    for zone in zones:
        records = route53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
        assert sorted(r["Type"] for r in records) == ["NS", "SOA"], zone["Name"]


def env_of(run: Run) -> str | None:
    """The environment of a run, from its inventory argument; None for a run with no environment's
    inventory (test_acm_module.py's runs of the certificate module on the same server)."""
    envs = {match[1] for arg in run.args if (match := re.match(r"inventories/(staging|production)\b", arg))}
    assert len(envs) <= 1, run.args
    return next(iter(envs), None)


def environment_runs(aws: MotoServer) -> list[tuple[str, Run]]:
    return [(env, run) for run in aws.runs if (env := env_of(run)) is not None]


def test_every_aws_action_called_is_in_the_provisioning_policy_of_its_env(aws: MotoServer, staging: Run) -> None:
    called: dict[str, set[str]] = {"staging": set(), "production": set()}
    for env, run in environment_runs(aws):
        called[env] |= {call.action for call in run.calls}

    for env, actions in called.items():
        assert len(actions) > 50, env
        assert actions - policy_actions(env) == set(), f"{env}: called, but not in docs/iam/{env}-provision.json"
    allowed = policy_actions("staging")
    assert policy_actions("production") == allowed, "both environments' policies list the same actions"
    unused = allowed - called["staging"] - called["production"] - NOT_SEEN_IN_TESTS
    assert unused == set(), "actions no playbook calls: remove them or explain them in NOT_SEEN_IN_TESTS"
    seen = len(called["staging"] | called["production"])
    aws.measurements["IAM policy"] = f"{len(allowed)} provisioning actions per environment, {seen} seen called"


def test_every_ec2_creation_carries_the_environment_tags_the_policy_requires(aws: MotoServer, staging: Run) -> None:
    """The provisioning policies allow EC2 creations only with the env's tags on the new resources (tag on create)."""
    kinds = {
        "ec2:CreateVpc": {"vpc"},
        "ec2:CreateSubnet": {"subnet"},
        "ec2:CreateInternetGateway": {"internet-gateway"},
        "ec2:CreateRouteTable": {"route-table"},
        "ec2:CreateSecurityGroup": {"security-group"},
        "ec2:ImportKeyPair": {"key-pair"},
        "ec2:RunInstances": {"instance", "volume"},
    }
    checked = 0
    for env, run in environment_runs(aws):
        for call in run.calls:
            # amazon.aws.ec2_key's temporary "ansible-<uuid>" key pair, imported untagged to compare
            # fingerprints: the policies allow it by that name (Ec2KeyModulesTemporaryKeyPair).
            if call.action == "ec2:ImportKeyPair" and dict(call.params).get("KeyName", "").startswith("ansible-"):
                continue
            if call.action in kinds:
                specs = call.tag_specifications()
                for kind in kinds[call.action]:
                    assert {"Project": PROJECT, "Env": env}.items() <= specs.get(kind, {}).items(), (call.action, specs)
                checked += 1

    assert {call.action for run in aws.runs for call in run.calls} >= kinds.keys()
    assert checked >= len(kinds)
