"""Security group rules in one comparable form, so a rerun can skip ec2_security_group when nothing differs.

Both filters give a sorted list of "protocol from-to source description" strings, one per source and port
range: the form amazon.aws.ec2_security_group compares rules in (with purge_rules, the default).
  current: the ip_permissions of amazon.aws.ec2_security_group_info
  wanted:  the rules option of amazon.aws.ec2_security_group (proto, ports or from_port/to_port,
           cidr_ip or group_id as a string or a list, rule_desc)
"""

from __future__ import annotations

from typing import Any


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _entry(proto: Any, start: Any, end: Any, source: Any, description: Any) -> str:
    ports = f"{start}-{end}" if start is not None and end is not None else "all"
    return f"{proto} {ports} {source} {description or ''}".rstrip()


def current_rules(ip_permissions: list[dict[str, Any]]) -> list[str]:
    out = []
    for perm in ip_permissions or []:
        proto, start, end = perm.get("ip_protocol"), perm.get("from_port"), perm.get("to_port")
        sources = [(r["cidr_ip"], r.get("description")) for r in perm.get("ip_ranges") or []]
        sources += [(r["cidr_ipv6"], r.get("description")) for r in perm.get("ipv6_ranges") or []]
        sources += [(p["prefix_list_id"], p.get("description")) for p in perm.get("prefix_list_ids") or []]
        sources += [(p["group_id"], p.get("description")) for p in perm.get("user_id_group_pairs") or []]
        out += [_entry(proto, start, end, source, description) for source, description in sources]
    return sorted(out)


def wanted_rules(rules: list[dict[str, Any]]) -> list[str]:
    out = []
    for rule in rules or []:
        sources = _as_list(rule.get("cidr_ip")) + _as_list(rule.get("group_id"))
        if "ports" in rule:
            ranges = []
            for port in _as_list(rule["ports"]):
                start, _, end = str(port).partition("-")
                ranges.append((int(start), int(end or start)))
        else:
            ranges = [(rule.get("from_port"), rule.get("to_port"))]
        out += [
            _entry(rule.get("proto"), start, end, source, rule.get("rule_desc"))
            for start, end in ranges
            for source in sources
        ]
    return sorted(set(out))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"aws_network_current_rules": current_rules, "aws_network_wanted_rules": wanted_rules}
