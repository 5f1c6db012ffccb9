# cython: wraparound=True
# (numpy slices like a[:-1] in the Python-level helpers; the C loops opt out below)
"""Compiled IPv4/IPv6 prefix matcher: longest prefix wins, then the smaller rule priority.

Design (why it looks like this):

* **Exact attribution by flattening.**  CIDR prefixes are either nested or disjoint (a laminar
  family), so one sweep over them sorted by (start, length) turns the nested, overlapping rule
  prefixes into sorted *disjoint* intervals, each labelled with its innermost prefix and that
  prefix's winning rule.  A lookup is then one binary search for the interval that holds the
  address; no per-length probing.  A 16-bit directory (the first interval of each top-16-bit
  bucket, 256 KiB) narrows the search to one bucket so the top levels of the search cost nothing.
  Identical prefixes of several rules collapse to one prefix whose winner is the smallest
  priority (ties: the smaller rule id).  Each flattened prefix keeps its parent and all its rules,
  so ``covering_*`` walks from the innermost prefix outwards: every covering rule, best first.
* **Fast negatives on pyroaring.**  IPv4: a 32-bit roaring bitmap of the covered /16 blocks
  (why /16 and not every address: next point).  The ``nogil`` loop calls CRoaring's ``roaring_bitmap_contains`` on the bitmap's ``raw_pointer``;
  pyroaring ships no ``.pxd``, so the symbol is resolved once at import with ``dlopen`` of
  pyroaring's own extension file and ``dlsym`` (``nm -D`` shows it exported, with
  ``roaring_bitmap_add_range_closed`` which builds the bitmap without a Python call per prefix).
  The Python ``BitMap`` object is kept as the owner of the C bitmap.
* **Blocked, prefetching batch loops.**  Random addresses against megabytes of intervals are
  bound by memory latency.  Measured at 1M IPv4 prefixes (1M queries, 3 % hits): a per-address
  loop with the full-address roaring bitmap in front took 400-540 ns/address (CRoaring's
  ``contains`` is 3-4 dependent cache misses: key search over 65536 containers, container,
  payload), the interval search alone 80-130 ns.  Processing blocks of 64 addresses in phases
  (filter, directory + prefetch, search + prefetch, answer) lets the misses overlap: 33 ns.
  In that pipeline the bitmap pays only when it is cache resident, so it is keyed on the /16
  (``V4_KEY_SHIFT``: one 8 KiB roaring container) and drops ~70 % of misses for 3 ns
  (quiet machine: 33 ns with it, 45 without; under heavy load 15 paired runs are within noise,
  medians 44 vs 48 ns at 100k prefixes and 74 vs 72 at 1M).  Bitmaps keyed on /24 or on full
  addresses were slower than no bitmap at all.  Packing (start, rule) pairs into one uint64
  array to save the answer's cache miss was tried and was slower at 1M (search array doubles).
* **IPv6: no 64-bit bitmap; directory + exact 128-bit search; the roaring pre-filter is off.**
  A ``BitMap64`` of the top 64 address bits is not workable (measured with pyroaring 1.2: adding
  one /32 takes 26 ms and 0.9 MB, a /28 0.6 s and 15 MB, x4 per two bits, so the /18-/22 prefixes
  of x4bnet's datacenter-ipv6 list or a /0 rule need minutes and gigabytes).  A 32-bit ``BitMap``
  of a coarser slice (``V6_KEY_SHIFT``: the /24, bounded memory whatever the rules) is built and
  serialised, but measured it slows lookups (real v6 lists, 14k prefixes: 15 ns with it, 8 ns
  without; 1M synthetic /48-/64 prefixes: 53 vs 41 ns), because the top-16-bit directory of the
  interval search already rejects almost every random global-unicast miss with one read.
  ``lookup_v6`` therefore skips it; ``_lookup_v6_prefiltered`` keeps the measurement
  reproducible in ``benchmarks/bench_ips.py``.  Every prefix length, including > /64, is exact.

Serialisation (``to_bytes``/pickle) stores the flattened arrays and both bitmaps
(``BitMap.serialize``), so loading is a copy plus O(n) vectorised checks, not a rebuild.  Every
field read from the bytes is length- and range-checked before a C loop indexes with it, so
hostile bytes give ``ValueError``, never an out-of-bounds read (a forged bitmap can only make
the pre-filter wrong, like any forged label).
"""
import os
import struct
from ipaddress import IPv4Address, IPv6Address

cimport cython
import numpy as np
import pyroaring
from pyroaring import BitMap

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t, uintptr_t

__all__ = ["PrefixSet"]

# ------------------------------------------------------------------ CRoaring symbols (once)

cdef kz_roaring_contains_fn _contains = NULL
cdef kz_roaring_add_range_closed_fn _add_range_closed = NULL


def _pyroaring_extension_path():
    """The file of pyroaring's compiled extension (a single-file module in pyroaring 1.x)."""
    from importlib.machinery import EXTENSION_SUFFIXES
    path = getattr(pyroaring, "__file__", None) or ""
    if path.endswith(tuple(EXTENSION_SUFFIXES)):
        return path
    folder = os.path.dirname(path)
    for name in sorted(os.listdir(folder)) if folder else ():
        if name.endswith(tuple(EXTENSION_SUFFIXES)):
            return os.path.join(folder, name)
    raise ImportError(f"kzfilter: cannot find pyroaring's compiled extension near {path!r}")


cdef void *_resolve(void *handle, bytes name) except NULL:
    cdef void *sym = dlsym(handle, name)
    if sym == NULL:
        raise ImportError(
            f"kzfilter: pyroaring {pyroaring.__version__} does not export the CRoaring symbol "
            f"{name.decode()} (checked with dlsym); kzfilter needs pyroaring>=1.0 built with CRoaring's C API")
    return sym


cdef _load_croaring():
    global _contains, _add_range_closed
    path = os.fsencode(_pyroaring_extension_path())
    # pyroaring is already imported, so RTLD_NOLOAD just returns its handle (same CRoaring copy
    # as the bitmaps we get raw_pointer from); fall back to a plain dlopen on odd loaders.
    cdef void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        handle = dlopen(path, RTLD_NOW | RTLD_LOCAL)
    cdef char *err
    if handle == NULL:
        err = dlerror()
        reason = err.decode("utf-8", "replace") if err != NULL else "unknown error"
        raise ImportError(f"kzfilter: dlopen of pyroaring's extension failed: {reason}")
    _contains = <kz_roaring_contains_fn>_resolve(handle, b"roaring_bitmap_contains")
    _add_range_closed = <kz_roaring_add_range_closed_fn>_resolve(handle, b"roaring_bitmap_add_range_closed")


_load_croaring()

# ------------------------------------------------------------------ constants and helpers

_MAGIC = b"KZPS"
_VERSION = 1
_HEADER = struct.Struct("<4sIQQ")       # magic, format version, n_v4, n_v6
_SECTION = struct.Struct("<Q")          # byte length of the next section (then padding to 8)
_U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)
_V6_KEY_MAX = np.uint64((1 << (64 - V6_KEY_SHIFT)) - 1)


cdef inline uint64_t _be64(const uint8_t *p) noexcept nogil:
    # Network byte order (RFC 8200 addresses are big-endian octet strings).
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40) |
            (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16) |
            (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline kz_u128 _hostmask(int bits, int plen) noexcept nogil:
    cdef int h = bits - plen
    if h >= 128:
        return ~(<kz_u128>0)
    return ((<kz_u128>1) << h) - 1


cdef inline kz_u128 _u128(uint64_t hi, uint64_t lo) noexcept nogil:
    return ((<kz_u128>hi) << 64) | lo


@cython.wraparound(False)
cdef inline Py_ssize_t _emit(kz_u128 pos, int32_t label, uint64_t *bhi, uint64_t *blo,
                             int32_t *bpfx, Py_ssize_t nb) noexcept nogil:
    """Append boundary (pos, label), merging with the previous one; positions never decrease."""
    if nb > 0 and _u128(bhi[nb - 1], blo[nb - 1]) == pos:
        bpfx[nb - 1] = label                    # a later event at the same position overrides
        if nb > 1 and bpfx[nb - 2] == label:
            return nb - 1
        return nb
    if nb > 0 and bpfx[nb - 1] == label:
        return nb
    bhi[nb] = <uint64_t>(pos >> 64)
    blo[nb] = <uint64_t>pos
    bpfx[nb] = label
    return nb + 1


@cython.wraparound(False)
cdef Py_ssize_t _sweep(const uint64_t[::1] shi, const uint64_t[::1] slo, const uint8_t[::1] plen,
                       int bits, uint64_t[::1] bhi, uint64_t[::1] blo, int32_t[::1] bpfx,
                       int32_t[::1] parent) noexcept nogil:
    """Flatten unique prefixes sorted by (start, length) into disjoint intervals.

    Returns the number of boundaries written (capacity 2*U+1), or -1 if the input was not a
    sorted laminar family (cannot happen for prefixes built by PrefixSet; guards the stack).
    """
    cdef int32_t stack[130]
    cdef int depth = 0
    cdef Py_ssize_t u, nb = 0, n = shi.shape[0]
    cdef kz_u128 s, e, space_max = _hostmask(bits, 0)
    cdef int32_t t
    nb = _emit(0, -1, &bhi[0], &blo[0], &bpfx[0], nb)
    for u in range(n):
        s = _u128(shi[u], slo[u])
        while depth > 0:
            t = stack[depth - 1]
            e = _u128(shi[t], slo[t]) + _hostmask(bits, plen[t])
            if e >= s:
                break
            depth -= 1
            if e < space_max:
                nb = _emit(e + 1, stack[depth - 1] if depth > 0 else -1, &bhi[0], &blo[0], &bpfx[0], nb)
        if depth >= 129:
            return -1
        parent[u] = stack[depth - 1] if depth > 0 else -1
        nb = _emit(s, <int32_t>u, &bhi[0], &blo[0], &bpfx[0], nb)
        stack[depth] = <int32_t>u
        depth += 1
    while depth > 0:
        depth -= 1
        t = stack[depth]
        e = _u128(shi[t], slo[t]) + _hostmask(bits, plen[t])
        if e < space_max:
            nb = _emit(e + 1, stack[depth - 1] if depth > 0 else -1, &bhi[0], &blo[0], &bpfx[0], nb)
    return nb


@cython.wraparound(False)
cdef void _fill_bitmap(void *bm, const uint32_t[::1] lo, const uint32_t[::1] hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo.shape[0]):
        _add_range_closed(bm, lo[i], hi[i])


def _bitmap_from_runs(run_lo, run_hi):
    """A pyroaring BitMap holding the closed ranges [run_lo[i], run_hi[i]] (uint32 arrays)."""
    bm = BitMap()
    cdef const uint32_t[::1] lo = np.ascontiguousarray(run_lo, dtype=np.uint32)
    cdef const uint32_t[::1] hi = np.ascontiguousarray(run_hi, dtype=np.uint32)
    cdef void *ptr = <void *><uintptr_t>bm.raw_pointer
    with nogil:
        _fill_bitmap(ptr, lo, hi)
    bm.run_optimize()
    bm.shrink_to_fit()
    return bm


def _hostmask64(h):
    """uint64 masks of h (0..64) low bits, vectorised; h >= 64 gives all ones."""
    h = np.asarray(h, dtype=np.int64)
    small = np.left_shift(np.uint64(1), np.minimum(h, 63).astype(np.uint64)) - np.uint64(1)
    return np.where(h >= 64, _U64_MAX, small).astype(np.uint64)


def _as_1d(x, dtype, name):
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=dtype)
    if a.dtype.kind not in "ui" and not (a.dtype.kind == "b"):
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    info = np.iinfo(dtype)
    if a.min() < info.min or a.max() > info.max:
        raise ValueError(f"{name} has values outside {np.dtype(dtype).name}")
    return np.ascontiguousarray(a, dtype=dtype)


def _flatten(hi, lo, plen, rule, prio, int bits):
    """Sort, deduplicate and flatten one family. Returns the dict of arrays PrefixSet keeps."""
    n = len(hi)
    order = np.lexsort((rule, prio, plen, lo, hi))
    hi, lo, plen, rule, prio = hi[order], lo[order], plen[order], rule[order], prio[order]
    if n:
        new_pfx = np.ones(n, dtype=bool)
        new_pfx[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1]) | (plen[1:] != plen[:-1])
        # The same rule twice on one prefix counts once (a rule given twice by the caller).
        keep = new_pfx.copy()
        keep[1:] |= rule[1:] != rule[:-1]
        hi, lo, plen, rule, new_pfx = hi[keep], lo[keep], plen[keep], rule[keep], new_pfx[keep]
        first = np.flatnonzero(new_pfx)
    else:
        first = np.zeros(0, dtype=np.int64)
    u = len(first)
    uhi = np.ascontiguousarray(hi[first], dtype=np.uint64)
    ulo = np.ascontiguousarray(lo[first], dtype=np.uint64)
    ulen = np.ascontiguousarray(plen[first], dtype=np.uint8)
    off = np.empty(u + 1, dtype=np.int64)
    off[:u] = first
    off[u] = len(rule)
    rules = np.ascontiguousarray(rule, dtype=np.int32)
    bhi = np.empty(2 * u + 1, dtype=np.uint64)
    blo = np.empty(2 * u + 1, dtype=np.uint64)
    bpfx = np.empty(2 * u + 1, dtype=np.int32)
    parent = np.empty(u, dtype=np.int32)
    cdef Py_ssize_t nb
    cdef const uint64_t[::1] vhi = uhi
    cdef const uint64_t[::1] vlo = ulo
    cdef const uint8_t[::1] vlen = ulen
    cdef uint64_t[::1] obhi = bhi
    cdef uint64_t[::1] oblo = blo
    cdef int32_t[::1] obpfx = bpfx
    cdef int32_t[::1] oparent = parent
    with nogil:
        nb = _sweep(vhi, vlo, vlen, bits, obhi, oblo, obpfx, oparent)
    if nb < 0:  # pragma: no cover - sorted CIDR prefixes always nest
        raise RuntimeError("kzfilter: prefix flattening found a non-nested prefix family")
    bhi, blo, bpfx = bhi[:nb].copy(), blo[:nb].copy(), bpfx[:nb].copy()
    win = rules[first] if u else np.zeros(0, dtype=np.int32)
    brule = np.where(bpfx >= 0, win[np.maximum(bpfx, 0)] if u else -1, -1).astype(np.int32)
    return dict(hi=bhi, lo=blo, pfx=bpfx, rule=brule, parent=parent, off=off, rules=rules)


# ------------------------------------------------------------------ validation of arrays

def _check(cond, what):
    if not cond:
        raise ValueError(f"corrupt PrefixSet data: {what}")


def _validate_family(fam, int bits):
    """O(n) vectorised checks that make every index the C loops and covering() use in range."""
    starts = fam["lo"] if bits == 32 else None
    k = len(fam["pfx"])
    _check(k >= 1, "no intervals")
    _check(len(fam["rule"]) == k, "interval label arrays differ in length")
    if bits == 32:
        _check(len(starts) == k and int(starts[0]) == 0, "IPv4 intervals must start at address 0")
        _check(bool(np.all(starts[1:] > starts[:-1])), "IPv4 interval starts not increasing")
    else:
        hi, lo = fam["hi"], fam["lo"]
        _check(len(hi) == k and len(lo) == k, "IPv6 interval arrays differ in length")
        _check(int(hi[0]) == 0 and int(lo[0]) == 0, "IPv6 intervals must start at ::")
        inc = (hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1]))
        _check(bool(np.all(inc)), "IPv6 interval starts not increasing")
    u = len(fam["parent"])
    _check(bool(np.all((fam["pfx"] >= -1) & (fam["pfx"] < u))), "interval prefix label out of range")
    _check(bool(np.all(fam["rule"] >= -1)), "negative rule id")
    _check(bool(np.all((fam["parent"] >= -1) & (fam["parent"] < np.arange(u)))),
           "prefix parent out of range (must precede the prefix)")
    off, rules = fam["off"], fam["rules"]
    _check(len(off) == u + 1 and int(off[0]) == 0 and int(off[-1]) == len(rules),
           "rule offsets do not span the rule array")
    _check(bool(np.all(off[1:] >= off[:-1])), "rule offsets decrease")
    _check(bool(np.all(rules >= 0)), "negative rule id")


def _directory(hi_or_starts, int shift):
    """First interval index of each top-16-bit bucket (65537 entries, the last = interval count)."""
    keys = np.arange(65536, dtype=np.uint64) << np.uint64(shift)
    d = np.empty(65537, dtype=np.uint32)
    d[:65536] = np.searchsorted(np.asarray(hi_or_starts, dtype=np.uint64), keys, side="left")
    d[65536] = len(hi_or_starts)
    return d


def _load_bitmap(data, maximum, what):
    try:
        bm = BitMap.deserialize(data)
    except Exception as exc:
        raise ValueError(f"corrupt PrefixSet data: {what} bitmap: {exc}") from None
    _check(len(bm) == 0 or bm.max() <= maximum, f"{what} bitmap key out of range")
    return bm


def _v4_runs(starts, pfx):
    """Closed uint32 ranges of covered IPv4 addresses (intervals labelled with a prefix)."""
    starts = np.asarray(starts, dtype=np.uint64)
    ends = np.empty(len(starts), dtype=np.uint64)
    ends[:-1] = starts[1:] - np.uint64(1)
    ends[-1] = 0xFFFFFFFF
    cov = pfx >= 0
    return starts[cov].astype(np.uint32), ends[cov].astype(np.uint32)


def _v6_key_runs(hi, lo, pfx):
    """Closed ranges of pre-filter keys (hi >> V6_KEY_SHIFT) touched by covered IPv6 intervals."""
    hi = np.asarray(hi, dtype=np.uint64)
    cov = np.flatnonzero(pfx >= 0)
    k = len(hi)
    lo_key = (hi[cov] >> np.uint64(V6_KEY_SHIFT)).astype(np.uint32)
    nxt = np.minimum(cov + 1, k - 1)
    lo_next = np.asarray(lo, dtype=np.uint64)[nxt]
    # Last address of the interval = next start - 1 (128-bit borrow from hi when lo is zero).
    end_hi = np.where(lo_next == 0, hi[nxt] - np.uint64(1), hi[nxt])
    hi_key = np.where(cov + 1 < k, end_hi >> np.uint64(V6_KEY_SHIFT), _V6_KEY_MAX).astype(np.uint32)
    return lo_key, hi_key


# ------------------------------------------------------------------ batched lookup kernels
# Random addresses against megabytes of intervals are bound by memory latency, not by
# instructions.  So a block of LOOKUP_BLOCK addresses goes through phases: (1) the roaring
# pre-filter (its one-container /16 bitmap stays in L1) compacts the block to the addresses
# that may match; (2) directory bounds, then a prefetch of each first probe; (3) the binary
# searches, then a prefetch of each answer; (4) the answers.  The independent loads of a phase
# overlap instead of waiting one after another (measured: see the module docstring).
# IPv6 runs the same phases; its pre-filter is off by default (module docstring).

@cython.wraparound(False)
cdef void _lookup_v4_kernel(const uint32_t *a, int32_t *o, Py_ssize_t n, const void *bm,
                            bint use_bitmap, const uint32_t *dir, const uint32_t *starts,
                            const int32_t *rule) noexcept nogil:
    cdef uint32_t idx[LOOKUP_BLOCK]
    cdef Py_ssize_t lo[LOOKUP_BLOCK]
    cdef Py_ssize_t hi[LOOKUP_BLOCK]
    cdef Py_ssize_t base, j, k, m, l, h, mid
    cdef uint32_t x
    base = 0
    while base < n:
        m = n - base if n - base < LOOKUP_BLOCK else LOOKUP_BLOCK
        k = 0
        for j in range(m):
            o[base + j] = -1
            idx[k] = <uint32_t>j
            k += (not use_bitmap) or _contains(bm, a[base + j] >> V4_KEY_SHIFT)
        for j in range(k):
            x = a[base + idx[j]]
            lo[j] = dir[x >> 16]
            hi[j] = dir[(x >> 16) + 1]
            kz_prefetch(&starts[(lo[j] + hi[j]) >> 1])
        for j in range(k):
            x = a[base + idx[j]]
            l = lo[j]
            h = hi[j]
            # Upper bound of x in starts[l:h]: every start before the bucket is below x and
            # starts[0] == 0, so the interval holding x is the one just before the bound.
            while l < h:
                mid = (l + h) >> 1
                if starts[mid] <= x:
                    l = mid + 1
                else:
                    h = mid
            lo[j] = l - 1
            kz_prefetch(&rule[l - 1])
        for j in range(k):
            o[base + idx[j]] = rule[lo[j]]
        base += m


@cython.wraparound(False)
cdef void _lookup_v6_kernel(const uint8_t *a, int32_t *o, Py_ssize_t n, const void *bm,
                            bint use_bitmap, const uint32_t *dir, const uint64_t *shi,
                            const uint64_t *slo, const int32_t *rule) noexcept nogil:
    cdef uint32_t idx[LOOKUP_BLOCK]
    cdef Py_ssize_t lo[LOOKUP_BLOCK]
    cdef Py_ssize_t hi[LOOKUP_BLOCK]
    cdef uint64_t ahi[LOOKUP_BLOCK]
    cdef uint64_t alo[LOOKUP_BLOCK]
    cdef Py_ssize_t base, j, k, m, l, h, mid
    cdef uint64_t xh, xl, top
    base = 0
    while base < n:
        m = n - base if n - base < LOOKUP_BLOCK else LOOKUP_BLOCK
        k = 0
        for j in range(m):
            o[base + j] = -1
            xh = _be64(a + 16 * (base + j))
            idx[k] = <uint32_t>j
            ahi[k] = xh
            alo[k] = _be64(a + 16 * (base + j) + 8)
            k += (not use_bitmap) or _contains(bm, <uint32_t>(xh >> V6_KEY_SHIFT))
        for j in range(k):
            top = ahi[j] >> 48
            lo[j] = dir[top]
            hi[j] = dir[top + 1]
            kz_prefetch(&shi[(lo[j] + hi[j]) >> 1])
        for j in range(k):
            xh = ahi[j]
            xl = alo[j]
            l = lo[j]
            h = hi[j]
            while l < h:
                mid = (l + h) >> 1
                if shi[mid] < xh or (shi[mid] == xh and slo[mid] <= xl):
                    l = mid + 1
                else:
                    h = mid
            lo[j] = l - 1
            kz_prefetch(&rule[l - 1])
        for j in range(k):
            o[base + idx[j]] = rule[lo[j]]
        base += m


# ------------------------------------------------------------------ the matcher

cdef class PrefixSet:
    """Longest-prefix matcher over IPv4 and IPv6 rule prefixes; immutable and picklable.

    Parameters:
        v4_net: uint32[n] IPv4 network addresses (host order, host bits zero).
        v4_len: uint8[n] prefix lengths 0..32.
        v4_rule: int32[n] rule id owning each prefix (a rule may own several).
        v6_net: uint8[m, 16] IPv6 network addresses (network byte order, host bits zero).
        v6_len: uint8[m] prefix lengths 0..128.
        v6_rule: int32[m] rule id of each prefix.
        priorities: uint64[n_rules] indexed by rule id; the smaller wins between prefixes of equal
            length (equal priorities: the smaller rule id).

    Raises:
        ValueError: a length out of range, host bits set, a rule id without a priority, or
            arrays of different lengths.

    Example:
        >>> import numpy as np
        >>> ps = PrefixSet(np.array([0x0A000000], np.uint32), np.array([8], np.uint8),
        ...                np.array([0], np.int32), np.zeros((0, 16), np.uint8),
        ...                np.zeros(0, np.uint8), np.zeros(0, np.int32), np.array([5], np.uint64))
        >>> ps.lookup_v4(np.array([0x0A010203, 0x0B000000], np.uint32)).tolist()
        [0, -1]
    """

    def __init__(self, v4_net, v4_len, v4_rule, v6_net, v6_len, v6_rule, priorities):
        prio = _as_1d(priorities, np.uint64, "priorities")
        nrules = len(prio)
        # --- IPv4
        net4 = _as_1d(v4_net, np.uint32, "v4_net")
        len4 = _as_1d(v4_len, np.uint8, "v4_len")
        rule4 = _as_1d(v4_rule, np.int32, "v4_rule")
        if not (len(net4) == len(len4) == len(rule4)):
            raise ValueError("v4_net, v4_len and v4_rule must have the same length")
        if len(len4) and int(len4.max()) > 32:
            raise ValueError("IPv4 prefix length above 32")
        host4 = _hostmask64(32 - len4.astype(np.int64))
        if np.any(net4.astype(np.uint64) & host4):
            bad = int(np.flatnonzero(net4.astype(np.uint64) & host4)[0])
            raise ValueError(f"IPv4 prefix {IPv4Address(int(net4[bad]))}/{int(len4[bad])} has host bits set")
        # --- IPv6
        a6 = np.asarray(v6_net)
        if a6.size == 0:
            a6 = np.zeros((0, 16), dtype=np.uint8)
        if a6.ndim != 2 or a6.shape[1] != 16:
            raise ValueError(f"v6_net must have shape (m, 16), got {a6.shape}")
        if a6.dtype != np.uint8:
            raise TypeError(f"v6_net must be uint8, got {a6.dtype}")
        len6 = _as_1d(v6_len, np.uint8, "v6_len")
        rule6 = _as_1d(v6_rule, np.int32, "v6_rule")
        if not (len(a6) == len(len6) == len(rule6)):
            raise ValueError("v6_net, v6_len and v6_rule must have the same length")
        if len(len6) and int(len6.max()) > 128:
            raise ValueError("IPv6 prefix length above 128")
        words = np.ascontiguousarray(a6).view(">u8").reshape(-1, 2).astype(np.uint64)
        hi6 = np.ascontiguousarray(words[:, 0])
        lo6 = np.ascontiguousarray(words[:, 1])
        l64 = len6.astype(np.int64)
        host_hi = _hostmask64(np.clip(64 - l64, 0, 64))
        host_lo = _hostmask64(np.clip(128 - l64, 0, 64))
        badmask = ((hi6 & host_hi) | (lo6 & host_lo)) != 0
        if np.any(badmask):
            bad = int(np.flatnonzero(badmask)[0])
            raise ValueError(f"IPv6 prefix {IPv6Address(bytes(a6[bad]))}/{int(len6[bad])} has host bits set")
        for name, r in (("v4_rule", rule4), ("v6_rule", rule6)):
            if len(r) and (int(r.min()) < 0 or int(r.max()) >= nrules):
                raise ValueError(f"{name} holds a rule id outside 0..{nrules - 1} (len(priorities) = {nrules})")
        f4 = _flatten(np.zeros(len(net4), np.uint64), net4.astype(np.uint64), len4, rule4,
                      prio[rule4] if len(rule4) else np.zeros(0, np.uint64), 32)
        f4["lo"] = f4["lo"].astype(np.uint32)
        f6 = _flatten(hi6, lo6, len6, rule6, prio[rule6] if len(rule6) else np.zeros(0, np.uint64), 128)
        self._install(f4, f6, len(net4), len(a6), None, None)

    def _install_v4(self, f4, bitmap_bytes):
        self._v4_starts_arr = np.ascontiguousarray(f4["lo"], dtype=np.uint32)
        self._v4_rule_arr = np.ascontiguousarray(f4["rule"], dtype=np.int32)
        self._v4_pfx_arr = np.ascontiguousarray(f4["pfx"], dtype=np.int32)
        self._v4_parent_arr = np.ascontiguousarray(f4["parent"], dtype=np.int32)
        self._v4_off_arr = np.ascontiguousarray(f4["off"], dtype=np.int64)
        self._v4_rules_arr = np.ascontiguousarray(f4["rules"], dtype=np.int32)
        self._v4_dir_arr = _directory(self._v4_starts_arr, 16)
        self._v4_starts = self._v4_starts_arr
        self._v4_rule = self._v4_rule_arr
        self._v4_dir = self._v4_dir_arr
        if bitmap_bytes is None:
            run_lo, run_hi = _v4_runs(self._v4_starts_arr, self._v4_pfx_arr)
            bm = _bitmap_from_runs(run_lo >> np.uint32(V4_KEY_SHIFT), run_hi >> np.uint32(V4_KEY_SHIFT))
        else:
            bm = _load_bitmap(bitmap_bytes, 0xFFFF, "IPv4")
        self._v4_bitmap = bm
        self._v4_bm = <const void *><uintptr_t>bm.raw_pointer

    def _install_v6(self, f6, bitmap_bytes):
        self._v6_hi_arr = np.ascontiguousarray(f6["hi"], dtype=np.uint64)
        self._v6_lo_arr = np.ascontiguousarray(f6["lo"], dtype=np.uint64)
        self._v6_rule_arr = np.ascontiguousarray(f6["rule"], dtype=np.int32)
        self._v6_pfx_arr = np.ascontiguousarray(f6["pfx"], dtype=np.int32)
        self._v6_parent_arr = np.ascontiguousarray(f6["parent"], dtype=np.int32)
        self._v6_off_arr = np.ascontiguousarray(f6["off"], dtype=np.int64)
        self._v6_rules_arr = np.ascontiguousarray(f6["rules"], dtype=np.int32)
        self._v6_dir_arr = _directory(self._v6_hi_arr, 48)
        self._v6_hi = self._v6_hi_arr
        self._v6_lo = self._v6_lo_arr
        self._v6_rule = self._v6_rule_arr
        self._v6_dir = self._v6_dir_arr
        if bitmap_bytes is None:
            key_lo, key_hi = _v6_key_runs(self._v6_hi_arr, self._v6_lo_arr, self._v6_pfx_arr)
            bm = _bitmap_from_runs(key_lo, key_hi)
        else:
            bm = _load_bitmap(bitmap_bytes, int(_V6_KEY_MAX), "IPv6")
        self._v6_bitmap = bm
        self._v6_bm = <const void *><uintptr_t>bm.raw_pointer

    def _install(self, f4, f6, n_v4, n_v6, v4_bitmap_bytes, v6_bitmap_bytes):
        self._install_v4(f4, v4_bitmap_bytes)
        self._install_v6(f6, v6_bitmap_bytes)
        self.n_v4 = n_v4
        self.n_v6 = n_v6
        self._bitmap_bytes = len(self._v4_bitmap.serialize()) + len(self._v6_bitmap.serialize())

    def _ready(self):
        if self._v4_bitmap is None or self._v6_bitmap is None:
            raise ValueError("PrefixSet is not initialised (use the constructor or from_bytes)")

    # ---------------------------------------------------------------- C leaves

    @cython.wraparound(False)
    cdef int32_t lookup_one_v4(self, uint32_t addr) noexcept nogil:
        """Winning rule id of one IPv4 address (host order), or -1."""
        cdef Py_ssize_t lo, hi, mid
        cdef uint32_t top
        if not _contains(self._v4_bm, addr >> V4_KEY_SHIFT):
            return -1
        top = addr >> 16
        lo = self._v4_dir[top]
        hi = self._v4_dir[top + 1]
        # upper bound of addr in starts[lo:hi]; every start before lo is below addr, so the
        # interval holding addr is the one before the bound (index >= 0 as starts[0] == 0).
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._v4_starts[mid] <= addr:
                lo = mid + 1
            else:
                hi = mid
        return self._v4_rule[lo - 1]

    @cython.wraparound(False)
    cdef int32_t lookup_one_v6(self, uint64_t ahi, uint64_t alo) noexcept nogil:
        """Winning rule id of one IPv6 address given as (high, low) 64-bit halves, or -1."""
        cdef Py_ssize_t lo, hi, mid
        cdef uint64_t top, shi
        top = ahi >> 48
        lo = self._v6_dir[top]
        hi = self._v6_dir[top + 1]
        while lo < hi:
            mid = (lo + hi) >> 1
            shi = self._v6_hi[mid]
            if shi < ahi or (shi == ahi and self._v6_lo[mid] <= alo):
                lo = mid + 1
            else:
                hi = mid
        return self._v6_rule[lo - 1]

    def _one_v4(self, addr):
        """Test aid: the per-address C leaf lookup_one_v4 (for Cython callers) from Python."""
        self._ready()
        return self.lookup_one_v4(<uint32_t>_int_address(addr, 32, IPv4Address))

    def _one_v6(self, addr):
        """Test aid: the per-address C leaf lookup_one_v6 from Python."""
        self._ready()
        a = _int_address(addr, 128, IPv6Address)
        return self.lookup_one_v6(<uint64_t>(a >> 64), <uint64_t>(a & 0xFFFFFFFFFFFFFFFF))

    # ---------------------------------------------------------------- batch lookups

    def lookup_v4(self, addrs):
        """Winning rule id (int32) of each IPv4 address, -1 where no prefix covers it.

        Parameters:
            addrs: uint32[::1] addresses in host order (``int(IPv4Address)``).

        Returns:
            numpy int32 array of the same length.
        """
        return self._batch_v4(addrs, True)

    def lookup_v6(self, addrs):
        """Winning rule id (int32) of each IPv6 address, -1 where no prefix covers it.

        Parameters:
            addrs: uint8[:, ::1] of shape (n, 16), addresses in network byte order.

        Returns:
            numpy int32 array of length n.
        """
        return self._batch_v6(addrs, False)

    def _lookup_v4_nobitmap(self, addrs):
        """Benchmark aid: the same batched interval search without the bitmap pre-filter."""
        return self._batch_v4(addrs, False)

    def _lookup_v6_prefiltered(self, addrs):
        """Benchmark aid: lookup_v6 behind the roaring /24 pre-filter (slower; kept to measure it)."""
        return self._batch_v6(addrs, True)

    @cython.wraparound(False)
    def _batch_v4(self, addrs, bint use_bitmap):
        self._ready()
        cdef const uint32_t[::1] a = _addresses_v4(addrs)
        out = np.empty(a.shape[0], dtype=np.int32)
        cdef int32_t[::1] o = out
        if a.shape[0] == 0:
            return out
        with nogil:
            _lookup_v4_kernel(&a[0], &o[0], a.shape[0], self._v4_bm, use_bitmap,
                              &self._v4_dir[0], &self._v4_starts[0], &self._v4_rule[0])
        return out

    @cython.wraparound(False)
    def _batch_v6(self, addrs, bint use_bitmap):
        self._ready()
        cdef const uint8_t[:, ::1] a = _addresses_v6(addrs)
        out = np.empty(a.shape[0], dtype=np.int32)
        cdef int32_t[::1] o = out
        if a.shape[0] == 0:
            return out
        with nogil:
            _lookup_v6_kernel(&a[0, 0], &o[0], a.shape[0], self._v6_bm, use_bitmap, &self._v6_dir[0],
                              &self._v6_hi[0], &self._v6_lo[0], &self._v6_rule[0])
        return out

    @cython.wraparound(False)
    def _bitmap_pass_v4(self, addrs):
        """Benchmark aid: how many addresses pass the bitmap pre-filter (the filter alone)."""
        self._ready()
        cdef const uint32_t[::1] a = _addresses_v4(addrs)
        cdef Py_ssize_t i, n = 0
        with nogil:
            for i in range(a.shape[0]):
                n += _contains(self._v4_bm, a[i] >> V4_KEY_SHIFT)
        return n

    # ---------------------------------------------------------------- covering rules

    def covering_v4(self, addr):
        """Every rule id with a prefix covering the IPv4 address, best first, without duplicates.

        Best first: longest prefix, then smaller priority, then smaller rule id.
        """
        self._ready()
        a = _int_address(addr, 32, IPv4Address)
        starts = self._v4_starts_arr
        i = int(np.searchsorted(starts, np.uint32(a), side="right")) - 1
        return _chain(int(self._v4_pfx_arr[i]), self._v4_parent_arr, self._v4_off_arr, self._v4_rules_arr)

    def covering_v6(self, addr):
        """Every rule id with a prefix covering the IPv6 address (int or IPv6Address), best first."""
        self._ready()
        a = _int_address(addr, 128, IPv6Address)
        ahi, alo = a >> 64, a & 0xFFFFFFFFFFFFFFFF
        hi = self._v6_hi_arr
        j = int(np.searchsorted(hi, np.uint64(ahi), side="right"))       # first start with hi > ahi
        k = int(np.searchsorted(hi, np.uint64(ahi), side="left"))        # first start with hi == ahi
        i = k + int(np.searchsorted(self._v6_lo_arr[k:j], np.uint64(alo), side="right")) - 1
        return _chain(int(self._v6_pfx_arr[i]), self._v6_parent_arr, self._v6_off_arr, self._v6_rules_arr)

    # ---------------------------------------------------------------- size and serialisation

    @property
    def nbytes(self):
        """Bytes held by the arrays, directories and bitmaps (serialised bitmap size)."""
        arrays = (self._v4_starts_arr, self._v4_rule_arr, self._v4_pfx_arr, self._v4_parent_arr,
                  self._v4_off_arr, self._v4_rules_arr, self._v4_dir_arr,
                  self._v6_hi_arr, self._v6_lo_arr, self._v6_rule_arr, self._v6_pfx_arr,
                  self._v6_parent_arr, self._v6_off_arr, self._v6_rules_arr, self._v6_dir_arr)
        return sum(a.nbytes for a in arrays) + self._bitmap_bytes

    def to_bytes(self):
        """Serialise: header, flattened arrays (little-endian) and the IPv4 bitmap (portable format)."""
        parts = [_HEADER.pack(_MAGIC, _VERSION, self.n_v4, self.n_v6)]
        sections = (
            self._v4_starts_arr.astype("<u4"), self._v4_rule_arr.astype("<i4"),
            self._v4_pfx_arr.astype("<i4"), self._v4_parent_arr.astype("<i4"),
            self._v4_off_arr.astype("<i8"), self._v4_rules_arr.astype("<i4"),
            self._v4_bitmap.serialize(),
            self._v6_hi_arr.astype("<u8"), self._v6_lo_arr.astype("<u8"),
            self._v6_rule_arr.astype("<i4"), self._v6_pfx_arr.astype("<i4"),
            self._v6_parent_arr.astype("<i4"), self._v6_off_arr.astype("<i8"),
            self._v6_rules_arr.astype("<i4"), self._v6_bitmap.serialize(),
        )
        for s in sections:
            raw = s if isinstance(s, bytes) else s.tobytes()
            parts.append(_SECTION.pack(len(raw)))
            parts.append(raw)
            parts.append(b"\0" * _pad8(len(raw)))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data):
        """Load a PrefixSet from ``to_bytes()`` output; raises ValueError on corrupt data."""
        return _from_bytes(cls, data)

    def __reduce__(self):
        return (_unpickle, (self.to_bytes(),))

    def __repr__(self):
        return (f"PrefixSet(n_v4={self.n_v4}, n_v6={self.n_v6}, "
                f"intervals={len(self._v4_rule_arr)}+{len(self._v6_rule_arr)}, nbytes={self.nbytes})")


_SECTION_TYPES = ("<u4", "<i4", "<i4", "<i4", "<i8", "<i4", None,
                  "<u8", "<u8", "<i4", "<i4", "<i4", "<i8", "<i4", None)


def _from_bytes(cls, data):
    view = memoryview(data).cast("B")
    n = len(view)
    if n < _HEADER.size:
        raise ValueError("corrupt PrefixSet data: shorter than its header")
    magic, version, n_v4, n_v6 = _HEADER.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError("corrupt PrefixSet data: bad magic (not produced by PrefixSet.to_bytes)")
    if version != _VERSION:
        raise ValueError(f"PrefixSet data format {version} is not supported (expected {_VERSION})")
    pos = _HEADER.size
    values = []
    for dt in _SECTION_TYPES:
        if pos + 8 > n:
            raise ValueError("corrupt PrefixSet data: truncated section header")
        (size,) = _SECTION.unpack_from(view, pos)
        pos += 8
        if size > n - pos:
            raise ValueError("corrupt PrefixSet data: section runs past the end")
        raw = view[pos:pos + size]
        pos += size + _pad8(size)
        if dt is None:
            values.append(bytes(raw))
            continue
        width = np.dtype(dt).itemsize
        if size % width:
            raise ValueError("corrupt PrefixSet data: section size is not a whole number of items")
        values.append(np.frombuffer(raw, dtype=dt).astype(dt[1:]))
    if pos != n:
        raise ValueError("corrupt PrefixSet data: trailing bytes")
    (s4, r4, p4, par4, off4, rules4, bm4, hi6, lo6, r6, p6, par6, off6, rules6, bm6) = values
    f4 = dict(lo=s4, rule=r4, pfx=p4, parent=par4, off=off4, rules=rules4)
    f6 = dict(hi=hi6, lo=lo6, rule=r6, pfx=p6, parent=par6, off=off6, rules=rules6)
    _validate_family(f4, 32)
    _validate_family(f6, 128)
    _check(n_v4 < 2**62 and n_v6 < 2**62, "prefix counts out of range")
    self = cls.__new__(cls)
    self._install(f4, f6, n_v4, n_v6, bm4, bm6)
    return self


def _pad8(size):
    # Not -size % 8: the module compiles with cdivision, where a C remainder can be negative.
    return (8 - size % 8) % 8


def _unpickle(data):
    return _from_bytes(PrefixSet, data)


def _chain(int u, parent, off, rules):
    """Rules of prefix u and of its ancestors, innermost first, first occurrence kept."""
    out = []
    seen = set()
    while u >= 0:
        for r in rules[off[u]:off[u + 1]].tolist():
            if r not in seen:
                seen.add(r)
                out.append(r)
        u = int(parent[u])
    return np.array(out, dtype=np.int32)


def _int_address(addr, int bits, kind):
    if isinstance(addr, kind):
        return int(addr)
    if isinstance(addr, bool) or not isinstance(addr, (int, np.integer)):
        raise TypeError(f"address must be an int or {kind.__name__}, got {type(addr).__name__}")
    a = int(addr)
    if a < 0 or a >> bits:
        raise ValueError(f"address {a} outside the {bits}-bit address space")
    return a


def _addresses_v4(addrs):
    a = np.asarray(addrs)
    if a.ndim != 1:
        raise ValueError(f"IPv4 addresses must be a 1-D uint32 array, got shape {a.shape}")
    if a.dtype == np.uint32:
        return np.ascontiguousarray(a)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if a.dtype.kind not in "ui":
        raise TypeError(f"IPv4 addresses must be uint32, got dtype {a.dtype}")
    if int(a.min()) < 0 or int(a.max()) > 0xFFFFFFFF:
        raise ValueError("IPv4 address outside 0..2**32-1")
    return np.ascontiguousarray(a, dtype=np.uint32)


def _addresses_v6(addrs):
    a = np.asarray(addrs)
    if a.size == 0:
        return np.zeros((0, 16), dtype=np.uint8)
    if a.ndim != 2 or a.shape[1] != 16 or a.dtype != np.uint8:
        raise ValueError(f"IPv6 addresses must be a uint8 array of shape (n, 16), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)
