#!/usr/bin/env python3
"""Write the least-privilege IAM policies of each cloud environment into docs/iam/.

    scripts/iam_policies.py            # (re)write docs/iam/<env>-{provision,deploy}.json
    scripts/iam_policies.py --check    # exit 1 when a committed file differs from what this writes

Two policies per environment (staging, production), built from the inventory's project_name, env_name
and aws_region, so that a policy can only reach the resources of its own environment:

- <env>-provision.json: what provision.yml and teardown.yml call. Resources are scoped by name
  (`<project>-<env>...`, secrets under `<project>/<env>/`, the host groups' IAM roles and instance
  profiles `<project>-<env>-<group>`, passed to EC2 only) where the service names its ARNs after the
  resource; EC2 ARNs carry ids only, so EC2 writes are scoped by the Project/Env tags instead: new
  resources must be created with the environment's tags (aws:RequestTag, tag-on-create), existing ones
  must carry them (aws:ResourceTag).
- <env>-deploy.json: what `site.yml --tags deploy`, rollback.yml and maintenance.yml call, with the
  aws_ec2 inventory: reads, the environment's database logins, its pre-migration snapshots, the
  (de)registration of hosts in its target groups and the deploy history's notifications to its alarm
  topic. Nothing that creates or deletes infrastructure.

The front door's certificate and DNS records (aws_front_door_dns_zone, aws_front_door_domain_names of the
inventory): ACM requests only for the environment's names and with its tags, deletions only of
certificates that carry its tags; Route 53 changes only of A/AAAA/CNAME records whose names are the
environment's names or their ACM validation records (_<hash>.<name>), in whatever zone holds them (the
zone id is the operator's and unknown here), and never another environment's names.

The account is the policy variable ${aws:PrincipalAccount} (the account of the role that uses the
policy), so the files hold no account id and are usable as they are. Actions are listed one by one.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "docs" / "iam"
ENVIRONMENTS = ("staging", "production")
ACCOUNT = "${aws:PrincipalAccount}"

Statement = dict[str, Any]


@dataclass(frozen=True)
class Env:
    project: str
    name: str
    region: str
    # The front door's hosted zone and names (empty: the environment has no zone).
    zone: str = ""
    domain_names: tuple[str, ...] = ()

    @property
    def record_names(self) -> list[str]:
        """Route 53's normalized names (lower case, no final dot) of the front door's records: each name and
        the ACM validation record beneath it (_<hash>.<name>)."""
        names = [name.lower().rstrip(".") for name in self.domain_names]
        return sorted(names + [f"_*.{name}" for name in names])

    @property
    def prefix(self) -> str:
        """Every resource name of the environment starts with this (playbooks/tasks/names.yml)."""
        return f"{self.project}-{self.name}"

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{ACCOUNT if account else ''}:{resource}"

    def ec2(self, *types: str) -> list[str]:
        return [self.arn("ec2", f"{kind}/*") for kind in types]

    @property
    def region_only(self) -> dict[str, Any]:
        return {"StringEquals": {"aws:RequestedRegion": self.region}}

    def tags(self, key: str) -> dict[str, str]:
        """aws:RequestTag/... or aws:ResourceTag/... conditions on the Project and Env tags."""
        return {f"aws:{key}/Project": self.project, f"aws:{key}/Env": self.name}


def load_env(name: str) -> Env:
    """project_name, env_name and aws_region of an inventory (its group_vars/all files)."""
    merged: dict[str, Any] = {}
    for path in sorted((REPO_ROOT / "inventories" / name / "group_vars" / "all").glob("*.yml")):
        merged |= yaml.safe_load(path.read_text()) or {}
    missing = [key for key in ("project_name", "env_name", "aws_region") if not isinstance(merged.get(key), str)]
    if missing:
        raise SystemExit(f"inventories/{name}/group_vars/all sets no plain string for {', '.join(missing)}")
    names = merged.get("aws_front_door_domain_names") or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise SystemExit(f"inventories/{name}/group_vars/all: aws_front_door_domain_names is not a list of names")
    return Env(
        merged["project_name"],
        merged["env_name"],
        merged["aws_region"],
        str(merged.get("aws_front_door_dns_zone") or ""),
        tuple(names),
    )


def statement(
    sid: str, actions: list[str], resources: list[str] | str, condition: dict[str, Any] | None = None
) -> Statement:
    out: Statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def policy(statements: list[Statement]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements}


# EC2 resource types the playbooks create, and the calls that create them with the environment's tags.
EC2_TYPES = ["vpc", "subnet", "internet-gateway", "route-table", "security-group", "key-pair", "instance", "volume"]
EC2_TAGGED_CREATES = [
    "ec2:CreateInternetGateway",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSubnet",
    "ec2:CreateVpc",
    "ec2:ImportKeyPair",
    "ec2:RunInstances",
]

PROVISION_READS = [
    "cloudwatch:DescribeAlarms",
    "ec2:DescribeAddresses",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceAttribute",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstances",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVpcAttribute",
    "ec2:DescribeVpcs",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "rds:DescribeDBInstances",
    "rds:DescribeDBParameterGroups",
    "rds:DescribeDBParameters",
    "rds:DescribeDBSnapshots",
    "rds:DescribeDBSubnetGroups",
    "rds:ListTagsForResource",
    "sns:ListTopics",
]


# What amazon.aws.iam_role, iam_policy and iam_instance_profile call on the roles and profiles of the host
# groups (role aws_compute): look-ups, creation, the inline policy, tags, and the deletions of teardown.
IAM_INSTANCE_ROLE_ACTIONS = [
    "iam:AddRoleToInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:CreateRole",
    "iam:DeleteInstanceProfile",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:GetInstanceProfile",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:ListRolePolicies",
    "iam:PutRolePolicy",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:TagInstanceProfile",
    "iam:TagRole",
    "iam:UntagInstanceProfile",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateRole",
]

# Route 53 is a global service: its requests name us-east-1 as aws:RequestedRegion.
ROUTE53_REGION = "us-east-1"
ACM_READS = ["acm:DescribeCertificate", "acm:ListCertificates", "acm:ListTagsForCertificate"]
ROUTE53_READS = [
    "route53:GetChange",
    "route53:GetHostedZone",
    "route53:ListHostedZones",
    "route53:ListHostedZonesByName",
    "route53:ListResourceRecordSets",
]
# What the front door writes into its zone: alias or plain A (AAAA when dualstack) and ACM's CNAMEs.
RECORD_TYPES = ["A", "AAAA", "CNAME"]


def front_door_statements(env: Env, others: list[Env]) -> list[Statement]:
    """The ALB's certificate (acm_certificate_dns) and the names' records (amazon.aws.route53)."""
    if not env.domain_names:
        return []
    certificates = env.arn("acm", "certificate/*")
    # Another environment's names that this one's patterns would match (staging's beneath production's).
    other_names = sorted(
        {
            name
            for other in others
            for name in other.record_names
            if any(fnmatch.fnmatchcase(name.replace("*", "x"), own) for own in env.record_names)
        }
    )
    records_condition: dict[str, Any] = {
        "ForAllValues:StringLike": {"route53:ChangeResourceRecordSetsNormalizedRecordNames": env.record_names},
        "ForAllValues:StringEquals": {"route53:ChangeResourceRecordSetsRecordTypes": RECORD_TYPES},
    }
    if other_names:
        # "_*.nnp.example.com" would also match staging's "_x.staging.nnp.example.com".
        records_condition["ForAllValues:StringNotLike"] = {
            "route53:ChangeResourceRecordSetsNormalizedRecordNames": other_names
        }
    return [
        statement(
            "Route53ZonesAndRecordsRead",
            ROUTE53_READS,
            "*",
            {"StringEquals": {"aws:RequestedRegion": ROUTE53_REGION}},
        ),
        # ACM authorises RequestCertificate on no resource: the request must name only the environment's
        # names and carry its tags (AddTagsToCertificate is checked for those tags on the new certificate).
        statement(
            "CertificatesRequestedForTheEnvNamesWithItsTags",
            ["acm:RequestCertificate"],
            "*",
            {
                "StringEquals": {"aws:RequestedRegion": env.region, **env.tags("RequestTag")},
                "ForAllValues:StringEquals": {"acm:DomainNames": sorted(name.lower() for name in env.domain_names)},
            },
        ),
        statement(
            "CertificatesTaggedForTheEnv",
            ["acm:AddTagsToCertificate"],
            certificates,
            {"StringEquals": env.tags("RequestTag")},
        ),
        statement(
            "CertificatesOfTheEnvDeleted",
            ["acm:DeleteCertificate"],
            certificates,
            {"StringEquals": env.tags("ResourceTag")},
        ),
        statement(
            "RecordsOfTheEnvNames",
            ["route53:ChangeResourceRecordSets"],
            "arn:aws:route53:::hostedzone/*",
            records_condition,
        ),
    ]


def provision_policy(env: Env, others: list[Env] | None = None) -> dict[str, Any]:
    p = env.prefix
    in_own_env = {"StringEquals": env.tags("ResourceTag")}
    created_with_env_tags = {"StringEquals": env.tags("RequestTag")}
    return policy(
        [
            statement("ReadInTheRegion", PROVISION_READS + ACM_READS, "*", env.region_only),
            statement("WhoAmI", ["sts:GetCallerIdentity"], "*"),
            # EC2 names its ARNs by id: creation must carry the environment's tags (checked on the new
            # resource), and the network a new resource goes into must already carry them.
            statement("Ec2VpcCreatedWithTheEnvTags", ["ec2:CreateVpc"], env.ec2("vpc"), created_with_env_tags),
            statement(
                "Ec2NetworkPartsCreatedWithTheEnvTags",
                ["ec2:CreateInternetGateway", "ec2:CreateRouteTable", "ec2:CreateSecurityGroup", "ec2:CreateSubnet"],
                env.ec2("internet-gateway", "route-table", "security-group", "subnet"),
                created_with_env_tags,
            ),
            statement(
                "Ec2NetworkPartsOnlyInTheEnvVpc",
                ["ec2:CreateRouteTable", "ec2:CreateSecurityGroup", "ec2:CreateSubnet"],
                env.ec2("vpc"),
                in_own_env,
            ),
            # Key pair ARNs carry the name: the environment's key pair by name and with its tags.
            statement(
                "Ec2KeyPairCreatedWithTheEnvTags",
                ["ec2:ImportKeyPair"],
                env.arn("ec2", f"key-pair/{p}"),
                created_with_env_tags,
            ),
            # amazon.aws.ec2_key compares an existing key pair by importing the key material as a
            # temporary, untagged "ansible-<uuid>" key pair and deleting it again, on every run.
            statement(
                "Ec2KeyModulesTemporaryKeyPair",
                ["ec2:DeleteKeyPair", "ec2:ImportKeyPair"],
                env.arn("ec2", "key-pair/ansible-*"),
            ),
            statement(
                "Ec2HostsAndVolumesCreatedWithTheEnvTags",
                ["ec2:RunInstances"],
                env.ec2("instance", "volume"),
                created_with_env_tags,
            ),
            statement(
                "Ec2HostsOnlyInTheEnvSubnetsGroupsAndKey",
                ["ec2:RunInstances"],
                env.ec2("subnet", "security-group", "key-pair"),
                in_own_env,
            ),
            # The host's network interface is created by the same call and cannot be tagged by the
            # playbooks' ec2_instance; images are public (Canonical's, the Deep Learning AMI).
            statement(
                "Ec2HostsFromPublicImagesWithNewInterfaces",
                ["ec2:RunInstances"],
                [env.arn("ec2", "image/*", account=False), *env.ec2("network-interface")],
            ),
            statement(
                "Ec2ChangeOnlyWhatCarriesTheEnvTags",
                [
                    "ec2:AssociateAddress",
                    "ec2:AssociateIamInstanceProfile",
                    "ec2:AssociateRouteTable",
                    "ec2:AttachInternetGateway",
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:CreateRoute",
                    "ec2:DeleteInternetGateway",
                    "ec2:DeleteKeyPair",
                    "ec2:DeleteRoute",
                    "ec2:DeleteRouteTable",
                    "ec2:DeleteSecurityGroup",
                    "ec2:DeleteSubnet",
                    "ec2:DeleteTags",
                    "ec2:DeleteVpc",
                    "ec2:DetachInternetGateway",
                    "ec2:DisassociateAddress",
                    "ec2:DisassociateRouteTable",
                    "ec2:ModifyInstanceAttribute",
                    "ec2:ModifyInstanceMetadataOptions",
                    "ec2:ModifySubnetAttribute",
                    "ec2:ModifyVpcAttribute",
                    "ec2:ReleaseAddress",
                    "ec2:ReplaceRoute",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:StartInstances",
                    "ec2:StopInstances",
                    "ec2:TerminateInstances",
                ],
                env.ec2(*EC2_TYPES, "elastic-ip"),
                in_own_env,
            ),
            # Security group rules are new resources of their own (ids only, untagged by the playbooks).
            statement(
                "Ec2RulesOfTheEnvGroups",
                ["ec2:AuthorizeSecurityGroupIngress"],
                env.ec2("security-group-rule"),
            ),
            # ec2_eip allocates an address and associates it before ec2_tag tags it (front_doors.yml):
            # only an untagged address may be taken without the tags, and only onto a host of this env.
            statement("Ec2AllocateAddresses", ["ec2:AllocateAddress"], env.ec2("elastic-ip")),
            statement(
                "Ec2AssociateUntaggedNewAddresses",
                ["ec2:AssociateAddress"],
                env.ec2("elastic-ip"),
                {"Null": {"aws:ResourceTag/Env": "true"}},
            ),
            statement(
                "Ec2TagOnCreateWithTheEnvTags",
                ["ec2:CreateTags"],
                env.ec2(*EC2_TYPES),
                # ec2:CreateAction holds the API name alone ("RunInstances"), without the service prefix.
                {
                    "StringEquals": {
                        **env.tags("RequestTag"),
                        "ec2:CreateAction": [action.split(":", 1)[1] for action in EC2_TAGGED_CREATES],
                    }
                },
            ),
            statement(
                "Ec2RetagOnlyWithinTheEnv",
                ["ec2:CreateTags"],
                env.ec2(*EC2_TYPES, "elastic-ip"),
                {"StringEquals": env.tags("ResourceTag"), "StringEqualsIfExists": env.tags("RequestTag")},
            ),
            statement(
                "Ec2TagNewAddressesForTheEnv",
                ["ec2:CreateTags"],
                env.ec2("elastic-ip"),
                {"Null": {"aws:ResourceTag/Env": "true"}, "StringEquals": env.tags("RequestTag")},
            ),
            statement(
                "LoadBalancersOfTheEnv",
                [
                    "elasticloadbalancing:AddTags",
                    "elasticloadbalancing:CreateListener",
                    "elasticloadbalancing:CreateLoadBalancer",
                    "elasticloadbalancing:CreateTargetGroup",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:DeleteLoadBalancer",
                    "elasticloadbalancing:DeleteTargetGroup",
                    "elasticloadbalancing:DeregisterTargets",
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes",
                    "elasticloadbalancing:RegisterTargets",
                    "elasticloadbalancing:RemoveTags",
                ],
                [
                    env.arn("elasticloadbalancing", f"loadbalancer/app/{p}-*/*"),
                    env.arn("elasticloadbalancing", f"listener/app/{p}-*/*/*"),
                    env.arn("elasticloadbalancing", f"targetgroup/{p}-*/*"),
                ],
            ),
            statement(
                "DatabaseOfTheEnv",
                [
                    "rds:AddTagsToResource",
                    "rds:CreateDBInstance",
                    "rds:CreateDBParameterGroup",
                    "rds:CreateDBSnapshot",
                    "rds:CreateDBSubnetGroup",
                    "rds:DeleteDBInstance",
                    "rds:DeleteDBParameterGroup",
                    "rds:DeleteDBSubnetGroup",
                    "rds:ModifyDBInstance",
                    "rds:ModifyDBParameterGroup",
                    "rds:ModifyDBSubnetGroup",
                    "rds:RemoveTagsFromResource",
                ],
                [
                    env.arn("rds", f"db:{p}"),
                    env.arn("rds", f"snapshot:{p}-*"),
                    env.arn("rds", f"subgrp:{p}"),
                    env.arn("rds", f"pg:{p}-*"),
                ],
            ),
            # The instance may use the engine's default parameter and option groups (never changed).
            statement(
                "DatabaseOnDefaultGroups",
                ["rds:CreateDBInstance", "rds:ModifyDBInstance"],
                [env.arn("rds", "pg:default.*"), env.arn("rds", "og:default:*")],
            ),
            statement(
                "DatabaseLoginsOfTheEnv",
                [
                    "secretsmanager:CreateSecret",
                    "secretsmanager:DeleteSecret",
                    "secretsmanager:DescribeSecret",
                    "secretsmanager:GetResourcePolicy",
                    "secretsmanager:GetSecretValue",
                    "secretsmanager:RestoreSecret",
                    "secretsmanager:TagResource",
                    "secretsmanager:UntagResource",
                    "secretsmanager:UpdateSecret",
                ],
                env.arn("secretsmanager", f"secret:{env.project}/{env.name}/*"),
            ),
            statement(
                "AlarmsAndTheirTopicOfTheEnv",
                [
                    "cloudwatch:DeleteAlarms",
                    "cloudwatch:PutMetricAlarm",
                    "sns:CreateTopic",
                    "sns:DeleteTopic",
                    "sns:GetTopicAttributes",
                    "sns:ListSubscriptionsByTopic",
                    "sns:ListTagsForResource",
                    "sns:SetTopicAttributes",
                    "sns:Subscribe",
                    "sns:TagResource",
                    "sns:UntagResource",
                ],
                [env.arn("cloudwatch", f"alarm:{p}-*"), env.arn("sns", f"{p}-*")],
            ),
            # SNS authorises Unsubscribe on no resource type: a statement of its own on "*", in the region.
            statement("UnsubscribeFromTheAlarmTopic", ["sns:Unsubscribe"], "*", env.region_only),
            # The IAM role and instance profile of each host group with a policy (aws_compute_group_policies:
            # the monitoring hosts'), <prefix>-<group>. IAM names are the account's: the prefix scopes them.
            # Creating them with tags is also authorised as TagRole / TagInstanceProfile.
            statement(
                "InstanceRolesAndProfilesOfTheEnv",
                IAM_INSTANCE_ROLE_ACTIONS,
                [env.arn("iam", f"role/{p}-*", region=False), env.arn("iam", f"instance-profile/{p}-*", region=False)],
            ),
            # Launching a host with its group's profile (or associating it) passes the role, to EC2 only.
            statement(
                "PassTheEnvRolesToEc2Only",
                ["iam:PassRole"],
                env.arn("iam", f"role/{p}-*", region=False),
                {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            ),
            # AWS creates these with the account's first ALB and RDS instance; they are the account's,
            # not the environment's, and only these two may be created.
            statement(
                "ServiceRolesOfAlbAndRds",
                ["iam:CreateServiceLinkedRole"],
                [
                    env.arn(
                        "iam",
                        f"role/aws-service-role/{service}.amazonaws.com/AWSServiceRoleFor{role}",
                        region=False,
                    )
                    for service, role in (("elasticloadbalancing", "ElasticLoadBalancing"), ("rds", "RDS"))
                ],
                {"StringEquals": {"iam:AWSServiceName": ["elasticloadbalancing.amazonaws.com", "rds.amazonaws.com"]}},
            ),
            *front_door_statements(env, others or []),
        ]
    )


def deploy_policy(env: Env) -> dict[str, Any]:
    p = env.prefix
    return policy(
        [
            # The aws_ec2 inventory, the snapshot module's look-ups and elb_target's waits.
            statement(
                "ReadInTheRegion",
                [
                    "ec2:DescribeInstances",
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetHealth",
                    "rds:DescribeDBInstances",
                    "rds:DescribeDBSnapshots",
                ],
                "*",
                env.region_only,
            ),
            # Snapshot look-ups (rds_instance_snapshot, rds_snapshot_info when pruning) read the tags of
            # every snapshot of the instance: manual ones and the automated rds:<instance>-... ones.
            statement(
                "TagsOfTheEnvDatabaseAndItsSnapshots",
                ["rds:ListTagsForResource"],
                [env.arn("rds", f"db:{p}"), env.arn("rds", f"snapshot:{p}-*"), env.arn("rds", f"snapshot:rds:{p}-*")],
            ),
            statement(
                "DatabaseLoginsOfTheEnv",
                ["secretsmanager:GetSecretValue"],
                env.arn("secretsmanager", f"secret:{env.project}/{env.name}/*"),
            ),
            # Pre-migration snapshots only (<prefix>-pre-...): never the final or automated ones.
            statement(
                "PreMigrationSnapshotsOfTheEnvDatabase",
                ["rds:CreateDBSnapshot"],
                [env.arn("rds", f"db:{p}"), env.arn("rds", f"snapshot:{p}-pre-*")],
            ),
            statement(
                "PrunePreMigrationSnapshots",
                ["rds:DeleteDBSnapshot"],
                env.arn("rds", f"snapshot:{p}-pre-*"),
            ),
            statement(
                "HostsInAndOutOfTheEnvTargetGroups",
                ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"],
                env.arn("elasticloadbalancing", f"targetgroup/{p}-*/*"),
            ),
            # The deploy history's notifications (role deploy_history): start, success, failure of each run.
            statement("NotifyTheEnvAlarmTopic", ["sns:Publish"], env.arn("sns", f"{p}-alarms")),
        ]
    )


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def generated() -> dict[Path, str]:
    """Every policy file this script writes, by path, with its content."""
    files: dict[Path, str] = {}
    envs = {name: load_env(name) for name in ENVIRONMENTS}
    for name, env in envs.items():
        others = [other for other_name, other in envs.items() if other_name != name]
        files[OUT_DIR / f"{name}-provision.json"] = render(provision_policy(env, others))
        files[OUT_DIR / f"{name}-deploy.json"] = render(deploy_policy(env))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare the committed files with the output")
    args = parser.parse_args(argv)
    files = generated()
    if args.check:
        stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(REPO_ROOT)} differs from scripts/iam_policies.py's output", file=sys.stderr)
        return 1 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
