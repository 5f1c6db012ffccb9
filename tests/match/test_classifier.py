"""The Classifier against the plain-Python verdict model, plus the API contract of issue 2."""
from __future__ import annotations

import ipaddress
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kzfilter
from kzfilter import Rule, RuleSet
from kzfilter.errors import InvalidAddressError, InvalidNameError
from tests.reference.verdict_model import ip_verdict, name_verdict

LABELS = ["a", "b", "ab", "ex", "x-y", "kz", "com", "xn--80ao21a"]
label = st.sampled_from(LABELS)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
action = st.sampled_from(["block", "allow", "monitor"])


@st.composite
def name_rule(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(["exact", "domain", "wildcard", "keyword"]))
    pattern = draw(st.sampled_from(["a", "b", "ex", "kz", "x-y", "b.ex"])) if kind == "keyword" else draw(domain)
    return Rule(pattern, kind=kind, action=draw(action), category=draw(st.sampled_from(["NEWS", "POLR", "PORN"])),
                source=draw(st.sampled_from(["kz", "global", "mine"])))


def query_forms(name: str) -> list[str]:
    """The same name as traffic might carry it: upper case, trailing dot, with a port."""
    return [name, name.upper(), name + ".", name + ":443"]


@settings(max_examples=250, deadline=None)
@given(st.lists(name_rule(), max_size=12), st.lists(domain, min_size=1, max_size=8))
def test_names_match_the_model(rules: list[Rule], names: list[str]) -> None:
    clf = RuleSet(rules).compile()
    for name in names:
        want = name_verdict(rules, name)
        for form in query_forms(name):
            m = clf.match_name(form)
            if not want:
                assert m is None
                continue
            assert m is not None and m.rule_id == want[0], (form, [str(r) for r in rules])
            assert list(m.matched) == [rules[i] for i in want]
            assert m.lists == tuple(dict.fromkeys(rules[i].source for i in want))
        batch = clf.match_names(query_forms(name))
        assert list(batch.rule_id) == [want[0] if want else -1] * 4


@st.composite
def ip_rule(draw: st.DrawFn) -> Rule:
    # Prefixes drawn inside a small region so that they nest and overlap often.
    if draw(st.booleans()):
        length = draw(st.integers(20, 32))
        base = int(ipaddress.IPv4Address("10.1.0.0")) + draw(st.integers(0, 4095))
        net = ipaddress.IPv4Network((base >> (32 - length) << (32 - length), length))
    else:
        length = draw(st.integers(112, 128))
        base = int(ipaddress.IPv6Address("2001:db8::")) + draw(st.integers(0, 65535))
        net = ipaddress.IPv6Network((base >> (128 - length) << (128 - length), length))
    return Rule(str(net), action=draw(action), source=draw(st.sampled_from(["drop", "vpn"])))


@settings(max_examples=200, deadline=None)
@given(st.lists(ip_rule(), max_size=12), st.lists(st.integers(0, 4095), min_size=1, max_size=10))
def test_addresses_match_the_model(rules: list[Rule], offsets: list[int]) -> None:
    clf = RuleSet(rules).compile()
    queries = [str(ipaddress.IPv4Address("10.1.0.0") + o) for o in offsets]
    queries += [str(ipaddress.IPv6Address("2001:db8::") + o * 16) for o in offsets]
    batch = clf.match_ips(queries)
    for q, got in zip(queries, batch.rule_id):
        want = ip_verdict(rules, q)
        m = clf.match_ip(q)
        assert (m.rule_id if m else -1) == (want[0] if want else -1) == got
        if m:
            assert [r for r in m.matched] == [rules[i] for i in want]


def test_precedence_documented_examples() -> None:
    rules = [
        Rule("casino", kind="keyword", category="GMB", source="kw"),
        Rule("example.kz", category="POLR", source="kz"),
        Rule("mail.example.kz", action="allow", source="exceptions"),
        Rule("*.news.example.kz", kind="wildcard", action="monitor", category="NEWS", source="watch"),
        Rule("news.example.kz", kind="exact", category="NEWS", source="kz2"),
        Rule("news.example.kz", kind="exact", action="allow", source="exceptions"),
    ]
    clf = RuleSet(rules).compile()
    assert clf.match_name("Example.KZ.").action == "block"
    assert clf.match_name("a.mail.example.kz").action == "allow"           # longest suffix wins
    assert clf.match_name("news.example.kz").action == "allow"             # exact; allow beats block
    m = clf.match_name("x.news.example.kz")
    assert m.action == "monitor" and m.rule.kind == "wildcard"             # longer suffix than example.kz
    assert m.lists == ("watch", "kz") and m.categories == ("NEWS", "POLR")
    assert clf.match_name("casino-example.kz").category == "GMB"           # keyword, no domain match
    assert clf.match_name("casino.example.kz").category == "POLR"          # domain beats keyword
    assert clf.match_name("badexample.kz") is None                        # label boundary
    assert clf.match_name("news.example.kz").lists == ("exceptions", "kz2", "kz")


def test_idn_rules_and_queries() -> None:
    clf = RuleSet([Rule("сайт.қаз", category="NEWS")]).compile()
    assert clf.rules[0].pattern == "xn--80aswg.xn--80ao21a"
    assert clf.match_name("www.САЙТ.ҚАЗ").category == "NEWS"
    assert clf.match_name("www.xn--80aswg.xn--80ao21a").category == "NEWS"
    assert list(clf.match_names(["www.сайт.қаз", "сайт.kz"]).rule_id) == [0, -1]


def test_invalid_queries() -> None:
    clf = RuleSet([Rule("example.com")]).compile()
    with pytest.raises(InvalidNameError, match="empty label"):
        clf.match_name("a..example.com")
    with pytest.raises(InvalidAddressError):
        clf.match_ip("300.1.1.1")
    r = clf.match_names(["example.com", "bad name.example.com", "x" * 300, "", "ok.example.com"])
    assert list(r.rule_id) == [0, -1, -1, -1, 0]
    assert list(r.status) == [0, 1, 1, 1, 0]


def test_batch_api_shapes_and_actions() -> None:
    rules = [Rule("10.0.0.0/8", source="a"), Rule("10.1.0.0/16", action="allow", source="b"),
             Rule("2001:db8::/32", action="monitor", category="VPN"), Rule("x.kz", category="NEWS")]
    clf = RuleSet(rules).compile()
    r = clf.match_ips(np.array([int(ipaddress.IPv4Address("10.2.0.1")),
                                int(ipaddress.IPv4Address("10.1.0.1")), 1], dtype=np.uint32))
    assert r.rule_id.dtype == np.int32 and list(r.rule_id) == [0, 1, -1]
    assert list(r.action) == ["block", "allow", None]
    v6 = np.frombuffer(ipaddress.IPv6Address("2001:db8::1").packed * 2, np.uint8).reshape(2, 16)
    assert list(clf.match_ips(v6).category) == ["VPN", "VPN"]
    mixed = clf.match_ips(["10.9.9.9", "2001:db8::5", "192.0.2.1", 167837953])
    assert list(mixed.rule_id) == [0, 2, -1, 1]
    names = clf.match_names(np.array([b"a.x.kz", b"y.kz"]))
    assert list(names.rule_id) == [3, -1] and clf.rules[names.rule_id[0]].category == "NEWS"
    buf = b"a.x.kzy.kz"
    packed = clf.match_names_packed(buf, np.array([0, 6, 10], dtype=np.int64))
    assert list(packed.rule_id) == [3, -1]


def test_save_load_and_pickle(tmp_path) -> None:
    rules = [Rule("example.com", category="NEWS", source="l", line=7, revision="2026-06", path="/p",
                  date_added="2020-01-01"),
             Rule("*.x.org", kind="wildcard", action="allow"), Rule("casino", kind="keyword"),
             Rule("192.0.2.0-192.0.2.9", category="DROP"), Rule("2001:db8::/48")]
    clf = RuleSet(rules).compile()
    path = tmp_path / "rules.kzr"
    clf.save(path)
    loaded = kzfilter.Classifier.load(path)
    clone = pickle.loads(pickle.dumps(clf))
    for other in (loaded, clone):
        assert list(other.rules) == rules
        assert other.match_name("www.example.com").rule.line == 7
        assert other.match_ip("192.0.2.9").category == "DROP"
        assert other.match_ip("192.0.2.10") is None
        assert other.match_name("a.x.org").action == "allow"
        assert other.match_name("bigcasino.net").rule == rules[2]
    with pytest.raises(kzfilter.KzfilterError, match="magic"):
        kzfilter.Classifier.from_bytes(b"not a rule file")
    with pytest.raises(kzfilter.KzfilterError, match="truncated"):
        kzfilter.Classifier.from_bytes(clf.to_bytes()[:-10])


def test_ruleset_concatenation_and_empty() -> None:
    a = RuleSet([Rule("a.kz")], skipped={"bad": 1})
    b = RuleSet([Rule("b.kz")], skipped={"bad": 2})
    both = a + b
    assert len(both) == 2 and both.skipped == {"bad": 3}
    empty = RuleSet().compile()
    assert empty.match_name("a.kz") is None and empty.match_ip("1.2.3.4") is None
    assert list(empty.match_names(["a.kz"]).rule_id) == [-1]
