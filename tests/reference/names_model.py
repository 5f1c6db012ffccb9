"""Plain-Python reference model of host-name matching: the oracle for match/_automaton.

Deliberately naive (string operations on every rule, no trie), so that it is easy to check by eye:

* exact:    N == P
* domain:   N == P or N ends with "." + P (a label boundary: never ``badexample.com``)
* wildcard: N ends with "." + P (subdomains only, not the apex)
* keyword:  P is a substring of N

The winner is the matching rule with the smallest (priority, rule id).  Traffic names are normalised
with ``kzfilter.rules.normalize.normalize_name``; a name with a non-ASCII byte gets status 2 (the
compiled matcher hands those back to Python for IDNA), any other invalid name status 1.
"""
from __future__ import annotations

from typing import Sequence

from kzfilter.errors import InvalidNameError
from kzfilter.rules.normalize import normalize_name

__all__ = ["NamesModel", "STATUS_OK", "STATUS_INVALID", "STATUS_NON_ASCII", "model_normalize"]

STATUS_OK, STATUS_INVALID, STATUS_NON_ASCII = 0, 1, 2
EXACT, DOMAIN, WILDCARD, KEYWORD = 0, 1, 2, 3


def _raw_bytes(name: str | bytes) -> bytes:
    return name.encode("utf-8", "surrogatepass") if isinstance(name, str) else bytes(name)


def model_normalize(name: str | bytes) -> tuple[str | None, int]:
    """(normalised name or None, status), as the compiled matcher is specified to do it."""
    raw = _raw_bytes(name)
    if any(b >= 0x80 for b in raw):
        return None, STATUS_NON_ASCII
    try:
        return normalize_name(raw), STATUS_OK
    except InvalidNameError:
        return None, STATUS_INVALID


def rule_matches(pattern: str, kind: int, name: str) -> bool:
    """Does one rule match one normalised name?"""
    if kind == EXACT:
        return name == pattern
    if kind == DOMAIN:
        return name == pattern or name.endswith("." + pattern)
    if kind == WILDCARD:
        return name.endswith("." + pattern)
    if kind == KEYWORD:
        return pattern in name
    raise ValueError(f"unknown kind {kind}")


class NamesModel:
    """The rules (patterns[i], kinds[i], priorities[i]) and a linear scan over them."""

    def __init__(self, patterns: Sequence[str | bytes], kinds: Sequence[int], priorities: Sequence[int]):
        self.rules = [
            (p.decode("ascii") if isinstance(p, bytes) else p, int(k), int(pr))
            for p, k, pr in zip(patterns, kinds, priorities)
        ]

    def match_all(self, name: str | bytes) -> tuple[list[int], int]:
        norm, status = model_normalize(name)
        if norm is None:
            return [], status
        hits = [i for i, (p, k, _) in enumerate(self.rules) if rule_matches(p.lower(), k, norm)]
        return sorted(hits, key=lambda i: (self.rules[i][2], i)), STATUS_OK

    def match_one(self, name: str | bytes) -> tuple[int, int]:
        hits, status = self.match_all(name)
        return (hits[0] if hits else -1), status
