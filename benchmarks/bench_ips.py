"""IP prefix matching: kzfilter's PrefixSet against pytricia and pyroaring, peers side by side.

Run: ``pytest benchmarks/bench_ips.py --benchmark-only`` (about 3-4 minutes on 2 cores).

Groups ``ipv4-<size>`` (10k, 100k, 1M prefixes; data from ``_ipdata``): 1M query addresses,
3 % of them inside a prefix, for
  * ``kzfilter``          PrefixSet.lookup_v4: winner rule per address (longest prefix, priority);
  * ``kzfilter-nobitmap`` the same batch loop without the roaring /16 pre-filter (design check);
  * ``pytricia``          longest-prefix ``get`` per address in a Python loop (answer: the rule);
  * ``pyroaring-in``      ``addr in bitmap`` per address in a Python loop (membership only, no
    attribution) on a full-address BitMap of every covered address;
  * ``pyroaring-vector``  BitMap-level vectorised membership: ``BitMap(queries) & covered`` and
    ``np.isin`` back onto the queries (membership only).
Groups ``ipv4-<size>-build`` and ``ipv4-<size>-load`` time construction and ``from_bytes``;
``extra_info`` carries ns per address, hit rate and memory (``nbytes``; pytricia: RSS growth).
Group ``ipv6`` uses the real v6 lists (14k prefixes) and 1M queries in 2000::/3; pyroaring has
no 128-bit bitmap, so it has no peer there (BitMap64 of /64s is not workable: see the module
docstring of kzfilter.match._prefixes).
"""
from __future__ import annotations

import gc
import os
import pickle
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _ipdata  # noqa: E402

from kzfilter.match._prefixes import PrefixSet  # noqa: E402

if not _ipdata.SHARED.exists():
    pytest.skip(f"shared IP lists not found at {_ipdata.SHARED}", allow_module_level=True)

SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
NO_V6 = (np.zeros((0, 16), np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.int32))
NO_V4 = (np.zeros(0, np.uint32), np.zeros(0, np.uint8), np.zeros(0, np.int32))


def _rss() -> int:
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return 0
    return psutil.Process().memory_info().rss


def _build_v4(size):
    net, plen, rule = _ipdata.v4_prefixes(size)
    return PrefixSet(net, plen, rule, *NO_V6, np.zeros(len(net), np.uint64))


_cache: dict = {}


def _v4(label):
    """(PrefixSet, queries, prefixes) for one size, built once per session."""
    if label not in _cache:
        size = SIZES[label]
        _cache[label] = (_build_v4(size), _ipdata.v4_queries(size), _ipdata.v4_prefixes(size))
    return _cache[label]


def _pytricia_v4(label):
    pytricia = pytest.importorskip("pytricia", reason="peer pytricia is not installed")
    key = ("trie", label)
    if key not in _cache:
        net, plen, rule = _ipdata.v4_prefixes(SIZES[label])
        gc.collect()
        before = _rss()
        trie = pytricia.PyTricia(32)
        for n, l, r in zip(net.tolist(), plen.tolist(), rule.tolist()):
            trie[f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/{l}"] = r
        _cache[key] = (trie, _rss() - before)
    return _cache[key]


def _covered_bitmap(label):
    from pyroaring import BitMap
    key = ("bitmap", label)
    if key not in _cache:
        net, plen, _ = _ipdata.v4_prefixes(SIZES[label])
        lo, hi = _ipdata.covered_ranges(net, plen)
        bm = BitMap()
        for a, b in zip(lo.tolist(), hi.tolist()):
            bm.add_range(a, b)
        bm.run_optimize()
        _cache[key] = bm
    return _cache[key]


def _record(benchmark, n, **info):
    benchmark.extra_info.update(info)
    benchmark.extra_info["ns_per_address"] = round(benchmark.stats.stats.mean / n * 1e9, 1)


# ----------------------------------------------------------------------------- IPv4 lookups

@pytest.mark.parametrize("label", list(SIZES))
def test_v4_kzfilter(benchmark, label):
    ps, q, _ = _v4(label)
    benchmark.group = f"ipv4-{label}"
    out = benchmark.pedantic(ps.lookup_v4, args=(q,), rounds=10, warmup_rounds=1)
    _record(benchmark, len(q), hit_rate=float(np.mean(out >= 0)), nbytes=ps.nbytes,
            serialized=len(ps.to_bytes()))


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_kzfilter_nobitmap(benchmark, label):
    ps, q, _ = _v4(label)
    benchmark.group = f"ipv4-{label}"
    out = benchmark.pedantic(ps._lookup_v4_nobitmap, args=(q,), rounds=10, warmup_rounds=1)
    assert np.array_equal(out, ps.lookup_v4(q))
    _record(benchmark, len(q))


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_pytricia(benchmark, label):
    ps, q, _ = _v4(label)
    trie, rss = _pytricia_v4(label)
    get = trie.get
    addrs = q.tolist()
    benchmark.group = f"ipv4-{label}"

    def run():
        return [get(a, -1) for a in addrs]

    out = benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    # Same winners as kzfilter (all priorities equal, so pytricia's longest match is the answer;
    # pytricia keeps the last of identical prefixes, kzfilter the smaller rule id: compare hits).
    assert (np.array(out) >= 0).tolist() == (ps.lookup_v4(q) >= 0).tolist()
    _record(benchmark, len(q), rss_growth_bytes=rss)


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_pyroaring_in(benchmark, label):
    _, q, _ = _v4(label)
    bm = _covered_bitmap(label)
    addrs = q.tolist()
    benchmark.group = f"ipv4-{label}"

    def run():
        return [a in bm for a in addrs]

    benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    _record(benchmark, len(q), bitmap_bytes=len(bm.serialize()), membership_only=True)


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_pyroaring_vectorised(benchmark, label):
    from pyroaring import BitMap
    ps, q, _ = _v4(label)
    bm = _covered_bitmap(label)
    benchmark.group = f"ipv4-{label}"

    def run():
        hits = (BitMap(q) & bm).to_array()
        return np.isin(q, hits)

    out = benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    assert out.tolist() == (ps.lookup_v4(q) >= 0).tolist()
    _record(benchmark, len(q), membership_only=True)


# ----------------------------------------------------------------------------- build and load

@pytest.mark.parametrize("label", list(SIZES))
def test_v4_build_kzfilter(benchmark, label):
    benchmark.group = f"ipv4-{label}-build"
    net, plen, rule = _ipdata.v4_prefixes(SIZES[label])
    prio = np.zeros(len(net), np.uint64)
    ps = benchmark.pedantic(PrefixSet, args=(net, plen, rule, *NO_V6, prio), rounds=2, warmup_rounds=0)
    benchmark.extra_info["nbytes"] = ps.nbytes


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_build_pytricia(benchmark, label):
    pytricia = pytest.importorskip("pytricia", reason="peer pytricia is not installed")
    benchmark.group = f"ipv4-{label}-build"
    net, plen, rule = _ipdata.v4_prefixes(SIZES[label])
    keys = [f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/{l}" for n, l in zip(net.tolist(), plen.tolist())]
    values = rule.tolist()

    def build():
        trie = pytricia.PyTricia(32)
        for k, v in zip(keys, values):
            trie[k] = v
        return trie

    benchmark.pedantic(build, rounds=1, warmup_rounds=0)


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_load_kzfilter(benchmark, label):
    ps, q, _ = _v4(label)
    data = ps.to_bytes()
    benchmark.group = f"ipv4-{label}-load"
    loaded = benchmark.pedantic(PrefixSet.from_bytes, args=(data,), rounds=5, warmup_rounds=1)
    assert np.array_equal(loaded.lookup_v4(q[:1000]), ps.lookup_v4(q[:1000]))
    benchmark.extra_info["serialized_bytes"] = len(data)


@pytest.mark.parametrize("label", list(SIZES))
def test_v4_load_pickle(benchmark, label):
    ps, _, _ = _v4(label)
    data = pickle.dumps(ps)
    benchmark.group = f"ipv4-{label}-load"
    benchmark.pedantic(pickle.loads, args=(data,), rounds=5, warmup_rounds=1)


# ----------------------------------------------------------------------------- IPv6

def _v6():
    if "v6" not in _cache:
        net, plen = _ipdata.real_v6()
        ps = PrefixSet(*NO_V4, net, plen, np.arange(len(net), dtype=np.int32), np.zeros(len(net), np.uint64))
        _cache["v6"] = (ps, _ipdata.v6_queries(1_000_000), net, plen)
    return _cache["v6"]


def test_v6_kzfilter(benchmark):
    ps, q, _, _ = _v6()
    benchmark.group = "ipv6"
    out = benchmark.pedantic(ps.lookup_v6, args=(q,), rounds=10, warmup_rounds=1)
    _record(benchmark, len(q), hit_rate=float(np.mean(out >= 0)), n_prefixes=ps.n_v6, nbytes=ps.nbytes)


def test_v6_kzfilter_prefiltered(benchmark):
    ps, q, _, _ = _v6()
    benchmark.group = "ipv6"
    out = benchmark.pedantic(ps._lookup_v6_prefiltered, args=(q,), rounds=10, warmup_rounds=1)
    assert np.array_equal(out, ps.lookup_v6(q))
    _record(benchmark, len(q))


def test_v6_pytricia(benchmark):
    pytricia = pytest.importorskip("pytricia", reason="peer pytricia is not installed")
    import ipaddress
    ps, q, net, plen = _v6()
    trie = pytricia.PyTricia(128)
    for i in reversed(range(len(net))):
        trie[str(ipaddress.IPv6Network((bytes(net[i]), int(plen[i]))))] = i
    get = trie.get
    keys = [bytes(row) for row in q]
    benchmark.group = "ipv6"

    def run():
        return [get(k, -1) for k in keys]

    out = benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    assert out == ps.lookup_v6(q).tolist()
    _record(benchmark, len(q))
