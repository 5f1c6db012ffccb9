"""Compiled host-name matcher: exact, domain, wildcard and keyword rules in one pass over a name.

Design.  The name N is normalised in C (same steps as ``rules/normalize.py`` for ASCII input) and
scanned once, right to left, as the symbol string ``reversed(N) + "."``.  Two cursors advance
together over that single pass, which is the product of two automata:

* an anchored trie of ``reversed(P) + "."`` for every exact/domain/wildcard pattern P.  It is only
  ever entered at the start of the text (the implicit anchor), so it needs no failure links.  A
  terminal reached on a '.' inside the name is a subdomain match (domain, wildcard rules); reached on
  the final virtual '.', it is the apex (exact, domain rules).  The '.' makes matches label-aligned:
  ``badexample.com`` never reaches the terminal of ``example.com``.  Reversal makes the trie share
  TLD and registrable suffixes, so 1M domains stay compact.  Nodes are numbered in BFS order, so the
  children of a node are a contiguous, label-sorted id range: a node is three 32-bit words (first
  child id, a 39-bit bitmap of child labels, terminal index), the child for a symbol is
  ``first + popcount(bitmap below it)``, and no pointer per edge is stored.
* an Aho-Corasick automaton of the reversed keywords (usually few), with failure links computed by
  BFS and then folded into a complete transition table (one array read per byte), and per state the
  best keyword rule found along its dictionary-suffix chain.

Per terminal and per keyword state the winning rule (smallest priority, then smallest id) is
precomputed, so the batch path only compares priorities.  CSR lists of every rule per terminal and
per keyword state serve ``match_all``.

With a million rules the trie is ~110 MB, so a walk is bound by DRAM latency, not by instructions:
the batch path walks LANES names in lockstep; below the cached top of the trie it prefetches a
lane's next node and switches to the next lane, so the cache misses of different names overlap.
Normalisation is fused into the walk: each byte is checked, case-folded and followed in one step.
"""
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import numpy as np

__all__ = ["NameAutomaton", "normalize", "STATUS_OK", "STATUS_INVALID", "STATUS_NON_ASCII",
           "KIND_EXACT", "KIND_DOMAIN", "KIND_WILDCARD", "KIND_KEYWORD"]

STATUS_OK = ST_OK              # matched or not, the name was a valid host name
STATUS_INVALID = ST_INVALID    # not a host name after normalisation
STATUS_NON_ASCII = ST_NON_ASCII  # a byte >= 0x80: normalise through Python IDNA and resubmit

KIND_EXACT = 0
KIND_DOMAIN = 1
KIND_WILDCARD = 2
KIND_KEYWORD = 3

cdef extern from "stdlib.h" nogil:
    ctypedef int (*_cmp_fn)(const void*, const void*) noexcept nogil
    void c_qsort "qsort"(void* base, size_t n, size_t size, _cmp_fn cmp)

_MAGIC = b"KZNAUT\x00\x01"
# Serialised arrays, in order: (name, dtype).  Changing this list changes the format: bump _MAGIC.
_LAYOUT = (
    ("nodes", np.uint32), ("term_start", np.uint32), ("term_rules", np.int32),
    ("term_best", np.int32), ("prio", np.uint64), ("kinds", np.uint8), ("kdelta", np.int32),
    ("kbest", np.int32), ("kfail", np.int32), ("kout_start", np.uint32), ("kout", np.int32),
)
_HEADER = len(_MAGIC) + 8 + 8 * len(_LAYOUT)
_LE = np.dtype("<u8")

# Byte -> symbol, upper case folded to lower case (the ASCII step of normalisation).
cdef uint8_t SYM[256]
cdef int _c
for _c in range(256):
    SYM[_c] = SYM_BAD
SYM[ord("-")] = SYM_DASH
SYM[ord(".")] = SYM_DOT
SYM[ord("_")] = SYM_UNDERSCORE
for _c in range(10):
    SYM[ord("0") + _c] = SYM_DIGIT0 + _c
for _c in range(26):
    SYM[ord("a") + _c] = SYM_A + _c
    SYM[ord("A") + _c] = SYM_A + _c
_SYMBOL_CHARS = b"-.0123456789_abcdefghijklmnopqrstuvwxyz"


cdef inline bint _is_space(uint8_t c) noexcept nogil:
    # The ASCII characters that Python's str.strip() removes (str.isspace), incl. \x1c-\x1f.
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31)


cdef inline bint _has_non_ascii(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] >= 0x80:
            return True
    return False


cdef inline void _trim(const uint8_t* s, Py_ssize_t n, Py_ssize_t* b_out,
                       Py_ssize_t* e_out) noexcept nogil:
    """The part s[b:e] of a name that is matched: surrounding white space, one ":port" (1-5
    digits after a colon, recognised from the end) and one trailing dot (the root label) removed."""
    cdef Py_ssize_t b = 0, e = n, d
    while b < e and _is_space(s[b]):
        b += 1
    while e > b and _is_space(s[e - 1]):
        e -= 1
    d = e
    while d > b and e - d <= 5 and 48 <= s[d - 1] <= 57:
        d -= 1
    if d < e and d > b and s[d - 1] == 58 and e - d <= 5:
        e = d - 1
    if e > b and s[e - 1] == 46:
        e -= 1
    b_out[0] = b
    e_out[0] = e


cdef inline bint _bad_symbol(uint8_t c, Py_ssize_t* label) noexcept nogil:
    """Advance the label length over symbol c (read right to left); True when c breaks the host
    name syntax: a byte outside the alphabet, an empty label, a label over 63.  Branch-free: a '.'
    sits at an unpredictable place in every name."""
    cdef Py_ssize_t not_dot = c != SYM_DOT
    cdef bint bad = (c == SYM_BAD) | ((not not_dot) & (label[0] == 0))
    label[0] = (label[0] + 1) & -not_dot
    return bad | (label[0] > MAX_LABEL_LENGTH)


cdef int normalize_reversed(const uint8_t* s, Py_ssize_t n, uint8_t* out,
                            Py_ssize_t* out_len) noexcept nogil:
    """Normalise name s[0:n] into symbols, reversed, in out (>= MAX_NAME_LENGTH bytes); return a status.

    Same steps as normalize_name: strip white space, strip one ":port" (a single colon followed by
    1-5 digits to the end; an IPv6 literal has several colons), strip one trailing dot, lower-case,
    then check lengths (RFC 1035 section 2.3.4) and characters.  One pass over the name: a port is
    recognised from the end, and any other colon is an invalid character anyway, so "exactly one
    colon" needs no count.  A byte >= 0x80 anywhere makes the status NON_ASCII (Python's IDNA step
    decides), also when an invalid character was met first.
    """
    cdef Py_ssize_t i, b, e, k = 0, label = 0
    cdef uint8_t c
    _trim(s, n, &b, &e)
    if e == b or e - b > MAX_NAME_LENGTH:
        return ST_NON_ASCII if _has_non_ascii(s, n) else ST_INVALID
    i = e
    while i > b:
        i -= 1
        c = SYM[s[i]]
        if _bad_symbol(c, &label):
            return ST_NON_ASCII if _has_non_ascii(s, n) else ST_INVALID
        out[k] = c
        k += 1
    if label == 0:
        return ST_NON_ASCII if _has_non_ascii(s, n) else ST_INVALID
    # (what was stripped, white space, a port, a dot, is ASCII: no byte >= 0x80 was left unseen)
    out_len[0] = k
    return ST_OK


cdef inline int32_t _better(const uint64_t* prio, int32_t best, int32_t r) noexcept nogil:
    # Smaller priority wins; equal priorities fall back to the smaller rule id (deterministic).
    if r < 0:
        return best
    if best < 0 or prio[r] < prio[best] or (prio[r] == prio[best] and r < best):
        return r
    return best


cdef extern from *:
    """
    /* Population count: the POPCNT instruction where the build targets it (setup.py adds -mpopcnt
       on x86-64), else a branch-free SWAR count; never libgcc's out-of-line __popcountdi2, which
       took a fifth of the name-matching time. */
    static inline int kz_popcount64(unsigned long long x) {
    #if defined(__POPCNT__) || defined(__ARM_NEON) || defined(__aarch64__)
        return __builtin_popcountll(x);
    #else
        x = x - ((x >> 1) & 0x5555555555555555ULL);
        x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
        return (int)((x * 0x0101010101010101ULL) >> 56);
    #endif
    }
    """
    # population count; start loading a cache line without waiting for it (GCC/Clang builtin)
    int _popcount "kz_popcount64"(unsigned long long x) noexcept nogil
    void _prefetch "__builtin_prefetch"(const void* p) noexcept nogil


cdef inline int64_t _child(const uint32_t* nodes, uint32_t v, uint8_t c) noexcept nogil:
    # A node keeps a 39-bit bitmap of its child labels; its children are consecutive BFS ids in
    # label order, so the child for c is first + (number of smaller labels present): O(1), no
    # per-child scan and no unpredictable branch.
    cdef const uint32_t* w = nodes + NODE_WORDS * v
    cdef uint64_t bm = _labels(w)
    if not (bm >> c) & 1:
        return -1
    return _child_at(w, bm, c)


cdef inline uint64_t _labels(const uint32_t* w) noexcept nogil:
    # the 39-bit bitmap of a node's child labels
    return (<uint64_t>w[1]) | ((<uint64_t>(w[2] & HI_MASK)) << 32)


cdef inline int64_t _child_at(const uint32_t* w, uint64_t bm, uint8_t c) noexcept nogil:
    # the id of the node's child for c, which the bitmap bm of node w has
    return <int64_t>w[0] + _popcount(bm & ((<uint64_t>1 << c) - 1))


cdef inline uint32_t _term(const uint32_t* nodes, int64_t v) noexcept nogil:
    # terminal index + 1, or 0
    return nodes[NODE_WORDS * v + 2] >> TERM_SHIFT


cdef enum:
    # How the walk reached its current trie node, which decides what the node's terminal matches.
    VIA_LABEL = 0   # a label character (or it is the root): nothing
    VIA_DOT = 1     # a '.' inside the name: rules that match subdomains (domain, wildcard)
    VIA_END = 2     # the virtual '.' after the name: rules that match the apex (exact, domain)

cdef enum:
    WALK_MORE = 0      # the next trie node is being fetched (prefetched): call _walk again
    WALK_DONE = 1      # W.best is the winner
    WALK_INVALID = 2   # not a host name


cdef struct Walk:
    # One name being matched: normalised and walked in the same pass, right to left.
    const uint8_t* s      # the raw name
    Py_ssize_t n          # its length (an invalid name is checked for non-ASCII bytes)
    Py_ssize_t b          # s[b:i] is still to be read, from i - 1 down to b
    Py_ssize_t i
    Py_ssize_t label      # symbols read of the current label
    int64_t v             # trie node, -1 once the name left the trie
    int32_t best          # best rule so far
    int32_t ks            # keyword automaton state
    uint8_t via           # VIA_*: how v was reached


cdef inline bint _walk_start(Walk* W, const uint8_t* s, Py_ssize_t n) noexcept nogil:
    """Set W up for the raw name s[0:n]; False if it is empty or too long once trimmed."""
    cdef Py_ssize_t b, e
    _trim(s, n, &b, &e)
    W.s = s
    W.n = n
    W.b = b
    W.i = e
    W.label = 0
    W.v = 0
    W.best = -1
    W.ks = 0
    W.via = VIA_LABEL
    return e > b and e - b <= MAX_NAME_LENGTH


cdef inline int _walk_status(const Walk* W, int r) noexcept nogil:
    if r == WALK_INVALID:
        return ST_NON_ASCII if _has_non_ascii(W.s, W.n) else ST_INVALID
    return ST_OK


cdef inline int _walk(const Tables* t, Walk* W, int64_t hot) noexcept nogil:
    """Advance W: check each byte (the steps of normalize_reversed), feed it to the keyword
    automaton, and follow the trie, until the next trie node lies beyond the first `hot` nodes
    (likely not in cache: it is prefetched and WALK_MORE returned, so the caller can work on another
    name meanwhile) or the name is finished.

    A node's terminal is read when the node itself is read for its children, one visit later than
    the transition that led to it: the walk never waits on a node it has only just asked for.  The
    byte checks are branch-free (a '.' sits at an unpredictable place in every name); the state
    lives in locals while the loop runs, so the compiler keeps it in registers.
    """
    cdef const uint32_t* nodes = t.nodes
    cdef const uint32_t* w = nodes
    cdef const uint8_t* s = W.s
    cdef uint64_t bm = 0
    cdef uint32_t word
    cdef Py_ssize_t i = W.i, b = W.b, label = W.label
    cdef int64_t v = W.v
    cdef int32_t best = W.best, ks = W.ks
    cdef uint8_t c, via = W.via
    cdef bint moved, bad, has_kw = t.n_kstates > 1
    cdef int r = WALK_MORE
    while True:
        if v >= 0:
            w = nodes + NODE_WORDS * v
            bm = _labels(w)
            if via != VIA_LABEL:
                word = w[2] >> TERM_SHIFT
                if word:
                    best = _better(t.prio, best, t.term_best[2 * (word - 1) + (via == VIA_DOT)])
        if via == VIA_END:
            r = WALK_DONE
            break
        moved = False
        bad = False
        while i > b:
            i -= 1
            c = SYM[s[i]]
            bad = _bad_symbol(c, &label)
            if bad:
                break
            if has_kw:
                ks = t.kdelta[ks * ALPHABET + c]
                best = _better(t.prio, best, t.kbest[ks])
            if v >= 0:
                if (bm >> c) & 1:
                    v = _child_at(w, bm, c)
                    via = <uint8_t>(VIA_DOT if c == SYM_DOT else VIA_LABEL)
                    moved = True
                    break
                v = -1   # out of the trie: the rest of the name is only checked (and keywords)
        if bad:
            r = WALK_INVALID
            break
        if not moved:
            # the name is read: it must not end (begin) with an empty label; then the virtual '.'
            if label == 0:
                r = WALK_INVALID
                break
            if v < 0 or not (bm >> SYM_DOT) & 1:
                r = WALK_DONE
                break
            v = _child_at(w, bm, SYM_DOT)
            via = VIA_END
        if v >= hot:
            _prefetch(&nodes[NODE_WORDS * v])
            break
    W.i = i
    W.label = label
    W.v = v
    W.best = best
    W.ks = ks
    W.via = via
    return r


cdef int32_t scan_raw(const Tables* t, const uint8_t* s, Py_ssize_t n, int* status) noexcept nogil:
    """Winning rule id (or -1) for the raw name s[0:n], its status in *status: normalise and walk
    in one pass (the walk decides the rule, the checks the status)."""
    cdef Walk W
    cdef int r = WALK_INVALID
    if _walk_start(&W, s, n):
        r = WALK_MORE
        while r == WALK_MORE:
            r = _walk(t, &W, INT64_MAX)
    status[0] = _walk_status(&W, r)
    return W.best if r == WALK_DONE else -1


cdef enum:
    LANES = 16   # names walked in lockstep by the batch path, so their cache misses overlap


# The batch path walks names in lanes, switching lane at every node beyond the first _hot_bytes of
# the trie: BFS order puts the top levels, which every name visits and which stay cached, at the
# start of the node array, so only the walk below them waits on DRAM.  Measured on 100k queries
# (ns per name at 10k / 100k / 1M rules): one name at a time 80 / 124 / 290; lanes switching at
# every node 105 / 113 / 138; lanes over a hot top of 256 KiB to 1 MiB 72 / 85 / 120.
cdef uint64_t _hot_bytes = 512 << 10


def _set_hot_bytes(nbytes):
    """Set the size of the trie top that the batch path walks without switching lanes; return the
    old value (tests use 0, every node switches, and a huge value, one name at a time)."""
    global _hot_bytes
    old = _hot_bytes
    _hot_bytes = nbytes
    return old


cdef int64_t _match_packed(const Tables* t, const uint8_t* buf, Py_ssize_t nbuf,
                           const int64_t* offsets, Py_ssize_t n, int32_t* out_rule,
                           uint8_t* out_status) noexcept nogil:
    """Match n names packed in buf; return -1, or the index of the first bad offset pair."""
    cdef Py_ssize_t i, next_name = 0, active = 0, k
    cdef int64_t a, b, hot
    cdef int st, r
    cdef Walk lanes[LANES]
    cdef Py_ssize_t lane_name[LANES]
    cdef bint busy[LANES]
    for i in range(n):
        a = offsets[i]
        b = offsets[i + 1]
        if a < 0 or b < a or b > nbuf:
            return i
    hot = <int64_t>min(_hot_bytes // (NODE_WORDS * 4), <uint64_t>INT64_MAX)
    for k in range(LANES):
        busy[k] = False
    while True:
        for k in range(LANES):
            if busy[k]:
                r = _walk(t, &lanes[k], hot)
            else:
                r = WALK_DONE
                while next_name < n:   # refill the lane; names finished at once are answered here
                    i = next_name
                    next_name += 1
                    lane_name[k] = i
                    r = WALK_INVALID
                    if _walk_start(&lanes[k], buf + offsets[i], <Py_ssize_t>(offsets[i + 1] - offsets[i])):
                        r = _walk(t, &lanes[k], hot)
                    if r == WALK_MORE:
                        busy[k] = True
                        active += 1
                        break
                    out_rule[i] = lanes[k].best if r == WALK_DONE else -1
                    out_status[i] = <uint8_t>_walk_status(&lanes[k], r)
                continue
            if r != WALK_MORE:
                i = lane_name[k]
                out_rule[i] = lanes[k].best if r == WALK_DONE else -1
                out_status[i] = <uint8_t>_walk_status(&lanes[k], r)
                busy[k] = False
                active -= 1
        if active == 0 and next_name >= n:
            return -1


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------

# Context of the qsort comparator; only used while a build holds the GIL, so builds never overlap.
cdef const uint8_t* _s_keys
cdef const int64_t* _s_off
cdef const int32_t* _s_len
cdef const uint64_t* _s_prio


cdef int _cmp_rules(const void* pa, const void* pb) noexcept nogil:
    # Order anchored rules by key, then priority, then id: equal keys become one terminal whose
    # rule list is already sorted by priority.
    cdef uint32_t i = (<const uint32_t*>pa)[0], j = (<const uint32_t*>pb)[0]
    cdef int32_t li = _s_len[i], lj = _s_len[j]
    cdef int r = memcmp(_s_keys + _s_off[i], _s_keys + _s_off[j], li if li < lj else lj)
    if r != 0:
        return r
    if li != lj:
        return -1 if li < lj else 1
    if _s_prio[i] != _s_prio[j]:
        return -1 if _s_prio[i] < _s_prio[j] else 1
    return -1 if i < j else (1 if i > j else 0)


cdef tuple _sorted_keys(const uint8_t[::1] buf, const int64_t[::1] off, const uint8_t[::1] kinds,
                        const uint64_t[::1] prio):
    """The anchored keys reversed(P) + '.' of the exact/domain/wildcard rules, sorted and deduplicated.

    Returns (ubuf, ukoff, terminals): the distinct keys packed back to back in sorted order (key t
    is ubuf[ukoff[t]:ukoff[t + 1]]), and the terminal arrays term_start / term_rules / term_best
    (the rules of each distinct key sorted by priority; the best for the apex and for a subdomain).
    """
    global _s_keys, _s_off, _s_len, _s_prio
    cdef Py_ssize_t n = kinds.shape[0], i, j, m = 0, u = 0, total = 0, L
    cdef int64_t a, b, p
    cdef uint8_t c, k
    # ---- anchored keys: reversed(P) + '.' as symbols -------------------------------------------
    for i in range(n):
        L = off[i + 1] - off[i]
        if L == 0:
            raise ValueError(f"rule {i}: empty pattern")
        if kinds[i] > 3:
            raise ValueError(f"rule {i}: unknown kind {kinds[i]} (0 exact, 1 domain, 2 wildcard, 3 keyword)")
        if kinds[i] < 3:
            m += 1
            total += L + 1
    keybuf_a = np.empty(max(total, 1), dtype=np.uint8)
    koff_a = np.zeros(n, dtype=np.int64)
    klen_a = np.zeros(n, dtype=np.int32)
    idx_a = np.empty(m, dtype=np.uint32)
    cdef uint8_t[::1] keybuf = keybuf_a
    cdef int64_t[::1] koff = koff_a
    cdef int32_t[::1] klen = klen_a
    cdef uint32_t[::1] idx = idx_a
    cdef Py_ssize_t bad = -1
    with nogil:
        p = 0
        j = 0
        for i in range(n):
            if kinds[i] >= 3:
                continue
            a = off[i]
            b = off[i + 1]
            koff[i] = p
            klen[i] = <int32_t>(b - a + 1)
            idx[j] = <uint32_t>i
            j += 1
            while b > a:
                b -= 1
                c = SYM[buf[b]]
                if c == SYM_BAD:
                    bad = i
                    break
                keybuf[p] = c
                p += 1
            if bad >= 0:
                break
            keybuf[p] = SYM_DOT
            p += 1
    if bad >= 0:
        raise ValueError(f"rule {bad}: pattern {bytes(buf[off[bad]:off[bad + 1]])!r} is not a "
                         "normalised host name (allowed: a-z 0-9 - _ .)")
    if m:
        _s_keys = &keybuf[0]
        _s_off = &koff[0]
        _s_len = &klen[0]
        _s_prio = &prio[0]
        c_qsort(&idx[0], m, sizeof(uint32_t), _cmp_rules)   # GIL held: the context is ours
    # ---- terminals: groups of equal keys ------------------------------------------------------
    term_start_a = np.zeros(m + 1, dtype=np.uint32)
    cdef uint32_t[::1] term_start = term_start_a
    with nogil:
        for j in range(m):
            i = idx[j]
            if j == 0 or klen[i] != klen[idx[j - 1]] or memcmp(
                    &keybuf[koff[i]], &keybuf[koff[idx[j - 1]]], klen[i]) != 0:
                term_start[u] = <uint32_t>j
                u += 1
        term_start[u] = <uint32_t>m
    if u >= (1 << (32 - TERM_SHIFT)) - 1:  # the terminal field of a node
        raise ValueError(f"too many distinct name patterns ({u})")
    term_start_a = term_start_a[: u + 1].copy()
    term_start = term_start_a
    term_rules_a = idx_a.view(np.int32)
    term_best_a = np.full(2 * u, -1, dtype=np.int32)
    cdef int32_t[::1] term_best = term_best_a
    # Pack the distinct keys contiguously in sorted order (the BFS below reads them level by level).
    if total >= 0xFFFFFFFF:
        raise ValueError("name patterns too large for 32-bit key offsets")
    ukoff_a = np.zeros(u + 1, dtype=np.uint32)
    cdef uint32_t[::1] ukoff = ukoff_a
    ubuf_a = np.empty(max(total, 1), dtype=np.uint8)
    cdef uint8_t[::1] ubuf = ubuf_a
    cdef Py_ssize_t t_, r
    with nogil:
        p = 0
        for t_ in range(u):
            i = idx[term_start[t_]]
            ukoff[t_] = <uint32_t>p
            memcpy(&ubuf[p], &keybuf[koff[i]], klen[i])
            p += klen[i]
            for r in range(term_start[t_], term_start[t_ + 1]):
                k = kinds[idx[r]]
                if k <= 1 and term_best[2 * t_] < 0:
                    term_best[2 * t_] = <int32_t>idx[r]
                if k >= 1 and term_best[2 * t_ + 1] < 0:
                    term_best[2 * t_ + 1] = <int32_t>idx[r]
        ukoff[u] = <uint32_t>p
    terminals = {"term_start": term_start_a, "term_rules": term_rules_a, "term_best": term_best_a}
    return ubuf_a, ukoff_a, terminals


cdef object _trie_nodes(const uint8_t[::1] ubuf, const uint32_t[::1] ukoff):
    """The node array of the trie of the sorted distinct keys, in BFS order (see the module doc)."""
    cdef Py_ssize_t u = ukoff.shape[0] - 1, n_nodes = 1, t_, L, lcp, d
    cdef uint8_t c
    with nogil:
        # Node count: one per distinct prefix = sum of (length - common prefix with predecessor).
        for t_ in range(u):
            L = ukoff[t_ + 1] - ukoff[t_]
            lcp = 0
            if t_ > 0:
                d = ukoff[t_] - ukoff[t_ - 1]
                while lcp < L and lcp < d and ubuf[ukoff[t_] + lcp] == ubuf[ukoff[t_ - 1] + lcp]:
                    lcp += 1
            n_nodes += L - lcp
    if n_nodes >= 0xFFFFFFFF:
        raise ValueError("name patterns too large for 32-bit node ids")
    nodes_a = np.zeros(NODE_WORDS * n_nodes, dtype=np.uint32)
    cdef uint32_t[::1] nodes = nodes_a
    # Level lists: for the nodes of one depth (consecutive ids), the range of keys below each.
    lvl_a = np.zeros((4, max(u, 1)), dtype=np.uint32)
    cdef uint32_t[:, ::1] lvl = lvl_a
    cdef Py_ssize_t cur = 0, width, nwidth, nxt = 1, first_id = 0, x, lo, hi, y, v
    with nogil:
        width = 1 if u > 0 else 0
        lvl[0, 0] = 0
        lvl[1, 0] = <uint32_t>u
        d = 0
        if width == 0:
            nxt = 1
        while width > 0:
            nwidth = 0
            for x in range(width):
                lo = lvl[cur, x]
                hi = lvl[cur + 1, x]
                v = first_id + x
                nodes[NODE_WORDS * v] = <uint32_t>nxt
                if lo < hi and ukoff[lo + 1] - ukoff[lo] == d:
                    nodes[NODE_WORDS * v + 2] |= <uint32_t>((lo + 1) << TERM_SHIFT)
                    lo += 1
                while lo < hi:
                    c = ubuf[ukoff[lo] + d]
                    y = lo + 1
                    while y < hi and ubuf[ukoff[y] + d] == c:
                        y += 1
                    if c < 32:
                        nodes[NODE_WORDS * v + 1] |= (<uint32_t>1) << c
                    else:
                        nodes[NODE_WORDS * v + 2] |= (<uint32_t>1) << (c - 32)
                    lvl[2 - cur, nwidth] = <uint32_t>lo
                    lvl[3 - cur, nwidth] = <uint32_t>y
                    nwidth += 1
                    nxt += 1
                    lo = y
            first_id += width
            width = nwidth
            cur = 2 - cur
            d += 1
    return nodes_a


cdef dict _build_keywords(const uint8_t[::1] buf, const int64_t[::1] off, const uint8_t[::1] kinds,
                          const uint64_t[::1] prio):
    """Aho-Corasick automaton of the reversed keywords, as a complete DFA over the symbols."""
    cdef Py_ssize_t n = kinds.shape[0], i, cap = 1, K = 1, s, c, q, head, tail, f, ch
    cdef int64_t a, b
    cdef bint ok
    for i in range(n):
        if kinds[i] == 3:
            cap += off[i + 1] - off[i]
    kdelta_a = np.full(cap * ALPHABET, -1, dtype=np.int32)
    kstate_a = np.full(n, -1, dtype=np.int64)   # state where each keyword rule ends (-1: none)
    cdef int32_t[::1] kdelta = kdelta_a
    cdef int64_t[::1] kstate = kstate_a
    with nogil:
        for i in range(n):
            if kinds[i] != 3:
                continue
            a = off[i]
            b = off[i + 1]
            ok = True
            while b > a:   # keywords with a character no host name has can never match: skipped
                b -= 1
                if SYM[buf[b]] == SYM_BAD:
                    ok = False
                    break
            if not ok:
                continue
            s = 0
            b = off[i + 1]
            while b > a:
                b -= 1
                c = SYM[buf[b]]
                if kdelta[s * ALPHABET + c] < 0:
                    kdelta[s * ALPHABET + c] = <int32_t>K
                    K += 1
                s = kdelta[s * ALPHABET + c]
            kstate[i] = s
    kdelta_a = kdelta_a[: K * ALPHABET].copy()
    kdelta = kdelta_a
    # Own rules per state (CSR), each list sorted by (priority, id).
    has = np.flatnonzero(kstate_a >= 0)
    order = has[np.lexsort((has, np.asarray(prio)[has], kstate_a[has]))]
    kout_a = order.astype(np.int32)
    kout_start_a = np.searchsorted(kstate_a[order], np.arange(K + 1)).astype(np.uint32)
    kfail_a = np.zeros(K, dtype=np.int32)
    kbest_a = np.full(K, -1, dtype=np.int32)
    queue_a = np.zeros(K, dtype=np.int32)
    cdef int32_t[::1] kfail = kfail_a, kbest = kbest_a, queue = queue_a, kout = kout_a
    cdef uint32_t[::1] kout_start = kout_start_a
    with nogil:
        head = 0
        tail = 1
        queue[0] = 0
        if kout_start[0] < kout_start[1]:
            kbest[0] = kout[kout_start[0]]
        while head < tail:   # BFS: a state's failure target is shallower, so already complete
            s = queue[head]
            head += 1
            for c in range(ALPHABET):
                ch = kdelta[s * ALPHABET + c]
                if ch < 0:
                    kdelta[s * ALPHABET + c] = kdelta[kfail[s] * ALPHABET + c] if s > 0 else 0
                    continue
                f = kdelta[kfail[s] * ALPHABET + c] if s > 0 else 0
                kfail[ch] = <int32_t>f
                q = kout[kout_start[ch]] if kout_start[ch] < kout_start[ch + 1] else -1
                kbest[ch] = _better(&prio[0], kbest[f], <int32_t>q)
                queue[tail] = <int32_t>ch
                tail += 1
    return {"kdelta": kdelta_a, "kbest": kbest_a, "kfail": kfail_a, "kout_start": kout_start_a,
            "kout": kout_a}


def _as_bytes(name, Py_ssize_t i=-1):
    if isinstance(name, str):
        # Non-ASCII text keeps its non-ASCII bytes, so the scan reports STATUS_NON_ASCII;
        # 'surrogatepass' does the same for lone surrogates instead of raising.
        return name.encode("utf-8", "surrogatepass")
    if isinstance(name, (bytes, bytearray, memoryview)):
        return bytes(name)
    where = f" at index {i}" if i >= 0 else ""
    raise TypeError(f"host name{where} must be str or bytes-like, not {type(name).__name__}")


cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)


def _pack(names):
    """Return (uint8 buffer, int64 offsets) holding names back to back.

    ASCII str and bytes are copied straight from the objects (no temporary per name); anything else
    goes through _as_bytes first.
    """
    cdef list seq = list(names)   # a private copy: the two passes must see the same objects
    cdef Py_ssize_t n = len(seq), i, total = 0, L
    cdef list conv = None
    offsets = np.empty(n + 1, dtype=np.int64)
    cdef int64_t[::1] off = offsets
    off[0] = 0
    for i in range(n):
        x = seq[i]
        if type(x) is str and PyUnicode_IS_COMPACT_ASCII(x):
            L = PyUnicode_GET_LENGTH(x)
        elif type(x) is bytes:
            L = PyBytes_GET_SIZE(x)
        else:
            if conv is None:
                conv = [None] * n
            x = _as_bytes(x, i)
            conv[i] = x
            L = PyBytes_GET_SIZE(x)
        total += L
        off[i + 1] = total
    buf = np.empty(max(total, 1), dtype=np.uint8)
    cdef uint8_t[::1] out = buf
    cdef const char* src
    for i in range(n):
        x = seq[i] if conv is None or conv[i] is None else conv[i]
        L = off[i + 1] - off[i]
        if type(x) is str:
            src = <const char*>PyUnicode_DATA(x)
        else:
            src = PyBytes_AS_STRING(x)
        if L:
            memcpy(&out[off[i]], src, L)
    return buf, offsets


cdef class NameAutomaton:
    """Matcher of host names against exact, domain, wildcard and keyword rules.

    Parameters:
        patterns: normalised patterns (lower-case ASCII, no trailing dot, wildcard without "*."),
            str or bytes; duplicates are fine.
        kinds: uint8 per rule: 0 exact, 1 domain, 2 wildcard, 3 keyword.
        priorities: uint64 per rule; the matching rule with the smallest priority wins (ties: the
            smaller rule id).

    Raises:
        ValueError: lengths differ, an unknown kind, an empty pattern, or a name pattern with a
        character outside ``[a-z0-9_.-]``.  Keywords with other characters never match.

    Example:
        >>> a = NameAutomaton(["example.com"], np.array([1], np.uint8), np.array([5], np.uint64))
        >>> a.match_one("WWW.Example.com.:443")
        (0, 0)
    """

    def __cinit__(self):
        self._arrays = {}
        self._n_rules = 0
        self._data = None

    def __init__(self, patterns, kinds, priorities):
        n = len(patterns)
        kinds_a = np.ascontiguousarray(kinds, dtype=np.uint8)
        prio_a = np.ascontiguousarray(priorities, dtype=np.uint64)
        if kinds_a.shape != (n,) or prio_a.shape != (n,):
            raise ValueError(f"kinds {kinds_a.shape} and priorities {prio_a.shape} must have shape ({n},)")
        # packed straight from the objects: no temporary bytes per pattern (1M rules = 55 MB less);
        # non-ASCII text keeps its UTF-8 bytes and is rejected (names) or never matches (keywords)
        buf, offsets = _pack(patterns)
        arrays = _build_keywords(buf, offsets, kinds_a, prio_a)
        ubuf, ukoff, terminals = _sorted_keys(buf, offsets, kinds_a, prio_a)
        del buf, offsets   # 1M rules: 26 MB less at the peak, which is the node array's allocation
        arrays.update(terminals, nodes=_trie_nodes(ubuf, ukoff), prio=prio_a, kinds=kinds_a)
        self._arrays = arrays
        self._n_rules = n
        self._bind()

    cdef void _bind(self) except *:
        arr = self._arrays
        cdef const uint32_t[::1] nodes = arr["nodes"]
        cdef const int32_t[::1] term_best = arr["term_best"]
        cdef const uint64_t[::1] prio = arr["prio"]
        cdef const int32_t[::1] kdelta = arr["kdelta"]
        cdef const int32_t[::1] kbest = arr["kbest"]
        self._n_rules = prio.shape[0]
        self.t.nodes = &nodes[0]
        self.t.term_best = &term_best[0] if term_best.shape[0] else NULL
        self.t.prio = &prio[0] if prio.shape[0] else NULL
        self.t.kdelta = &kdelta[0]
        self.t.kbest = &kbest[0]
        self.t.n_nodes = <uint32_t>(nodes.shape[0] // NODE_WORDS)
        self.t.n_kstates = <int32_t>kbest.shape[0]

    # ---- matching ------------------------------------------------------------------------------

    def match_one(self, name):
        """Return (winning rule id or -1, status) for one name (str or bytes-like)."""
        cdef const uint8_t[::1] view = _as_bytes(name)
        cdef int st = ST_INVALID
        cdef int32_t best
        if view.shape[0] == 0:
            return -1, ST_INVALID
        best = scan_raw(&self.t, &view[0], view.shape[0], &st)
        return best, st

    def match_all(self, name):
        """Return (int32 ids of every matching rule sorted by (priority, id), status)."""
        cdef const uint8_t[::1] view = _as_bytes(name)
        cdef uint8_t sym[MAX_NAME_LENGTH + 1]
        cdef Py_ssize_t m = 0, i, r, steps
        cdef int st
        cdef int64_t v = 0
        cdef uint32_t word, term
        cdef int32_t ks = 0, q
        cdef const uint8_t[::1] kinds = self._arrays["kinds"]
        cdef const uint32_t[::1] term_start = self._arrays["term_start"]
        cdef const int32_t[::1] term_rules = self._arrays["term_rules"]
        cdef const int32_t[::1] kfail = self._arrays["kfail"]
        cdef const uint32_t[::1] kout_start = self._arrays["kout_start"]
        cdef const int32_t[::1] kout = self._arrays["kout"]
        empty = np.zeros(0, dtype=np.int32)
        if view.shape[0] == 0:
            return empty, ST_INVALID
        st = normalize_reversed(&view[0], view.shape[0], sym, &m)
        if st != ST_OK:
            return empty, st
        found = []
        sym[m] = SYM_DOT
        for i in range(m + 1):
            if v >= 0:
                v = _child(self.t.nodes, <uint32_t>v, sym[i])
                if v >= 0 and sym[i] == SYM_DOT:
                    word = _term(self.t.nodes, v)
                    if word:
                        term = word - 1
                        for r in range(term_start[term], term_start[term + 1]):
                            q = term_rules[r]
                            # apex (last position): exact, domain; subdomain: domain, wildcard
                            if (i == m and kinds[q] <= 1) or (i < m and 1 <= kinds[q] <= 2):
                                found.append(q)
            if i < m and self.t.n_kstates > 1:
                ks = self.t.kdelta[ks * ALPHABET + sym[i]]
                q = ks
                steps = 0
                while q > 0 and steps < self.t.n_kstates:   # the dictionary-suffix chain
                    for r in range(kout_start[q], kout_start[q + 1]):
                        found.append(kout[r])
                    q = kfail[q]
                    steps += 1
        if not found:
            return empty, ST_OK
        ids = np.unique(np.array(found, dtype=np.int32))
        prio = self._arrays["prio"][ids]
        return ids[np.lexsort((ids, prio))], ST_OK

    def match_packed(self, buf, offsets, out_rule=None, out_status=None):
        """Match names packed back to back: name i is buf[offsets[i]:offsets[i + 1]].

        Parameters:
            buf: bytes-like (bytes, bytearray, memoryview, mmap, uint8 array).
            offsets: int64 array of n + 1 non-decreasing offsets into buf.
            out_rule, out_status: optional preallocated int32[n] / uint8[n] outputs.

        Returns:
            (int32 winning rule ids, -1 for none; uint8 statuses).  The scan releases the GIL.

        Raises:
            ValueError: offsets out of order or outside buf; outputs of the wrong shape.
        """
        cdef const uint8_t[::1] data = buf if len(buf) else b"\0"
        cdef Py_ssize_t nbuf = len(buf)
        offs_a = np.ascontiguousarray(offsets, dtype=np.int64)
        if offs_a.ndim != 1 or offs_a.shape[0] < 1:
            raise ValueError("offsets must be a 1-d array of n + 1 offsets")
        cdef const int64_t[::1] offs = offs_a
        cdef Py_ssize_t n = offs.shape[0] - 1
        if out_rule is None:
            out_rule = np.empty(n, dtype=np.int32)
        if out_status is None:
            out_status = np.empty(n, dtype=np.uint8)
        cdef int32_t[::1] rule = out_rule
        cdef uint8_t[::1] status = out_status
        if rule.shape[0] != n or status.shape[0] != n:
            raise ValueError(f"out_rule and out_status must have length {n}")
        if n == 0:
            return out_rule, out_status
        cdef int64_t bad
        with nogil:
            bad = _match_packed(&self.t, &data[0], nbuf, &offs[0], n, &rule[0], &status[0])
        if bad >= 0:
            raise ValueError(f"offsets[{bad}:{bad + 2}] = {offs_a[bad:bad + 2].tolist()} "
                             f"is not a range inside the buffer of {nbuf} bytes")
        return out_rule, out_status

    def match_list(self, names):
        """Match a sequence of names (str or bytes-like); returns (int32 winners, uint8 statuses)."""
        buf, offsets = _pack(names)
        return self.match_packed(buf, offsets)

    # ---- serialisation -------------------------------------------------------------------------

    def to_bytes(self):
        """Serialise: a header (magic, rule count, array lengths) then the raw little-endian arrays."""
        parts = [_MAGIC, np.array([self._n_rules], dtype=_LE).tobytes()]
        lens = [self._arrays[name].shape[0] for name, _ in _LAYOUT]
        parts.append(np.array(lens, dtype=_LE).tobytes())
        for name, dtype in _LAYOUT:
            raw = np.ascontiguousarray(self._arrays[name], dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
            parts.append(raw)
            parts.append(b"\0" * ((8 - len(raw) % 8) % 8))   # keep every array 8-byte aligned
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data):
        """Load an automaton serialised by to_bytes, without rebuilding (arrays are views of data).

        Raises:
            ValueError: data is truncated, of another format, or structurally inconsistent.
        """
        data = bytes(data)
        if len(data) < _HEADER or data[: len(_MAGIC)] != _MAGIC:
            raise ValueError("not a serialised NameAutomaton (bad magic or truncated header)")
        head = np.frombuffer(data, dtype=_LE, count=1 + len(_LAYOUT), offset=len(_MAGIC))
        n_rules = int(head[0])
        if n_rules >= 2**31:
            raise ValueError(f"serialised NameAutomaton claims {n_rules} rules (int32 ids)")
        pos = _HEADER
        arrays = {}
        for (name, dtype), count in zip(_LAYOUT, head[1:].tolist()):
            dt = np.dtype(dtype).newbyteorder("<")
            size = count * dt.itemsize
            if count > len(data) or pos + size > len(data):
                raise ValueError(f"serialised NameAutomaton truncated in array {name!r}")
            arrays[name] = np.frombuffer(data, dtype=dt, count=count, offset=pos).astype(dtype, copy=False)
            pos += size + (8 - size % 8) % 8
        if pos != len(data):
            raise ValueError("serialised NameAutomaton has trailing bytes")
        _validate(arrays, n_rules)
        cdef NameAutomaton self = cls.__new__(cls)
        self._arrays = arrays
        self._data = data
        self._bind()
        return self

    def __reduce__(self):
        return _from_bytes, (self.to_bytes(),)

    @property
    def n_rules(self):
        """Number of rules given at build time (all kinds)."""
        return self._n_rules

    @property
    def n_states(self):
        """Trie nodes plus keyword automaton states."""
        return int(self.t.n_nodes) + int(self.t.n_kstates)

    @property
    def nbytes(self):
        """Bytes held by the automaton's arrays."""
        return sum(int(a.nbytes) for a in self._arrays.values())

    def __repr__(self):
        return f"<NameAutomaton {self._n_rules} rules, {self.n_states} states, {self.nbytes} bytes>"


def _from_bytes(data):
    return NameAutomaton.from_bytes(data)


def _fail(what):
    raise ValueError(f"serialised NameAutomaton is inconsistent: {what}")


def _validate(dict arrays, Py_ssize_t n_rules):
    """Check every index the scan follows, so hostile bytes cannot make it read out of bounds."""
    cdef const uint32_t[::1] nodes = arrays["nodes"]
    cdef const uint32_t[::1] term_start = arrays["term_start"]
    cdef const int32_t[::1] term_rules = arrays["term_rules"]
    cdef const int32_t[::1] term_best = arrays["term_best"]
    cdef const int32_t[::1] kdelta = arrays["kdelta"]
    cdef const int32_t[::1] kbest = arrays["kbest"]
    cdef const int32_t[::1] kfail = arrays["kfail"]
    cdef const uint32_t[::1] kout_start = arrays["kout_start"]
    cdef const int32_t[::1] kout = arrays["kout"]
    if arrays["prio"].shape[0] != n_rules or arrays["kinds"].shape[0] != n_rules:
        _fail("rule arrays do not match the rule count")
    if n_rules and int(arrays["kinds"].max()) > 3:
        _fail("unknown rule kind")
    if nodes.shape[0] < NODE_WORDS or nodes.shape[0] % NODE_WORDS:
        _fail("node array size")
    cdef Py_ssize_t n_nodes = nodes.shape[0] // NODE_WORDS, u = term_start.shape[0] - 1, i, K = kbest.shape[0]
    if u < 0 or term_start[0] != 0 or term_start[u] != <uint32_t>term_rules.shape[0] or term_best.shape[0] != 2 * u:
        _fail("terminal arrays")
    if K < 1 or kdelta.shape[0] != K * ALPHABET or kfail.shape[0] != K or kout_start.shape[0] != K + 1:
        _fail("keyword arrays")
    if kout_start[0] != 0 or kout_start[K] != <uint32_t>kout.shape[0]:
        _fail("keyword output lists")
    cdef bint ok = True
    with nogil:
        for i in range(n_nodes):
            # every child id first + rank must be a node; every terminal index a terminal
            if (<uint64_t>nodes[NODE_WORDS * i] + _popcount(nodes[NODE_WORDS * i + 1])
                    + _popcount(nodes[NODE_WORDS * i + 2] & HI_MASK) > <uint64_t>n_nodes
                    or _term(&nodes[0], i) > <uint32_t>u):
                ok = False
        for i in range(u):
            if term_start[i] > term_start[i + 1]:
                ok = False
        for i in range(term_rules.shape[0]):
            if term_rules[i] < 0 or term_rules[i] >= n_rules:
                ok = False
        for i in range(2 * u):
            if term_best[i] < -1 or term_best[i] >= n_rules:
                ok = False
        for i in range(kdelta.shape[0]):
            if kdelta[i] < 0 or kdelta[i] >= K:
                ok = False
        for i in range(K):
            if kbest[i] < -1 or kbest[i] >= n_rules or kfail[i] < 0 or kfail[i] >= K:
                ok = False
            if kout_start[i] > kout_start[i + 1]:
                ok = False
        for i in range(kout.shape[0]):
            if kout[i] < 0 or kout[i] >= n_rules:
                ok = False
    if not ok:
        _fail("an index is out of range or a range is out of order")


def normalize(name):
    """Return (normalised name or None, status): the C normalisation, exposed for tests.

    Example:
        >>> normalize(" WWW.Example.COM.:443 ")
        ('www.example.com', 0)
    """
    cdef const uint8_t[::1] view = _as_bytes(name)
    cdef uint8_t sym[MAX_NAME_LENGTH + 1]
    cdef Py_ssize_t m = 0, i
    if view.shape[0] == 0:
        return None, ST_INVALID
    cdef int st = normalize_reversed(&view[0], view.shape[0], sym, &m)
    if st != ST_OK:
        return None, st
    return "".join([chr(_SYMBOL_CHARS[sym[m - 1 - i]]) for i in range(m)]), ST_OK
