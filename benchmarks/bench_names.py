"""Host-name matching: kzfilter's NameAutomaton against a Python dict suffix walk and pyahocorasick.

Run: ``PYTHONPATH=src pytest benchmarks/bench_names.py --benchmark-only`` (about 2-4 minutes).

Rule sets of 10k, 100k and 1M domain rules (real blocklists topped up by the generator in
``_namedata.py``); queries are realistic names with ~3% hits (rule domains and subdomains of them).
Groups:
  names-<size>          every matcher on the same 100k queries (the slow peers set that size); the
                        table's ratios compare like with like; extra_info["ns_per_lookup"]
  names-<size>-1Mq      kzfilter on 1M queries (match_packed, and match_list incl. packing)
  build-<size>          build of each matcher, and NameAutomaton.from_bytes (load without rebuild);
                        extra_info carries the memory of each structure
A summary table (ns per lookup, build/load seconds, memory) is printed at the end of the module.
"""
from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _namedata import pack, query_names, rule_domains  # noqa: E402

from kzfilter.match._automaton import NameAutomaton  # noqa: E402

try:
    import ahocorasick  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - reported as a skip naming the peer
    ahocorasick = None

SIZES = [10_000, 100_000, 1_000_000]
N_QUERIES = 1_000_000
N_PEER_QUERIES = 100_000
SUMMARY: dict[tuple[int, str], str] = {}


# ---- the peers ----------------------------------------------------------------------------------

def build_kz(rules):
    n = len(rules)
    return NameAutomaton(rules, np.ones(n, np.uint8), np.arange(n, dtype=np.uint64))


def build_dict(rules):
    table: dict[str, int] = {}
    for i, d in enumerate(rules):
        table.setdefault(d, i)
    return table


def dict_walk(table, names):
    """The plain-Python way: look up every label-aligned suffix of the name."""
    out = []
    get = table.get
    for name in names:
        name = name.lower()
        best = -1
        while True:
            r = get(name)
            if r is not None and (best < 0 or r < best):
                best = r
            i = name.find(".")
            if i < 0:
                break
            name = name[i + 1:]
        out.append(best)
    return out


def build_aho(rules):
    auto = ahocorasick.Automaton()
    for i, d in enumerate(rules):
        key = "." + d                   # a leading '.' makes every match label-aligned
        if key not in auto:
            auto.add_word(key, i)
    auto.make_automaton()
    return auto


def aho_match(auto, names):
    """pyahocorasick with the boundary check: only a match that ends at the end of ".name" counts."""
    out = []
    for name in names:
        text = "." + name.lower()
        end = len(text) - 1
        best = -1
        for e, r in auto.iter(text):
            if e == end and (best < 0 or r < best):
                best = r
        out.append(best)
    return out


# ---- fixtures -----------------------------------------------------------------------------------

class Workload:
    def __init__(self, size):
        self.rules = rule_domains(size)
        self.queries = query_names(self.rules, N_QUERIES)
        self.buf, self.offsets = pack(self.queries)
        self.peer_queries = self.queries[:N_PEER_QUERIES]
        self.peer_buf, self.peer_offsets = pack(self.peer_queries)
        tracemalloc.start()
        self.kz = build_kz(self.rules)
        self.kz_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.data = self.kz.to_bytes()
        self._dict = self._aho = None

    @property
    def dict(self):
        if self._dict is None:
            self._dict = build_dict(self.rules)
        return self._dict

    @property
    def aho(self):
        if self._aho is None:
            self._aho = build_aho(self.rules)
        return self._aho


_WORKLOADS: dict[int, Workload] = {}


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s // 1000}k")
def work(request):
    size = request.param
    if size not in _WORKLOADS:
        _WORKLOADS.clear()   # one size in memory at a time
        _WORKLOADS[size] = Workload(size)
    return _WORKLOADS[size]


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    if not SUMMARY:
        return
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n\nname matching summary (ns per lookup, seconds, MB)")
        for (size, what), text in sorted(SUMMARY.items()):
            print(f"  {size:>9,} rules  {what:<28} {text}")


def _ns_per_lookup(benchmark, n, name, size):
    ns = benchmark.stats.stats.min / n * 1e9
    benchmark.extra_info["ns_per_lookup"] = round(ns, 1)
    benchmark.extra_info["queries"] = n
    SUMMARY[(size, name)] = f"{ns:10.1f} ns/lookup (min of rounds, {n:,} queries)"


def _rounds(size):
    return 3 if size < 1_000_000 else 2


# ---- lookups ------------------------------------------------------------------------------------

def test_kz_match_packed(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"names-{size}"
    rule, status = benchmark.pedantic(work.kz.match_packed, (work.peer_buf, work.peer_offsets),
                                      rounds=_rounds(size) + 2, iterations=1, warmup_rounds=1)
    assert rule.tolist() == dict_walk(work.dict, work.peer_queries)   # the same answers as the peer
    _ns_per_lookup(benchmark, N_PEER_QUERIES, "kzfilter match_packed", size)


def test_kz_match_list(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"names-{size}"
    benchmark.pedantic(work.kz.match_list, (work.peer_queries,), rounds=_rounds(size), iterations=1)
    _ns_per_lookup(benchmark, N_PEER_QUERIES, "kzfilter match_list", size)


def test_dict_suffix_walk(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"names-{size}"
    table = work.dict
    benchmark.pedantic(dict_walk, (table, work.peer_queries), rounds=_rounds(size), iterations=1)
    _ns_per_lookup(benchmark, N_PEER_QUERIES, "python dict suffix walk", size)


def test_pyahocorasick(benchmark, work):
    if ahocorasick is None:
        pytest.skip("peer pyahocorasick is not installed (pip install pyahocorasick)")
    size = len(work.rules)
    benchmark.group = f"names-{size}"
    auto = work.aho
    out = benchmark.pedantic(aho_match, (auto, work.peer_queries), rounds=_rounds(size), iterations=1)
    assert out[:20_000] == dict_walk(work.dict, work.peer_queries[:20_000])
    _ns_per_lookup(benchmark, N_PEER_QUERIES, "pyahocorasick + boundary", size)


def test_kz_match_packed_1m_queries(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"names-{size}-1Mq"
    rule, _ = benchmark.pedantic(work.kz.match_packed, (work.buf, work.offsets),
                                 rounds=_rounds(size), iterations=1, warmup_rounds=1)
    benchmark.extra_info["hit_rate"] = round(float((rule >= 0).mean()), 4)
    _ns_per_lookup(benchmark, N_QUERIES, "kzfilter match_packed 1Mq", size)


def test_kz_match_list_1m_queries(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"names-{size}-1Mq"
    benchmark.pedantic(work.kz.match_list, (work.queries,), rounds=_rounds(size), iterations=1)
    _ns_per_lookup(benchmark, N_QUERIES, "kzfilter match_list 1Mq", size)


# ---- build, load and memory ---------------------------------------------------------------------

def _seconds(benchmark, size, name, extra=""):
    s = benchmark.stats.stats.min
    SUMMARY[(size, name)] = f"{s:10.3f} s{extra}"


def test_build_kz(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"build-{size}"
    auto = benchmark.pedantic(build_kz, (work.rules,), rounds=1 if size >= 1_000_000 else 3, iterations=1)
    assert auto.to_bytes() == work.data
    benchmark.extra_info.update(nbytes=auto.nbytes, tracemalloc_peak=work.kz_peak, n_states=auto.n_states)
    _seconds(benchmark, size, "kzfilter build",
             f"   nbytes {auto.nbytes / 1e6:.1f} MB, build peak {work.kz_peak / 1e6:.1f} MB (tracemalloc)")


def test_load_kz_from_bytes(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"build-{size}"
    auto = benchmark.pedantic(NameAutomaton.from_bytes, (work.data,), rounds=5, iterations=1)
    assert auto.n_states == work.kz.n_states
    _seconds(benchmark, size, "kzfilter from_bytes", f"   ({len(work.data) / 1e6:.1f} MB serialised)")


def test_build_dict(benchmark, work):
    size = len(work.rules)
    benchmark.group = f"build-{size}"
    benchmark.pedantic(build_dict, (work.rules,), rounds=1 if size >= 1_000_000 else 3, iterations=1)
    tracemalloc.start()
    table = build_dict(work.rules)
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del table
    benchmark.extra_info["tracemalloc"] = mem
    # the rule strings themselves are shared with the rule list, so this is the dict alone
    _seconds(benchmark, size, "python dict build", f"   dict {mem / 1e6:.1f} MB (tracemalloc)")


def test_build_aho(benchmark, work):
    if ahocorasick is None:
        pytest.skip("peer pyahocorasick is not installed (pip install pyahocorasick)")
    size = len(work.rules)
    benchmark.group = f"build-{size}"
    auto = benchmark.pedantic(build_aho, (work.rules,), rounds=1, iterations=1)
    total = auto.get_stats()["total_size"]
    work._aho = auto
    benchmark.extra_info["total_size"] = total
    _seconds(benchmark, size, "pyahocorasick build", f"   total_size {total / 1e6:.1f} MB (get_stats)")
