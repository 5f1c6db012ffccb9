"""Benchmark data for the IP prefix matcher: real blocklist prefixes, a realistic top-up, queries.

Real IPv4 prefixes come from ``../shared/data/lists/ip`` (ipsum, blocklistproject, x4bnet
datacenter/VPN, country-ip-blocks): about 230k prefixes, mostly /32 hosts and /16-/24 networks.
The 10k and 100k sets are seeded samples of them.  The 1M set is all of them topped up by
``synthetic_v4``, a deterministic generator (seeded numpy PCG64) that imitates how blocklists
grow: new entries fall inside address space that is already listed (hosting, VPN and country
allocations), so they nest and cluster like the real lists:

* 70 % /32 hosts at a uniform address inside a random real prefix (ipsum-like threat feeds);
* 20 % /24 networks inside a random real prefix of length <= 24;
* 10 % /16-/23 networks, lengths drawn from x4bnet datacenter's own length histogram, inside a
  random real prefix that is at least as short.

Queries: 1M addresses, ``HIT_RATE`` (3 %) inside a random prefix of the set, the rest uniform
addresses that no prefix covers (checked with an independent numpy merge of the prefix ranges),
shuffled.  IPv6 uses the real v6 lists as they are, and misses drawn from 2000::/3.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lists" / "ip"
SEED = 20260828
HIT_RATE = 0.03

V4_FILES = [
    ("ipsum", "ipsum.txt"), ("blocklistproject", "abuse.ip"), ("blocklistproject", "malware.ip"),
    ("x4bnet-vpn", "datacenter-ipv4.txt"), ("x4bnet-vpn", "vpn-ipv4.txt"),
    *[("country-ip-blocks", f"ipv4-{cc}.cidr") for cc in ("by", "cn", "ir", "kz", "ru")],
]
V6_FILES = [
    ("x4bnet-vpn", "datacenter-ipv6.txt"), ("x4bnet-vpn", "vpn-ipv6.txt"),
    *[("country-ip-blocks", f"ipv6-{cc}.cidr") for cc in ("by", "cn", "ir", "kz", "ru")],
]


def _networks(parts, version):
    path = SHARED.joinpath(*parts)
    out = []
    for line in path.read_text(errors="replace").splitlines():
        text = line.split("#", 1)[0].split()
        if not text:
            continue
        try:
            net = ipaddress.ip_network(text[0], strict=False)
        except ValueError:
            continue
        if net.version == version:
            out.append(net)
    return out


@lru_cache(maxsize=None)
def real_v4():
    """(net uint32[n], len uint8[n]) of every real IPv4 prefix, list order, duplicates kept."""
    nets = [n for parts in V4_FILES for n in _networks(parts, 4)]
    return (np.array([int(n.network_address) for n in nets], dtype=np.uint32),
            np.array([n.prefixlen for n in nets], dtype=np.uint8))


@lru_cache(maxsize=None)
def real_v6():
    """(net uint8[m,16], len uint8[m]) of every real IPv6 prefix."""
    nets = [n for parts in V6_FILES for n in _networks(parts, 6)]
    raw = b"".join(n.network_address.packed for n in nets)
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 16).copy(), np.array([n.prefixlen for n in nets], np.uint8)


def _inside(rng, net, plen, new_len):
    """A random network of length new_len inside each (net, plen) (new_len >= plen)."""
    span = np.left_shift(np.uint64(1), (32 - plen).astype(np.uint64))
    point = net.astype(np.uint64) + (rng.random(len(net)) * span.astype(np.float64)).astype(np.uint64) % span
    mask = (np.uint64(0xFFFFFFFF) << (32 - new_len).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    return (point & mask).astype(np.uint32)


def synthetic_v4(count, seed=SEED):
    """count deterministic prefixes nested in the real lists (see the module docstring)."""
    rng = np.random.default_rng(seed)
    net, plen = real_v4()
    n_host, n_24 = int(count * 0.7), int(count * 0.2)
    n_mid = count - n_host - n_24
    # /32 hosts
    pick = rng.integers(0, len(net), n_host)
    hosts = _inside(rng, net[pick], plen[pick], np.full(n_host, 32, np.uint8))
    # /24 networks inside real prefixes of length <= 24
    short = np.flatnonzero(plen <= 24)
    pick = short[rng.integers(0, len(short), n_24)]
    nets24 = _inside(rng, net[pick], plen[pick], np.full(n_24, 24, np.uint8))
    # /16-/23 with the datacenter histogram, inside a real prefix at least as short
    dc = np.array(_len_histogram(), dtype=np.uint8)
    want = dc[rng.integers(0, len(dc), n_mid)]
    order = np.argsort(plen, kind="stable")
    sorted_len = plen[order]
    limit = np.searchsorted(sorted_len, want, side="right")            # candidates: len <= want
    pick = order[(rng.random(n_mid) * np.maximum(limit, 1)).astype(np.int64)]
    want = np.maximum(want, plen[pick])
    mids = _inside(rng, net[pick], plen[pick], want)
    return (np.concatenate([hosts, nets24, mids]),
            np.concatenate([np.full(n_host, 32, np.uint8), np.full(n_24, 24, np.uint8), want]))


def _len_histogram():
    """Lengths 16..23 repeated by their count in x4bnet datacenter-ipv4 (the real distribution)."""
    lens = [n.prefixlen for n in _networks(("x4bnet-vpn", "datacenter-ipv4.txt"), 4)]
    return [l for l in lens if 16 <= l <= 23]


@lru_cache(maxsize=None)
def v4_prefixes(size):
    """(net, len, rule) with `size` prefixes: a seeded sample of the real ones, or all + synthetic."""
    net, plen = real_v4()
    if size <= len(net):
        idx = np.sort(np.random.default_rng(SEED + size).choice(len(net), size, replace=False))
        net, plen = net[idx], plen[idx]
    else:
        snet, slen = synthetic_v4(size - len(net))
        net, plen = np.concatenate([net, snet]), np.concatenate([plen, slen])
    return net, plen, np.arange(len(net), dtype=np.int32)


def covered_ranges(net, plen):
    """Merged, sorted [start, end) uint64 ranges covered by the prefixes (independent of kzfilter)."""
    start = net.astype(np.uint64)
    end = start + (np.uint64(1) << (32 - plen).astype(np.uint64))
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    run_end = np.maximum.accumulate(end)
    new = np.ones(len(start), dtype=bool)
    new[1:] = start[1:] > run_end[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(start)) - 1
    return start[first], run_end[last]


@lru_cache(maxsize=None)
def v4_queries(size, count=1_000_000):
    """count uint32 addresses: HIT_RATE inside random prefixes of the set, the rest misses."""
    net, plen, _ = v4_prefixes(size)
    rng = np.random.default_rng(SEED + 1)
    n_hit = int(count * HIT_RATE)
    pick = rng.integers(0, len(net), n_hit)
    hits = _inside(rng, net[pick], plen[pick], np.full(n_hit, 32, np.uint8))
    lo, hi = covered_ranges(net, plen)
    misses = np.zeros(0, dtype=np.uint32)
    while len(misses) < count - n_hit:
        cand = rng.integers(0, 2**32, 2 * count, dtype=np.uint64)
        i = np.searchsorted(lo, cand, side="right") - 1
        free = (i < 0) | (cand >= hi[np.maximum(i, 0)])
        misses = np.concatenate([misses, cand[free].astype(np.uint32)])
    out = np.concatenate([hits, misses[: count - n_hit]])
    rng.shuffle(out)
    return out


@lru_cache(maxsize=None)
def v6_queries(count):
    """count (n, 16) uint8 addresses: HIT_RATE inside real v6 prefixes, the rest in 2000::/3."""
    net, plen = real_v6()
    rng = np.random.default_rng(SEED + 6)
    n_hit = int(count * HIT_RATE)
    pick = rng.integers(0, len(net), n_hit)
    rows = []
    for i in pick.tolist():
        base = int.from_bytes(net[i].tobytes(), "big")
        offset = int.from_bytes(rng.bytes(16), "big") & ((1 << (128 - int(plen[i]))) - 1)
        rows.append((base | offset).to_bytes(16, "big"))
    hits = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 16)
    miss = rng.integers(0, 256, (count - n_hit, 16), dtype=np.uint8)
    miss[:, 0] = 0x20 | (miss[:, 0] & 0x1F)                              # 2000::/3, global unicast
    out = np.concatenate([hits, miss])
    rng.shuffle(out)
    return np.ascontiguousarray(out)
