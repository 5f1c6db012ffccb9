"""PrefixSet (compiled IP prefix matcher) against the ipaddress-based oracle tests/reference/ip_model.py."""
from __future__ import annotations

import ipaddress
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzfilter.match._prefixes import PrefixSet
from tests.conftest import shared_path
from tests.reference.ip_model import IPModel

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
V4_MAX = 2**32 - 1
V6_MAX = 2**128 - 1


# ----------------------------------------------------------------------------- helpers

def build(v4=(), v6=(), priorities=()):
    """v4/v6: (network int, length, rule) triples -> PrefixSet."""
    v4, v6 = list(v4), list(v6)
    return PrefixSet(
        np.array([n for n, _, _ in v4], dtype=np.uint32),
        np.array([l for _, l, _ in v4], dtype=np.uint8),
        np.array([r for _, _, r in v4], dtype=np.int32),
        np.array([list(n.to_bytes(16, "big")) for n, _, _ in v6], dtype=np.uint8).reshape(-1, 16),
        np.array([l for _, l, _ in v6], dtype=np.uint8),
        np.array([r for _, _, r in v6], dtype=np.int32),
        np.array(priorities, dtype=np.uint64),
    )


def model_of(v4, v6, priorities):
    nets = [(ipaddress.IPv4Network((n, l)), r) for n, l, r in v4]
    nets += [(ipaddress.IPv6Network((n, l)), r) for n, l, r in v6]
    return IPModel(nets, priorities)


def v6_array(addrs):
    return np.array([list(a.to_bytes(16, "big")) for a in addrs], dtype=np.uint8).reshape(-1, 16)


def probes(prefixes, bits, extra):
    """Addresses at and around every prefix boundary, plus the ends of the space and extras."""
    top = 2**bits - 1
    out = {0, top, *extra}
    for n, l, _ in prefixes:
        end = n + 2 ** (bits - l) - 1
        out.update({n, end, max(n - 1, 0), min(end + 1, top), n + (end - n) // 2})
    return sorted(out)


@st.composite
def prefix_family(draw, bits):
    """Prefixes drawn around one small region so that they nest and overlap heavily."""
    top = 2**bits - 1
    if bits == 128:
        kind = draw(st.sampled_from(["random", "hi_lo_split", "low", "high"]))
        base = {"random": draw(st.integers(0, top)), "low": 0, "high": top - 2**16,
                "hi_lo_split": (draw(st.integers(1, 2**64 - 1)) << 64) - 2**15}[kind]
    else:
        base = draw(st.sampled_from([0, top - 2**12, draw(st.integers(0, top))]))
    span = 2**12 if bits == 32 else 2**16
    n_rules = draw(st.integers(1, 8))
    priorities = draw(st.lists(st.integers(0, 3), min_size=n_rules, max_size=n_rules))
    length = st.one_of(st.integers(bits - 14, bits), st.integers(0, bits), st.sampled_from([0, bits]))
    prefixes = []
    for _ in range(draw(st.integers(0, 25))):
        plen = draw(length)
        point = min(base + draw(st.integers(0, span)), top)
        net = point & (top ^ (2 ** (bits - plen) - 1))
        prefixes.append((net, plen, draw(st.integers(0, n_rules - 1))))
    queries = [min(base + draw(st.integers(0, span)), top) for _ in range(10)]
    return prefixes, priorities, queries


# ----------------------------------------------------------------------------- properties

@SETTINGS
@given(prefix_family(32))
def test_v4_matches_reference(family):
    prefixes, priorities, extra = family
    ps = build(v4=prefixes, priorities=priorities)
    model = model_of(prefixes, [], priorities)
    addrs = probes(prefixes, 32, extra)
    got = ps.lookup_v4(np.array(addrs, dtype=np.uint32))
    assert got.dtype == np.int32
    assert got.tolist() == [model.winner(4, a) for a in addrs]
    # the same answers without the bitmap pre-filter, and from the per-address C leaf
    assert ps._lookup_v4_nobitmap(np.array(addrs, dtype=np.uint32)).tolist() == got.tolist()
    assert [ps._one_v4(a) for a in addrs] == got.tolist()
    for a, w in zip(addrs, got.tolist()):
        cov = ps.covering_v4(a).tolist()
        assert cov == model.covering(4, a)
        assert (cov[0] if cov else -1) == w          # batch winner == covering()[0]
    assert ps.n_v4 == len(prefixes) and ps.n_v6 == 0


@SETTINGS
@given(prefix_family(128))
def test_v6_matches_reference(family):
    prefixes, priorities, extra = family
    ps = build(v6=prefixes, priorities=priorities)
    model = model_of([], prefixes, priorities)
    addrs = probes(prefixes, 128, extra)
    got = ps.lookup_v6(v6_array(addrs))
    assert got.tolist() == [model.winner(6, a) for a in addrs]
    assert ps._lookup_v6_prefiltered(v6_array(addrs)).tolist() == got.tolist()
    assert [ps._one_v6(a) for a in addrs] == got.tolist()
    for a, w in zip(addrs, got.tolist()):
        cov = ps.covering_v6(a).tolist()
        assert cov == model.covering(6, a)
        assert (cov[0] if cov else -1) == w
    assert ps.n_v6 == len(prefixes)


@settings(max_examples=60, deadline=None)
@given(prefix_family(32), prefix_family(128))
def test_round_trip_bytes_and_pickle(f4, f6):
    (p4, prio4, q4), (p6, prio6, q6) = f4, f6
    n = max(len(prio4), len(prio6))
    priorities = (prio4 + [0] * n)[:n] if len(prio4) >= len(prio6) else (prio6 + [0] * n)[:n]
    ps = build(v4=p4, v6=p6, priorities=priorities)
    a4 = np.array(probes(p4, 32, q4), dtype=np.uint32)
    a6 = v6_array(probes(p6, 128, q6))
    for clone in (PrefixSet.from_bytes(ps.to_bytes()), pickle.loads(pickle.dumps(ps))):
        assert clone.lookup_v4(a4).tolist() == ps.lookup_v4(a4).tolist()
        assert clone.lookup_v6(a6).tolist() == ps.lookup_v6(a6).tolist()
        assert clone.covering_v4(int(a4[-1])).tolist() == ps.covering_v4(int(a4[-1])).tolist()
        assert (clone.n_v4, clone.n_v6, clone.nbytes) == (ps.n_v4, ps.n_v6, ps.nbytes)
        assert clone.to_bytes() == ps.to_bytes()


# ----------------------------------------------------------------------------- examples

def test_longest_prefix_then_priority():
    v4 = [(0x0A000000, 8, 0), (0x0A010000, 16, 1), (0x0A010000, 16, 2), (0x0A010203, 32, 3), (0, 0, 4)]
    ps = build(v4=v4, priorities=[9, 5, 1, 7, 0])
    got = ps.lookup_v4(np.array([0x0A010203, 0x0A010204, 0x0A020000, 0x0B000000], dtype=np.uint32))
    assert got.tolist() == [3, 2, 0, 4]
    assert ps.covering_v4(0x0A010203).tolist() == [3, 2, 1, 0, 4]
    assert ps.covering_v4(ipaddress.IPv4Address("10.1.2.4")).tolist() == [2, 1, 0, 4]


def test_equal_priority_ties_go_to_smaller_rule_id_and_duplicates_collapse():
    ps = build(v4=[(0x0A000000, 8, 3), (0x0A000000, 8, 1), (0x0A000000, 8, 1), (0x0A000000, 24, 3)],
               priorities=[0, 4, 0, 4])
    assert ps.lookup_v4(np.array([0x0A000001, 0x0A000100], dtype=np.uint32)).tolist() == [3, 1]
    assert ps.covering_v4(0x0A000001).tolist() == [3, 1]      # rule 3 once, at its best prefix


def test_full_space_and_host_prefixes():
    ps = build(v4=[(0, 0, 0), (V4_MAX, 32, 1)], v6=[(0, 0, 2), (V6_MAX, 128, 3), (0, 128, 1)],
               priorities=[0, 0, 0, 0])
    assert ps.lookup_v4(np.array([0, 1, V4_MAX - 1, V4_MAX], dtype=np.uint32)).tolist() == [0, 0, 0, 1]
    assert ps.lookup_v6(v6_array([0, 1, V6_MAX - 1, V6_MAX])).tolist() == [1, 2, 2, 3]
    assert ps.covering_v6(V6_MAX).tolist() == [3, 2]


def test_v6_prefix_crossing_the_64_bit_halves():
    net = int(ipaddress.IPv6Address("2001:db8::"))
    ps = build(v6=[(net, 32, 0), (net | (1 << 64), 64, 1), (net | (1 << 64) | 0xFF00, 120, 2)],
               priorities=[0, 0, 0])
    addrs = [net, net | (1 << 64) - 1, net | (1 << 64), net | (1 << 64) | 0xFF17, net | (2 << 64),
             net + 2**96, net - 1]
    assert ps.lookup_v6(v6_array(addrs)).tolist() == [0, 0, 1, 2, 0, -1, -1]


def test_batches_longer_than_a_block_match_covering():
    """The batch loop works in blocks of 64 with compaction: check lengths around block edges."""
    rng = np.random.default_rng(3)
    v4 = [(int(n) & ~(2 ** (32 - l) - 1) & V4_MAX, int(l), i)
          for i, (n, l) in enumerate(zip(rng.integers(0, 2**20, 300) << 12, rng.integers(8, 33, 300)))]
    ps = build(v4=v4, priorities=list(range(300)))
    for n in (1, 63, 64, 65, 128, 1000):
        addrs = (rng.integers(0, 2**20, n) << 12 | rng.integers(0, 4096, n)).astype(np.uint32)
        expect = [(c[0] if len(c) else -1) for c in (ps.covering_v4(int(a)) for a in addrs)]
        assert ps.lookup_v4(addrs).tolist() == expect
        assert ps.lookup_v4(addrs[::-1].copy()).tolist() == expect[::-1]


def test_empty_sets():
    ps = build()
    assert ps.lookup_v4(np.array([0, 5, V4_MAX], dtype=np.uint32)).tolist() == [-1, -1, -1]
    assert ps.lookup_v6(v6_array([0, V6_MAX])).tolist() == [-1, -1]
    assert ps.lookup_v4(np.zeros(0, dtype=np.uint32)).shape == (0,)
    assert ps.lookup_v6(np.zeros((0, 16), dtype=np.uint8)).shape == (0,)
    assert ps.covering_v4(7).tolist() == [] and ps.covering_v6(7).tolist() == []
    assert (ps.n_v4, ps.n_v6) == (0, 0)
    assert PrefixSet.from_bytes(ps.to_bytes()).lookup_v4(np.array([1], dtype=np.uint32)).tolist() == [-1]


def test_bad_arguments_are_value_or_type_errors():
    with pytest.raises(ValueError, match="host bits"):
        build(v4=[(0x0A000001, 8, 0)], priorities=[0])
    with pytest.raises(ValueError, match="host bits"):
        build(v6=[(1, 64, 0)], priorities=[0])
    with pytest.raises(ValueError, match="above 32"):
        build(v4=[(0, 33, 0)], priorities=[0])
    with pytest.raises(ValueError, match="rule id"):
        build(v4=[(0, 8, 1)], priorities=[0])
    ps = build(v4=[(0, 8, 0)], priorities=[0])
    with pytest.raises(ValueError):
        ps.lookup_v4(np.array([-1], dtype=np.int64))
    with pytest.raises(TypeError):
        ps.lookup_v4(np.array([1.5]))
    with pytest.raises(ValueError):
        ps.lookup_v6(np.zeros((2, 15), dtype=np.uint8))
    with pytest.raises(ValueError):
        ps.covering_v4(2**32)
    with pytest.raises(TypeError):
        ps.covering_v4("10.0.0.1")


def test_corrupt_bytes_raise_value_error():
    ps = build(v4=[(0x0A000000, 8, 0), (0x0A010000, 16, 1)],
               v6=[(int(ipaddress.IPv6Address("2001:db8::")), 32, 1)], priorities=[0, 0])
    data = ps.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            PrefixSet.from_bytes(data[:cut])
    with pytest.raises(ValueError, match="magic"):
        PrefixSet.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(ValueError):
        PrefixSet.from_bytes(data + b"\0" * 8)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_bytes_never_crash(data):
    ps = build(v4=[(0x0A000000, 8, 0), (0x0A010000, 16, 1), (0x0A010100, 24, 0)],
               v6=[(int(ipaddress.IPv6Address("2001:db8::")), 32, 1), (0, 0, 0)], priorities=[0, 0])
    raw = bytearray(ps.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        clone = PrefixSet.from_bytes(bytes(raw))
    except ValueError:
        return
    # Accepted bytes must still give in-range answers on every address class.
    out = clone.lookup_v4(np.array([0, 0x0A000000, 0x0A010101, V4_MAX], dtype=np.uint32))
    assert out.min() >= -1
    clone.lookup_v6(v6_array([0, V6_MAX, int(ipaddress.IPv6Address("2001:db8::1"))]))
    clone.covering_v4(0x0A010101)
    clone.covering_v6(1)


# ----------------------------------------------------------------------------- real lists

def read_cidrs(path):
    nets = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            nets.append(ipaddress.ip_network(line, strict=False))
    return nets


def from_networks(nets):
    v4 = [(int(n.network_address), n.prefixlen, i) for i, n in enumerate(nets) if n.version == 4]
    v6 = [(int(n.network_address), n.prefixlen, i) for i, n in enumerate(nets) if n.version == 6]
    return build(v4=v4, v6=v6, priorities=[0] * len(nets))


@pytest.mark.shared_data
def test_real_vpn_list_spot_checks():
    nets = read_cidrs(shared_path("lists", "ip", "x4bnet-vpn", "vpn-ipv4.txt"))
    ps = from_networks(nets)
    first = nets[0]
    inside = int(first.network_address) + first.num_addresses // 2
    outside = int(ipaddress.IPv4Address("127.0.0.1"))
    assert not any(ipaddress.IPv4Address(outside) in n for n in nets)
    got = ps.lookup_v4(np.array([inside, outside], dtype=np.uint32)).tolist()
    assert got[1] == -1
    assert nets[got[0]].prefixlen >= first.prefixlen and ipaddress.IPv4Address(inside) in nets[got[0]]


@pytest.mark.shared_data
@pytest.mark.parametrize("parts", [("x4bnet-vpn", "datacenter-ipv4.txt"), ("x4bnet-vpn", "datacenter-ipv6.txt"),
                                   ("country-ip-blocks", "ipv6-cn.cidr")])
def test_real_lists_agree_with_pytricia(parts):
    pytricia = pytest.importorskip("pytricia", reason="pytricia is the independent longest-prefix oracle here")
    nets = read_cidrs(shared_path("lists", "ip", *parts))
    ps = from_networks(nets)
    bits = 32 if nets[0].version == 4 else 128
    trie = pytricia.PyTricia(bits)
    for i in reversed(range(len(nets))):           # identical prefixes: the smaller rule id wins
        trie[nets[i]] = i
    rng = np.random.default_rng(7)
    addrs = []
    for i in rng.integers(0, len(nets), 1500):
        n = nets[i]
        addrs.append(int(n.network_address) + int(rng.integers(0, min(n.num_addresses, 2**62))))
    if bits == 32:
        addrs += rng.integers(0, 2**32, 1500).tolist()
    else:
        addrs += [(0x2 << 124) | (int(rng.integers(0, 2**60)) << 64) | int(rng.integers(0, 2**63))
                  for _ in range(1500)]
    expect = [trie.get(ipaddress.ip_address(a) if bits == 32 else ipaddress.IPv6Address(a), -1) for a in addrs]
    if bits == 32:
        got = ps.lookup_v4(np.array(addrs, dtype=np.uint32))
    else:
        got = ps.lookup_v6(v6_array(addrs))
    assert got.tolist() == expect
    assert sum(e >= 0 for e in expect) >= 1500             # the probes really exercise hits
