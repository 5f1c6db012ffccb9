"""Rule-list loaders: every real shared list loads strictly, each format's lines, every error kind."""
from __future__ import annotations

import csv
import io
import ipaddress
import re
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzfilter.errors import RuleSyntaxError
from kzfilter.rules.loaders import FORMATS, detect_format, load_rules
from kzfilter.rules.model import RuleSet
from tests.conftest import shared_path

# (path under shared/data/lists, format, number of rules: the counts from lists/README.md where it
# gives them, else counted by hand with grep -vc '^#').
REAL_LISTS = [
    ("citizenlab/kz.csv", "citizenlab", 553), ("citizenlab/global.csv", "citizenlab", 1722),
    ("citizenlab/ru.csv", "citizenlab", 1093), ("citizenlab/br.csv", "citizenlab", 1013),
    ("citizenlab/ir.csv", "citizenlab", 903), ("citizenlab/cn.csv", "citizenlab", 594),
    ("citizenlab/by.csv", "citizenlab", 465), ("citizenlab/tr.csv", "citizenlab", 426),
    ("citizenlab/uz.csv", "citizenlab", 338), ("citizenlab/kg.csv", "citizenlab", 167),
    ("citizenlab/tj.csv", "citizenlab", 29), ("citizenlab/cy.csv", "citizenlab", 1),
    ("domains/blocklistproject/phishing-nl.txt", "domains", 190215),
    ("domains/blocklistproject/tracking-nl.txt", "domains", 143876),
    ("domains/blocklistproject/scam-nl.txt", "domains", 8527),
    ("domains/ut1/gambling.domains", "domains", 32247), ("domains/ut1/cryptojacking.domains", "domains", 11491),
    ("domains/ut1/dating.domains", "domains", 6504), ("domains/ut1/vpn.domains", "domains", 6039),
    ("domains/ut1/press.domains", "domains", 4644), ("domains/ut1/shortener.domains", "domains", 4558),
    ("domains/ut1/doh.domains", "domains", 3015), ("domains/ut1/dynamic-dns.domains", "domains", 2077),
    ("domains/ut1/social_networks.domains", "domains", 715),
    ("ip/ipsum/ipsum.txt", "netset", 120430),
    ("ip/blocklistproject/malware.ip", "netset", 20907), ("ip/blocklistproject/abuse.ip", "netset", 19926),
    ("ip/x4bnet-vpn/vpn-ipv4.txt", "netset", 10862), ("ip/x4bnet-vpn/vpn-ipv6.txt", "netset", 498),
    ("ip/x4bnet-vpn/datacenter-ipv4.txt", "netset", 42566), ("ip/x4bnet-vpn/datacenter-ipv6.txt", "netset", 8752),
    ("ip/country-ip-blocks/ipv4-kz.cidr", "netset", 560), ("ip/country-ip-blocks/ipv6-kz.cidr", "netset", 84),
    ("ip/country-ip-blocks/ipv4-ru.cidr", "netset", 8472), ("ip/country-ip-blocks/ipv6-ru.cidr", "netset", 2192),
    ("ip/country-ip-blocks/ipv4-cn.cidr", "netset", 5493), ("ip/country-ip-blocks/ipv6-cn.cidr", "netset", 2022),
    ("ip/country-ip-blocks/ipv4-ir.cidr", "netset", 1690), ("ip/country-ip-blocks/ipv6-ir.cidr", "netset", 560),
    ("ip/country-ip-blocks/ipv4-by.cidr", "netset", 98), ("ip/country-ip-blocks/ipv6-by.cidr", "netset", 31),
]


@pytest.fixture(scope="module")
def real() -> Callable[[str], RuleSet]:
    """Load each shared list once per test module (the big ones take seconds)."""
    cache: dict[str, RuleSet] = {}

    def get(rel: str) -> RuleSet:
        if rel not in cache:
            cache[rel] = load_rules(shared_path("lists", *rel.split("/")))      # strict
        return cache[rel]
    return get


def _data_lines(path: Path, fmt: str) -> int:
    """Independent count of data lines: CSV rows minus the header, or non-comment non-blank lines."""
    if fmt == "citizenlab":
        with open(path, newline="", encoding="utf-8") as fh:
            return sum(1 for row in csv.reader(fh) if row) - 1
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip() and line.strip()[0] not in "#!;")


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _networks_covering(rules: RuleSet, address: str) -> list[str]:
    addr = ipaddress.ip_address(address)
    return [r.pattern for r in rules if r.kind == "ip" and any(addr in n for n in r.networks)]


# --- the real lists ------------------------------------------------------------------------------

def test_every_shared_list_is_covered() -> None:
    root = shared_path("lists")
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*")
               if p.is_file() and (p.suffix in (".csv", ".txt", ".domains", ".ip", ".cidr"))
               and "00-LEGEND" not in p.name and "LICENSE" not in p.name}
    assert on_disk == {rel for rel, _, _ in REAL_LISTS}


@pytest.mark.parametrize("rel, fmt, count", REAL_LISTS, ids=[r for r, _, _ in REAL_LISTS])
def test_real_list_loads_strictly_and_loses_nothing(real: Callable[[str], RuleSet], rel: str, fmt: str,
                                                    count: int) -> None:
    path = shared_path("lists", *rel.split("/"))
    assert detect_format(path) == fmt
    rules = real(rel)
    assert rules.skipped == {}
    assert len(rules) == count == _data_lines(path, fmt)
    assert rules.sources == {path.stem: ""}
    assert all(r.source == path.stem and r.line > 0 for r in rules)
    if fmt == "netset":
        assert all(r.kind == "ip" for r in rules)


def test_kz_citizenlab_entries(real: Callable[[str], RuleSet]) -> None:
    rules = real("citizenlab/kz.csv")
    first = rules[0]
    # http://www.akorda.kz/,CULTR,Culture,2014-04-15  -> the site akorda.kz (www. stands for it)
    assert (first.pattern, first.kind, first.category, first.line, first.date_added, first.path) == \
        ("akorda.kz", "domain", "CULTR", 2, "2014-04-15", "/")
    blogos = [r for r in rules if r.pattern == "blogos.kz"]
    assert [(r.category, r.line) for r in blogos] == [("HOST", 5)]
    assert not any(r.pattern.startswith("www.") for r in rules)
    assert sum(1 for r in rules if r.category == "NEWS") > 50
    assert not any(r.pattern == "google.com" for r in rules)


def test_www_covers_bare_false_keeps_www(tmp_path: Path) -> None:
    path = shared_path("lists", "citizenlab", "kz.csv")
    rules = load_rules(path, www_covers_bare=False)
    assert rules[0].pattern == "www.akorda.kz"
    with open(path, newline="", encoding="utf-8") as fh:
        expected = sum(1 for row in csv.DictReader(fh) if "://www." in row["url"])
    assert sum(1 for r in rules if r.pattern.startswith("www.")) == expected == 168


def test_global_citizenlab_ip_hosts_and_paths(real: Callable[[str], RuleSet]) -> None:
    rules = real("citizenlab/global.csv")
    doh = [r for r in rules if r.pattern == "1.1.1.1"]
    assert [(r.kind, r.line, r.category) for r in doh] == [("ip", 885, "HOST"), ("ip", 1596, "ANON")]
    assert doh[0].path == "/dns-query?dns=q80BAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"
    port = [r for r in real("citizenlab/cn.csv") if r.line == 496]
    assert [(r.pattern, r.kind, r.category) for r in port] == [("rescue.sitiits.com", "domain", "PUBH")]


def test_ipsum_known_and_unknown_addresses(real: Callable[[str], RuleSet]) -> None:
    rules = real("ip/ipsum/ipsum.txt")
    assert (rules[0].pattern, rules[0].line) == ("77.90.185.20", 8)
    patterns = {r.pattern for r in rules}
    assert "77.239.124.102" in patterns
    assert "192.0.2.1" not in patterns and "8.8.8.8" not in patterns
    assert all(r.networks[0].prefixlen == 32 for r in rules)


def test_ipv6_prefix_lists(real: Callable[[str], RuleSet]) -> None:
    kz6 = real("ip/country-ip-blocks/ipv6-kz.cidr")
    assert _networks_covering(kz6, "2001:678:98:1::5") == ["2001:678:98::/48"]
    assert _networks_covering(kz6, "2001:db8::1") == []
    vpn6 = real("ip/x4bnet-vpn/vpn-ipv6.txt")
    assert vpn6[0].pattern == "2001:550:1d05::/48" and vpn6[0].networks[0].version == 6
    kz4 = real("ip/country-ip-blocks/ipv4-kz.cidr")
    assert _networks_covering(kz4, "2.72.1.1") == ["2.72.0.0/13"]
    assert _networks_covering(kz4, "8.8.8.8") == []


def test_domain_lists_entries(real: Callable[[str], RuleSet]) -> None:
    phishing = real("domains/blocklistproject/phishing-nl.txt")
    assert (phishing[0].pattern, phishing[0].kind, phishing[0].line) == \
        ("0.01.2.13.3.sydneypropertyinvestors.com", "domain", 14)
    names = {r.pattern for r in phishing}
    assert "google.com" not in names and "kaspi.kz" not in names
    ddns = real("domains/ut1/dynamic-dns.domains")
    assert (ddns[0].pattern, ddns[0].kind, ddns[0].line) == ("afshin.ir", "domain", 1)     # ".afshin.ir"
    doh = real("domains/ut1/doh.domains")
    assert [(r.kind, r.line) for r in doh if r.pattern == "1.1.1.1"] == [("ip", 7)]
    assert sum(1 for r in doh if r.kind == "ip") == 19


# --- formats, one by one -------------------------------------------------------------------------

def test_citizenlab_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv", (
        "url,category_code,category_description,date_added,source,notes\n"
        "https://www.example.com/,FEXP,old code,2015-01-01,x,\n"          # old code -> NEWS
        "http://Пример.ҚАЗ:8080/жол?q=1#frag,polr,Political Criticism,2020-02-02,x,\"a, b\"\n"
        "http://[2001:db8::7]/,NEWS,News Media,2021-01-01,x,\n"
        "https://www.kz/,NEWS,News Media,2021-01-01,x,\n"                 # never strip to a bare TLD
        "\n"
        "http://multi.example/,HUMR,Human Rights Issues,2022-03-03,x,\"line one\nline two\"\n"
        "http://after.example/,GMB,Gambling,2022-03-03,x,\n"))
    rules = load_rules(path, category="IGNORED", revision="rev1")
    got = [(r.pattern, r.kind, r.category, r.line, r.date_added, r.path) for r in rules]
    assert got == [
        ("example.com", "domain", "NEWS", 2, "2015-01-01", "/"),
        ("xn--e1afmkfd.xn--80ao21a", "domain", "POLR", 3, "2020-02-02", "/жол?q=1"),
        ("2001:db8::7", "ip", "NEWS", 4, "2021-01-01", "/"),
        ("www.kz", "domain", "NEWS", 5, "2021-01-01", "/"),
        ("multi.example", "domain", "HUMR", 7, "2022-03-03", "/"),
        ("after.example", "domain", "GMB", 9, "2022-03-03", "/"),
    ]
    assert all(r.source == "t" and r.revision == "rev1" for r in rules)
    assert rules.sources == {"t": "rev1"}


def test_hosts_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts", (
        "# comment\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        "255.255.255.255 broadcasthost\n0.0.0.0 0.0.0.0\n\n"
        "0.0.0.0 ads.example.com\n127.0.0.1 a.com b.com  # trailing comment\n"
        "0.0.0.0\tTracker.Example.NET.\n"))
    assert detect_format(path) == "hosts"
    rules = load_rules(path)
    assert [(r.pattern, r.kind, r.line) for r in rules] == [
        ("ads.example.com", "exact", 7), ("a.com", "exact", 8), ("b.com", "exact", 8),
        ("tracker.example.net", "exact", 9)]
    assert rules.skipped == {"hosts localhost entry": 6}
    names = 1 + 3 + 1 + 1 + 1 + 2 + 1
    assert len(rules) == names - sum(rules.skipped.values())


def test_domain_list_forms(tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.txt", (
        "# hash comment\n! bang comment\n\nexample.com\n*.wild.example\n.dot.example\n"
        "inline.example # note\n192.0.2.1\n2001:db8::/32\nПример.қаз\n"))
    assert detect_format(path) == "domains"
    rules = load_rules(path, category="fexp", action="monitor")
    assert [(r.pattern, r.kind, r.line) for r in rules] == [
        ("example.com", "domain", 4), ("wild.example", "wildcard", 5), ("dot.example", "domain", 6),
        ("inline.example", "domain", 7), ("192.0.2.1", "ip", 8), ("2001:db8::/32", "ip", 9),
        ("xn--e1afmkfd.xn--80ao21a", "domain", 10)]
    assert {(r.category, r.action, r.source) for r in rules} == {("NEWS", "monitor", "mixed")}
    assert load_rules(path, category="malware")[0].category == "malware"    # free text kept


def test_adblock_list(tmp_path: Path) -> None:
    path = _write(tmp_path, "filters.txt", (
        "[Adblock Plus 2.0]\n! Title: test\n||ads.example.com^\n@@||good.example.com^\n"
        "||img.example^$image,third-party\n||tracker.example^$important,~script\n"
        "||only-on.example^$domain=news.example\n||redirect.example^$redirect=noopjs\n"
        "example.com##.banner\n##.ad\nsite.example#@#.ad\n/banner/*\n||path.example/ads/\n"
        "||Пример.қаз^\n||plain.example\n# not a rule\n"))
    assert detect_format(path) == "adblock"
    rules = load_rules(path)
    assert [(r.pattern, r.kind, r.action, r.line) for r in rules] == [
        ("ads.example.com", "domain", "block", 3), ("good.example.com", "domain", "allow", 4),
        ("img.example", "domain", "block", 5), ("tracker.example", "domain", "block", 6),
        ("xn--e1afmkfd.xn--80ao21a", "domain", "block", 14), ("plain.example", "domain", "block", 15)]
    assert rules.skipped == {"adblock header": 1, "adblock options not supported": 2,
                             "adblock cosmetic rule": 3, "adblock rule is not a host rule": 2}
    assert len(rules) == 14 - sum(rules.skipped.values())


def test_netset_forms(tmp_path: Path) -> None:
    path = _write(tmp_path, "drop.netset", (
        "; Spamhaus DROP List\n# firehol comment\n1.2.3.0/24 ; SBL123\n198.51.100.7\t12\n"
        "203.0.113.1-203.0.113.6\n203.0.113.10 - 203.0.113.11\n2001:db8::/48 # v6\n2001:DB8:1::1\n"))
    assert detect_format(path) == "netset"
    rules = load_rules(path)
    assert [r.pattern for r in rules] == ["1.2.3.0/24", "198.51.100.7", "203.0.113.1-203.0.113.6",
                                          "203.0.113.10-203.0.113.11", "2001:db8::/48", "2001:db8:1::1"]
    assert [str(n) for n in rules[2].networks] == ["203.0.113.1/32", "203.0.113.2/31", "203.0.113.4/31",
                                                   "203.0.113.6/32"]
    assert [r.line for r in rules] == [3, 4, 5, 6, 7, 8]


ZEEK = ("#separator \\x09\n#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n"
        "evil.example\tIntel::DOMAIN\tfeed-a\tphish\n192.0.2.7\tIntel::ADDR\tfeed-b\t-\n"
        "198.51.100.0/24\tIntel::SUBNET\t-\t-\nhttp://x.example/a\tIntel::URL\tfeed-a\t-\n"
        "abcdef\tIntel::FILE_HASH\tfeed-a\t-\n#close\t2026-01-01\n")


def test_zeek_intel(tmp_path: Path) -> None:
    path = _write(tmp_path, "intel.dat", ZEEK)
    assert detect_format(path) == "zeek-intel"
    rules = load_rules(path, revision="r9")
    assert [(r.pattern, r.kind, r.source, r.line) for r in rules] == [
        ("evil.example", "domain", "feed-a", 3), ("192.0.2.7", "ip", "feed-b", 4),
        ("198.51.100.0/24", "ip", "intel", 5)]
    assert rules.skipped == {"unsupported Zeek indicator Intel::URL": 1,
                             "unsupported Zeek indicator Intel::FILE_HASH": 1}
    assert rules.sources == {"intel": "r9", "feed-a": "r9", "feed-b": "r9"}
    assert {r.source for r in load_rules(path, source="mine")} == {"mine"}


@pytest.mark.parametrize("content, expected", [
    ("url,category_code,category_description,date_added,source,notes\n", "citizenlab"),
    ("#fields\tindicator\tindicator_type\n", "zeek-intel"),
    ("! comment\n||x.example^\n", "adblock"),
    ("0.0.0.0 a.example\n0.0.0.0 b.example\n", "hosts"),
    ("10.0.0.0/8\n", "netset"),
    ("a.example\n", "domains"),
    ("# only comments\n", "netset"),              # no data: the .cidr extension decides
    ("", "netset"),
])
def test_detect_format_by_content(tmp_path: Path, content: str, expected: str) -> None:
    assert detect_format(_write(tmp_path, "list.cidr", content)) == expected


def test_empty_files_give_empty_rulesets(tmp_path: Path) -> None:
    for fmt in (None,) + FORMATS:
        rules = load_rules(_write(tmp_path, "empty.txt", ""), format=fmt)
        assert len(rules) == 0 and rules.skipped == {}
    assert len(load_rules(_write(tmp_path, "blank.csv", "\n\n"))) == 0


def test_unknown_and_undetectable_formats_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "junk.bin", "this is, not a list\nnor is this one\n")
    with pytest.raises(RuleSyntaxError) as info:
        load_rules(path)
    assert str(info.value) == (f"{path}: cannot tell the format of this list (pass format=, one of "
                               "citizenlab, hosts, domains, adblock, netset, zeek-intel)")
    with pytest.raises(RuleSyntaxError) as info:
        detect_format(path)
    assert info.value.path == str(path)
    with pytest.raises(RuleSyntaxError) as info:
        load_rules(path, format="yaml")
    assert str(info.value) == (f"{path}: unknown format 'yaml' (expected one of "
                               "citizenlab, hosts, domains, adblock, netset, zeek-intel)")
    with pytest.raises(RuleSyntaxError, match="unknown action 'drop'"):
        load_rules(path, action="drop")
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "missing.txt")


def test_streams_and_several_paths(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.txt", "a.example\n")
    b = _write(tmp_path, "b.netset", "10.0.0.0/8\n")
    rules = load_rules(a, str(b), io.StringIO("c.example\n"), io.BytesIO(b"0.0.0.0 d.example\n"))
    assert [(r.pattern, r.kind, r.source) for r in rules] == [
        ("a.example", "domain", "a"), ("10.0.0.0/8", "ip", "b"), ("c.example", "domain", "stream"),
        ("d.example", "exact", "stream")]
    assert rules.sources == {"a": "", "b": "", "stream": ""}


def test_stdin_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("||x.example^\n"))
    rules = load_rules("-")
    assert [(r.pattern, r.source) for r in rules] == [("x.example", "stdin")]


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path, "win.txt", b"\xef\xbb\xbfa.example\r\nb.example\r\n")
    assert [(r.pattern, r.line) for r in load_rules(path)] == [("a.example", 1), ("b.example", 2)]


# --- malformed lines: exact messages in strict mode, counted reasons in lenient mode --------------

HEADER = "url,category_code,category_description,date_added,source,notes\n"
BAD_LINES = [
    # (file name, format, good line before, bad line, message reason, lenient key)
    ("n.netset", "netset", "10.0.0.0/8", "10.0.0.0/33",
     "not an IP address, CIDR prefix or range: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
     "bad IP address, prefix or range"),
    ("n.netset", "netset", "10.0.0.0/8", "10.1.2.3/8",
     "not an IP address, CIDR prefix or range: 10.1.2.3/8 has host bits set", "host bits set"),
    ("n.netset", "netset", "10.0.0.0/8", "2001:db8::1/48",
     "not an IP address, CIDR prefix or range: 2001:db8::1/48 has host bits set", "host bits set"),
    ("n.netset", "netset", "10.0.0.0/8", "10.0.0.9-10.0.0.1",
     "not an IP address, CIDR prefix or range: range end is below its start", "bad IP address, prefix or range"),
    ("d.txt", "domains", "ok.example", "\u0300bad.example",
     "not a valid internationalised name (Label begins with an illegal combining character) in '\u0300bad.example'",
     "bad IDN host name"),
    ("d.txt", "domains", "ok.example", "a" * 64 + ".example",
     f"label longer than 63 characters in '{'a' * 64}.example'", "overlong label in host name"),
    ("d.txt", "domains", "ok.example", "1.2.3.999",
     "not an IP address, CIDR prefix or range: '1.2.3.999' does not appear to be an IPv4 or IPv6 network",
     "bad IP address, prefix or range"),
    ("d.txt", "domains", "ok.example", "a..example", "empty label in 'a..example'", "empty label in host name"),
    ("d.txt", "domains", "ok.example", "bad!name.example",
     "character '!' is not allowed in a host name in 'bad!name.example'", "bad character in host name"),
    ("d.txt", "domains", "ok.example", "0.0.0.0 x.example",
     "more than one field: a domain list has one name per line", "more than one field"),
    ("d.txt", "domains", "ok.example", "ok\x00\x01junk", "binary data (not UTF-8 text)", "binary data (not UTF-8 text)"),
    ("d.txt", "domains", "ok.example", "x" * 9000, "line too long: 9000 characters, at most 8192", "line too long"),
    ("h.hosts", "hosts", "0.0.0.0 ok.example", "0.0.0.0", "missing host name: a hosts line names at least one host",
     "missing host name"),
    ("h.hosts", "hosts", "0.0.0.0 ok.example", "300.0.0.1 x.example",
     "bad IP address, prefix or range: a hosts line starts with an address, not '300.0.0.1'",
     "bad IP address, prefix or range"),
    ("a.txt", "adblock", "||ok.example^", "||^", "empty name in ''", "empty host name"),
    ("c.csv", "citizenlab", HEADER + "http://ok.example/,NEWS,News Media,2020-01-01,x,",
     "http://bad.example/,XYZ,What,2020-01-01,x,", "unknown category code: 'XYZ'", "unknown category code"),
    ("c.csv", "citizenlab", HEADER + "http://ok.example/,NEWS,News Media,2020-01-01,x,",
     "http://bad.example/,NEWS,News Media,2020-01-01,x", "wrong column count: expected 6 fields, got 5",
     "wrong column count"),
    ("c.csv", "citizenlab", HEADER + "http://ok.example/,NEWS,News Media,2020-01-01,x,",
     "http:///only/a/path,NEWS,News Media,2020-01-01,x,", "empty host: 'http:///only/a/path'", "empty host"),
    ("c.csv", "citizenlab", HEADER + "http://ok.example/,NEWS,News Media,2020-01-01,x,",
     "http://x.example:99999/,NEWS,News Media,2020-01-01,x,",
     "bad URL: Port out of range 0-65535", "bad URL"),
    ("c.csv", "citizenlab", HEADER + "http://ok.example/,NEWS,News Media,2020-01-01,x,",
     "ftp://x.example/,NEWS,News Media,2020-01-01,x,", "not an http(s) URL: 'ftp://x.example/'",
     "not an http(s) URL"),
    ("z.intel", "zeek-intel", "#fields\tindicator\tindicator_type\nok.example\tIntel::DOMAIN",
     "x.example\tIntel::DOMAIN\textra", "wrong column count: expected 2 fields, got 3", "wrong column count"),
    ("z.intel", "zeek-intel", "#fields\tindicator\tindicator_type\nok.example\tIntel::DOMAIN",
     "-\tIntel::ADDR", "empty indicator", "empty indicator"),
    ("z.intel", "zeek-intel", "#fields\tindicator\tindicator_type\nok.example\tIntel::DOMAIN",
     "x.example\tDOMAIN", "unknown indicator type: 'DOMAIN'", "unknown indicator type"),
]


@pytest.mark.parametrize("name, fmt, good, bad, reason, key", BAD_LINES,
                         ids=[f"{row[1]}-{row[5]}" for row in BAD_LINES])
def test_bad_line_strict_message_and_lenient_count(tmp_path: Path, name: str, fmt: str, good: str, bad: str,
                                                   reason: str, key: str) -> None:
    path = _write(tmp_path, name, f"{good}\n{bad}\n{good.splitlines()[-1]}\n")
    line = good.count("\n") + 2
    assert detect_format(path) == fmt
    with pytest.raises(RuleSyntaxError) as info:
        load_rules(path)
    shown = bad if len(bad) <= 200 else bad[:200] + "..."
    assert str(info.value) == f"{path}:{line}: {reason} (line: {shown!r})"
    assert (info.value.path, info.value.line, info.value.reason) == (str(path), line, reason)
    lenient = load_rules(path, strict=False)
    assert lenient.skipped == {key: 1}
    assert [r.line for r in lenient] == [line - 1, line + 1]


def test_undecodable_bytes_are_reported_by_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.txt", b"ok.example\n\xff\xfe\x80junk.example\nfine.example\n")
    with pytest.raises(RuleSyntaxError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}:2: binary data (not UTF-8 text) (line: '\\udcff\\udcfe\\udc80junk.example')"
    lenient = load_rules(path, strict=False)
    assert [r.pattern for r in lenient] == ["ok.example", "fine.example"]
    assert lenient.skipped == {"binary data (not UTF-8 text)": 1}


def test_lenient_counts_every_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, "many.netset", (
        "10.0.0.0/8\n10.0.0.0/33\n10.1.2.3/8\nexample.com\n\x00\x00\n192.0.2.1\n10.1.2.3/8\n"))
    rules = load_rules(path, strict=False)
    assert [r.pattern for r in rules] == ["10.0.0.0/8", "192.0.2.1"]
    assert rules.skipped == {"bad IP address, prefix or range": 2, "host bits set": 2,
                             "binary data (not UTF-8 text)": 1}
    assert len(rules) == 7 - sum(rules.skipped.values())
    with pytest.raises(RuleSyntaxError, match=r"many\.netset:2: "):
        load_rules(path)


@pytest.mark.parametrize("name, content, message", [
    ("c.csv", "link,code\nhttp://x/,NEWS\n", "not a Citizen Lab test list: the header has no 'url' column"),
    ("z.intel", "#fields\tindicator\tmeta.source\nx\ty\n", "#fields has no 'indicator_type' column"),
    ("z.intel", "#separator ab\n", "#separator must be one character, got 'ab'"),
])
def test_file_level_errors_raise_in_both_modes(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = _write(tmp_path, name, content)
    for strict in (True, False):
        with pytest.raises(RuleSyntaxError) as info:
            load_rules(path, format="citizenlab" if name.endswith(".csv") else "zeek-intel", strict=strict)
        assert str(info.value) == f"{path}:1: {message}"


def test_zeek_data_before_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, "z.intel", "x.example\tIntel::DOMAIN\n")
    with pytest.raises(RuleSyntaxError) as info:
        load_rules(path, format="zeek-intel")
    assert str(info.value) == f"{path}:1: data line before the #fields header (line: 'x.example\\tIntel::DOMAIN')"


# --- properties ----------------------------------------------------------------------------------

JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _is_data(line: str, marks: str) -> bool:
    """Plain model of a data line: junk counts (it is reported), comments and blanks do not."""
    if JUNK.search(line):
        return True
    text = line.strip()
    if not text or text[0] in marks:
        return False
    for mark in "#;" if marks == "#;" else "#":
        text = text.split(mark, 1)[0]
    return bool(text.split())


LINE = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40).map(lambda s: s.replace("\n", " ")),
    st.sampled_from(["example.com", "*.x.example", ".dot.example", "10.0.0.0/8", "10.1.2.3/8", "::1",
                     "1.2.3.4\t7", "1.2.3.0/24 ; SBL1", "# c", "! c", "; c", "0.0.0.0 a.example", "||a.example^",
                     "@@||b.example^$script", "##.ad", "[Adblock Plus 2.0]", "a..b", "\x00", "Пример.қаз", " "]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, max_size=15), st.sampled_from(["domains", "netset", "hosts", "adblock"]))
def test_lenient_never_raises_and_loses_nothing(tmp_path: Path, lines: list[str], fmt: str) -> None:
    path = _write(tmp_path, "fuzz.txt", "\n".join(lines))
    rules = load_rules(path, format=fmt, strict=False)
    if fmt in ("domains", "netset"):
        marks = "#!" if fmt == "domains" else "#;"
        assert len(rules) + sum(rules.skipped.values()) == sum(_is_data(line, marks) for line in lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), min_size=1, max_size=30))
def test_netset_matches_ipaddress_model(tmp_path: Path, entries: list[tuple[int, int]]) -> None:
    nets = [ipaddress.ip_network((addr, plen), strict=False) for addr, plen in entries]
    path = _write(tmp_path, "gen.netset", "".join(f"{n}\n" for n in nets))
    rules = load_rules(path)
    assert [r.networks for r in rules] == [(n,) for n in nets]


# The top label has a letter: an all-numeric dotted name is read as an address (RFC 1123 2.1).
NAME = st.tuples(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
                          min_size=1, max_size=3),
                 st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6)).map(lambda t: ".".join([*t[0], t[1]]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["", ".", "*."]), NAME, st.booleans()), min_size=1, max_size=30))
def test_domain_list_matches_plain_model(tmp_path: Path, entries: list[tuple[str, str, bool]]) -> None:
    lines = [f"{prefix}{name.upper() if upper else name}" for prefix, name, upper in entries]
    path = _write(tmp_path, "gen.txt", "# generated\n" + "\n".join(lines) + "\n")
    rules = load_rules(path, format="domains")
    expected = [(name, "wildcard" if prefix == "*." else "domain", i + 2)
                for i, (prefix, name, _) in enumerate(entries)]
    assert [(r.pattern, r.kind, r.line) for r in rules] == expected
