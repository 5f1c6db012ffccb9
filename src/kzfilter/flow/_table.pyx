# cython: language_level=3
"""The flow table: packets in, one record per bidirectional flow out, with the name it went to.

Per packet (C, no GIL, no Python object): dissect -> find or create the flow (open addressing over
a slab of ``flow_t``) -> counters -> name extraction from the client's first bytes.  Only a QUIC
Initial of a version we can decrypt, from a client whose name is still pending, takes the GIL
(``kzfilter.packet._quic`` parses it in C and calls AES-ECB/AES-GCM through ``cryptography``); it
is handled inline so per-flow order is exact.

Design decisions (see also :mod:`kzfilter.flow.records` for the record schema):

* Key: (vlan, l4proto, ip_version, the two ip:port endpoints), unordered.  Client = initiator: the
  sender of a SYN without ACK; the receiver of a SYN+ACK seen first; otherwise the first sender.
* Time is capture time.  A flow idle longer than its list's timeout (TCP ``idle_timeout``, others
  ``udp_idle_timeout``) ends "idle"; one older than ``active_timeout`` ends "active-timeout" (the
  next packet opens a new flow).  Expired flows are swept every ``sweep_interval`` seconds of
  capture time and checked again when their next packet arrives, so results do not depend on the
  sweep period.  Sweeps measure idleness on the table clock (the largest capture time seen, which
  never goes backwards when a capture's timestamps do), so they are exact and do not depend on
  which other flows are held.  RST, or FIN from both sides, closes a TCP flow: it stays ``close_grace`` seconds in
  the table to absorb trailing ACKs/retransmissions, then ends "rst"/"fin".  A SYN (without ACK)
  on a closed flow starts a new flow at once (port reuse).
* ``max_flows``: at the cap the least recently seen flow is evicted (exact LRU per timeout list;
  the oldest of the three list heads) and its record is emitted with end_reason "evicted".
* TCP names: the client->server stream is reassembled by sequence number from the SYN's ISN+1 (or
  the first client payload seen when the SYN was missed), in a buffer allocated only when a
  message spans packets, bounded by ``reasm_limit`` and freed as soon as the name is known or given
  up.  Bytes already held win over retransmitted/overlapping copies (RFC 9293 leaves overlap
  resolution to the receiver; first-wins is what most stacks and nDPI do).  Only the contiguous
  prefix is parsed: 0x16 -> TLS ClientHello, an HTTP method -> Host, port 53 -> DNS over TCP.
* UDP names: ports 53/5353/5355 -> every datagram is parsed as DNS (query name; the question of a
  response when only the response is seen) and A/AAAA answers enter the DNS association table
  (client ip, answer ip) -> (name, ts + ttl), FIFO-bounded by ``dns_assoc_max``; a later flow from
  that client to that address with no name of its own gets "dns-answer".  A query for another name
  on a UDP DNS flow ends it ("dns-next-query") and starts a new flow: one record, name and verdict
  per name asked from a socket (retransmissions and A/AAAA for one name stay one flow; DNS over TCP
  keeps its first name).  A client datagram that
  looks like a QUIC long-header Initial goes to kzfilter.packet.quic; the CRYPTO frames (any order,
  any number of Initials) are reassembled here and parsed by the compiled TLS parser.  Other
  long-header packets seen before the Initial (0-RTT after reordering) do not end the search.
  Google QUIC Q024-Q046 sends its CHLO in plaintext: its SNI tag is read here, in C ("quic").
* Names are never partial: only a parser's NS_FOUND sets one.  They are kept as raw bytes.
* ``flow_id`` is the 0-based ordinal, among every frame the table has read, of the flow's first
  frame: increasing in creation order, unique within a table, and independent of sharding.
* Sharding (``shard_count`` > 1, for kzfilter.parallel): a shard keeps the flows whose symmetric
  key hash falls to ``shard_index``.  It either reads the whole capture itself (process_reader), or
  applies the events a FrameDispatch made of one read of it (process_dispatched, for
  kzfilter.threaded).  Either way frames of other shards still drive the clock (idle sweeps,
  emission times) and their DNS responses still feed the association table, so a shard's records
  are exactly the unsharded table's records of its flows.  Counters add
  up over shards: frames of no flow and the DNS association table are counted by shard 0 only.
  ``max_flows`` (eviction) is per shard: with eviction, results can depend on the shard count.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, INT64_MIN
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset, memcmp

from kzfilter.packet._capture cimport CaptureReader, frame_t, span_t
from kzfilter.packet._dissect cimport (
    dissect, packet_t, DS_OK, DS_NOT_IP, DS_TRUNCATED, DS_MALFORMED, DS_UNSUPPORTED_LINK,
    DS_FRAGMENT, DS_UNSUPPORTED_L4)
from kzfilter.packet._hostnames cimport (
    tls_client_hello, http_host, dns_message, tls_info_t, name_ref_t, dns_info_t,
    starttls_client_hello, quic_crypto_hello,
    NS_FOUND, NS_NEED_MORE, NS_NOT_PROTO, NS_NO_NAME, NS_MALFORMED)
from kzfilter.packet._quic cimport (
    quic_version_profile, quic_profile_t, QS_OK, QS_NOT_QUIC, QS_NOT_INITIAL, QS_UNKNOWN_VERSION,
    quic_c_ready, quic_open_initials_c, quic_open_t, quic_crypto_t, quic_key_cache_t,
    QUIC_OPEN_MAX_FRAMES)

import numpy as np

from kzfilter.flow.records import RECORD_DTYPE, RecordBatch
from kzfilter.packet._quic import bind_openssl, open_initials

cdef enum:
    BATCH = 1024            # frames per CaptureReader.fill
    SCRATCH_CAP = 16384     # TLS handshake reassembly scratch (a ClientHello is < 16 KiB)
    REASM_MIN = 2048        # first allocation of a reassembly buffer
    QUIC_MAX_TRIES = 8      # client Initial datagrams tried per flow before giving up

cdef enum:
    L_TCP = 0
    L_OTHER = 1
    L_CLOSED = 2

cdef enum:
    END_FIN = 1
    END_RST = 2
    END_IDLE = 3
    END_ACTIVE = 4
    END_EVICTED = 5
    END_EOC = 6
    END_DNS_NEXT = 7    # a DNS query for another name on the same UDP 5-tuple starts a new flow

cdef enum:
    SRC_SNI = 1
    SRC_QUIC = 2
    SRC_HTTP = 3
    SRC_DNS_QUERY = 4
    SRC_DNS_ANSWER = 5

cdef enum:
    NN_NO_PAYLOAD = 1
    NN_UNKNOWN = 2
    NN_NO_SNI = 3
    NN_ECH_ONLY = 4
    NN_NO_HOST = 5
    NN_GAP = 6
    NN_LIMIT = 7
    NN_TRUNCATED = 8
    NN_MALFORMED = 9
    NN_QUIC_VERSION = 10
    NN_QUIC_UNDECRYPTABLE = 11
    NN_NOT_APPLICABLE = 12

cdef enum:
    MODE_NONE = 0
    MODE_TLS = 1
    MODE_HTTP = 2
    MODE_DNS_TCP = 3
    MODE_DNS_UDP = 4
    MODE_QUIC = 5
    MODE_STARTTLS = 6

cdef enum:
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_ACK = 0x10

# One event of a dispatched capture (FrameDispatch -> FlowTable.process_dispatched): what a shard
# of the flows must see of one frame, in capture order.  Frames are numbered within their batch:
# batches are read in parallel, and only committing a batch gives the ordinal of its first frame.
cdef enum:
    IT_OWN = 0          # a frame of this shard's flows: pkt dissected, h its key hash
    IT_DNS = 1          # another shard's DNS datagram: feeds the association table only
    IT_NO_FLOW = 3      # a frame of no flow (status: its dissect status): counted by shard 0

ctypedef struct item_t:
    packet_t pkt        # the dissected frame (IT_OWN, IT_DNS): a shard never reads the frame's
                        # headers again (dissecting twice cost a DRAM miss per frame: 16% of the
                        # CPU time; events are read in order, which the prefetcher follows)
    int64_t ts          # the frame's capture time
    int64_t local_now   # IT_OWN, IT_DNS: the largest capture time of the batch's frames of a
                        # flow up to this one (the table clock is the larger of it and the clock
                        # the previous batch left)
    int64_t frame       # the frame's number within its batch
    uint32_t wirelen
    uint32_t h          # IT_OWN: the key hash
    uint8_t kind
    uint8_t status      # IT_NO_FLOW: the dissect status

# The clock track of a batch: every frame of a flow whose capture time is above all earlier ones
# of the batch (capture times increase along it).  Only such a frame can move the table clock, so
# the whole table's sweeps are found in it (a search, not a walk), starting from the clock the
# previous batch left: once per batch, when it is committed (FrameDispatch._find_sweeps).
ctypedef struct tick_t:
    int64_t ts
    int64_t frame       # its number within the batch

# A sweep of the whole table, at the frame of the clock track where it falls.  The table clock is
# the same in every shard, so are its sweeps: each shard makes each one before that frame's event.
ctypedef struct sweep_t:
    int64_t now         # the table clock at the sweep (that frame's capture time)
    int64_t frame       # the frame, numbered within the batch

# One batch of a FrameDispatch: its frames' events per shard, its clock track, the byte range it
# was read from and what committing it found.
ctypedef struct batch_t:
    frame_t* frames     # scratch for one read of the reader (BATCH frames)
    packet_t pkt        # scratch: the frame being dissected
    tick_t* ticks
    Py_ssize_t nticks
    Py_ssize_t cap_ticks
    sweep_t* sweeps     # found when the batch is committed
    Py_ssize_t nsweeps
    Py_ssize_t cap_sweeps
    int64_t run_max     # the largest capture time of the batch's frames of a flow so far
    int64_t nframes     # frames read into the batch
    int64_t base        # ordinal in the capture of its first frame (once committed)
    span_t span         # the byte range being read (read_span)
    size_t start        # offset of its first record
    bint committed


if RECORD_DTYPE.itemsize != sizeof(rec_t):
    raise ImportError(f"kzfilter.flow._table: rec_t is {sizeof(rec_t)} bytes but RECORD_DTYPE "
                      f"is {RECORD_DTYPE.itemsize}; records.py and _table.pxd disagree")

FLOW_STRUCT_SIZE = sizeof(flow_t)
RECORD_SIZE = sizeof(rec_t)

cdef const uint8_t _EMPTY[1]


# ---------------------------------------------------------------------------------------------
# Hashing and the open-addressing index (linear probing, backward-shift deletion)
# ---------------------------------------------------------------------------------------------

cdef inline uint64_t _fmix(uint64_t k) noexcept nogil:
    # MurmurHash3 64-bit finaliser: full avalanche for a cheap multiply-xorshift.
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccd
    k ^= k >> 33
    k *= <uint64_t>0xc4ceb9fe1a85ec53
    k ^= k >> 33
    return k


cdef inline uint64_t _addr_hash(const uint8_t* a, uint32_t port) noexcept nogil:
    cdef uint64_t x, y
    memcpy(&x, a, 8)
    memcpy(&y, a + 8, 8)
    return _fmix(x * <uint64_t>0x9e3779b97f4a7c15 ^ _fmix(y ^ (<uint64_t>port << 48)))


cdef inline uint32_t _flow_hash(const uint8_t* a, uint32_t pa, const uint8_t* b, uint32_t pb,
                                uint32_t proto, uint32_t vlan, uint32_t ver) noexcept nogil:
    # The sum of the two endpoint hashes is symmetric: both directions land on the same bucket.
    return <uint32_t>_fmix(_addr_hash(a, pa) + _addr_hash(b, pb)
                           + (<uint64_t>proto << 32) + (<uint64_t>vlan << 8) + ver)


cdef inline uint32_t _shard_of(uint32_t h, uint32_t shard_count) noexcept nogil:
    # The high bits of h (a fmix64 output: every bit depends on every input bit), so the shard
    # does not correlate with the low bits the flow index uses; h is symmetric, so both
    # directions of a flow fall to the same shard.
    return <uint32_t>((<uint64_t>h * shard_count) >> 32)


cdef inline uint32_t _pair_hash(const uint8_t* a, const uint8_t* b) noexcept nogil:
    return <uint32_t>_fmix(_addr_hash(a, 0) * 31 + _addr_hash(b, 1))


cdef int _index_init(index_t* ix, uint32_t size) noexcept nogil:
    """size: a power of two.  Returns -1 when out of memory."""
    cdef int32_t* s = <int32_t*>malloc(size * sizeof(int32_t))
    if s == NULL:
        return -1
    memset(s, 0xff, size * sizeof(int32_t))
    free(ix.slots)
    ix.slots = s
    ix.mask = size - 1
    return 0


cdef inline void _index_insert(index_t* ix, const uint32_t* hashes, int32_t slot) noexcept nogil:
    cdef uint32_t p = hashes[slot] & ix.mask
    while ix.slots[p] != -1:
        p = (p + 1) & ix.mask
    ix.slots[p] = slot


cdef void _index_remove(index_t* ix, const uint32_t* hashes, int32_t slot) noexcept nogil:
    cdef uint32_t mask = ix.mask
    cdef uint32_t i = hashes[slot] & mask, j, k
    while ix.slots[i] != slot:
        if ix.slots[i] == -1:
            return          # not indexed (cannot happen; tolerate)
        i = (i + 1) & mask
    # Backward-shift deletion (Knuth 6.4 algorithm R): no tombstones, probes stay short.
    j = i
    while True:
        ix.slots[i] = -1
        while True:
            j = (j + 1) & mask
            if ix.slots[j] == -1:
                return
            k = hashes[ix.slots[j]] & mask
            # The entry at j may stay unless its home k lies cyclically outside (i, j].
            if i <= j:
                if i < k <= j:
                    continue
            else:
                if k > i or k <= j:
                    continue
            break
        ix.slots[i] = ix.slots[j]
        i = j


# ---------------------------------------------------------------------------------------------
# Reassembly of the first bytes of a stream
# ---------------------------------------------------------------------------------------------

cdef reasm_t* _reasm_new(uint32_t limit) noexcept nogil:
    cdef reasm_t* r = <reasm_t*>calloc(1, sizeof(reasm_t))
    if r != NULL:
        r.limit = limit
    return r


cdef void _reasm_free(reasm_t* r) noexcept nogil:
    if r != NULL:
        free(r.buf)
        free(r.have)
        free(r)


cdef int _reasm_reserve(reasm_t* r, uint32_t need) noexcept nogil:
    cdef uint32_t newcap
    cdef uint8_t* nb
    cdef uint8_t* nh
    if need <= r.cap:
        return 0
    newcap = r.cap * 2 if r.cap else REASM_MIN
    while newcap < need:
        newcap *= 2
    if newcap > r.limit:
        newcap = r.limit
    nb = <uint8_t*>realloc(r.buf, newcap)
    if nb == NULL:
        return -1
    r.buf = nb
    nh = <uint8_t*>realloc(r.have, (newcap + 7) // 8)
    if nh == NULL:
        return -1
    memset(nh + (r.cap + 7) // 8, 0, (newcap + 7) // 8 - (r.cap + 7) // 8)
    r.have = nh
    r.cap = newcap
    return 0


cdef int _reasm_add(reasm_t* r, uint64_t off, const uint8_t* data, uint32_t n) noexcept nogil:
    """Store data at stream offset off.  Returns 1 if the contiguous prefix grew, 0 if not, -1 on
    out-of-memory.  Bytes already held (prefix or out-of-order) are kept (first copy wins)."""
    cdef uint64_t end
    cdef uint32_t i, start, old
    if off >= r.limit:
        # Test before adding: off + n wraps for offsets near 2**64 (a hostile sequence number gap).
        r.dropped += 1
        return 0
    end = off + n
    if end > r.limit:
        r.dropped += 1
        end = r.limit
    if end <= r.contig or n == 0:
        return 0
    if _reasm_reserve(r, <uint32_t>end) < 0:
        return -1
    old = r.contig
    if off <= r.contig and r.maxend <= r.contig:
        # In order with nothing held past the prefix: one copy, no bitmap.
        memcpy(r.buf + r.contig, data + (r.contig - off), <uint32_t>end - r.contig)
        r.contig = <uint32_t>end
        r.maxend = r.contig
        return 1
    start = r.contig if off < r.contig else <uint32_t>off
    for i in range(start, <uint32_t>end):
        if not (r.have[i >> 3] & (1 << (i & 7))):
            r.buf[i] = data[i - off]
            r.have[i >> 3] |= <uint8_t>(1 << (i & 7))
    if end > r.maxend:
        r.maxend = <uint32_t>end
    while r.contig < r.maxend and (r.have[r.contig >> 3] & (1 << (r.contig & 7))):
        r.contig += 1
    return 1 if r.contig > old else 0


cdef class StreamBuffer:
    """Python view of the reassembly buffer, for tests: ``add(offset, data)``, ``prefix()``."""
    cdef reasm_t* r

    def __cinit__(self, uint32_t limit=16384):
        self.r = _reasm_new(limit)
        if self.r == NULL:
            raise MemoryError()

    def __dealloc__(self):
        _reasm_free(self.r)

    def add(self, uint64_t offset, const unsigned char[::1] data):
        """Store ``data`` at ``offset``; True when the contiguous prefix grew."""
        cdef const uint8_t* p = &data[0] if data.shape[0] else _EMPTY
        cdef int rc = _reasm_add(self.r, offset, p, <uint32_t>data.shape[0])
        if rc < 0:
            raise MemoryError()
        return rc == 1

    def prefix(self):
        """The contiguous bytes from offset 0."""
        return PyBytes_FromStringAndSize(<char*>self.r.buf, self.r.contig) if self.r.contig else b""

    @property
    def has_gap(self):
        return self.r.maxend > self.r.contig

    @property
    def dropped(self):
        return self.r.dropped


# ---------------------------------------------------------------------------------------------
# QUIC (with the GIL): decrypt one client datagram, return its CRYPTO frames
# ---------------------------------------------------------------------------------------------

_initial_ciphers = None


def _quic_frames(datagram):
    """Return (reason code, frames): code 0 and [(offset, bytes), ...] when decrypted."""
    global _initial_ciphers
    if _initial_ciphers is None:
        # kzfilter.packet.quic (and cryptography with it) only loads when a capture has QUIC.
        from kzfilter.packet.quic import initial_ciphers
        _initial_ciphers = initial_ciphers
    status, _, _, _, frames, _, _ = open_initials(datagram, _initial_ciphers)   # one pass
    code = _quic_reason(status)
    return code, (frames if code == 0 else None)


cdef inline int _quic_reason(int status) noexcept nogil:
    """The no-name reason of a QS_* status of either decryption path (0: decrypted); anything
    else, libcrypto's -1 included, is "undecryptable"."""
    if status == QS_OK:
        return 0
    if status == QS_UNKNOWN_VERSION:
        return NN_QUIC_VERSION
    if status == QS_NOT_QUIC or status == QS_NOT_INITIAL:
        return NN_UNKNOWN
    return NN_QUIC_UNDECRYPTABLE


cdef inline bint _quic_version_known(const uint8_t* p) noexcept nogil:
    """The long header's version (p[1:5], checked present by _looks_quic_initial) is one whose
    Initial keys we can derive."""
    cdef quic_profile_t prof
    return quic_version_profile((<uint32_t>p[1] << 24) | (<uint32_t>p[2] << 16)
                                | (<uint32_t>p[3] << 8) | p[4], &prof)


cdef inline bint _looks_quic_initial(const uint8_t* p, uint32_t n) noexcept nogil:
    """RFC 8999 long header (bit 0x80), a non-zero version, and the Initial packet type of that
    version (0b00, but 0b01 for QUIC v2 per RFC 9369 3.2)."""
    cdef uint32_t version, ptype
    if n < 7 or not (p[0] & 0x80):
        return False
    version = (<uint32_t>p[1] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 8) | p[4]
    if version == 0:
        return False        # version negotiation
    ptype = (p[0] >> 4) & 3
    if version == 0x6b3343cf:
        return ptype == 1
    return ptype == 0


cdef uint32_t _host_without_port(const uint8_t* h, uint32_t n) noexcept nogil:
    """Length of an HTTP Host value without its ":port" (RFC 9110 7.2: uri-host [ ":" port ]).
    An unbracketed IPv6 literal (several colons) is left whole."""
    cdef uint32_t k = n, colons = 0, i
    while k > 0 and 48 <= h[k - 1] <= 57:
        k -= 1
    if k == 0 or k == n or h[k - 1] != 58:
        return n
    for i in range(k - 1):
        if h[i] == 58:
            colons += 1
    if colons and h[0] != 91:       # '[' starts a bracketed IPv6 literal
        return n
    return k - 1 if k > 1 else n


cdef inline bint _ack_padding(uint8_t flags, const uint8_t* p, uint32_t n) noexcept nogil:
    """A bare ACK "carrying" at most 6 zero bytes: Ethernet padding that a broken IP total
    length let into the payload (nDPI heuristic_tcp_ack_payload.pcap).  Taking it as stream
    bytes would make the real first segment, at the same sequence number, a retransmission."""
    cdef uint32_t i
    if (flags & (TH_SYN | TH_FIN | TH_RST | 0x08)) or n > 6:
        return False
    for i in range(n):
        if p[i]:
            return False
    return True


cdef inline bint _is_gquic(const uint8_t* p, uint32_t n) noexcept nogil:
    """A client packet of Google QUIC Q0xx carrying its version: the public header (flags with
    PUBLIC_FLAG_VERSION 0x01, an 8-byte connection id when 0x08) before Q046, the long header
    from Q046 on."""
    cdef uint32_t at
    if n < 13:
        return False
    if p[0] & 0x80:
        at = 1
    elif p[0] & 0x01:
        at = 9 if p[0] & 0x08 else 1
    else:
        return False
    return p[at] == 81 and p[at + 1] == 48          # "Q0"


cdef int _gquic_chlo(const uint8_t* p, uint32_t n, const uint8_t** name,
                     uint32_t* name_len) noexcept nogil:
    """SNI of the plaintext CHLO of gQUIC Q024-Q046 (Q050 and T05x encrypt it).

    The CHLO handshake message is "CHLO", a tag count (2 bytes LE), 2 bytes of padding, then per
    tag a 4-byte tag and the 4-byte LE end offset of its value; the values follow the table.  The
    SNI is tag "SNI\\0".  The message sits in the first STREAM frame, a few dozen bytes in.
    """
    cdef uint32_t k = 0, lim, ntags, i, prev = 0, end
    cdef uint64_t base
    cdef const uint8_t* t
    lim = n - 8 if n > 8 else 0
    if lim > 256:
        lim = 256
    while k < lim and not (p[k] == 67 and p[k + 1] == 72 and p[k + 2] == 76 and p[k + 3] == 79):
        k += 1
    if k >= lim:
        return NS_NOT_PROTO
    ntags = p[k + 4] | (<uint32_t>p[k + 5] << 8)
    if ntags == 0 or ntags > 256:
        return NS_MALFORMED
    base = <uint64_t>k + 8 + 8 * <uint64_t>ntags
    if base > n:
        return NS_NEED_MORE
    for i in range(ntags):
        t = p + k + 8 + 8 * i
        end = t[4] | (<uint32_t>t[5] << 8) | (<uint32_t>t[6] << 16) | (<uint32_t>t[7] << 24)
        if end < prev:
            return NS_MALFORMED
        if t[0] == 83 and t[1] == 78 and t[2] == 73 and t[3] == 0:      # "SNI\0"
            if base + end > n:
                return NS_NEED_MORE
            name[0] = p + base + prev
            name_len[0] = end - prev
            return NS_FOUND if end > prev else NS_NO_NAME
        prev = end
    return NS_NO_NAME


cdef inline bint _is_dns_port(uint32_t port) noexcept nogil:
    return port == 53 or port == 5353 or port == 5355


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

cdef inline bint _is_dns_datagram(const packet_t* p) noexcept nogil:
    """A UDP datagram with a payload on a DNS port: its answers feed the association table."""
    return p.l4proto == 17 and p.payload_len and (_is_dns_port(p.sport) or _is_dns_port(p.dport))


cdef inline bint _may_feed_assoc(const packet_t* p) noexcept nogil:
    """A DNS datagram that another shard's _dns_datagram can learn from: a response (QR set) of
    at least a DNS header.  Queries and shorter payloads store nothing there (dns_message reads
    is_response only past the 12-byte header), so another shard neither parses them (a sharded
    table) nor receives them (FrameDispatch)."""
    return _is_dns_datagram(p) and p.payload_len >= 12 and (p.payload[2] & 0x80) != 0


cdef inline int _dissect_flow(const uint8_t* data, uint32_t caplen, uint32_t linktype,
                              packet_t* p) noexcept nogil:
    """dissect() for the flow table: DS_OK for every frame of a flow (a transport without ports,
    ICMP say, gets a key without ports and no payload), else the status of a frame of no flow."""
    cdef int st = dissect(data, caplen, linktype, p)
    if st == DS_UNSUPPORTED_L4:
        p.sport = 0
        p.dport = 0
        p.payload_len = 0
        return DS_OK
    return st


cdef inline bint _clock_step(int64_t ts, int64_t* now, int64_t* next_sweep,
                             int64_t every) noexcept nogil:
    """Move the table clock to ts (the largest capture time so far: never backwards); True when a
    sweep is due at this frame, before it (the next one is then due ``every`` later).

    Sweeps run on the table clock and the lists are in clock order, so a sweep ends exactly the
    flows idle (or old) for longer than their timeout, whatever other flows the table holds: a
    shard of the flows sweeps its flows exactly as the whole table would."""
    if ts > now[0]:
        now[0] = ts
    if now[0] >= next_sweep[0]:
        next_sweep[0] = now[0] + every
        return True
    return False


@cython.final
cdef class FlowTable:
    """Flow table over packets in capture order; see the module docstring for the semantics.

    Parameters (times in seconds of capture time): ``max_flows`` flows held at once (the least
    recently seen is evicted beyond it); ``idle_timeout`` (TCP) and ``udp_idle_timeout`` (UDP and
    other transports); ``active_timeout``; ``close_grace`` after FIN/RST; ``sweep_interval``;
    ``reasm_limit`` client bytes reassembled per flow for its name; ``dns_assoc`` enables the
    DNS-answer association, bounded by ``dns_assoc_max`` entries; ``capture_name`` labels records;
    ``shard_count`` / ``shard_index`` keep only one shard of the flows (module docstring).
    """
    cdef flow_t* flows
    cdef uint32_t* fhash
    cdef index_t fidx
    cdef uint32_t cap
    cdef uint32_t max_flows
    cdef uint32_t n_active
    cdef int32_t free_head
    cdef int32_t lhead[3]
    cdef int32_t ltail[3]
    cdef int32_t age_head
    cdef int32_t age_tail
    cdef int64_t frame_no       # frames seen so far (owned or not): flow_id = first frame's ordinal
    cdef int64_t cur_frame
    cdef uint32_t shard_count
    cdef uint32_t shard_index
    cdef int64_t idle_ns[3]
    cdef int64_t active_ns
    cdef int64_t sweep_every_ns
    cdef int64_t next_sweep_ns
    cdef int64_t now_ns
    cdef uint32_t reasm_limit
    cdef bint dns_assoc
    cdef uint16_t cur_capture
    cdef list captures

    cdef assoc_t* assoc
    cdef uint32_t* ahash
    cdef index_t aidx
    cdef uint32_t acap
    cdef uint32_t amax
    cdef uint32_t acount
    cdef uint64_t anext

    cdef rec_t* recs
    cdef size_t n_recs
    cdef size_t cap_recs
    cdef uint8_t* arena
    cdef size_t arena_len
    cdef size_t arena_cap
    cdef uint8_t* alpn_arena
    cdef size_t alpn_len
    cdef size_t alpn_cap

    cdef uint8_t* scratch
    cdef uint8_t* quic_plain     # the C QUIC path: plaintexts of one datagram
    cdef size_t quic_plain_cap
    cdef quic_crypto_t* quic_frames
    cdef quic_key_cache_t* quic_keys   # client Initial keys by (version, DCID)
    cdef frame_t* frames
    cdef packet_t pkt
    cdef packet_t* cur          # the frame being attributed: &pkt, or an event's (_item)
    cdef dns_info_t dns
    cdef int64_t dns_frame      # the frame (cur_frame) whose UDP payload `dns` holds, or -1
    cdef int dns_status         # dns_message's status for it
    cdef counters_t c
    cdef uint64_t oom


    def __cinit__(self, *args, **kwargs):
        self.dns_frame = -1
        self.cur = &self.pkt
        self.free_head = -1
        self.age_head = self.age_tail = -1
        for i in range(3):
            self.lhead[i] = -1
            self.ltail[i] = -1
        self.scratch = <uint8_t*>malloc(SCRATCH_CAP)
        self.frames = <frame_t*>malloc(BATCH * sizeof(frame_t))
        if self.scratch == NULL or self.frames == NULL:
            raise MemoryError()
        if _index_init(&self.fidx, 1024) < 0 or _index_init(&self.aidx, 1024) < 0:
            raise MemoryError()

    def __init__(self, max_flows=1_000_000, idle_timeout=300.0, active_timeout=1800.0,
                 udp_idle_timeout=120.0, reasm_limit=16384, dns_assoc=True, capture_name="",
                 close_grace=2.0, sweep_interval=1.0, dns_assoc_max=1_000_000,
                 shard_count=1, shard_index=0):
        if not 1 <= shard_count <= 0xffff or not 0 <= shard_index < shard_count:
            raise ValueError("need 1 <= shard_count <= 65535 and 0 <= shard_index < shard_count")
        if not 1 <= max_flows <= 0x7fffffff:
            raise ValueError("max_flows must be between 1 and 2**31-1")
        if not 1 <= dns_assoc_max <= 0x7fffffff:
            raise ValueError("dns_assoc_max must be between 1 and 2**31-1")
        if not 64 <= reasm_limit <= (1 << 24):
            raise ValueError("reasm_limit must be between 64 and 16 MiB")
        for nm, v in (("idle_timeout", idle_timeout), ("active_timeout", active_timeout),
                      ("udp_idle_timeout", udp_idle_timeout), ("close_grace", close_grace),
                      ("sweep_interval", sweep_interval)):
            # at most ~100 years: the table keeps times as int64 nanoseconds (inf or 1e300 would
            # overflow the conversion below)
            if not 0 < v <= 3.2e9:
                raise ValueError(f"{nm} must be > 0 and at most 3.2e9 seconds, got {v!r}")
        self.max_flows = max_flows
        self.idle_ns[L_TCP] = int(idle_timeout * 1e9)
        self.idle_ns[L_OTHER] = int(udp_idle_timeout * 1e9)
        self.idle_ns[L_CLOSED] = int(close_grace * 1e9)
        self.active_ns = int(active_timeout * 1e9)
        self.sweep_every_ns = max(1, int(sweep_interval * 1e9))   # sweeps need the clock to move
        self.next_sweep_ns = -(1 << 62)
        self.now_ns = -(1 << 62)
        self.reasm_limit = reasm_limit
        self.dns_assoc = bool(dns_assoc)
        self.amax = dns_assoc_max
        self.captures = [str(capture_name)]
        self.cur_capture = 0
        self.shard_count = shard_count
        self.shard_index = shard_index
        bind_openssl()      # client Initials decrypted in C without the GIL where libcrypto loads

    def __dealloc__(self):
        cdef uint32_t i
        if self.flows != NULL:
            for i in range(self.cap):
                if self.flows[i].in_use:
                    _reasm_free(self.flows[i].reasm)
                    free(self.flows[i].name)
                    free(self.flows[i].alpn)
        if self.assoc != NULL:
            for i in range(self.acap):
                if self.assoc[i].in_use:
                    free(self.assoc[i].name)
        free(self.flows)
        free(self.fhash)
        free(self.fidx.slots)
        free(self.assoc)
        free(self.ahash)
        free(self.aidx.slots)
        free(self.recs)
        free(self.arena)
        free(self.alpn_arena)
        free(self.scratch)
        free(self.quic_plain)
        free(self.quic_frames)
        free(self.quic_keys)
        free(self.frames)

    # -- list plumbing ------------------------------------------------------------------------
    cdef inline void _unlink(self, int32_t s) noexcept nogil:
        cdef flow_t* f = &self.flows[s]
        cdef int l = f.lst
        if f.lru_prev >= 0:
            self.flows[f.lru_prev].lru_next = f.lru_next
        else:
            self.lhead[l] = f.lru_next
        if f.lru_next >= 0:
            self.flows[f.lru_next].lru_prev = f.lru_prev
        else:
            self.ltail[l] = f.lru_prev

    cdef inline void _append(self, int32_t s, int l) noexcept nogil:
        cdef flow_t* f = &self.flows[s]
        f.lst = l
        f.lru_next = -1
        f.lru_prev = self.ltail[l]
        if self.ltail[l] >= 0:
            self.flows[self.ltail[l]].lru_next = s
        else:
            self.lhead[l] = s
        self.ltail[l] = s

    cdef inline void _touch(self, int32_t s, int l) noexcept nogil:
        self.flows[s].touch_ns = self.now_ns
        if self.ltail[l] == s and self.flows[s].lst == l:
            return
        self._unlink(s)
        self._append(s, l)

    # -- slab growth --------------------------------------------------------------------------
    cdef int _grow(self) noexcept nogil:
        """Double the slab (up to max_flows).  Invalidates flow_t pointers."""
        cdef uint32_t newcap, i, size
        cdef int64_t j
        cdef flow_t* nf
        cdef uint32_t* nh
        if self.cap >= self.max_flows:
            return -1
        newcap = self.cap * 2 if self.cap else 1024
        if newcap > self.max_flows:
            newcap = self.max_flows
        nf = <flow_t*>realloc(self.flows, newcap * sizeof(flow_t))
        if nf == NULL:
            return -1
        self.flows = nf
        nh = <uint32_t*>realloc(self.fhash, newcap * sizeof(uint32_t))
        if nh == NULL:
            return -1
        self.fhash = nh
        memset(&self.flows[self.cap], 0, (newcap - self.cap) * sizeof(flow_t))
        j = <int64_t>newcap - 1
        while j >= <int64_t>self.cap:
            self.flows[j].lru_next = self.free_head
            self.free_head = <int32_t>j
            j -= 1
        self.cap = newcap
        size = self.fidx.mask + 1
        if size < 2 * newcap:
            while size < 2 * newcap:
                size *= 2
            if _index_init(&self.fidx, size) < 0:
                return -1
            for i in range(self.cap):
                if self.flows[i].in_use:
                    _index_insert(&self.fidx, self.fhash, i)
        return 0

    # -- records ------------------------------------------------------------------------------
    cdef int _arena_put(self, uint8_t** arena, size_t* length, size_t* cap, const uint8_t* p,
                        size_t n, uint32_t* off) noexcept nogil:
        cdef size_t nc
        cdef uint8_t* na
        if length[0] + n > cap[0]:
            nc = cap[0] * 2 if cap[0] else 65536
            while nc < length[0] + n:
                nc *= 2
            na = <uint8_t*>realloc(arena[0], nc)
            if na == NULL:
                return -1
            arena[0] = na
            cap[0] = nc
        memcpy(arena[0] + length[0], p, n)
        off[0] = <uint32_t>length[0]
        length[0] += n
        return 0

    cdef void _end_flow(self, int32_t s, int reason) noexcept nogil:
        """Finish flow s: decide its name, append its record, release it."""
        cdef flow_t* f = &self.flows[s]
        cdef rec_t* r
        cdef rec_t* nr
        cdef size_t nc
        cdef uint8_t nn = 0
        if f.end_reason:
            reason = f.end_reason       # closed flows end fin/rst even when swept or evicted
        if f.name == NULL or f.name_source == SRC_DNS_ANSWER:
            # No name of its own (pending or given up): say why, then fall back on DNS answers.
            if f.name_done:
                nn = f.no_name
            elif f.l4proto != 6 and f.l4proto != 17:
                nn = NN_NOT_APPLICABLE
            elif not f.c2s_payload and f.mode == MODE_NONE:
                nn = NN_NO_PAYLOAD
            elif f.snapped:
                nn = NN_TRUNCATED
            elif f.reasm != NULL and f.reasm.maxend > f.reasm.contig:
                nn = NN_GAP
            elif f.pend_reason:
                nn = f.pend_reason
            elif f.mode == MODE_NONE:
                nn = NN_NO_PAYLOAD
            else:
                nn = NN_TRUNCATED
            if f.name_source == SRC_DNS_ANSWER and f.name != NULL:
                nn = 0
        if self.n_recs == self.cap_recs:
            nc = self.cap_recs * 2 if self.cap_recs else 1024
            nr = <rec_t*>realloc(self.recs, nc * sizeof(rec_t))
            if nr == NULL:
                self.oom += 1
                self._release(s)
                return
            self.recs = nr
            self.cap_recs = nc
        r = &self.recs[self.n_recs]
        memset(r, 0, sizeof(rec_t))
        r.flow_id = f.flow_id
        r.ts_start_ns = f.first_ns
        r.ts_end_ns = f.last_ns
        r.emitted_ns = self.now_ns
        r.ts_start = f.first_ns / 1e9
        r.ts_end = f.last_ns / 1e9
        r.duration = (f.last_ns - f.first_ns) / 1e9
        if f.last_ns > f.first_ns:
            r.rate_c2s_bps = f.by_c2s * 8.0 / r.duration
            r.rate_s2c_bps = f.by_s2c * 8.0 / r.duration
        r.packets_c2s = f.pk_c2s
        r.packets_s2c = f.pk_s2c
        r.bytes_c2s = f.by_c2s
        r.bytes_s2c = f.by_s2c
        r.client_port = f.cport
        r.server_port = f.sport
        r.vlan = f.vlan
        r.capture_idx = f.capture_idx
        memcpy(r.client_ip, f.cip, 16)
        memcpy(r.server_ip, f.sip, 16)
        r.ip_version = f.ipver
        r.l4proto = f.l4proto
        r.tcp_flags = f.flags
        r.end_reason = reason
        r.ech = f.ech
        r.tunnel = f.tunnel
        r.no_name_reason = nn
        if nn == 0 and f.name != NULL and f.name_len:
            if self._arena_put(&self.arena, &self.arena_len, &self.arena_cap, f.name,
                               f.name_len, &r.name_off) == 0:
                r.name_len = f.name_len
                r.name_source = f.name_source
                self.c.names[f.name_source] += 1
            else:
                self.oom += 1
        if f.alpn != NULL and f.alpn_len:
            if self._arena_put(&self.alpn_arena, &self.alpn_len, &self.alpn_cap, f.alpn,
                               f.alpn_len, &r.alpn_off) == 0:
                r.alpn_len = f.alpn_len
        self.n_recs += 1
        self.c.records += 1
        if reason == END_EVICTED:
            self.c.flows_evicted += 1
        elif reason == END_IDLE:
            self.c.flows_idle += 1
        elif reason == END_ACTIVE:
            self.c.flows_active_timeout += 1
        self._release(s)

    cdef void _release(self, int32_t s) noexcept nogil:
        cdef flow_t* f = &self.flows[s]
        _reasm_free(f.reasm)
        free(f.name)
        free(f.alpn)
        _index_remove(&self.fidx, self.fhash, s)
        self._unlink(s)
        if f.age_prev >= 0:
            self.flows[f.age_prev].age_next = f.age_next
        else:
            self.age_head = f.age_next
        if f.age_next >= 0:
            self.flows[f.age_next].age_prev = f.age_prev
        else:
            self.age_tail = f.age_prev
        memset(f, 0, sizeof(flow_t))
        f.lru_next = self.free_head
        self.free_head = s
        self.n_active -= 1

    # -- timeouts -----------------------------------------------------------------------------
    cdef void _sweep(self, int64_t now) noexcept nogil:
        cdef int l
        cdef int32_t s
        for l in range(3):
            while self.lhead[l] >= 0:
                s = self.lhead[l]
                if now - self.flows[s].touch_ns < self.idle_ns[l]:
                    break
                self._end_flow(s, END_IDLE)
        while self.age_head >= 0:
            s = self.age_head
            if now - self.flows[s].born_ns < self.active_ns:
                break
            self._end_flow(s, END_ACTIVE)

    cdef int _evict_one(self) noexcept nogil:
        cdef int l
        cdef int32_t best = -1, s
        for l in range(3):
            s = self.lhead[l]
            if s >= 0 and (best < 0 or self.flows[s].touch_ns < self.flows[best].touch_ns):
                best = s
        if best < 0:
            return -1
        self._end_flow(best, END_EVICTED)
        return 0

    # -- DNS association table ----------------------------------------------------------------
    cdef int32_t _assoc_find(self, const uint8_t* client, const uint8_t* server, uint32_t h) noexcept nogil:
        cdef uint32_t p = h & self.aidx.mask
        cdef int32_t s
        while True:
            s = self.aidx.slots[p]
            if s < 0:
                return -1
            if (self.ahash[s] == h and memcmp(self.assoc[s].client, client, 16) == 0
                    and memcmp(self.assoc[s].server, server, 16) == 0):
                return s
            p = (p + 1) & self.aidx.mask

    cdef void _assoc_put(self, const uint8_t* client, const uint8_t* server, uint8_t ver,
                         int64_t expiry, const uint8_t* name, uint32_t name_len) noexcept nogil:
        cdef uint32_t h = _pair_hash(client, server)
        cdef int32_t s = self._assoc_find(client, server, h)
        cdef uint32_t newcap, i, size
        cdef assoc_t* na
        cdef uint32_t* nh
        cdef uint8_t* nm
        if name_len == 0 or name_len > 0xffff:
            return
        nm = <uint8_t*>malloc(name_len)
        if nm == NULL:
            return
        memcpy(nm, name, name_len)
        if s < 0:
            if self.acount >= self.amax:
                # FIFO: the slot after the newest holds the oldest entry.
                s = <int32_t>(self.anext % self.amax)
                _index_remove(&self.aidx, self.ahash, s)
                free(self.assoc[s].name)
                self.assoc[s].in_use = 0
                self.acount -= 1
                self.c.dns_answers_evicted += 1
            else:
                s = <int32_t>(self.anext % self.amax)
                if <uint32_t>s >= self.acap:
                    newcap = self.acap * 2 if self.acap else 1024
                    if newcap > self.amax:
                        newcap = self.amax
                    na = <assoc_t*>realloc(self.assoc, newcap * sizeof(assoc_t))
                    if na == NULL:
                        free(nm)
                        return
                    self.assoc = na
                    nh = <uint32_t*>realloc(self.ahash, newcap * sizeof(uint32_t))
                    if nh == NULL:
                        free(nm)
                        return
                    self.ahash = nh
                    memset(&self.assoc[self.acap], 0, (newcap - self.acap) * sizeof(assoc_t))
                    self.acap = newcap
                    size = self.aidx.mask + 1
                    if size < 2 * newcap:
                        while size < 2 * newcap:
                            size *= 2
                        if _index_init(&self.aidx, size) < 0:
                            free(nm)
                            return
                        for i in range(self.acap):
                            if self.assoc[i].in_use:
                                _index_insert(&self.aidx, self.ahash, i)
            self.anext += 1
            self.acount += 1
            memcpy(self.assoc[s].client, client, 16)
            memcpy(self.assoc[s].server, server, 16)
            self.assoc[s].in_use = 1
            self.ahash[s] = h
            _index_insert(&self.aidx, self.ahash, s)
        else:
            free(self.assoc[s].name)
        self.assoc[s].name = nm
        self.assoc[s].name_len = <uint16_t>name_len
        self.assoc[s].ipver = ver
        self.assoc[s].expiry_ns = expiry
        self.c.dns_answers_stored += 1

    cdef void _assoc_apply(self, flow_t* f, int64_t ts) noexcept nogil:
        """Give a new flow the tentative name an earlier DNS answer associates with its server."""
        cdef uint32_t h
        cdef int32_t s
        if self.acount == 0:
            return
        h = _pair_hash(f.cip, f.sip)
        s = self._assoc_find(f.cip, f.sip, h)
        if s < 0 or self.assoc[s].expiry_ns < ts:
            return
        f.name = <uint8_t*>malloc(self.assoc[s].name_len)
        if f.name == NULL:
            return
        memcpy(f.name, self.assoc[s].name, self.assoc[s].name_len)
        f.name_len = self.assoc[s].name_len
        f.name_source = SRC_DNS_ANSWER

    # -- names --------------------------------------------------------------------------------
    cdef void _set_name(self, flow_t* f, const uint8_t* name, uint32_t n, int source) noexcept nogil:
        if n == 0 or n > 0xffff:
            self._give_up(f, NN_MALFORMED)
            return
        free(f.name)
        f.name = <uint8_t*>malloc(n)
        if f.name == NULL:
            f.name_len = 0
            f.name_source = 0
            self._give_up(f, NN_TRUNCATED)
            return
        memcpy(f.name, name, n)
        f.name_len = <uint16_t>n
        f.name_source = source
        f.name_done = 1
        f.no_name = 0
        _reasm_free(f.reasm)
        f.reasm = NULL

    cdef void _give_up(self, flow_t* f, int why) noexcept nogil:
        f.name_done = 1
        f.no_name = why
        _reasm_free(f.reasm)
        f.reasm = NULL

    cdef void _tls_result(self, flow_t* f, int st, tls_info_t* info, int source,
                          uint32_t have, bint full) noexcept nogil:
        """Act on a ClientHello parse.  full: the buffer holds all it can (limit reached)."""
        if st == NS_FOUND or st == NS_NO_NAME:
            f.ech = info.ech
            if info.alpn != NULL and info.alpn_len and f.alpn == NULL:
                f.alpn = <uint8_t*>malloc(info.alpn_len)
                if f.alpn != NULL:
                    memcpy(f.alpn, info.alpn, info.alpn_len)
                    f.alpn_len = <uint8_t>(info.alpn_len if info.alpn_len < 255 else 255)
        if st == NS_FOUND:
            self._set_name(f, info.name, info.name_len, source)
        elif st == NS_NO_NAME:
            self._give_up(f, NN_ECH_ONLY if info.ech else NN_NO_SNI)
        elif st == NS_NEED_MORE:
            if full:
                self._give_up(f, NN_LIMIT)
        elif st == NS_NOT_PROTO:
            self._give_up(f, NN_UNKNOWN)
        else:
            self._give_up(f, NN_MALFORMED)

    cdef void _parse_tcp(self, flow_t* f, const uint8_t* s, uint32_t n, bint full) noexcept nogil:
        """Parse the contiguous client prefix s[:n] of a TCP flow whose name is pending."""
        cdef tls_info_t info
        cdef name_ref_t ref
        cdef int st
        cdef uint32_t mlen
        if f.mode == MODE_NONE:
            if s[0] == 0x16:
                f.mode = MODE_TLS
            elif f.sport == 53:
                f.mode = MODE_DNS_TCP
            else:
                f.mode = MODE_HTTP
        if f.mode == MODE_TLS:
            st = tls_client_hello(s, n, 1, self.scratch, SCRATCH_CAP, &info)
            self._tls_result(f, st, &info, SRC_SNI, n, full)
        elif f.mode == MODE_HTTP:
            st = http_host(s, n, &ref)
            if st == NS_FOUND:
                self._set_name(f, ref.name, _host_without_port(ref.name, ref.name_len), SRC_HTTP)
            elif st == NS_NEED_MORE:
                if full:
                    self._give_up(f, NN_LIMIT)
            elif st == NS_NO_NAME:
                self._give_up(f, NN_NO_HOST)
            elif st == NS_NOT_PROTO:
                # Not HTTP: maybe SMTP/POP3/IMAP heading for STARTTLS (RFC 3207, 2595, 3501).
                st = starttls_client_hello(s, n, self.scratch, SCRATCH_CAP, &info)
                if st == NS_NOT_PROTO:
                    self._give_up(f, NN_UNKNOWN)
                else:
                    f.mode = MODE_STARTTLS
                    self._tls_result(f, st, &info, SRC_SNI, n, full)
            else:
                self._give_up(f, NN_MALFORMED)
        elif f.mode == MODE_STARTTLS:
            st = starttls_client_hello(s, n, self.scratch, SCRATCH_CAP, &info)
            self._tls_result(f, st, &info, SRC_SNI, n, full)
        else:
            # RFC 1035 4.2.2: a two-byte length prefixes each DNS message over TCP.
            if n < 2:
                return
            mlen = (<uint32_t>s[0] << 8) | s[1]
            if n - 2 < mlen:
                if full:
                    self._give_up(f, NN_LIMIT)
                return
            st = dns_message(s + 2, mlen, &self.dns)
            self.dns_frame = -1      # self.dns no longer holds a UDP payload's parse
            if st == NS_FOUND:
                self._set_name(f, self.dns.name, self.dns.name_len, SRC_DNS_QUERY)
            elif st == NS_NO_NAME:
                self._give_up(f, NN_NO_HOST)
            else:
                self._give_up(f, NN_MALFORMED)

    cdef void _tcp_payload(self, flow_t* f) noexcept nogil:
        """Client payload of a TCP flow whose name is pending: reassemble, then parse."""
        cdef packet_t* p = self.cur
        cdef uint32_t rel = p.seq - f.base_seq
        cdef uint32_t skip
        cdef const uint8_t* data = p.payload
        cdef uint32_t n = p.payload_len
        cdef int rc
        cdef reasm_t* r
        if <int32_t>rel < 0:
            # Starts before the stream origin (a retransmission straddling the ISN): clip.
            skip = <uint32_t>(-<int32_t>rel)
            if skip >= n:
                return
            data += skip
            n -= skip
            rel = 0
        if f.reasm == NULL and rel == 0:
            # Fast path: the whole message in the first segment, parsed in place.
            self._parse_tcp(f, data, n, False)
            if f.name_done:
                return
            if p.payload_len < p.payload_wire_len:
                f.snapped = 1
                self._give_up(f, NN_TRUNCATED)
                return
        if p.payload_len < p.payload_wire_len:
            f.snapped = 1       # the rest of this segment was not captured: a hole forever
        if f.reasm == NULL:
            f.reasm = _reasm_new(self.reasm_limit)
            if f.reasm == NULL:
                self.c.reasm_alloc_failed += 1
                self._give_up(f, NN_LIMIT)
                return
        r = f.reasm
        rc = _reasm_add(r, rel, data, n)
        if rc < 0:
            self.c.reasm_alloc_failed += 1
            self._give_up(f, NN_LIMIT)
            return
        if r.dropped:
            self.c.reasm_dropped += 1
            r.dropped = 0
        if rc == 1 and r.contig:
            self._parse_tcp(f, r.buf, r.contig, r.contig >= r.limit)

    cdef int _parse_dns(self) noexcept nogil:
        """Parse the UDP payload of self.pkt into self.dns, once per frame (the split test of a
        DNS flow and the flow's naming both read it)."""
        if self.dns_frame != self.cur_frame:
            self.dns_status = dns_message(self.cur.payload, self.cur.payload_len, &self.dns)
            self.dns_frame = self.cur_frame
        return self.dns_status

    cdef int _dns_datagram(self, int64_t ts) noexcept nogil:
        """Parse the UDP payload of self.pkt as DNS; store the A/AAAA answers of a response in
        the association table.  Every shard runs this for every DNS datagram (owned or not), so
        the association tables of all shards are identical."""
        cdef packet_t* p = self.cur
        cdef uint32_t i
        cdef int st = self._parse_dns()
        if (st == NS_FOUND or st == NS_MALFORMED) and self.dns.is_response and self.dns_assoc \
                and self.dns.name_len:
            for i in range(self.dns.n_answers):
                # The querier is the destination of the response.
                self._assoc_put(p.dst, self.dns.answers[i].addr, self.dns.answers[i].ip_version,
                                ts + <int64_t>self.dns.answers[i].ttl * 1000000000,
                                self.dns.name, self.dns.name_len)
            self.c.dns_answers_dropped += self.dns.n_answers_dropped
        return st

    cdef void _udp_payload(self, flow_t* f, bint c2s, int64_t ts) noexcept nogil:
        cdef packet_t* p = self.cur
        cdef int st
        cdef uint32_t i
        cdef const uint8_t* gname = NULL
        cdef uint32_t gname_len = 0
        if _is_dns_port(p.sport) or _is_dns_port(p.dport):
            f.mode = MODE_DNS_UDP
            st = self._dns_datagram(ts)
            if not f.name_done:
                if st == NS_FOUND:
                    self._set_name(f, self.dns.name, self.dns.name_len, SRC_DNS_QUERY)
                elif st == NS_NO_NAME:
                    f.pend_reason = NN_NO_HOST
                elif st == NS_NEED_MORE and p.payload_len < p.payload_wire_len:
                    f.pend_reason = NN_TRUNCATED
                else:
                    f.pend_reason = NN_MALFORMED
            return
        if f.name_done or not c2s:
            return
        if (f.mode == MODE_NONE or f.mode == MODE_QUIC) and _is_gquic(p.payload, p.payload_len):
            st = _gquic_chlo(p.payload, p.payload_len, &gname, &gname_len)
            if st != NS_NOT_PROTO:
                self.c.gquic_hellos += 1
                f.mode = MODE_QUIC
                if st == NS_FOUND:
                    self._set_name(f, gname, gname_len, SRC_QUIC)
                elif st == NS_NO_NAME:
                    self._give_up(f, NN_NO_SNI)
                elif st == NS_NEED_MORE:
                    f.pend_reason = NN_TRUNCATED        # a CHLO spread over datagrams
                else:
                    self._give_up(f, NN_MALFORMED)
                return
        if _looks_quic_initial(p.payload, p.payload_len):
            if f.mode == MODE_NONE:
                f.mode = MODE_QUIC
            if f.mode == MODE_QUIC:
                self.c.quic_initials += 1
                if not _quic_version_known(p.payload):
                    # What decryption would answer, without the GIL: no salt for this version.
                    f.quic_tries += 1
                    self._quic_failed(f, NN_QUIC_VERSION)
                elif quic_c_ready():
                    self._quic_c(f, p.payload, p.payload_len)
                else:
                    with gil:
                        self._quic(f, p.payload, p.payload_len)
            return
        if p.payload_len >= 7 and (p.payload[0] & 0x80) and (p.payload[1] | p.payload[2]
                                                            | p.payload[3] | p.payload[4]):
            # Another long-header packet (0-RTT, Handshake) seen before the Initial, e.g. by
            # reordering (nDPI quic_0RTT.pcap): keep waiting for the Initial, a few times.
            f.mode = MODE_QUIC
            f.pend_reason = NN_QUIC_UNDECRYPTABLE
            f.quic_tries += 1
            if f.quic_tries >= QUIC_MAX_TRIES:
                self._give_up(f, NN_QUIC_UNDECRYPTABLE)
            return
        if f.mode == MODE_NONE:
            self._give_up(f, NN_UNKNOWN)

    cdef void _quic_failed(self, flow_t* f, int code) noexcept nogil:
        """A client Initial datagram that gave no CRYPTO frames: keep trying, or give up."""
        self.c.quic_failed += 1
        f.pend_reason = code
        if code == NN_QUIC_VERSION or f.quic_tries >= QUIC_MAX_TRIES or (
                code == NN_UNKNOWN and f.reasm == NULL):
            self._give_up(f, code)

    cdef void _quic(self, flow_t* f, const uint8_t* data, uint32_t n) noexcept:
        """One client Initial datagram (GIL held: the ``cryptography`` path): decrypt, add CRYPTO
        frames, parse."""
        cdef const unsigned char[::1] fr
        cdef bint grew = False
        f.quic_tries += 1
        try:
            code, frames = _quic_frames(PyBytes_FromStringAndSize(<char*>data, n))
        except Exception:
            code, frames = NN_QUIC_UNDECRYPTABLE, None
        if code:
            self._quic_failed(f, code)
            return
        if self._quic_reasm(f) < 0:
            return
        for off, chunk in frames:
            if not chunk:
                continue
            fr = chunk
            if self._quic_add(f, off, &fr[0], <uint32_t>fr.shape[0], &grew) < 0:
                return
        self._quic_parse(f, grew)

    cdef void _quic_c(self, flow_t* f, const uint8_t* data, uint32_t n) noexcept nogil:
        """One client Initial datagram, decrypted in C (libcrypto) without the GIL: the same
        steps and answers as _quic."""
        cdef quic_open_t res
        cdef int st, code
        cdef uint32_t k
        cdef bint grew = False
        cdef uint8_t* grown
        f.quic_tries += 1
        if self.quic_frames == NULL:
            self.quic_frames = <quic_crypto_t*>malloc(QUIC_OPEN_MAX_FRAMES * sizeof(quic_crypto_t))
        if self.quic_keys == NULL:
            self.quic_keys = <quic_key_cache_t*>calloc(1, sizeof(quic_key_cache_t))
        if n > self.quic_plain_cap:
            grown = <uint8_t*>realloc(self.quic_plain, n)
            if grown != NULL:
                self.quic_plain = grown
                self.quic_plain_cap = n
        if self.quic_frames == NULL or n > self.quic_plain_cap:
            st = -1
        else:
            st = quic_open_initials_c(data, n, self.quic_plain, self.quic_frames, &res,
                                      self.quic_keys)
        code = _quic_reason(st)
        if code:
            self._quic_failed(f, code)
            return
        if self._quic_reasm(f) < 0:
            return
        for k in range(res.count):
            if self.quic_frames[k].length == 0:
                continue
            if self._quic_add(f, self.quic_frames[k].offset,
                              self.quic_plain + self.quic_frames[k].start,
                              self.quic_frames[k].length, &grew) < 0:
                return
        self._quic_parse(f, grew)

    cdef int _quic_reasm(self, flow_t* f) noexcept nogil:
        """The flow's CRYPTO reassembly buffer; -1 when it cannot be had (the flow gave up)."""
        if f.reasm == NULL:
            f.reasm = _reasm_new(self.reasm_limit)
            if f.reasm == NULL:
                self.c.reasm_alloc_failed += 1
                self._give_up(f, NN_LIMIT)
                return -1
        return 0

    cdef int _quic_add(self, flow_t* f, uint64_t off, const uint8_t* data, uint32_t n,
                       bint* grew) noexcept nogil:
        """Add one CRYPTO frame; -1 when out of memory (the flow gave up)."""
        cdef int rc = _reasm_add(f.reasm, off, data, n)
        if rc < 0:
            self.c.reasm_alloc_failed += 1
            self._give_up(f, NN_LIMIT)
            return -1
        if rc == 1:
            grew[0] = True
        return 0

    cdef void _quic_parse(self, flow_t* f, bint grew) noexcept nogil:
        """After a datagram's CRYPTO frames: parse the ClientHello when the stream grew."""
        cdef tls_info_t info
        cdef int st
        if f.reasm.dropped:
            self.c.reasm_dropped += 1
            f.reasm.dropped = 0
        if grew and f.reasm.contig:
            st = quic_crypto_hello(f.reasm.buf, f.reasm.contig, self.scratch, SCRATCH_CAP, &info)
            self._tls_result(f, st, &info, SRC_QUIC, f.reasm.contig,
                             f.reasm.contig >= f.reasm.limit)
        if not f.name_done and f.quic_tries >= QUIC_MAX_TRIES:
            self._give_up(f, NN_LIMIT)

    # -- the per-packet path ------------------------------------------------------------------
    cdef int32_t _new_flow(self, int64_t ts) noexcept nogil:
        """Create the flow of self.pkt (the sender is the client unless it is a SYN+ACK)."""
        cdef packet_t* p = self.cur
        cdef int32_t s
        cdef flow_t* f
        cdef bint swap
        if self.free_head < 0:
            if self.cap < self.max_flows:
                if self._grow() < 0:
                    self.oom += 1
                    if self._evict_one() < 0:
                        return -1
            elif self._evict_one() < 0:
                return -1
        s = self.free_head
        f = &self.flows[s]
        self.free_head = f.lru_next
        memset(f, 0, sizeof(flow_t))
        swap = p.l4proto == 6 and (p.tcp_flags & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK)
        if swap:
            memcpy(f.cip, p.dst, 16)
            memcpy(f.sip, p.src, 16)
            f.cport = p.dport
            f.sport = p.sport
        else:
            memcpy(f.cip, p.src, 16)
            memcpy(f.sip, p.dst, 16)
            f.cport = p.sport
            f.sport = p.dport
        f.vlan = p.vlan
        f.l4proto = p.l4proto
        f.ipver = p.ip_version
        f.tunnel = p.tunnel
        f.in_use = 1
        f.first_ns = ts
        f.last_ns = ts
        f.touch_ns = self.now_ns
        f.born_ns = self.now_ns
        f.flow_id = self.cur_frame
        f.capture_idx = self.cur_capture
        self.fhash[s] = _flow_hash(p.src, p.sport, p.dst, p.dport, p.l4proto, p.vlan, p.ip_version)
        _index_insert(&self.fidx, self.fhash, s)
        f.lru_prev = -1
        f.lru_next = -1
        self._append(s, L_TCP if p.l4proto == 6 else L_OTHER)
        f.age_next = -1
        f.age_prev = self.age_tail
        if self.age_tail >= 0:
            self.flows[self.age_tail].age_next = s
        else:
            self.age_head = s
        self.age_tail = s
        self.n_active += 1
        self.c.flows += 1
        if p.l4proto != 6 and p.l4proto != 17:
            f.name_done = 1
            f.no_name = NN_NOT_APPLICABLE
        if self.dns_assoc and not (_is_dns_port(f.sport) or _is_dns_port(f.cport)):
            self._assoc_apply(f, ts)
        return s

    cdef bint _next_dns_query(self, flow_t* f) noexcept nogil:
        """True when self.pkt is a DNS query for another name than the query that named UDP flow f.

        A resolver client may send many queries from one socket (one 5-tuple).  Each query for a
        new name ends the flow ("dns-next-query") and starts the next, so every name asked gets
        its own record and verdict: a blocked name asked after an allowed one is not hidden behind
        the first.  Retransmissions and other types for the same name (A then AAAA) stay in the
        flow; responses stay with the flow of the last query.  DNS over TCP keeps its first name.
        """
        cdef packet_t* p = self.cur
        if (f.mode != MODE_DNS_UDP or f.name == NULL or f.name_source != SRC_DNS_QUERY
                or p.payload_len < 12 or p.payload[2] & 0x80):   # QR bit set: a response
            return False
        if self._parse_dns() != NS_FOUND or self.dns.is_response:
            return False
        return self.dns.name_len != f.name_len or memcmp(self.dns.name, f.name, f.name_len) != 0

    cdef int32_t _lookup(self, uint32_t h, bint* c2s) noexcept nogil:
        cdef packet_t* p = self.cur
        cdef uint32_t i = h & self.fidx.mask
        cdef int32_t s
        cdef flow_t* f
        while True:
            s = self.fidx.slots[i]
            if s < 0:
                return -1
            f = &self.flows[s]
            if (self.fhash[s] == h and f.l4proto == p.l4proto and f.vlan == p.vlan
                    and f.ipver == p.ip_version):
                if (f.cport == p.sport and f.sport == p.dport and memcmp(f.cip, p.src, 16) == 0
                        and memcmp(f.sip, p.dst, 16) == 0):
                    c2s[0] = True
                    return s
                if (f.cport == p.dport and f.sport == p.sport and memcmp(f.cip, p.dst, 16) == 0
                        and memcmp(f.sip, p.src, 16) == 0):
                    c2s[0] = False
                    return s
            i = (i + 1) & self.fidx.mask

    cdef int _packet(self, int64_t ts, const uint8_t* data, uint32_t caplen, uint32_t wirelen,
                     uint32_t linktype) noexcept nogil:
        cdef packet_t* p = &self.pkt       # dissected here: self.cur is &self.pkt outside _item
        cdef int st = _dissect_flow(data, caplen, linktype, p)
        cdef uint32_t h
        self.cur_frame = self.frame_no
        self.frame_no += 1
        if st != DS_OK:
            if self.shard_index == 0:
                self._count_no_flow(st, wirelen)    # frames of no flow: counted by shard 0 only
            return 0
        if _clock_step(ts, &self.now_ns, &self.next_sweep_ns, self.sweep_every_ns):
            self._sweep(self.now_ns)
        h = _flow_hash(p.src, p.sport, p.dst, p.dport, p.l4proto, p.vlan, p.ip_version)
        if self.shard_count > 1 and _shard_of(h, self.shard_count) != self.shard_index:
            # Another shard's flow.  Its DNS answers still feed our association table: a flow of
            # ours may be named by them.
            if self.dns_assoc and _may_feed_assoc(p):
                self._dns_datagram(ts)
            return 0
        return self._owned(h, ts, wirelen)

    cdef void _count_no_flow(self, int st, uint32_t wirelen) noexcept nogil:
        self.c.packets += 1
        self.c.bytes += wirelen
        if st == DS_TRUNCATED:
            self.c.skipped_truncated += 1
        elif st == DS_MALFORMED:
            self.c.skipped_malformed += 1
        elif st == DS_UNSUPPORTED_LINK:
            self.c.skipped_unsupported_link += 1
        elif st == DS_FRAGMENT:
            self.c.skipped_fragment += 1
        elif st == DS_NOT_IP:
            self.c.skipped_not_ip += 1
        else:
            self.c.skipped_other += 1

    cdef int _owned(self, uint32_t h, int64_t ts, uint32_t wirelen) noexcept nogil:
        """Attribute self.pkt (this shard's, key hash ``h``) to its flow, after the clock moved."""
        cdef packet_t* p = self.cur
        cdef int32_t s
        cdef bint c2s = True
        cdef flow_t* f
        cdef uint8_t fl
        self.c.packets += 1
        self.c.bytes += wirelen
        s = self._lookup(h, &c2s)
        fl = p.tcp_flags if p.l4proto == 6 else 0
        if s >= 0:
            f = &self.flows[s]
            if f.lst == L_CLOSED:
                # Port reuse (a new SYN) or past the grace: the closed flow ends, a new one starts.
                if (fl & (TH_SYN | TH_ACK)) == TH_SYN or ts - f.last_ns >= self.idle_ns[L_CLOSED]:
                    self._end_flow(s, f.end_reason)
                    s = -1
            elif ts - f.last_ns >= self.idle_ns[f.lst]:
                self._end_flow(s, END_IDLE)
                s = -1
            elif ts - f.first_ns >= self.active_ns:
                self._end_flow(s, END_ACTIVE)
                s = -1
        if s >= 0 and p.l4proto == 17 and self._next_dns_query(&self.flows[s]):
            self._end_flow(s, END_DNS_NEXT)
            s = -1
        if s < 0:
            s = self._new_flow(ts)
            if s < 0:
                self.c.skipped_other += 1
                return 0
            f = &self.flows[s]
            # Same test as _lookup, so a flow between one endpoint and itself is all c2s.
            c2s = f.cport == p.sport and memcmp(f.cip, p.src, 16) == 0
        self.c.attributed += 1
        if c2s:
            f.pk_c2s += 1
            f.by_c2s += wirelen
        else:
            f.pk_s2c += 1
            f.by_s2c += wirelen
        if ts > f.last_ns:
            f.last_ns = ts
        if p.l4proto == 6:
            f.flags |= fl
            if fl & TH_SYN and not f.c2s_payload:
                # The client's ISN (from its SYN, or the server's ACK of it): stream offset 0 is
                # ISN + 1 (RFC 9293 3.4).  A retransmitted SYN with a new ISN replaces it.
                if c2s and not (fl & TH_ACK):
                    f.base_seq = p.seq + 1
                    f.base_set = 1
                elif not c2s and (fl & TH_ACK) and not f.base_set:
                    f.base_seq = p.ack
                    f.base_set = 1
            if f.lst != L_CLOSED:
                if fl & TH_RST:
                    f.end_reason = END_RST
                elif fl & TH_FIN:
                    f.fin_mask |= 1 if c2s else 2
                    if f.fin_mask == 3:
                        f.end_reason = END_FIN
                if f.end_reason:
                    self._touch(s, L_CLOSED)
                else:
                    self._touch(s, L_TCP)
            else:
                self._touch(s, L_CLOSED)
            if c2s and p.payload_len and not _ack_padding(fl, p.payload, p.payload_len):
                if not f.base_set:
                    f.base_seq = p.seq
                    f.base_set = 1
                f.c2s_payload = 1
                if not f.name_done:
                    self._tcp_payload(f)
        else:
            self._touch(s, L_OTHER)
            if p.l4proto == 17 and p.payload_len:
                if c2s:
                    f.c2s_payload = 1
                if not f.name_done or _is_dns_port(p.sport) or _is_dns_port(p.dport):
                    self._udp_payload(f, c2s, ts)
        return 0

    cdef void _sweep_at(self, const sweep_t* sw, int64_t base) noexcept nogil:
        """Make a sweep of the whole table (found by FrameDispatch._find_sweeps) at its frame of
        the batch whose first frame is ``base``: what _packet does when _clock_step says so."""
        if sw.now > self.now_ns:
            self.now_ns = sw.now
        self.next_sweep_ns = self.now_ns + self.sweep_every_ns
        self.cur_frame = base + sw.frame
        self.frame_no = self.cur_frame + 1
        self._sweep(self.now_ns)

    cdef void _item(self, const item_t* it, int64_t base) noexcept nogil:
        """Apply one dispatched event (its batch's first frame is frame ``base``), after the
        clock moved to it: the same steps _packet takes for that frame in this shard."""
        cdef int k = it.kind
        self.cur_frame = base + it.frame
        self.frame_no = self.cur_frame + 1
        if k == IT_NO_FLOW:
            self._count_no_flow(it.status, it.wirelen)
            return
        self.cur = <packet_t*>&it.pkt       # read in place: the event outlives this call
        if k == IT_OWN:
            self._owned(it.h, it.ts, it.wirelen)
        else:
            self._dns_datagram(it.ts)
        self.cur = &self.pkt

    # -- Python API ---------------------------------------------------------------------------
    def process_reader(self, CaptureReader reader not None, capture_name=None, Py_ssize_t max_frames=0):
        """Read frames of ``reader`` into the table; returns the number of frames read.

        ``max_frames`` > 0 reads at most that many (fewer returned means the capture ended), so the
        caller can ``take_records()`` between chunks; 0 reads everything.  ``capture_name``
        (default: the table's) labels the flows created from this reader.
        """
        cdef Py_ssize_t n, i, total = 0, want
        cdef frame_t* fr
        if max_frames < 0:
            raise ValueError("max_frames must be >= 0")
        if capture_name is not None:
            self._set_capture(capture_name)
        while True:
            want = BATCH
            if max_frames:
                if total >= max_frames:
                    break
                if max_frames - total < want:
                    want = max_frames - total
            n = reader.fill(self.frames, want)
            if n <= 0:
                break
            total += n
            with nogil:
                for i in range(n):
                    fr = &self.frames[i]
                    self._packet(fr.ts_ns, fr.data, fr.caplen, fr.wirelen, fr.linktype)
        return total

    def process_dispatched(self, FrameDispatch dispatch not None, int slot):
        """Apply this shard's events of one filled slot of ``dispatch``; returns how many.

        Runs without the GIL: the shards of one dispatch can run in parallel threads.
        """
        cdef Py_ssize_t i, n, w = 0
        cdef item_t* items
        cdef batch_t* b
        cdef int64_t base
        if dispatch.nshards != self.shard_count:
            raise ValueError(f"dispatch has {dispatch.nshards} shards, this table is one of "
                             f"{self.shard_count}")
        b = dispatch._batch(slot)
        if not b.committed:
            raise ValueError(f"slot {slot} holds no committed batch")
        items = dispatch.items[slot * dispatch.nshards + self.shard_index]
        n = dispatch.count[slot * dispatch.nshards + self.shard_index]
        base = b.base
        with nogil:
            for i in range(n):
                if items[i].kind != IT_NO_FLOW:
                    # the clock up to and including this event's frame: the sweeps at or before
                    # it come first, as in _packet
                    while w < b.nsweeps and b.sweeps[w].frame <= items[i].frame:
                        self._sweep_at(&b.sweeps[w], base)
                        w += 1
                    if items[i].local_now > self.now_ns:
                        self.now_ns = items[i].local_now
                self._item(&items[i], base)
            while w < b.nsweeps:
                self._sweep_at(&b.sweeps[w], base)
                w += 1
            if b.nticks and b.run_max > self.now_ns:
                self.now_ns = b.run_max
            self.frame_no = base + b.nframes
        return n

    def _set_capture(self, name):
        name = str(name)
        try:
            self.cur_capture = self.captures.index(name)
        except ValueError:
            if len(self.captures) >= 0xffff:
                raise ValueError("too many capture names in one FlowTable")
            self.captures.append(name)
            self.cur_capture = len(self.captures) - 1

    @property
    def capture_name(self):
        return self.captures[self.cur_capture]

    @capture_name.setter
    def capture_name(self, name):
        self._set_capture(name)

    def process_frame(self, int64_t ts_ns, const unsigned char[::1] data, uint32_t linktype=1,
                      wirelen=None):
        """Process one frame: ``ts_ns`` capture time in ns since the epoch, ``data`` the captured
        bytes, ``linktype`` a LINKTYPE_* number, ``wirelen`` the length on the wire (default:
        ``len(data)``)."""
        cdef const uint8_t* p = &data[0] if data.shape[0] else _EMPTY
        cdef uint32_t caplen = <uint32_t>data.shape[0]
        cdef uint32_t wl = caplen if wirelen is None else <uint32_t>wirelen
        self._packet(ts_ns, p, caplen, wl, linktype)

    def process_frames(self, frames, uint32_t linktype=1):
        """Process an iterable of ``(ts_ns, data)`` or ``(ts_ns, data, wirelen)`` tuples."""
        cdef const unsigned char[::1] buf
        cdef const uint8_t* p
        cdef int64_t ts
        cdef uint32_t wl
        cdef Py_ssize_t count = 0
        for item in frames:
            ts = item[0]
            buf = item[1]
            p = &buf[0] if buf.shape[0] else _EMPTY
            wl = <uint32_t>item[2] if len(item) > 2 and item[2] is not None else <uint32_t>buf.shape[0]
            self._packet(ts, p, <uint32_t>buf.shape[0], wl, linktype)
            count += 1
        return count

    def expire(self, int64_t now_ns):
        """End every flow whose timeout has passed at capture time ``now_ns``."""
        if now_ns > self.now_ns:
            self.now_ns = now_ns
        self._sweep(now_ns)

    def flush(self):
        """End every remaining flow: closed ones as "fin"/"rst", the others "end-of-capture".

        Without the GIL: the shards of a split capture flush their tables in parallel."""
        with nogil:
            while self.age_head >= 0:
                self._end_flow(self.age_head, END_EOC)

    def take_records(self, pool=None):
        """Return the records finished so far as a RecordBatch and forget them.

        Order: by emission time (capture time of the packet or flush that ended the flow), ties
        by flow_id.  Names and ALPN are packed in that order (``names_packed`` is then free).
        ``pool`` (a :class:`~kzfilter.flow.buffers.BufferPool`) supplies the record array.
        """
        cdef size_t n = self.n_recs
        cdef unsigned char[::1] view
        cdef const int64_t[::1] order_view
        if pool is None:
            arr = np.empty(n, dtype=RECORD_DTYPE)
        else:
            arr = pool.take(n * sizeof(rec_t)).view(RECORD_DTYPE)
        names = alpn = b""
        if n:
            order_view = _sort_order(self.recs, n)
            view = arr.view(np.uint8)
            names, alpn = self._gather(<rec_t*>&view[0], &order_view[0], n)
        self.n_recs = 0
        self.arena_len = 0
        self.alpn_len = 0
        return RecordBatch(arr, names, alpn, list(self.captures))

    cdef tuple _gather(self, rec_t* dst, const int64_t* order, size_t n):
        """Copy the records in ``order`` to ``dst`` with their name and ALPN bytes packed in that
        order (the gather is a C loop: numpy's fancy indexing of the 168-byte structured dtype
        cost ~1 s per million records, and packing the arenas with numpy index arrays took 24
        bytes of temporaries per name byte).  Returns the packed ``(names, alpn)``."""
        cdef size_t i, name_at = 0, alpn_at = 0
        cdef const rec_t* src
        names = PyBytes_FromStringAndSize(NULL, self.arena_len)
        alpn = PyBytes_FromStringAndSize(NULL, self.alpn_len)
        cdef uint8_t* nb = <uint8_t*>PyBytes_AS_STRING(names)
        cdef uint8_t* ab = <uint8_t*>PyBytes_AS_STRING(alpn)
        cdef bint bad = False
        with nogil:
            for i in range(n):
                src = &self.recs[order[i]]
                memcpy(&dst[i], src, sizeof(rec_t))
                if (src.name_off + <size_t>src.name_len > self.arena_len
                        or src.alpn_off + <size_t>src.alpn_len > self.alpn_len):
                    bad = True
                    break
                if src.name_len:
                    memcpy(nb + name_at, self.arena + src.name_off, src.name_len)
                dst[i].name_off = <uint32_t>name_at
                name_at += src.name_len
                if src.alpn_len:
                    memcpy(ab + alpn_at, self.alpn_arena + src.alpn_off, src.alpn_len)
                dst[i].alpn_off = <uint32_t>alpn_at
                alpn_at += src.alpn_len
        if bad:
            raise RuntimeError("FlowTable: a record's name lies outside the name arena")
        # every name in the arenas belongs to one record: the packed bytes fill them exactly
        return (names if name_at == self.arena_len else names[:name_at],
                alpn if alpn_at == self.alpn_len else alpn[:alpn_at])

    def swap_records(self, RecordChunk spare not None):
        """Hand the records finished so far over in ``spare`` (an empty RecordChunk, whose
        buffers the table goes on with) and forget them: no copy and no allocation, so a shard
        thread hands its chunk over without touching fresh memory.  Returns ``spare``."""
        if spare.n or spare.arena_len or spare.alpn_len:
            raise ValueError("swap_records needs an empty RecordChunk (clear() it first)")
        spare.recs, self.recs = self.recs, spare.recs
        spare.cap, self.cap_recs = self.cap_recs, spare.cap
        spare.arena, self.arena = self.arena, spare.arena
        spare.arena_cap, self.arena_cap = self.arena_cap, spare.arena_cap
        spare.alpn, self.alpn_arena = self.alpn_arena, spare.alpn
        spare.alpn_cap, self.alpn_cap = self.alpn_cap, spare.alpn_cap
        spare.n, self.n_recs = self.n_recs, 0
        spare.arena_len, self.arena_len = self.arena_len, 0
        spare.alpn_len, self.alpn_len = self.alpn_len, 0
        spare.captures = list(self.captures)
        return spare

    @property
    def counters(self):
        """Counts so far (see the .pyi for each key)."""
        c = self.c
        return {
            "packets": c.packets, "bytes": c.bytes, "packets_attributed": c.attributed,
            "skipped_truncated": c.skipped_truncated, "skipped_malformed": c.skipped_malformed,
            "skipped_unsupported_link": c.skipped_unsupported_link,
            "skipped_fragment": c.skipped_fragment, "skipped_not_ip": c.skipped_not_ip,
            "skipped_other": c.skipped_other,
            "flows": c.flows, "flows_active": self.n_active, "flows_evicted": c.flows_evicted,
            "flows_idle": c.flows_idle, "flows_active_timeout": c.flows_active_timeout,
            "records": c.records,
            "names_sni": c.names[SRC_SNI], "names_quic": c.names[SRC_QUIC],
            "names_http": c.names[SRC_HTTP], "names_dns_query": c.names[SRC_DNS_QUERY],
            "names_dns_answer": c.names[SRC_DNS_ANSWER],
            "quic_initials": c.quic_initials, "quic_failed": c.quic_failed,
            "gquic_hellos": c.gquic_hellos,
            "reasm_dropped": c.reasm_dropped, "reasm_alloc_failed": c.reasm_alloc_failed,
            # Every shard keeps the same DNS association table: shard 0 alone reports it.
            "dns_answers_stored": c.dns_answers_stored if self.shard_index == 0 else 0,
            "dns_answers_evicted": c.dns_answers_evicted if self.shard_index == 0 else 0,
            "dns_answers_dropped": c.dns_answers_dropped if self.shard_index == 0 else 0,
            "dns_assoc_entries": self.acount if self.shard_index == 0 else 0,
            "alloc_failed": self.oom,
        }

    @property
    def flows_active(self):
        return self.n_active

    @staticmethod
    def flow_struct_size():
        """sizeof(flow_t): bytes per flow held, outside reassembly buffers and names."""
        return sizeof(flow_t)


cdef class RecordChunk:
    """Records a FlowTable finished in one chunk, held in the table's buffers (see
    ``FlowTable.swap_records``), in the order they were finished; ``order()`` sorts them.  The
    buffers stay allocated across ``clear()``, so a chunk given back is reused without new
    memory."""

    def __cinit__(self):
        self.captures = []

    def __dealloc__(self):
        free(self.recs)
        free(self.arena)
        free(self.alpn)

    def __len__(self):
        return self.n

    def clear(self):
        """Forget the records, keep the buffers."""
        self.n = self.arena_len = self.alpn_len = 0
        self.captures = []

    def order(self):
        """Positions of the records sorted on (emitted_ns, flow_id), equal keys in finishing
        order (int64), as ``take_records`` sorts them."""
        return _sort_order(self.recs, self.n)


cdef _sort_order(const rec_t* recs, size_t n):
    """Positions of ``n`` records sorted on (emitted_ns, flow_id), equal keys in the order they
    were finished (a stable sort): int64."""
    cdef size_t i
    keys = np.empty((2, n), dtype=np.int64)
    cdef int64_t[:, ::1] kv = keys
    for i in range(n):
        kv[0, i] = recs[i].flow_id
        kv[1, i] = recs[i].emitted_ns
    return np.lexsort(keys).astype(np.int64, copy=False)


cdef inline bint _double(void** array, Py_ssize_t* cap, size_t size) noexcept nogil:
    """Grow ``array`` of ``cap`` elements of ``size`` bytes to twice as many (1024 at first);
    False without memory (the array stays as it was)."""
    cdef Py_ssize_t newcap = cap[0] * 2 if cap[0] else 1024
    cdef void* grown = realloc(array[0], newcap * size)
    if grown == NULL:
        return False
    array[0] = grown
    cap[0] = newcap
    return True


cdef class FrameDispatch:
    """Read and dissect a mapped capture once, for N shards of the flows (kzfilter.threaded).

    A slot holds one batch of frames: for each shard, the events its
    ``FlowTable.process_dispatched`` applies (its own frames, the other shards' DNS datagrams for
    the association table, the frames of no flow for shard 0) and the batch's clock track, from
    which every shard replays the whole table's clock and sweeps.  A shard's records are thus
    exactly those the single table gives for its flows.

    Two ways to fill a slot: ``fill(reader, slot, n, stop)`` reads on from the reader's position,
    as one reader does; ``read_span(reader, slot, at, stop, exact)`` reads the records that start
    in a byte range, without the GIL and without moving the reader, so several threads read
    several ranges of one capture at once.  A span's first record is found by a guess (unless
    ``exact``), and ``commit(reader, slot)`` takes it only where the committed reading ended: a
    batch that fails is read again with ``fill``.  Batches are committed in capture order; only a
    committed batch can be applied.  The reader must be mapped (its frames stay valid until it is
    closed).
    """
    cdef readonly uint32_t nshards
    cdef readonly uint32_t nslots
    cdef item_t** items             # [slot * nshards + shard]
    cdef Py_ssize_t* count
    cdef Py_ssize_t* cap
    cdef batch_t* batches           # [slot]
    cdef int64_t committed_frames
    cdef bint dns_assoc
    cdef int64_t clock_now          # the whole table's clock after the committed batches,
    cdef int64_t clock_next_sweep   # when it sweeps next,
    cdef int64_t sweep_every        # and how often (the shards' common sweep_interval)

    def __cinit__(self, tables, int slots=4):
        cdef FlowTable t0
        cdef uint32_t i
        tables = list(tables)
        if not tables:
            raise ValueError("FrameDispatch needs the shard tables")
        t0 = tables[0]
        if len(tables) != t0.shard_count or slots < 1:
            raise ValueError("FrameDispatch needs one table per shard and at least one slot")
        for t in tables:
            if not isinstance(t, FlowTable):
                raise TypeError("FrameDispatch needs FlowTables")
            if (<FlowTable>t).sweep_every_ns != t0.sweep_every_ns or \
                    (<FlowTable>t).now_ns != t0.now_ns or \
                    (<FlowTable>t).next_sweep_ns != t0.next_sweep_ns:
                raise ValueError("FrameDispatch needs shards with one clock: the same "
                                 "sweep_interval, and the same frames seen so far")
        self.clock_now = t0.now_ns
        self.clock_next_sweep = t0.next_sweep_ns
        self.sweep_every = t0.sweep_every_ns
        self.nshards = t0.shard_count
        self.nslots = slots
        self.dns_assoc = t0.dns_assoc
        self.items = <item_t**>calloc(self.nshards * self.nslots, sizeof(item_t*))
        self.count = <Py_ssize_t*>calloc(self.nshards * self.nslots, sizeof(Py_ssize_t))
        self.cap = <Py_ssize_t*>calloc(self.nshards * self.nslots, sizeof(Py_ssize_t))
        self.batches = <batch_t*>calloc(self.nslots, sizeof(batch_t))
        if self.items == NULL or self.count == NULL or self.cap == NULL or self.batches == NULL:
            raise MemoryError()
        for i in range(self.nslots):
            self.batches[i].frames = <frame_t*>malloc(BATCH * sizeof(frame_t))
            if self.batches[i].frames == NULL:
                raise MemoryError()

    def __dealloc__(self):
        cdef uint32_t i
        if self.items != NULL:
            for i in range(self.nshards * self.nslots):
                free(self.items[i])
        if self.batches != NULL:
            for i in range(self.nslots):
                free(self.batches[i].frames)
                free(self.batches[i].ticks)
                free(self.batches[i].sweeps)
        free(self.items)
        free(self.count)
        free(self.cap)
        free(self.batches)

    @cython.final
    cdef inline item_t* _push(self, uint32_t cell) noexcept nogil:
        """Room for one more event in ``cell`` (slot * nshards + shard), or NULL without memory."""
        cdef Py_ssize_t c = self.count[cell]
        if c < self.cap[cell]:
            self.count[cell] = c + 1
            return &self.items[cell][c]
        return self._grow(cell)

    @cython.final
    cdef item_t* _grow(self, uint32_t cell) noexcept nogil:
        """_push when ``cell`` is full: double it."""
        if not _double(<void**>&self.items[cell], &self.cap[cell], sizeof(item_t)):
            return NULL
        self.count[cell] += 1
        return &self.items[cell][self.count[cell] - 1]

    @cython.final
    cdef int _tick(self, batch_t* b, int64_t ts, int64_t frame) noexcept nogil:
        """Add a frame to the batch's clock track."""
        if b.nticks == b.cap_ticks and not _double(<void**>&b.ticks, &b.cap_ticks, sizeof(tick_t)):
            return -1
        b.ticks[b.nticks].ts = ts
        b.ticks[b.nticks].frame = frame
        b.nticks += 1
        return 0

    @cython.final
    cdef inline item_t* _push_frame(self, uint32_t cell, uint8_t kind, const frame_t* fr,
                                    const packet_t* p, int64_t frame,
                                    int64_t local_now) noexcept nogil:
        """An event that carries frame ``fr``, dissected in ``p`` (IT_OWN, IT_DNS)."""
        cdef item_t* it = self._push(cell)
        if it != NULL:
            it.kind = kind
            memcpy(&it.pkt, p, sizeof(packet_t))
            it.wirelen = fr.wirelen
            it.ts = fr.ts_ns
            it.local_now = local_now
            it.frame = frame
        return it

    @cython.final
    cdef void _reset(self, uint32_t slot) noexcept nogil:
        cdef uint32_t k
        cdef batch_t* b = &self.batches[slot]
        for k in range(self.nshards):
            self.count[slot * self.nshards + k] = 0
        b.nticks = 0
        b.nsweeps = 0
        b.nframes = 0
        b.run_max = INT64_MIN
        b.committed = False

    @cython.final
    cdef int _dispatch(self, uint32_t slot, Py_ssize_t n) noexcept nogil:
        """Dissect the ``n`` frames in the batch's scratch and write their events."""
        cdef Py_ssize_t i
        cdef uint32_t k, owner, base = slot * self.nshards, h
        cdef batch_t* b = &self.batches[slot]
        cdef frame_t* fr
        cdef packet_t* p = &b.pkt
        cdef item_t* it
        cdef int st
        cdef int64_t frame
        for i in range(n):
            fr = &b.frames[i]
            frame = b.nframes
            b.nframes += 1
            st = _dissect_flow(fr.data, fr.caplen, fr.linktype, p)
            if st != DS_OK:
                it = self._push(base)
                if it == NULL:
                    return -1
                it.kind = IT_NO_FLOW
                it.status = <uint8_t>st
                it.wirelen = fr.wirelen
                it.frame = frame
                continue
            if fr.ts_ns > b.run_max:
                b.run_max = fr.ts_ns
                if self._tick(b, fr.ts_ns, frame) < 0:
                    return -1
            h = _flow_hash(p.src, p.sport, p.dst, p.dport, p.l4proto, p.vlan, p.ip_version)
            owner = _shard_of(h, self.nshards)
            it = self._push_frame(base + owner, IT_OWN, fr, p, frame, b.run_max)
            if it == NULL:
                return -1
            it.h = h
            if self.dns_assoc and _may_feed_assoc(p):
                for k in range(self.nshards):
                    if k != owner and self._push_frame(base + k, IT_DNS, fr, p, frame,
                                                       b.run_max) == NULL:
                        return -1
        return 0

    @cython.final
    cdef int _drain(self, CaptureReader reader, uint32_t slot, span_t* sp, Py_ssize_t most,
                    Py_ssize_t* total) noexcept nogil:
        """Read the span's plain records into the slot (until ``total`` reaches ``most``) and
        write their events; -1 without memory."""
        cdef batch_t* b = &self.batches[slot]
        cdef Py_ssize_t n, want
        while total[0] < most:
            want = most - total[0]
            if want > BATCH:
                want = BATCH
            n = reader.span_fill(sp, b.frames, want)
            if n <= 0:
                break
            total[0] += n
            if self._dispatch(slot, n) < 0:
                return -1
        return 0

    cdef batch_t* _batch(self, int slot) except NULL:
        """The batch in ``slot``, or IndexError."""
        if not 0 <= slot < <int>self.nslots:
            raise IndexError(f"slot {slot} out of range")
        return &self.batches[slot]

    cdef batch_t* _check(self, CaptureReader reader, int slot) except NULL:
        """The batch in ``slot`` that ``reader`` is to fill or commit."""
        if not reader.mapped:
            raise ValueError("FrameDispatch needs a mapped capture (an uncompressed file)")
        return self._batch(slot)

    @cython.final
    cdef int _commit(self, uint32_t slot) noexcept nogil:
        """Number the batch's frames on from the committed ones and find its sweeps; -1 without
        memory."""
        cdef batch_t* b = &self.batches[slot]
        if self._find_sweeps(b) < 0:
            return -1
        b.base = self.committed_frames
        b.committed = True
        self.committed_frames += b.nframes
        return 0

    @cython.final
    cdef int _find_sweeps(self, batch_t* b) noexcept nogil:
        """The whole table's sweeps in batch ``b``, the next to commit: on from the clock the
        committed batches left, each at the first frame of the clock track at or past the sweep
        time (a galloping search), as _clock_step makes them frame by frame.  Found here once,
        in commit order, not in every shard."""
        cdef Py_ssize_t lo, hi, step, mid, t = 0
        cdef const tick_t* ticks = b.ticks
        cdef Py_ssize_t nticks = b.nticks
        b.nsweeps = 0
        while True:
            lo = t
            if self.clock_now >= self.clock_next_sweep:
                pass            # a fresh table: the first frame of a flow sweeps (_clock_step)
            elif nticks and b.run_max >= self.clock_next_sweep:
                # the first entry at or past the sweep time: it exists (run_max is the last's)
                step = 1
                hi = lo
                while hi < nticks and ticks[hi].ts < self.clock_next_sweep:
                    lo = hi + 1
                    hi = lo + step
                    step *= 2
                if hi > nticks:
                    hi = nticks
                while lo < hi:
                    mid = (lo + hi) // 2
                    if ticks[mid].ts < self.clock_next_sweep:
                        lo = mid + 1
                    else:
                        hi = mid
            else:
                break
            if lo >= nticks:
                break
            t = lo + 1
            if ticks[lo].ts > self.clock_now:
                self.clock_now = ticks[lo].ts
            self.clock_next_sweep = self.clock_now + self.sweep_every
            if b.nsweeps == b.cap_sweeps and \
                    not _double(<void**>&b.sweeps, &b.cap_sweeps, sizeof(sweep_t)):
                return -1
            b.sweeps[b.nsweeps].now = self.clock_now
            b.sweeps[b.nsweeps].frame = ticks[lo].frame
            b.nsweeps += 1
        if nticks and b.run_max > self.clock_now:
            self.clock_now = b.run_max
        return 0

    def fill(self, CaptureReader reader not None, int slot, Py_ssize_t max_frames, stop=None,
             bint append=False):
        """Read on from the reader's position into ``slot`` (whose previous batch every shard
        has applied) and commit it: up to ``max_frames`` frames, and with ``stop`` only records
        that start before that offset; ``append``: add to the span ``commit`` took in part.
        Returns the frames read (fewer than ``max_frames``: the capture ended or ``stop`` was
        reached: see ``reader.exhausted``)."""
        cdef Py_ssize_t n, total = 0, want
        cdef size_t limit = <size_t>-1 if stop is None else <size_t>stop
        cdef size_t pos
        cdef int rc = 0
        cdef batch_t* b
        cdef span_t sp
        b = self._check(reader, slot)
        if not append:
            self._reset(slot)
            b.start = reader.position
        elif b.committed:
            raise ValueError(f"slot {slot} is already committed")
        while total < max_frames and rc == 0 and reader.position < limit:
            # The plain records of a mapped capture are read (a span from the reader's position,
            # taken at once) and dispatched without the GIL (the shard threads and the caller's
            # thread need it); anything else goes through fill(), one frame at a time under a
            # stop (so that it ends where a span would).
            pos = reader.position
            with nogil:
                reader.span_begin(&sp, pos, limit)
                rc = self._drain(reader, slot, &sp, max_frames, &total)
                reader.span_take(&sp)
            if total >= max_frames or rc < 0 or reader.position >= limit:
                break
            want = max_frames - total
            if want > BATCH:
                want = BATCH
            if stop is not None:
                want = 1
            n = reader.fill(b.frames, want)
            if n <= 0:
                break
            total += n
            with nogil:
                rc = self._dispatch(slot, n)
        if rc < 0 or self._commit(slot) < 0:
            raise MemoryError("FrameDispatch: no memory for the events of a batch")
        return total

    def read_span(self, CaptureReader reader not None, int slot, size_t at, size_t stop,
                  bint exact=False):
        """Read the plain records that start in [first boundary at or after ``at``, ``stop``)
        into ``slot`` without the GIL and without moving the reader (``exact``: a record starts
        at ``at``).  Returns the frames read; ``commit`` says whether they stand."""
        cdef Py_ssize_t total = 0
        cdef int rc = 0
        cdef batch_t* b
        cdef size_t start
        b = self._check(reader, slot)
        with nogil:
            self._reset(slot)
            start = at if exact else reader.span_sync(at, stop)
            b.start = start
            if start == <size_t>-1:
                reader.span_begin(&b.span, 0, 0)     # nothing found: commit refuses it
            else:
                reader.span_begin(&b.span, start, stop)
                rc = self._drain(reader, slot, &b.span, PY_SSIZE_T_MAX, &total)
        if rc < 0:
            raise MemoryError("FrameDispatch: no memory for the events of a batch")
        return total

    def commit(self, CaptureReader reader not None, int slot):
        """Take the span read into ``slot`` as the reader's next records, when it started where
        the committed reading ended (the reader then moves past its records).  Returns 1: done,
        the batch is committed; 2: the span stopped short of its stop at a record only the
        reader's ``fill()`` reads: finish the batch with ``fill(..., append=True)``; 0: not
        taken, read the batch again with ``fill``."""
        cdef batch_t* b
        cdef int rc
        b = self._check(reader, slot)
        if b.committed:
            raise ValueError(f"slot {slot} is already committed")
        if b.start == <size_t>-1:
            return 0
        rc = reader.span_commit(&b.span, b.start)
        if rc == 1 and self._commit(slot) < 0:
            raise MemoryError("FrameDispatch: no memory for the sweeps of a batch")
        return rc

    def frames_in(self, int slot):
        """Frames read into ``slot``."""
        return self._batch(slot).nframes

    @property
    def frames_read(self):
        """Frames of every committed batch."""
        return self.committed_frames
