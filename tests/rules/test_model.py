"""Rule, RuleSet and normalize_name: kinds, canonical forms, errors with their reasons."""
from __future__ import annotations

import dataclasses
import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzfilter.errors import InvalidNameError, RuleSyntaxError
from kzfilter.rules.model import Rule, RuleSet, parse_address_pattern
from kzfilter.rules.normalize import normalize_name

SETTINGS = settings(max_examples=250, deadline=None)
LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
ASCII_NAME = st.lists(LABEL, min_size=1, max_size=5).map(".".join)
# Lower-case Cyrillic incl. the Kazakh letters (ә ғ қ ң ө ұ ү һ і): the .қаз zone's alphabet.
CYRILLIC_LABEL = st.text("абвгдежзийклмнопрстуфхцчшщъыьэюяәғқңөұүһі", min_size=1, max_size=15)


# --- normalize_name -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),                 # trailing dot of a fully qualified name
    ("example.com:443", "example.com"),              # Host header / SNI-less host:port
    ("Example.COM.:8080", "example.com"),
    ("  news.example.kz \n", "news.example.kz"),
    (b"x.kz:443", "x.kz"),
    ("_dmarc.example.com", "_dmarc.example.com"),
    ("пример.қаз", "xn--e1afmkfd.xn--80ao21a"),      # Kazakh IDN TLD .қаз
    ("ПРИМЕР.ҚАЗ.", "xn--e1afmkfd.xn--80ao21a"),
    ("президент.қаз", "xn--d1abbgf6aiiy.xn--80ao21a"),
    ("faß.de", "xn--fa-hia.de"),                     # IDNA 2008 keeps ß (IDNA 2003 gave fass.de)
    ("a" * 63 + ".kz", "a" * 63 + ".kz"),
])
def test_normalize_name(raw: str | bytes, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize("raw, reason", [
    ("", "empty name"),
    ("  ", "empty name"),
    (".", "empty name"),
    ("a..b", "empty label"),
    (".example.com", "empty label"),
    ("a" * 64 + ".kz", "label longer than 63 characters"),
    (".".join(["a" * 63] * 4), "longer than 253 characters (255)"),
    ("exa mple.com", "character ' ' is not allowed in a host name"),
    ("example.com/path", "character '/' is not allowed in a host name"),
    ("||example.com^", "character '|' is not allowed in a host name"),
    (b"\xff.com", "not UTF-8"),
    ("\u0300abc.com", "not a valid internationalised name (Label begins with an illegal combining character)"),
    ("😀.com", "not a valid internationalised name (Codepoint U+1F600 at position 1 of '😀' not allowed)"),
])
def test_invalid_names_say_why(raw: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        normalize_name(raw)
    assert info.value.reason == reason
    assert str(info.value) == f"invalid host name {raw!r}: {reason}"
    assert isinstance(info.value, ValueError)


@SETTINGS
@given(ASCII_NAME, st.booleans(), st.one_of(st.none(), st.integers(0, 65535)))
def test_ascii_names_round_trip(name: str, dot: bool, port: int | None) -> None:
    decorated = name.upper() + ("." if dot else "") + (f":{port}" if port is not None else "")
    assert normalize_name(decorated) == name
    assert normalize_name(name) == name


@SETTINGS
@given(st.lists(CYRILLIC_LABEL, min_size=1, max_size=3))
def test_cyrillic_idn_matches_stdlib_codec(labels: list[str]) -> None:
    # Python's built-in "idna" codec (IDNA 2003, independent of the idna package) agrees with
    # IDNA 2008 on plain Cyrillic letters, so it is an oracle for them.
    name = ".".join(labels) + ".қаз"
    expected = name.encode("idna").decode("ascii")
    assert normalize_name(name) == expected
    assert normalize_name(name.upper() + ".") == expected
    assert expected.endswith(".xn--80ao21a")


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_any_input_normalises_or_raises_invalid_name(raw: str | bytes) -> None:
    try:
        out = normalize_name(raw)
    except InvalidNameError:
        return
    assert re.fullmatch(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*", out) and len(out) <= 253
    assert normalize_name(out) == out          # idempotent


# --- Rule ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, kind, canonical", [
    ("Example.com", "domain", "example.com"),
    ("*.example.com", "wildcard", "example.com"),
    ("10.0.0.0/8", "ip", "10.0.0.0/8"),
    ("192.0.2.7", "ip", "192.0.2.7"),
    ("2001:DB8::/32", "ip", "2001:db8::/32"),
    ("::1", "ip", "::1"),
    ("192.0.2.1-192.0.2.10", "ip", "192.0.2.1-192.0.2.10"),
    ("2001:db8::1 - 2001:db8::ff", "ip", "2001:db8::1-2001:db8::ff"),
    ("пример.қаз", "domain", "xn--e1afmkfd.xn--80ao21a"),
    ("1.2.3.4.example", "domain", "1.2.3.4.example"),
])
def test_kind_inference(pattern: str, kind: str, canonical: str) -> None:
    rule = Rule(pattern)
    assert (rule.kind, rule.pattern) == (kind, canonical)


def test_rule_fields_and_str() -> None:
    r = Rule("News.Example.com.", category="NEWS", source="kz", line=7, revision="abc", path="/a")
    assert (r.pattern, r.kind, r.action) == ("news.example.com", "domain", "block")
    assert str(r) == "block domain news.example.com NEWS [kz:7]"
    assert Rule("EXAMPLE.com") == Rule("example.com.")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.pattern = "x"  # type: ignore[misc]


def test_str_without_category_has_no_trailing_space() -> None:
    assert str(Rule("*.ads.example", action="allow")) == "allow wildcard *.ads.example"
    assert str(Rule("x.kz", category="NEWS", source="kz", line=3)) == "block domain x.kz NEWS [kz:3]"


def test_exact_and_keyword_kinds() -> None:
    assert Rule("WWW.Example.com", kind="exact").pattern == "www.example.com"
    assert Rule("Casino", kind="keyword").pattern == "casino"
    with pytest.raises(RuleSyntaxError, match=r"keyword 'two words' must be non-empty printable ASCII"):
        Rule("two words", kind="keyword")


@pytest.mark.parametrize("kwargs, message", [
    ({"pattern": "x.kz", "action": "drop"}, "unknown action 'drop' (expected one of block, allow, monitor)"),
    ({"pattern": "x.kz", "kind": "regex"}, "unknown rule kind 'regex' (expected one of exact, domain, wildcard, keyword, ip)"),
    ({"pattern": "*.x.kz", "kind": "domain"}, "pattern '*.x.kz' starts with '*.' but kind is 'domain'"),
    ({"pattern": "a..kz"}, "empty label in 'a..kz'"),
    ({"pattern": "10.1.2.3/8"}, "not an IP address, CIDR prefix or range: 10.1.2.3/8 has host bits set"),
    ({"pattern": "192.0.2.9-192.0.2.1"}, "not an IP address, CIDR prefix or range: range end is below its start"),
    ({"pattern": "::1-192.0.2.1"}, "not an IP address, CIDR prefix or range: range mixes IPv4 and IPv6"),
    ({"pattern": "example.com", "kind": "ip"},
     "not an IP address, CIDR prefix or range: 'example.com' does not appear to be an IPv4 or IPv6 network"),
])
def test_rule_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        Rule(**kwargs)
    assert str(info.value) == message


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(0, 5000))
def test_range_networks_cover_exactly_the_range(lo: int, width: int) -> None:
    hi = min(lo + width, 2**32 - 1)
    a, b = ipaddress.IPv4Address(lo), ipaddress.IPv4Address(hi)
    text, nets = parse_address_pattern(f"{a}-{b}")
    assert text == f"{a}-{b}"
    # Plain model: the networks are disjoint, sorted, contiguous and span lo..hi exactly.
    assert int(nets[0].network_address) == lo and int(nets[-1].broadcast_address) == hi
    for left, right in zip(nets, nets[1:]):
        assert int(left.broadcast_address) + 1 == int(right.network_address)
    assert sum(n.num_addresses for n in nets) == hi - lo + 1


def test_specificity_orders_exact_then_longest_suffix_then_action() -> None:
    rules = [Rule("example.com", kind="keyword"), Rule("example.com"), Rule("a.example.com"),
             Rule("a.example.com", kind="exact"), Rule("a.example.com", action="allow"),
             Rule("a.example.com", action="monitor")]
    ordered = sorted(rules, key=lambda r: r.specificity)
    assert [(r.kind, r.pattern, r.action) for r in ordered] == [
        ("exact", "a.example.com", "block"), ("domain", "a.example.com", "allow"),
        ("domain", "a.example.com", "block"), ("domain", "a.example.com", "monitor"),
        ("domain", "example.com", "block"), ("keyword", "example.com", "block")]
    assert Rule("10.0.0.0/24").specificity < Rule("10.0.0.0/8").specificity


# --- RuleSet -------------------------------------------------------------------------------------

def test_ruleset_add_merges_rules_skips_and_sources() -> None:
    a = RuleSet([Rule("a.kz")], skipped={"bad": 2, "x": 1}, sources={"l1": "r1"})
    b = RuleSet([Rule("10.0.0.0/8"), Rule("b.kz")], skipped={"bad": 3}, sources={"l2": ""})
    c = a + b
    assert [r.pattern for r in c] == ["a.kz", "10.0.0.0/8", "b.kz"]
    assert c.skipped == {"bad": 5, "x": 1} and c.sources == {"l1": "r1", "l2": ""}
    assert a.skipped == {"bad": 2, "x": 1}                  # operands untouched
    assert len(c) == 3 and c[1].kind == "ip" and c.rules == tuple(c)
    assert repr(c) == "RuleSet(3 rules: {'domain': 2, 'ip': 1})"
    assert a.__add__([1]) is NotImplemented  # type: ignore[operator]


def test_ruleset_holds_only_rules() -> None:
    with pytest.raises(TypeError, match="RuleSet holds Rule objects, got str"):
        RuleSet(["example.com"])  # type: ignore[list-item]
