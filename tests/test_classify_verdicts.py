"""Tests of ``kzfilter.classify.apply_verdicts``: the verdict columns of flow records.

The oracle is the plain per-flow rule written out below (one ``match_name``/``match_ip`` and one
``clf.rules[i]`` per matched flow, no cache, no arrays): ``apply_verdicts`` builds per-rule texts
once per classifier and remembers each distinct query's lists, and must give exactly the same
columns, on a fresh classifier, on a warm one, on one loaded from bytes, and with a tiny memo.
"""
from __future__ import annotations

import ipaddress
import random
from typing import Any

import numpy as np
import pytest

from kzfilter.classify import apply_verdicts
from kzfilter.errors import InvalidNameError
from kzfilter.flow.records import RECORD_DTYPE, RecordBatch
from kzfilter.match import classifier as classifier_module
from kzfilter.match.classifier import Classifier
from kzfilter.rules.model import Rule, RuleSet

RULES = [
    Rule("example.com", category="NEWS", source="kz", line=3),
    Rule("news.example.com", kind="exact", action="allow", source="exceptions"),
    Rule("example", kind="keyword", action="monitor", category="", source="keywords", line=9),
    Rule("*.wild.example.org", category="ANON", source="kz", line=4),
    Rule("xn--e1afmkfd.xn--80ao21a", category="GOVT", source="idn"),      # пример.қаз
    Rule("tracker.net", source="tracking"),
    Rule("10.0.0.0/8", source="ips", category="PRIV", line=1),
    Rule("10.1.0.0/16", action="allow", source="ip-exceptions"),
    Rule("2001:db8::/32", source="ips6"),
    Rule("192.0.2.7", source="single", line=7),
]
NAMES = [None, "example.com", "news.example.com", "a.news.example.com", "notexample.net",
         "www.example", "x.wild.example.org", "wild.example.org", "tracker.net", "TRACKER.NET.",
         "other.org", "пример.қаз", "bad name!", "a" * 300, "example.com:443", "b.example.com"]
ADDRS = ["10.2.3.4", "10.1.9.9", "192.0.2.7", "198.51.100.1", "2001:db8::5", "2001:db9::1"]


def make_batch(rows: list[tuple[str | None, str, str]]) -> RecordBatch:
    """A record batch of (name, server address, client address) rows, names packed in order."""
    arr = np.zeros(len(rows), RECORD_DTYPE)
    arena = bytearray()
    for i, (name, server, client) in enumerate(rows):
        s, c = ipaddress.ip_address(server), ipaddress.ip_address(client)
        assert s.version == c.version
        arr[i]["ip_version"] = s.version
        arr[i]["server_ip_raw"][:len(s.packed)] = np.frombuffer(s.packed, np.uint8)
        arr[i]["client_ip_raw"][:len(c.packed)] = np.frombuffer(c.packed, np.uint8)
        arr[i]["flow_id"] = i
        if name is not None:
            raw = name.encode()
            arr[i]["name_off"], arr[i]["name_len"] = len(arena), len(raw)
            arr[i]["name_source_code"] = 1
            arena += raw
    return RecordBatch(arr, bytes(arena))


def random_rows(seed: int, n: int) -> list[tuple[str | None, str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        server = rng.choice(ADDRS)
        v6 = ":" in server
        client = rng.choice([a for a in ADDRS if (":" in a) == v6])
        rows.append((rng.choice(NAMES), server, client))
    return rows


def reference(clf: Classifier, batch: RecordBatch, match_client_ip: bool) -> dict[str, list[Any]]:
    """The verdict columns, flow by flow (README "Flows": name, else server, else client)."""
    out: dict[str, list[Any]] = {k: [] for k in ("action", "category", "rule", "lists", "matched_on")}
    names = batch.column("name")
    servers, clients = batch.column("server_ip"), batch.column("client_ip")
    for i, (name, server, client) in enumerate(zip(names, servers, clients)):
        rid, on, query = -1, None, ""
        if name is not None:
            local = clf.match_names([batch.name_bytes(i) or b""]).rule_id[0]
            if local >= 0:
                rid, on, query = int(local), "name", name
        for addr, label, wanted in ((server, "ip", True), (client, "client-ip", match_client_ip)):
            if rid < 0 and wanted:
                local = clf.match_ips([addr]).rule_id[0]
                if local >= 0:
                    rid, on, query = int(local), label, addr
        if rid < 0:
            for k, v in (("action", None), ("category", None), ("rule", None), ("lists", []),
                         ("matched_on", None)):
                out[k].append(v)
            continue
        rule = clf.rules[rid]
        try:
            m = clf.match_name(query) if on == "name" else clf.match_ip(query)
        except (InvalidNameError, ValueError):
            m = None
        out["action"].append(rule.action)
        out["category"].append(rule.category or None)
        out["rule"].append(str(rule))
        out["lists"].append(list(m.lists) if m is not None else [rule.source])
        out["matched_on"].append(on)
    return out


def verdicts(batch: RecordBatch) -> dict[str, list[Any]]:
    return {k: batch.column(k) for k in ("action", "category", "rule", "lists", "matched_on")}


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return RuleSet(RULES).compile()


@pytest.mark.parametrize("match_client_ip", [False, True])
def test_columns_equal_the_per_flow_rule(clf: Classifier, match_client_ip: bool) -> None:
    rows = random_rows(1, 400)
    want = reference(clf, make_batch(rows), match_client_ip)
    # Not vacuous: every kind of match and several lists per flow occur.
    assert set(want["matched_on"]) == {None, "name", "ip"} | ({"client-ip"} if match_client_ip else set())
    assert max(len(x) for x in want["lists"]) >= 2 and "GOVT" in want["category"]
    fresh = Classifier.from_bytes(clf.to_bytes())       # rules rebuilt from columns, empty memo
    for c in (fresh, fresh, clf):                         # cold, then warm memo
        got = verdicts(apply_verdicts(c, make_batch(rows), match_client_ip))
        assert got == want


def test_non_ascii_name_keeps_its_own_winner_list(clf: Classifier) -> None:
    rows = [("пример.қаз", "198.51.100.1", "198.51.100.2"), ("example.com", "10.2.3.4", "10.9.9.9")]
    got = verdicts(apply_verdicts(clf, make_batch(rows)))
    # the IDNA name matched in batch; its text read as ASCII is not a valid name: winner's list
    assert got["lists"] == [["idn"], ["kz", "keywords"]] and got["category"] == ["GOVT", "NEWS"]
    assert got["rule"][0] == "block domain xn--e1afmkfd.xn--80ao21a GOVT [idn]"


def test_a_full_memo_empties_and_stays_correct(clf: Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier_module._Memo, "LIMIT", 3)
    c = Classifier.from_bytes(clf.to_bytes())
    rows = random_rows(2, 300)
    want = reference(c, make_batch(rows), True)
    for _ in range(2):
        assert verdicts(apply_verdicts(c, make_batch(rows), True)) == want
        assert len(c._memo) <= 3


def test_python_work_is_per_distinct_rule_and_query(clf: Classifier,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    c = Classifier.from_bytes(clf.to_bytes())
    calls = {"str": 0, "match": 0}
    real_str, real_name, real_ip = Rule.__str__, c.match_name, c.match_ip

    def counting(fn: Any, key: str) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[key] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(Rule, "__str__", counting(real_str, "str"))
    monkeypatch.setattr(c, "match_name", counting(real_name, "match"))
    monkeypatch.setattr(c, "match_ip", counting(real_ip, "match"))
    rows = random_rows(3, 2000)
    batch = apply_verdicts(c, make_batch(rows), True)
    matched = sum(on is not None for on in batch.column("matched_on"))
    assert matched > 1000
    assert 0 < calls["str"] <= len(RULES) and 0 < calls["match"] <= len(NAMES) + len(ADDRS)
    before = dict(calls)
    apply_verdicts(c, make_batch(rows), True)
    assert calls == before                                # everything remembered


def test_unmatched_and_empty_batches(clf: Classifier) -> None:
    assert len(apply_verdicts(clf, RecordBatch())) == 0
    b = apply_verdicts(clf, make_batch([("other.org", "198.51.100.1", "198.51.100.2")]))
    assert verdicts(b) == {"action": [None], "category": [None], "rule": [None], "lists": [[]],
                           "matched_on": [None]}
