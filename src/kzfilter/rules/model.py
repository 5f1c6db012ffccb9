"""The rule model: what a rule says, where it came from, and how rules rank against each other."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Union

from ..errors import InvalidNameError, RuleSyntaxError
from .normalize import normalize_name

if TYPE_CHECKING:
    from ..match.classifier import Classifier

__all__ = [
    "Rule", "RuleSet", "NAME_KINDS", "KINDS", "ACTIONS", "ACTION_RANK", "IPNetwork",
    "parse_address_pattern",
]

NAME_KINDS = ("exact", "domain", "wildcard", "keyword")
KINDS = NAME_KINDS + ("ip",)
ACTIONS = ("block", "allow", "monitor")
# At equal specificity allow beats block beats monitor: an allow rule is an exception list.
ACTION_RANK = {"allow": 0, "block": 1, "monitor": 2}
# Tiers of name specificity: exact, then domain/wildcard by suffix length, then keywords.
_TIER = {"exact": 0, "domain": 1, "wildcard": 1, "keyword": 2}

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_address_pattern(text: str) -> tuple[str, tuple[IPNetwork, ...]]:
    """Parse an address, a CIDR prefix or an ``a-b`` range into (canonical text, networks).

    Host bits set under a prefix (``10.1.2.3/8``) are an error: such lines are usually typos.
    """
    text = text.strip()
    try:
        if "-" in text:
            lo_text, hi_text = (p.strip() for p in text.split("-", 1))
            lo, hi = ipaddress.ip_address(lo_text), ipaddress.ip_address(hi_text)
            if lo.version != hi.version:
                raise ValueError("range mixes IPv4 and IPv6")
            if int(hi) < int(lo):
                raise ValueError("range end is below its start")
            nets: tuple[IPNetwork, ...] = tuple(
                ipaddress.summarize_address_range(lo, hi))  # type: ignore[arg-type,misc]
            return f"{lo}-{hi}", nets
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise RuleSyntaxError(f"not an IP address, CIDR prefix or range: {exc}") from None
    return (str(net) if "/" in text else str(net.network_address)), (net,)


@dataclass(frozen=True)
class Rule:
    """One rule: a pattern of a kind, with an action, a category and where it came from.

    Parameters:
        pattern: a host name (``example.com``, ``*.example.com`` for wildcard), a keyword, or an
            IPv4/IPv6 address, CIDR prefix or ``first-last`` range.
        kind: "exact", "domain", "wildcard", "keyword" or "ip"; ``None`` infers "ip" for addresses,
            "wildcard" for ``*.`` patterns and "domain" otherwise.
        action: "block", "allow" (an exception that overrides block) or "monitor".
        category: free text; Citizen Lab codes (POLR, HUMR, NEWS, PORN, ...) by convention.
        source: the list the rule came from; line, revision: where in it, and which version.
        path: URL path kept from a Citizen Lab entry (TLS SNI cannot see paths; informational).
        date_added: as given by the list.

    Raises:
        RuleSyntaxError: the pattern is not valid for its kind, or kind/action is unknown.

    Example:
        >>> Rule("News.Example.com.", category="NEWS").pattern
        'news.example.com'
    """

    pattern: str
    kind: str | None = None
    action: str = "block"
    category: str = ""
    source: str = ""
    line: int = 0
    revision: str = ""
    path: str = ""
    date_added: str = ""
    networks: tuple[IPNetwork, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.action not in ACTIONS:
            raise RuleSyntaxError(f"unknown action {self.action!r} (expected one of {', '.join(ACTIONS)})")
        pattern = str(self.pattern).strip()
        kind = self.kind
        if kind is None:
            kind = _infer_kind(pattern)
        if kind not in KINDS:
            raise RuleSyntaxError(f"unknown rule kind {kind!r} (expected one of {', '.join(KINDS)})")
        if kind == "ip":
            canonical, nets = parse_address_pattern(pattern)
            set_(self, "networks", nets)
        elif kind == "keyword":
            canonical = pattern.lower()
            if not canonical or not canonical.isascii() or not canonical.isprintable() or " " in canonical:
                raise RuleSyntaxError(f"keyword {pattern!r} must be non-empty printable ASCII without spaces")
        else:
            if kind == "wildcard" and pattern.startswith("*."):
                pattern = pattern[2:]
            elif pattern.startswith("*."):
                raise RuleSyntaxError(f"pattern {pattern!r} starts with '*.' but kind is {kind!r}")
            try:
                canonical = normalize_name(pattern)
            except InvalidNameError as exc:
                raise RuleSyntaxError(exc.reason + f" in {pattern!r}") from None
        set_(self, "pattern", canonical)
        set_(self, "kind", kind)

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key, smaller wins: (tier, -length, action rank) for names; (0, -prefix length, rank) for IPs."""
        if self.kind == "ip":
            return (0, -max(n.prefixlen for n in self.networks), ACTION_RANK[self.action])
        return (_TIER[self.kind or "domain"], -len(self.pattern), ACTION_RANK[self.action])

    def __str__(self) -> str:
        shown = f"*.{self.pattern}" if self.kind == "wildcard" else self.pattern
        parts = [self.action, self.kind or "", shown]
        if self.category:
            parts.append(self.category)
        if self.source:
            parts.append(f"[{self.source}:{self.line}]" if self.line else f"[{self.source}]")
        return " ".join(parts)


def _infer_kind(pattern: str) -> str:
    if pattern.startswith("*."):
        return "wildcard"
    head = pattern.split("/", 1)[0].split("-", 1)[0].strip()
    try:
        ipaddress.ip_address(head)
    except ValueError:
        return "domain"
    return "ip"


class RuleSet:
    """An ordered, immutable collection of rules; ``compile()`` turns it into a Classifier.

    ``skipped`` counts lines that lenient loaders skipped, by reason, so nothing is dropped silently.

    Example:
        >>> rs = RuleSet([Rule("example.com", category="NEWS")]) + RuleSet([Rule("10.0.0.0/8")])
        >>> len(rs)
        2
    """

    __slots__ = ("_rules", "skipped", "sources")

    def __init__(self, rules: Iterable[Rule] = (), *, skipped: dict[str, int] | None = None,
                 sources: dict[str, str] | None = None) -> None:
        self._rules: tuple[Rule, ...] = tuple(rules)
        for r in self._rules:
            if not isinstance(r, Rule):
                raise TypeError(f"RuleSet holds Rule objects, got {type(r).__name__}")
        self.skipped: dict[str, int] = dict(skipped or {})
        self.sources: dict[str, str] = dict(sources or {})   # list name -> revision

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __getitem__(self, i: int) -> Rule:
        return self._rules[i]

    def __add__(self, other: "RuleSet") -> "RuleSet":
        if not isinstance(other, RuleSet):
            return NotImplemented
        skipped = dict(self.skipped)
        for k, v in other.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
        return RuleSet(self._rules + other._rules, skipped=skipped, sources={**self.sources, **other.sources})

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for r in self._rules:
            kinds[r.kind or ""] = kinds.get(r.kind or "", 0) + 1
        return f"RuleSet({len(self)} rules: {kinds})"

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def compile(self) -> "Classifier":
        """Build the compiled, immutable, picklable Classifier for these rules."""
        from ..match.classifier import Classifier  # lazily: the rule model needs no compiled core

        return Classifier(self)
