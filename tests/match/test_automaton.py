"""NameAutomaton against the plain-Python model in tests/reference/names_model.py.

Hypothesis draws rules and names from tiny alphabets, so overlaps, nesting, shared suffixes, equal
patterns of different kinds, equal priorities and overlapping keywords are the common case.
"""
from __future__ import annotations

import pickle
import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzfilter.rules.normalize import normalize_name
from kzfilter.errors import InvalidNameError
from kzfilter.match._automaton import (
    STATUS_INVALID, STATUS_NON_ASCII, STATUS_OK, NameAutomaton, _set_hot_bytes, normalize,
)
from tests.conftest import shared_path
from tests.reference.names_model import NamesModel, model_normalize

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ---- strategies ---------------------------------------------------------------------------------

labels = st.text(alphabet="ab-", min_size=1, max_size=3) | st.sampled_from(["a", "b", "ab", "x_1", "com"])
host = st.lists(labels, min_size=1, max_size=4).map(".".join)
keyword = st.text(alphabet="ab.", min_size=1, max_size=4) | st.sampled_from(["ab", "a.b", "com", "/x"])
priority = st.integers(0, 4) | st.integers(0, 2**64 - 1)


@st.composite
def rule_sets(draw, max_rules=12):
    n = draw(st.integers(0, max_rules))
    pats, kinds, prios = [], [], []
    for _ in range(n):
        kind = draw(st.integers(0, 3))
        pats.append(draw(keyword if kind == 3 else host))
        kinds.append(kind)
        prios.append(draw(priority))
    # duplicates across kinds are normal: the same domain on several lists
    if pats and draw(st.booleans()):
        i = draw(st.integers(0, len(pats) - 1))
        pats.append(pats[i])
        kinds.append(draw(st.integers(0, 2)) if kinds[i] < 3 else 3)
        prios.append(draw(priority))
    return pats, np.array(kinds, dtype=np.uint8), np.array(prios, dtype=np.uint64)


@st.composite
def traffic_names(draw):
    """Names as traffic carries them: any case, trailing dot, port, white space, sometimes broken."""
    name = draw(host)
    if draw(st.booleans()):
        name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    name = draw(st.sampled_from(["", "x.", "b.", "ab.", "a-."])) + name
    if draw(st.integers(0, 3)) == 0:
        name += "."
    if draw(st.integers(0, 3)) == 0:
        name += ":" + str(draw(st.integers(0, 99999)))
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from([" ", "\t", "\n"])) + name + draw(st.sampled_from(["", " ", "\r\n"]))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from([".", "..", "a..b", "a:b:1", "é.ab", "a b", "a*b", ""])) + name
    return name.encode() if draw(st.booleans()) else name


# batch path -> bytes of the trie top walked without switching lanes: none (every node switches),
# a few nodes, all (one name at a time)
BATCH_PATHS = {"lanes": 0, "lanes-hot-top": 48, "one-by-one": 2**63}


@pytest.fixture(params=list(BATCH_PATHS), autouse=True)
def batch_path(request):
    """Run every test on each way the batch path can walk."""
    old = _set_hot_bytes(BATCH_PATHS[request.param])
    yield request.param
    _set_hot_bytes(old)


def build(pats, kinds, prios) -> NameAutomaton:
    return NameAutomaton(pats, kinds, prios)


def pack(names):
    raw = [n.encode("utf-8", "surrogatepass") if isinstance(n, str) else bytes(n) for n in names]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in raw])
    return b"".join(raw), offsets


# ---- properties against the model ---------------------------------------------------------------

@SETTINGS
@given(rules=rule_sets(), names=st.lists(traffic_names(), min_size=1, max_size=12))
def test_matches_model(rules, names):
    pats, kinds, prios = rules
    auto = build(pats, kinds, prios)
    model = NamesModel(pats, kinds, prios)
    expect_one = []
    for name in names:
        ids, status = auto.match_all(name)
        m_ids, m_status = model.match_all(name)
        assert (ids.tolist(), status) == (m_ids, m_status), name
        assert ids.dtype == np.int32
        assert auto.match_one(name) == model.match_one(name), name
        expect_one.append(model.match_one(name))
    rule, status = auto.match_list(names)
    assert list(zip(rule.tolist(), status.tolist())) == expect_one
    buf, offsets = pack(names)
    out_rule = np.full(len(names), 7, dtype=np.int32)
    out_status = np.full(len(names), 9, dtype=np.uint8)
    r2, s2 = auto.match_packed(memoryview(buf), offsets, out_rule, out_status)
    assert r2 is out_rule and s2 is out_status
    assert list(zip(out_rule.tolist(), out_status.tolist())) == expect_one


@SETTINGS
@given(rules=rule_sets(), names=st.lists(traffic_names(), min_size=1, max_size=8))
def test_serialisation_round_trip(rules, names):
    pats, kinds, prios = rules
    auto = build(pats, kinds, prios)
    data = auto.to_bytes()
    for other in (NameAutomaton.from_bytes(data), pickle.loads(pickle.dumps(auto))):
        assert other.n_rules == auto.n_rules == len(pats)
        assert other.n_states == auto.n_states
        assert other.to_bytes() == data
        for name in names:
            assert other.match_one(name) == auto.match_one(name)
            a, b = other.match_all(name), auto.match_all(name)
            assert a[0].tolist() == b[0].tolist() and a[1] == b[1]


ascii_text = st.text(alphabet=st.characters(max_codepoint=127), max_size=20)
near_names = st.text(alphabet="aZ9_-.: \t\x1c\x0b", max_size=14)


@settings(max_examples=300, deadline=None)
@given(text=ascii_text | near_names)
def test_normalisation_agrees_with_normalize_name(text):
    try:
        expect = (normalize_name(text), STATUS_OK)
    except InvalidNameError:
        expect = (None, STATUS_INVALID)
    assert normalize(text) == expect
    assert normalize(text.encode()) == expect
    assert model_normalize(text) == expect


@settings(max_examples=100, deadline=None)
@given(labels=st.lists(st.integers(1, 70), min_size=1, max_size=6), dot=st.booleans())
def test_length_limits_agree(labels, dot):
    # RFC 1035 section 2.3.4: labels up to 63, names up to 253 characters
    name = ".".join("a" * n for n in labels) + ("." if dot else "")
    try:
        expect = (normalize_name(name), STATUS_OK)
    except InvalidNameError:
        expect = (None, STATUS_INVALID)
    assert normalize(name) == expect


# ---- unit tests ---------------------------------------------------------------------------------

def auto_of(*rules):
    pats = [r[0] for r in rules]
    kinds = np.array([r[1] for r in rules], dtype=np.uint8)
    prios = np.array([r[2] for r in rules], dtype=np.uint64)
    return NameAutomaton(pats, kinds, prios)


def test_label_boundaries_and_kinds():
    a = auto_of(("example.com", 1, 10), ("example.org", 0, 10), ("example.net", 2, 10), ("porn", 3, 10))
    assert a.match_one("example.com") == (0, STATUS_OK)
    assert a.match_one("news.example.com") == (0, STATUS_OK)
    assert a.match_one("badexample.com") == (-1, STATUS_OK)
    assert a.match_one("example.com.evil") == (-1, STATUS_OK)
    assert a.match_one("example.org") == (1, STATUS_OK)
    assert a.match_one("www.example.org") == (-1, STATUS_OK)
    assert a.match_one("example.net") == (-1, STATUS_OK)      # wildcard: not the apex
    assert a.match_one("a.b.example.net") == (2, STATUS_OK)
    assert a.match_one("x.pornhub.kz") == (3, STATUS_OK)
    assert a.match_one("POR.N") == (-1, STATUS_OK)


def test_priority_decides_and_ties_go_to_smaller_id():
    a = auto_of(("example.com", 1, 5), ("www.example.com", 1, 7), ("ex", 3, 5), ("www.example.com", 0, 1))
    assert a.match_one("www.example.com") == (3, STATUS_OK)
    assert a.match_all("www.example.com")[0].tolist() == [3, 0, 2, 1]
    assert a.match_one("a.www.example.com") == (0, STATUS_OK)  # 0 and 2 tie at 5: smaller id


def test_normalisation_of_traffic_names():
    a = auto_of(("example.com", 0, 1))
    for name in ["example.com", " Example.COM. ", "example.com:443", b"EXAMPLE.com.:8080", "example.com\n"]:
        assert a.match_one(name) == (0, STATUS_OK), name
    for name in ["", ".", "..", "example..com", ".example.com", "exa mple.com", "a:b:1", "[::1]:443",
                 "example.com:123456", "example.com:", "x" * 64 + ".com", "a." * 127 + "a"]:
        assert a.match_one(name) == (-1, STATUS_INVALID), name
    for name in ["exämple.com", "пример.қаз", b"\xff.com", "a\udcff.com", "example.com\xa0"]:
        assert a.match_one(name) == (-1, STATUS_NON_ASCII), name
        assert a.match_all(name)[1] == STATUS_NON_ASCII


def test_long_hostile_names_do_not_crash():
    a = auto_of(("a", 1, 1), ("a", 3, 2))
    for name in ["a" * 10_000, ("a" * 63 + ".") * 160, "a." * 5000 + "a", "\x00" * 10_000]:
        assert a.match_one(name) == (-1, STATUS_INVALID)
        assert a.match_all(name)[1] == STATUS_INVALID
    rule, status = a.match_list(["a" * 10_000, "x.a", "a" * 10_000])
    assert rule.tolist() == [-1, 0, -1] and status.tolist() == [1, 0, 1]


def test_empty_automaton():
    a = NameAutomaton([], np.zeros(0, np.uint8), np.zeros(0, np.uint64))
    assert a.n_rules == 0
    assert a.match_one("example.com") == (-1, STATUS_OK)
    assert a.match_all("example.com")[0].size == 0
    assert a.match_list([]) [0].size == 0
    assert NameAutomaton.from_bytes(a.to_bytes()).match_one("x") == (-1, STATUS_OK)


def test_keyword_outside_name_alphabet_never_matches():
    a = auto_of(("a/b", 3, 1), ("a.b", 3, 2))
    assert a.match_one("a.b.com") == (1, STATUS_OK)
    assert a.match_all("xa.bx")[0].tolist() == [1]


def test_build_rejects_bad_input():
    with pytest.raises(ValueError, match="rule 1"):
        auto_of(("ok.com", 1, 1), ("bad/name", 1, 1))
    with pytest.raises(ValueError, match="empty"):
        auto_of(("", 3, 1))
    with pytest.raises(ValueError, match="kind"):
        auto_of(("x.com", 4, 1))
    with pytest.raises(ValueError, match="shape"):
        NameAutomaton(["x.com"], np.zeros(2, np.uint8), np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="rule 0: pattern .* is not a normalised host name"):
        auto_of(("é.com", 1, 1))
    assert auto_of(("é", 3, 1)).match_one("xn--9ca.com") == (-1, STATUS_OK)   # keyword: never matches
    with pytest.raises(TypeError):
        auto_of(("x.com", 1, 1)).match_one(5)


def test_match_packed_inputs():
    a = auto_of(("example.com", 1, 1))
    buf = b"example.comfoo.example.comnope"
    offsets = np.array([0, 11, 26, 30])
    for b in (buf, bytearray(buf), memoryview(buf), np.frombuffer(buf, np.uint8)):
        rule, status = a.match_packed(b, offsets)
        assert rule.tolist() == [0, 0, -1] and status.tolist() == [0, 0, 0]
    for bad in ([0, 40], [5, 3], [-1, 2]):
        with pytest.raises(ValueError, match="offsets"):
            a.match_packed(buf, np.array(bad))
    with pytest.raises(ValueError, match="length"):
        a.match_packed(buf, offsets, out_rule=np.zeros(2, np.int32))
    rule, status = a.match_packed(b"", np.array([0, 0]))
    assert rule.tolist() == [-1] and status.tolist() == [STATUS_INVALID]


def test_from_bytes_rejects_corrupt_data():
    a = auto_of(("example.com", 1, 1), ("ads", 3, 2), ("x.org", 2, 0))
    data = a.to_bytes()
    for bad in (b"", b"nonsense" * 20, data[:-8], data + b"\0" * 8, data[:50]):
        with pytest.raises(ValueError):
            NameAutomaton.from_bytes(bad)
    rng = random.Random(1)
    names = ["example.com", "a.x.org", "ads.kz", "b" * 200]
    for _ in range(300):   # random corruption: a clear error or a working automaton, never a crash
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            b = NameAutomaton.from_bytes(bytes(mutated))
        except ValueError:
            continue
        b.match_list(names)
        for n in names:
            b.match_all(n)


def test_threads_share_one_automaton():
    rng = random.Random(7)
    pats = [f"d{i}.example{i % 50}.com" for i in range(2000)]
    a = NameAutomaton(pats, np.ones(len(pats), np.uint8), np.arange(len(pats), dtype=np.uint64))
    names = [f"w.d{rng.randrange(4000)}.example{rng.randrange(60)}.com" for _ in range(20_000)]
    expect = a.match_list(names)[0]
    results = [None] * 4

    def work(k):
        results[k] = a.match_list(names)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert np.array_equal(r, expect)
    model = NamesModel(pats, [1] * len(pats), range(len(pats)))
    for i in range(0, 20_000, 997):
        assert expect[i] == model.match_one(names[i])[0]


def test_real_list_against_suffix_walk():
    """ut1 dating list: every rule domain, subdomains of it and near misses, vs a dict suffix walk."""
    path = shared_path("lists", "domains", "ut1", "dating.domains")
    domains = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            domains.append(normalize_name(line))
        except InvalidNameError:
            pass
    assert len(domains) > 1000
    a = NameAutomaton(domains, np.ones(len(domains), np.uint8), np.arange(len(domains), dtype=np.uint64))
    first = {}
    for i, d in enumerate(domains):
        first.setdefault(d, i)

    def walk(name):
        labels = name.split(".")
        best = -1
        for k in range(len(labels)):
            i = first.get(".".join(labels[k:]), -1)
            if i >= 0 and (best < 0 or i < best):
                best = i
        return best

    rng = random.Random(3)
    queries = []
    for d in domains:
        queries += [d, "www." + d, "x" + d, d[1:], d.split(".", 1)[-1]]
    rng.shuffle(queries)
    expect = []
    for q in queries:
        try:
            expect.append((walk(normalize_name(q)), STATUS_OK))
        except InvalidNameError:   # e.g. d[1:] starting with '.', or a label grown past 63
            expect.append((-1, STATUS_INVALID))
    rule, status = a.match_list(queries)
    assert sum(e[1] == STATUS_OK for e in expect) > 0.9 * len(queries)
    assert list(zip(rule.tolist(), status.tolist())) == expect
