"""The public names of issue 2 and issue 3, called exactly as the issues write them.

Other tools and acceptance checks call these names; this file fails if one is renamed.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kzfilter
from tests.conftest import DEMO_RULES

REPO = Path(__file__).resolve().parent.parent
PCAPS = REPO / "pcaps"


@pytest.fixture()
def rule_files(tmp_path: Path) -> list[Path]:
    kz = tmp_path / "kz.csv"
    kz.write_text("url,category_code,category_description,date_added,source,notes\n"
                  "https://www.example.com/news,NEWS,News Media,2020-01-01,test,\n")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("0.0.0.0 tracker.example.net\n")
    drop = tmp_path / "drop.netset"
    drop.write_text("# drop\n10.0.0.0/8\n2001:db8::/32\n")
    return [kz, hosts, drop]


def test_issue2_python_api(rule_files: list[Path], tmp_path: Path) -> None:
    rs = kzfilter.load_rules(*map(str, rule_files))
    other_ruleset = kzfilter.RuleSet([kzfilter.Rule("example.com", kind="domain", action="block",
                                                    category="NEWS", source="mylist")])
    rs = rs + other_ruleset
    clf = rs.compile()
    assert isinstance(clf, kzfilter.Classifier)
    m = clf.match_name("news.Example.com.")
    assert isinstance(m, kzfilter.Match)
    assert (m.action, m.category) == ("block", "NEWS")
    assert isinstance(m.rule, kzfilter.Rule)
    assert m.lists == ("kz", "mylist") and m.categories == ("NEWS",)
    assert clf.match_ip("10.1.2.3").rule.pattern == "10.0.0.0/8"
    assert clf.match_ip(int(0x0A010203)).rule.pattern == "10.0.0.0/8"
    assert clf.match_ip("2001:db8::1").rule.pattern == "2001:db8::/32"
    names = ["a.example.com", "tracker.example.net", "sub.tracker.example.net", "kaspi.kz"]
    r = clf.match_names(names)
    assert r.rule_id.dtype == np.int32 and list(r.rule_id >= 0) == [True, True, False, False]
    assert list(r.action) == ["block", "block", None, None]
    assert clf.rules[r.rule_id[1]].kind == "exact"
    for addrs in (["10.0.0.1", "192.0.2.1"], np.array([0x0A000001, 0xC0000201], dtype=np.uint32)):
        assert list(clf.match_ips(addrs).rule_id >= 0) == [True, False]
    v6 = np.zeros((1, 16), dtype=np.uint8)
    v6[0, :4] = [0x20, 0x01, 0x0D, 0xB8]
    assert clf.match_ips(v6).rule_id[0] >= 0
    clf.save(str(tmp_path / "rules.kzr"))
    clf2 = kzfilter.Classifier.load(str(tmp_path / "rules.kzr"))
    assert clf2.match_name("news.example.com").rule == m.rule
    assert pickle.loads(pickle.dumps(clf)).match_ip("10.9.9.9") is not None


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kzfilter", *args], capture_output=True, text=True,
                          timeout=300)


def test_issue2_cli_match_jsonl(rule_files: list[Path]) -> None:
    out = run_cli("match", "news.example.com", "10.2.3.4", "kaspi.kz", "--rules",
                  *map(str, rule_files), "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    keys = {"query", "action", "category", "rule", "kind", "lists", "categories"}
    assert all(keys <= set(row) for row in rows)
    assert [row["action"] for row in rows] == ["block", "block", None]
    assert rows[0]["kind"] == "domain" and rows[1]["kind"] == "ip" and rows[0]["lists"] == ["kz"]


def test_cli_match_invalid_query_and_bad_rules(rule_files: list[Path], tmp_path: Path) -> None:
    out = run_cli("match", "bad name", "--rules", *map(str, rule_files))
    assert out.returncode == 1 and "not allowed in a host name" in out.stdout
    bad = tmp_path / "bad.netset"
    bad.write_text("10.0.0.0/8\n10.1.2.3/8\n")
    out = run_cli("match", "x.kz", "--rules", str(bad))
    assert out.returncode == 2 and f"{bad}:2:" in out.stderr and "host bits" in out.stderr
    out = run_cli("match", "10.0.0.1", "--rules", str(bad), "--lenient")
    assert out.returncode == 0 and "block" in out.stdout and "skipped" in out.stderr


def test_cli_compile_then_match(rule_files: list[Path], tmp_path: Path) -> None:
    kzr = tmp_path / "rules.kzr"
    assert run_cli("compile", "--rules", *map(str, rule_files), "-o", str(kzr)).returncode == 0
    out = run_cli("match", "www.example.com", "--rules", str(kzr), "--format", "jsonl")
    assert json.loads(out.stdout)["category"] == "NEWS"


RECORD_CONTRACT = (
    "flow_id capture ts_start ts_end duration transport ip_version client_ip client_port server_ip "
    "server_port vlan packets_c2s bytes_c2s packets_s2c bytes_s2c rate_c2s_bps rate_s2c_bps tcp_flags "
    "end_reason name name_source no_name_reason alpn ech action category rule lists matched_on").split()


def test_issue3_classify_demo_capture(demo_clf: kzfilter.Classifier) -> None:
    clf = demo_clf
    result = clf.classify(str(PCAPS / "demo.pcapng"))
    records = list(result)
    assert records and all(hasattr(r, f) for r in records for f in RECORD_CONTRACT)
    by_name = {r.name: r for r in records if r.name}
    assert by_name["www.azattyq.org"].action == "block"                     # TLS and QUIC
    assert by_name["mail.example.kz"].action == "allow"                     # exception beats block
    assert by_name["www.example.kz"].action == "block"
    assert by_name["xn--80aswg.xn--80ao21a"].category == "NEWS"             # IDN rule, punycode SNI
    assert by_name["kaspi.kz"].action is None
    ip_only = [r for r in records if r.server_ip == "2.26.157.10"]
    assert ip_only and ip_only[0].matched_on == "ip" and ip_only[0].action == "block"
    sources = {r.name_source for r in records}
    assert {"sni", "quic", "http", "dns-query", "dns-answer"} <= sources
    df = result.to_pandas()
    assert set(RECORD_CONTRACT) <= set(df.columns)
    assert len(df) == len(records)
    table = result.to_arrow()
    assert table.num_rows == len(records) and set(RECORD_CONTRACT) <= set(table.column_names)


def test_issue3_flow_tracker_with_dpkt(demo_clf: kzfilter.Classifier) -> None:
    import dpkt

    clf = demo_clf
    tracker = clf.flow_tracker()
    with open(PCAPS / "demo.pcapng", "rb") as fh:
        for ts, frame in dpkt.pcapng.Reader(fh):
            tracker.feed_dpkt(ts, dpkt.ethernet.Ethernet(frame))
    records = list(tracker.close())
    direct = list(clf.classify(str(PCAPS / "demo.pcapng")))
    assert [(r.name, r.action, r.packets_c2s) for r in records] == \
        [(r.name, r.action, r.packets_c2s) for r in direct]


def test_issue3_cli_classify_formats(tmp_path: Path) -> None:
    rules = DEMO_RULES
    out = run_cli("classify", str(PCAPS / "demo.pcapng"), "--rules", *rules, "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and set(RECORD_CONTRACT) <= set(rows[0])
    assert "flows:" in out.stderr and "verdicts:" in out.stderr
    csv_path = tmp_path / "flows.csv"
    out = run_cli("classify", str(PCAPS / "demo.pcapng"), "--rules", *rules, "--format", "csv",
                  "--output", str(csv_path), "--quiet")
    assert out.returncode == 0 and out.stderr == ""
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["flow_id", "capture", "ts_start"] and len(lines) == len(rows) + 1
    out = run_cli("classify", str(PCAPS / "demo.pcapng"), "--rules", *rules, "--format", "table")
    assert "BLOCK" in out.stdout and "ALLOW" in out.stdout
