"""Plain-Python model of kzfilter's precedence, written from README's "Rule semantics" alone.

Used as the oracle for the compiled Classifier: string operations and the ``ipaddress`` module only.
"""
from __future__ import annotations

import ipaddress
from typing import Sequence

from kzfilter.rules.model import ACTION_RANK, Rule

TIER = {"exact": 0, "domain": 1, "wildcard": 1, "keyword": 2}


def name_matches(rule: Rule, name: str) -> bool:
    p = rule.pattern
    if rule.kind == "exact":
        return name == p
    if rule.kind == "domain":
        return name == p or name.endswith("." + p)
    if rule.kind == "wildcard":
        return name.endswith("." + p)
    if rule.kind == "keyword":
        return p in name
    return False


def name_verdict(rules: Sequence[Rule], name: str) -> list[int]:
    """Indices of every rule matching ``name`` (already normalised), best first."""
    hits = [i for i, r in enumerate(rules) if r.kind != "ip" and name_matches(r, name)]
    return sorted(hits, key=lambda i: (TIER[rules[i].kind], -len(rules[i].pattern),
                                       ACTION_RANK[rules[i].action], i))


def ip_verdict(rules: Sequence[Rule], addr: str) -> list[int]:
    """Indices of every address rule covering ``addr``, best first (longest prefix, action, order)."""
    ip = ipaddress.ip_address(addr)
    best: dict[int, int] = {}
    for i, r in enumerate(rules):
        if r.kind != "ip":
            continue
        for net in r.networks:
            if net.version == ip.version and ip in net:
                best[i] = max(best.get(i, -1), net.prefixlen)
    return sorted(best, key=lambda i: (-best[i], ACTION_RANK[rules[i].action], i))
