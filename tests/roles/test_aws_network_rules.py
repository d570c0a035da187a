"""aws_network's rule filters: the security group tasks skip ec2_security_group only when both forms agree.

A rerun that skips a group wrongly would leave a hand-made rule in place (the lifecycle test opens SSH to the
world by hand and expects the run to close it); one that never skips only costs time. These cases pin the
comparison both ways, on the shapes ec2_security_group_info returns and the rules the role writes.
"""

from __future__ import annotations

from conftest import load_plugin

rules = load_plugin("aws_network", "filter_plugins", "aws_network_rules")


def perm(port: int, *, cidrs: tuple[str, ...] = (), groups: tuple[str, ...] = (), desc: str | None = None) -> dict:
    described = {"description": desc} if desc else {}
    return {
        "ip_protocol": "tcp",
        "from_port": port,
        "to_port": port,
        "ip_ranges": [{"cidr_ip": cidr, **described} for cidr in cidrs],
        "ipv6_ranges": [],
        "prefix_list_ids": [],
        "user_id_group_pairs": [{"group_id": group, "user_id": "123456789012", **described} for group in groups],
    }


WEB_RULES = [
    {"proto": "tcp", "ports": [22], "cidr_ip": ["203.0.113.0/24"], "rule_desc": "SSH"},
    {"proto": "tcp", "ports": ["443"], "group_id": ["sg-alb"], "rule_desc": "From the ALB"},
]
WEB_PERMISSIONS = [perm(443, groups=("sg-alb",), desc="From the ALB"), perm(22, cidrs=("203.0.113.0/24",), desc="SSH")]


def test_the_same_rules_compare_equal_in_any_order() -> None:
    assert rules.current_rules(WEB_PERMISSIONS) == rules.wanted_rules(WEB_RULES)
    assert rules.current_rules(list(reversed(WEB_PERMISSIONS))) == rules.wanted_rules(WEB_RULES)


def test_a_port_list_and_a_source_list_are_one_rule_each() -> None:
    wanted = [{"proto": "tcp", "ports": [80, 443], "cidr_ip": "0.0.0.0/0", "rule_desc": "HTTP"}]
    current = [perm(80, cidrs=("0.0.0.0/0",), desc="HTTP"), perm(443, cidrs=("0.0.0.0/0",), desc="HTTP")]
    assert rules.current_rules(current) == rules.wanted_rules(wanted)
    db = [{"proto": "tcp", "ports": [5432], "group_id": ["sg-web", "sg-gpu"], "rule_desc": "PostgreSQL"}]
    assert rules.current_rules([perm(5432, groups=("sg-gpu", "sg-web"), desc="PostgreSQL")]) == rules.wanted_rules(db)


def test_a_rule_added_by_hand_a_changed_description_or_a_missing_rule_differ() -> None:
    by_hand = [*WEB_PERMISSIONS, perm(22, cidrs=("0.0.0.0/0",))]
    assert rules.current_rules(by_hand) != rules.wanted_rules(WEB_RULES)
    renamed = [perm(443, groups=("sg-alb",), desc="From the ALB"), perm(22, cidrs=("203.0.113.0/24",), desc="ssh")]
    assert rules.current_rules(renamed) != rules.wanted_rules(WEB_RULES)
    assert rules.current_rules(WEB_PERMISSIONS[:1]) != rules.wanted_rules(WEB_RULES)
    assert rules.current_rules([]) == rules.wanted_rules([]) == []


def test_a_port_range_compares_with_from_and_to_port() -> None:
    wanted = [{"proto": "tcp", "ports": ["8000-8010"], "cidr_ip": "10.0.0.0/8"}]
    current = [{"ip_protocol": "tcp", "from_port": 8000, "to_port": 8010, "ip_ranges": [{"cidr_ip": "10.0.0.0/8"}]}]
    assert rules.current_rules(current) == rules.wanted_rules(wanted)
    assert rules.wanted_rules([{"proto": "tcp", "from_port": 8000, "to_port": 8010, "cidr_ip": "10.0.0.0/8"}]) == (
        rules.current_rules(current)
    )


def test_two_groups_on_one_port_compare_by_group_and_description() -> None:
    """Port 80 of a web group behind an ALB: the ALB's group and the monitoring group, each with its own
    description, in one permission (as AWS returns them); a description moved to the other group differs."""
    wanted = [
        {"proto": "tcp", "ports": ["80"], "group_id": ["sg-alb"], "rule_desc": "From the ALB"},
        {"proto": "tcp", "ports": [80, 9100, 9101], "group_id": ["sg-mon"], "rule_desc": "Metrics"},
    ]
    port_80 = perm(80, groups=("sg-alb",), desc="From the ALB")
    port_80["user_id_group_pairs"].append({"group_id": "sg-mon", "user_id": "123456789012", "description": "Metrics"})
    current = [port_80, perm(9100, groups=("sg-mon",), desc="Metrics"), perm(9101, groups=("sg-mon",), desc="Metrics")]
    assert rules.current_rules(current) == rules.wanted_rules(wanted)
    assert "tcp 80-80 sg-mon Metrics" in rules.wanted_rules(wanted)
    swapped = [
        {
            **port_80,
            "user_id_group_pairs": [{**pair, "description": "Metrics"} for pair in port_80["user_id_group_pairs"]],
        },
        *current[1:],
    ]
    assert rules.current_rules(swapped) != rules.wanted_rules(wanted)
    # The same ports from a CIDR instead of the monitoring group are another rule.
    by_cidr = [
        perm(80, groups=("sg-alb",), desc="From the ALB"),
        *(perm(p, cidrs=("10.0.0.0/8",), desc="Metrics") for p in (80, 9100, 9101)),
    ]
    assert rules.current_rules(by_cidr) != rules.wanted_rules(wanted)
