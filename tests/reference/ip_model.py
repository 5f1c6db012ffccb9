"""Plain-Python oracle for the IP prefix matcher, built on the standard ``ipaddress`` module.

For an address: every rule with a prefix that covers it, ordered best first by (longest prefix,
smaller priority, smaller rule id), each rule once; the winner is the first of them, or -1.
Slow on purpose (a linear scan of ``ipaddress`` networks): it shares no code or idea with the
flattened intervals of ``kzfilter.match._prefixes``.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence, Union

Address = Union[int, ipaddress.IPv4Address, ipaddress.IPv6Address]


class IPModel:
    """prefixes: (network text or ip_network, rule id) pairs; priorities: indexed by rule id."""

    def __init__(self, prefixes: Iterable[tuple[object, int]], priorities: Sequence[int]) -> None:
        self.priorities = list(priorities)
        self.v4: list[tuple[ipaddress.IPv4Network, int]] = []
        self.v6: list[tuple[ipaddress.IPv6Network, int]] = []
        for net, rule in prefixes:
            n = ipaddress.ip_network(net, strict=True)
            (self.v4 if n.version == 4 else self.v6).append((n, rule))  # type: ignore[arg-type]

    def covering(self, version: int, addr: Address) -> list[int]:
        a = ipaddress.ip_address(int(addr)) if version == 4 else ipaddress.IPv6Address(int(addr))
        hits = [(n.prefixlen, rule) for n, rule in (self.v4 if version == 4 else self.v6) if a in n]
        hits.sort(key=lambda h: (-h[0], self.priorities[h[1]], h[1]))
        out: list[int] = []
        for _, rule in hits:
            if rule not in out:
                out.append(rule)
        return out

    def winner(self, version: int, addr: Address) -> int:
        c = self.covering(version, addr)
        return c[0] if c else -1
