# cython: language_level=3
"""Capture reader: pcap (micro/nanosecond, both byte orders) and pcapng, plain, gzip or zstd.

``CaptureReader.fill()`` is the hot path (a C call from the flow table): it writes ``frame_t``
structs that point into the reader's own memory (the mmap of an uncompressed file, or the bounded
decompression buffer) and builds no Python object per frame.  Every length read from the file is
checked by hand before use; a damaged file ends the read with a counter and a message in
``counters["error"]``, never with an exception (``CaptureError`` only for a file that is not a
capture at all) and never with a loop that makes no progress.

Formats: pcap per the libpcap file format (draft-ietf-opsawg-pcap), pcapng per
draft-ietf-opsawg-pcapng (section header, interface description, enhanced / simple / obsolete
packet blocks).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, realloc, free
from libc.string cimport memmove, memset

import os
import stat

from kzfilter.errors import CaptureError

cdef extern from *:
    """
    typedef unsigned __int128 kz_u128;
    """
    ctypedef unsigned long long kz_u128

# --- limits -----------------------------------------------------------------------------------
# libpcap's largest snapshot length (MAXIMUM_SNAPLEN): a record claiming more captured bytes is
# not a packet any capture tool writes.
DEF MAX_CAPLEN = 262144
# Streaming buffer: starts at 256 KiB, grows for one large block up to the hard cap (largest
# packet + 64 KiB of pcapng options); larger blocks are skipped without being buffered.
DEF BUF_INIT = 262144
DEF BUF_HARD_CAP = 262144 * 2 + 65536
# libpcap refuses pcapng blocks above 16 MiB (MAX_BLOCKSIZE); such a length is garbage.
DEF MAX_BLOCK = 16 * 1024 * 1024
# Interfaces per pcapng section (frame_t.iface is 16 bits).
DEF MAX_IFACES = 65536
DEF ITER_BATCH = 64

#: Python-visible limits (tests and docs).
MAX_CAPLEN_LIMIT = MAX_CAPLEN
BUFFER_INITIAL = BUF_INIT
BUFFER_HARD_CAP = BUF_HARD_CAP
MAX_BLOCK_LEN = MAX_BLOCK

# formats
DEF FMT_PCAP = 1
DEF FMT_PCAPNG = 2

# pcapng block types (draft-ietf-opsawg-pcapng section 11.1)
DEF BT_SHB = 0x0A0D0D0A
DEF BT_IDB = 0x00000001
DEF BT_OPB = 0x00000002   # obsolete Packet Block (appendix A)
DEF BT_SPB = 0x00000003
DEF BT_EPB = 0x00000006
DEF BOM = 0x1A2B3C4D

# IDB options (section 4.2)
DEF OPT_ENDOFOPT = 0
DEF OPT_IF_TSRESOL = 9
DEF OPT_IF_TSOFFSET = 14

# ensure() results
DEF ENS_EOF = 0       # not enough bytes and none will come
DEF ENS_OK = 1
DEF ENS_YIELD = 2     # must move the buffer but frames of this batch point into it
DEF ENS_TOO_BIG = 3   # request above the buffer's hard cap

# step results
DEF ST_FRAME = 1      # one frame written
DEF ST_NONE = 0       # a block consumed, no frame
DEF ST_YIELD = 2      # end the batch now, continue at the next fill()
DEF ST_END = 3        # no more frames (end of file or a stop)

ctypedef struct iface_t:
    uint32_t snaplen
    uint16_t linktype
    uint8_t ts_kind       # 0: multiply, 1: divide, 2: binary fraction (shift)
    uint8_t ts_shift
    uint64_t ts_factor
    uint64_t ts_offset_ns

ctypedef struct cap_state_t:
    # input window: bytes [0, end) of `base` are file bytes starting at file offset win_off
    const uint8_t* base
    uint8_t* buf          # owned streaming buffer (NULL when mapped)
    size_t cap
    size_t pos
    size_t end
    uint64_t win_off
    int mapped
    int eof
    int done
    int closed
    # format
    int fmt
    int be                # big-endian fields (pcap header / current pcapng section)
    int nsec              # pcap nanosecond magic
    uint32_t snaplen      # pcap
    uint16_t linktype     # pcap
    iface_t* ifaces       # pcapng interfaces of the current section
    uint32_t n_ifaces
    uint32_t cap_ifaces
    int64_t last_ts
    uint64_t generation   # pcapng: section and interface blocks read so far (span_commit checks it)
    # counters
    uint64_t frames
    uint64_t bytes
    uint64_t wire_bytes
    uint64_t truncated
    uint64_t bad
    uint64_t skipped
    uint64_t unknown_iface
    uint64_t over_snaplen
    size_t peak_cap
    size_t released       # mapped files: bytes [0, released) handed back to the kernel
    size_t ahead          # mapped files: bytes [pos, ahead) were prefetched into the cache
    size_t populated      # mapped files: page tables of bytes [.., populated) were filled
    size_t hold           # mapped files, when hold_set: bytes at or after hold are never released
    int hold_set
    size_t page           # mapped files: the system's page size
    frame_t iter_frames[ITER_BATCH]


# Mapped captures: every page read stays in the process's RSS until unmapped, so RSS would grow
# with the capture.  The pages behind the read position (no frame of an earlier batch is valid any
# more: see fill) are handed back every RELEASE_BYTES; they stay in the page cache, and touching
# them again re-reads the file, so this is safe even for a caller that keeps an old pointer.
cdef enum:
    POPULATE_BYTES = 1 << 20   # page tables of a mapped capture are filled this much at a time
    PREFETCH_BYTES = 16384   # how far ahead of the read position a mapped capture is prefetched
    RELEASE_BYTES = 32 << 20
    RELEASE_ALIGN = 2 << 20    # PMD size on x86-64 and arm64 (4 KiB pages); a multiple of pages


cdef inline uint16_t rd16(const uint8_t* p, int be) noexcept nogil:
    if be:
        return <uint16_t>((<uint16_t>p[0] << 8) | p[1])
    return <uint16_t>((<uint16_t>p[1] << 8) | p[0])


cdef inline uint32_t rd32(const uint8_t* p, int be) noexcept nogil:
    if be:
        return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3])
    return ((<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0])


cdef inline uint64_t rd64(const uint8_t* p, int be) noexcept nogil:
    if be:
        return (<uint64_t>rd32(p, 1) << 32) | rd32(p + 4, 1)
    return (<uint64_t>rd32(p + 4, 0) << 32) | rd32(p, 0)


cdef void set_tsresol(iface_t* it, uint8_t v) noexcept nogil:
    """if_tsresol (pcapng section 4.2): MSB clear = 10^-n seconds, set = 2^-n seconds."""
    cdef uint32_t n = v & 0x7F
    cdef uint64_t p = 1
    cdef uint32_t i
    if v & 0x80:
        it.ts_kind = 2
        it.ts_shift = <uint8_t>n
        it.ts_factor = 0
    elif n <= 9:
        for i in range(9 - n):
            p *= 10
        it.ts_kind = 0
        it.ts_factor = p
    else:
        it.ts_kind = 1
        if n - 9 > 19:
            it.ts_factor = 0      # finer than 1e-28 s: every timestamp rounds to 0 ns
        else:
            for i in range(n - 9):
                p *= 10
            it.ts_factor = p


cdef inline int64_t iface_ts(const iface_t* it, uint64_t t) noexcept nogil:
    """Timestamp units -> ns since the epoch; unsigned arithmetic so hostile values wrap, no UB."""
    cdef uint64_t ns
    cdef uint64_t frac
    if it.ts_kind == 0:
        ns = t * it.ts_factor
    elif it.ts_kind == 1:
        ns = t / it.ts_factor if it.ts_factor != 0 else 0
    else:
        if it.ts_shift == 0:
            ns = t * 1000000000ULL
        elif it.ts_shift < 64:
            frac = t & ((1ULL << it.ts_shift) - 1)
            ns = (t >> it.ts_shift) * 1000000000ULL + <uint64_t>(
                (<kz_u128>frac * 1000000000ULL) >> it.ts_shift)
        else:
            ns = <uint64_t>((<kz_u128>t * 1000000000ULL) >> it.ts_shift)
    return <int64_t>(ns + it.ts_offset_ns)


class _Prepend:
    """Binary reader that first returns `prefix` (the sniffed magic), then the rest of `f`."""

    def __init__(self, prefix, f):
        self._prefix = prefix
        self._f = f

    def read(self, n=-1):
        if self._prefix:
            if n is None or n < 0:
                data = self._prefix + self._f.read()
                self._prefix = b""
                return data
            head = self._prefix[:n]
            self._prefix = self._prefix[n:]
            if len(head) < n:
                more = self._f.read(n - len(head))
                if more:
                    head += more
            return head
        return self._f.read(n)

    def readinto(self, mv):
        data = self.read(len(mv))
        k = len(data)
        mv[:k] = data
        return k


class _GzipStream:
    """gzip members (RFC 1952) decompressed straight from large input chunks.

    ``gzip.GzipFile`` reads its input 8 KiB at a time through several Python layers; feeding zlib
    256 KiB chunks costs less per byte.  Concatenated members are read one after the other.
    """

    CHUNK = 262144

    def __init__(self, f):
        import zlib
        self._zlib = zlib
        self._f = f
        self._d = zlib.decompressobj(31)     # 16 + 15: gzip header and trailer, 32 KiB window

    def readinto(self, mv):
        n = len(mv)
        d = self._d
        while True:
            if d.unconsumed_tail:
                data = d.decompress(d.unconsumed_tail, n)
            elif d.eof:
                rest = d.unused_data
                if not rest:
                    rest = self._f.read(self.CHUNK)
                if not rest:
                    return 0
                d = self._d = self._zlib.decompressobj(31)
                data = d.decompress(rest, n)
            else:
                chunk = self._f.read(self.CHUNK)
                if not chunk:
                    raise EOFError("gzip stream ended before the end-of-stream marker")
                data = d.decompress(chunk, n)
            if data:
                k = len(data)
                mv[:k] = data
                return k

    def close(self):
        self._d = None


class _Input:
    """Python-side resources of one reader: files, decompressor, mmap, link types."""

    def __init__(self):
        self.raw = None          # file object we read bytes from (compressed or not)
        self.owned = False       # we opened raw (close it)
        self.stream = None       # object with readinto() giving capture bytes (streaming mode)
        self.mm = None
        self.mv = None
        self.compression = None
        self.file_size = None
        self.linktypes = []
        self.name = None

    def close(self):
        if self.mv is not None:
            self.mv.release()
            self.mv = None
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.stream is not None and self.compression is not None:
            try:
                self.stream.close()
            except Exception:
                pass
        self.stream = None
        if self.raw is not None and self.owned:
            self.raw.close()
        self.raw = None

    def tell(self):
        try:
            return self.raw.tell()
        except Exception:
            return None


# --- reader internals (module-level: the .pxd declares only the public contract) ---

cdef _open_input(CaptureReader self):
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef const unsigned char[::1] view
    io = self._io
    raw = io.raw
    try:
        info = os.fstat(raw.fileno())
        io.file_size = info.st_size if stat.S_ISREG(info.st_mode) else None
    except Exception:
        io.file_size = None
    import io as _iomod
    if isinstance(raw, _iomod.TextIOBase):
        # open(path) without "b": its read() decodes text (and fails on the first binary byte)
        raise CaptureError(f"{io.name}: a capture must be opened in binary mode ('rb')")
    try:
        magic = raw.read(4)
    except OSError as exc:
        raise CaptureError(f"{io.name}: cannot read capture: {exc}") from exc
    if magic is None:
        magic = b""
    if not isinstance(magic, (bytes, bytearray)):
        raise CaptureError(f"{io.name}: read() returned {type(magic).__name__}, not bytes")
    magic = bytes(magic)
    if len(magic) == 0:
        raise CaptureError(f"{io.name}: empty file, not a capture")
    if magic[:2] == b"\x1f\x8b":
        io.compression = "gzip"
        io.stream = _GzipStream(_Prepend(magic, raw))
    elif magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError as exc:
            raise CaptureError(f"{io.name}: zstd-compressed capture needs the 'zstandard' "
                               f"package") from exc
        io.compression = "zstd"
        io.stream = zstandard.ZstdDecompressor().stream_reader(
            _Prepend(magic, raw), read_across_frames=True)
    elif io.owned and io.file_size:
        # A regular file we opened: map it (no copy, frames point into the map).
        import mmap
        try:
            mm = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            mm = None
        if mm is not None:
            if hasattr(mmap, "MADV_SEQUENTIAL"):
                mm.madvise(mmap.MADV_SEQUENTIAL)   # read-ahead: the file is read once, in order
            io.mm = mm
            io.mv = memoryview(mm)
            view = io.mv
            st.base = &view[0]
            st.end = len(mm)
            st.mapped = 1
            st.eof = 1
            st.page = mmap.PAGESIZE
            return
        io.stream = _Prepend(magic, raw)
    else:
        io.stream = _Prepend(magic, raw)
    st.buf = <uint8_t*>calloc(BUF_INIT, 1)
    if st.buf == NULL:
        raise MemoryError()
    st.base = st.buf
    st.cap = BUF_INIT
    st.peak_cap = BUF_INIT


cdef Py_ssize_t _refill(CaptureReader self) except -1:
    """Read stream bytes into the free tail of the buffer; sets eof at the end or on error."""
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef Py_ssize_t k
    if st.eof or st.end >= st.cap:
        return 0
    mv = PyMemoryView_FromMemory(<char*>st.buf + st.end, <Py_ssize_t>(st.cap - st.end),
                                 PyBUF_WRITE)
    try:
        got = self._io.stream.readinto(mv)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # Corrupt or cut compressed stream, I/O error: keep what was read, report why.
        st.eof = 1
        if self.counters.get("error") is None:
            self.counters["error"] = (f"{self._io.name}: read error at (decompressed) offset "
                                      f"{st.win_off + st.end}: {type(exc).__name__}: {exc}")
        return 0
    finally:
        mv.release()
    k = got if got is not None else 0
    if k <= 0:
        st.eof = 1
        return 0
    if <size_t>k > st.cap - st.end:
        k = <Py_ssize_t>(st.cap - st.end)
    st.end += <size_t>k
    return k


cdef void _compact(CaptureReader self) noexcept:
    cdef cap_state_t* st = <cap_state_t*>self._state
    if st.pos == 0:
        return
    if st.end > st.pos:
        memmove(st.buf, st.buf + st.pos, st.end - st.pos)
    st.end -= st.pos
    st.win_off += st.pos
    st.pos = 0


cdef int _ensure(CaptureReader self, size_t need, Py_ssize_t outstanding) except -1:
    """Make `need` bytes from pos available; see the ENS_* codes."""
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef size_t new_cap
    cdef uint8_t* nb
    if st.end - st.pos >= need:
        return ENS_OK
    if st.mapped or st.eof:
        return ENS_EOF
    if need > BUF_HARD_CAP:
        return ENS_TOO_BIG
    if st.pos + need > st.cap:
        if outstanding:
            return ENS_YIELD
        _compact(self)
        if need > st.cap:
            new_cap = st.cap
            while new_cap < need:
                new_cap *= 2
            if new_cap > BUF_HARD_CAP:
                new_cap = BUF_HARD_CAP
            nb = <uint8_t*>realloc(st.buf, new_cap)
            if nb == NULL:
                raise MemoryError()
            st.buf = nb
            st.base = nb
            st.cap = new_cap
            if new_cap > st.peak_cap:
                st.peak_cap = new_cap
    while st.end - st.pos < need and not st.eof:
        _refill(self)
    return ENS_OK if st.end - st.pos >= need else ENS_EOF


cdef int _discard(CaptureReader self, uint64_t count, Py_ssize_t outstanding) except -1:
    """Skip `count` bytes without buffering them: ST_NONE, ST_YIELD, or ST_END (cut short)."""
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef uint64_t take
    if st.mapped:
        if st.end - st.pos < count:
            return ST_END
        st.pos += <size_t>count
        return ST_NONE
    if outstanding:
        return ST_YIELD
    while True:
        take = st.end - st.pos
        if take > count:
            take = count
        st.pos += <size_t>take
        count -= take
        if count == 0:
            return ST_NONE
        if st.eof:
            return ST_END
        _compact(self)
        _refill(self)


cdef _read_header(CaptureReader self):
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef const uint8_t* p
    cdef uint32_t magic_le
    cdef uint32_t blen
    cdef uint32_t bom
    name = self._io.name
    if _ensure(self, 4, 0) != ENS_OK:
        raise CaptureError(f"{name}: file too short to be a capture")
    p = st.base + st.pos
    magic_le = rd32(p, 0)
    if magic_le in (0xA1B2C3D4, 0xD4C3B2A1, 0xA1B23C4D, 0x4D3CB2A1):
        # pcap global header (24 bytes): magic, version, thiszone, sigfigs, snaplen, network
        st.fmt = FMT_PCAP
        st.be = magic_le in (0xD4C3B2A1, 0x4D3CB2A1)
        st.nsec = magic_le in (0xA1B23C4D, 0x4D3CB2A1)
        if _ensure(self, 24, 0) != ENS_OK:
            raise CaptureError(f"{name}: pcap file header cut short")
        p = st.base + st.pos
        st.snaplen = rd32(p + 16, st.be)
        # The top bits of the link type carry the FCS length (LT_FCS_* in libpcap).
        st.linktype = <uint16_t>(rd32(p + 20, st.be) & 0xFFFF)
        self._io.linktypes.append(st.linktype)
        st.pos += 24
        return
    if magic_le == BT_SHB:
        st.fmt = FMT_PCAPNG
        if _ensure(self, 28, 0) != ENS_OK:
            raise CaptureError(f"{name}: pcapng section header cut short")
        p = st.base + st.pos
        bom = rd32(p + 8, 0)
        if bom == BOM:
            st.be = 0
        elif bom == 0x4D3C2B1A:
            st.be = 1
        else:
            raise CaptureError(f"{name}: pcapng section header with bad byte-order magic")
        blen = rd32(p + 4, st.be)
        if blen < 28 or blen % 4 != 0 or blen > BUF_HARD_CAP:
            raise CaptureError(f"{name}: pcapng section header with bad length {blen}")
        if rd16(p + 12, st.be) != 1:
            raise CaptureError(f"{name}: unsupported pcapng version {rd16(p + 12, st.be)}")
        if _ensure(self, blen, 0) != ENS_OK:
            raise CaptureError(f"{name}: pcapng section header cut short")
        p = st.base + st.pos
        if rd32(p + blen - 4, st.be) != blen:
            raise CaptureError(f"{name}: pcapng section header trailing length mismatch")
        # The SHB itself is consumed by the block loop (it resets the interface table).
        return
    raise CaptureError(f"{name}: not a pcap or pcapng capture (magic {bytes(p[:4]).hex()})")


cdef int _stop_error(CaptureReader self, str what) except -1:
    cdef cap_state_t* st = <cap_state_t*>self._state
    st.done = 1
    if self.counters.get("error") is None:
        self.counters["error"] = f"{self._io.name}: offset {st.win_off + st.pos}: {what}"
    return ST_END


cdef int _stop_truncated(CaptureReader self) except -1:
    cdef cap_state_t* st = <cap_state_t*>self._state
    st.done = 1
    if st.end > st.pos:
        st.truncated += 1
    return ST_END


cdef extern from *:
    """
    #if defined(_WIN32)
    static int kz_populate(void* addr, size_t length) { (void)addr; (void)length; return -1; }
    #else
    #include <sys/mman.h>
    #ifndef MADV_POPULATE_READ
    #define MADV_POPULATE_READ 22   /* Linux 5.14 */
    #endif
    /* Fill the page tables of a mapped range; elsewhere (or before Linux 5.14) an error that
       changes nothing: the pages are then mapped by faults, as without this call. */
    static int kz_populate(void* addr, size_t length) { return madvise(addr, length, MADV_POPULATE_READ); }
    #endif
    #if defined(_WIN32)
    static int kz_release(void* addr, size_t length) { (void)addr; (void)length; return -1; }
    #else
    static int kz_release(void* addr, size_t length) { return madvise(addr, length, MADV_DONTNEED); }
    #endif
    """
    void _prefetch "__builtin_prefetch"(const void* p) noexcept nogil
    int _populate "kz_populate"(void* addr, size_t length) noexcept nogil
    int _release "kz_release"(void* addr, size_t length) noexcept nogil


cdef inline void _release_behind(cap_state_t* st) noexcept nogil:
    """Every RELEASE_BYTES, hand the pages behind the read position back to the kernel, except
    those at or after st.hold (frames a consumer still holds: kzfilter.threaded).  Where madvise
    cannot release (not Linux), the pages simply stay mapped."""
    cdef size_t upto
    if st.pos - st.released < RELEASE_BYTES:
        return
    upto = st.pos
    if st.hold_set and st.hold < upto:
        upto = st.hold
    # whole 2 MiB ranges only: a file cached in 2 MiB folios is mapped by PMD entries, and
    # unmapping part of one splits it into 512 page entries (re-faulted one page at a time)
    upto = (<size_t>(st.base + upto) // RELEASE_ALIGN) * RELEASE_ALIGN - <size_t>st.base
    if upto > st.released and upto <= st.pos:
        _release(<void*>(st.base + st.released), upto - st.released)
        st.released = upto


cdef inline void _map_ahead(const cap_state_t* st, size_t pos, size_t* populated,
                            size_t* ahead) noexcept nogil:
    """Map and prefetch the next bytes of a mapped capture, ahead of a read position ``pos`` (the
    reader's own, or a span's); ``populated`` and ``ahead`` are that cursor's marks.

    Each record header gives the length of its record, hence the place of the next header: read
    cold, the headers are a chain of dependent DRAM misses (measured: 95% of fill()'s time and a
    quarter of the flow table's on 1.2 KB frames), and the hardware prefetcher, seeing one line per
    frame, does not help.  So the page tables of the next POPULATE_BYTES are filled in one call (a
    prefetch of an unmapped page is dropped; one call replaces many page faults) and the cache
    lines of the next PREFETCH_BYTES are requested in order.  Measured on a 600k-frame capture:
    the flow table 16% faster whole, 17% for one of two shards.
    """
    cdef size_t want = pos + PREFETCH_BYTES
    cdef size_t chunk = pos & ~(<size_t>(POPULATE_BYTES - 1)), upto
    if want > st.end:
        want = st.end
    if populated[0] < want:
        if populated[0] < chunk:
            populated[0] = chunk
        # madvise wants a page-aligned start (a span may begin anywhere); a page populated
        # twice costs nothing
        populated[0] = (populated[0] // st.page) * st.page
        upto = chunk + 2 * POPULATE_BYTES
        if upto > st.end:
            upto = st.end
        _populate(<void*>(st.base + populated[0]), upto - populated[0])
        populated[0] = upto
    if ahead[0] < pos:
        ahead[0] = pos & ~(<size_t>63)
    while ahead[0] < want:
        _prefetch(st.base + ahead[0])
        ahead[0] += 64


cdef int _step_pcap(CaptureReader self, frame_t* f, Py_ssize_t n) except -1:
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef const uint8_t* p
    cdef uint32_t caplen
    cdef int r = _ensure(self, 16, n)
    if r == ENS_YIELD:
        return ST_YIELD
    if r != ENS_OK:
        return _stop_truncated(self)
    p = st.base + st.pos
    caplen = rd32(p + 8, st.be)
    if caplen > MAX_CAPLEN:
        # No writer produces this: the record header is garbage, nothing after it is trusted.
        st.bad += 1
        return _stop_error(self, f"pcap record with captured length {caplen} "
                                f"(above {MAX_CAPLEN}): record header is garbage")
    r = _ensure(self, 16 + <size_t>caplen, n)
    if r == ENS_YIELD:
        return ST_YIELD
    if r != ENS_OK:
        return _stop_truncated(self)
    _pcap_record(st, st.base + st.pos, caplen, f)
    return ST_FRAME


cdef inline bint _pcap_frame(const cap_state_t* st, const uint8_t* p, uint32_t caplen,
                             frame_t* f) noexcept nogil:
    """The whole, checked pcap record at p as frame f; True when its captured length exceeds the
    snapshot length (libpcap, dpkt and Wireshark deliver such records unchanged: counted)."""
    f.ts_ns = <int64_t>(<uint64_t>rd32(p, st.be) * 1000000000ULL
                        + <uint64_t>rd32(p + 4, st.be) * (1ULL if st.nsec else 1000ULL))
    f.data = p + 16
    f.caplen = caplen
    f.wirelen = rd32(p + 12, st.be)
    f.linktype = st.linktype
    f.iface = 0
    return st.snaplen != 0 and caplen > st.snaplen


cdef inline bint _epb_frame(const cap_state_t* st, const uint8_t* p, int be, uint32_t iface,
                            uint32_t caplen, frame_t* f) noexcept nogil:
    """The checked Enhanced (or obsolete) Packet Block at p as frame f; True when its captured
    length exceeds its interface's snapshot length."""
    cdef uint32_t snap = st.ifaces[iface].snaplen
    f.ts_ns = iface_ts(&st.ifaces[iface], (<uint64_t>rd32(p + 12, be) << 32) | rd32(p + 16, be))
    f.data = p + 28
    f.caplen = caplen
    f.wirelen = rd32(p + 24, be)
    f.linktype = st.ifaces[iface].linktype
    f.iface = <uint16_t>iface
    return snap != 0 and caplen > snap


cdef inline void _pcap_record(cap_state_t* st, const uint8_t* p, uint32_t caplen,
                              frame_t* f) noexcept nogil:
    """Take the whole, checked pcap record at p (st.pos) as frame f."""
    st.over_snaplen += _pcap_frame(st, p, caplen, f)
    st.pos += 16 + <size_t>caplen
    st.frames += 1
    st.bytes += caplen
    st.wire_bytes += f.wirelen


cdef inline void _packet_block(cap_state_t* st, const uint8_t* p, int be, uint32_t iface,
                               uint32_t caplen, frame_t* f) noexcept nogil:
    """Take the checked Enhanced (or obsolete) Packet Block at p as frame f (position and the
    frame counters are the caller's)."""
    st.over_snaplen += _epb_frame(st, p, be, iface, caplen, f)
    st.last_ts = f.ts_ns


cdef inline size_t _plain_frame(const cap_state_t* st, const uint8_t* p, size_t room, frame_t* f,
                               bint* over) noexcept nogil:
    """The record at p (``room`` bytes to the end of the map) as frame f when it is a whole,
    sane pcap record or a pcapng Enhanced Packet Block of a known interface; returns its length,
    or 0 for anything else (the checks _step_pcap and _step_pcapng make, so that a record taken
    here is taken there the same way).  ``over``: its captured length exceeds the snapshot length.
    Neither the position nor a counter moves."""
    cdef uint32_t caplen, blen, iface
    if st.fmt == FMT_PCAP:
        if room < 16:
            return 0
        caplen = rd32(p + 8, st.be)
        if caplen > MAX_CAPLEN or room - 16 < caplen:
            return 0
        over[0] = _pcap_frame(st, p, caplen, f)
        return 16 + <size_t>caplen
    if room < 32 or rd32(p, st.be) != BT_EPB:
        return 0
    blen = rd32(p + 4, st.be)
    if (blen < 32 or blen % 4 != 0 or blen > room or blen > BUF_HARD_CAP
            or rd32(p + blen - 4, st.be) != blen):
        return 0
    iface = rd32(p + 8, st.be)
    caplen = rd32(p + 20, st.be)
    if iface >= st.n_ifaces or caplen > blen - 32 or caplen > MAX_CAPLEN:
        return 0
    over[0] = _epb_frame(st, p, st.be, iface, caplen, f)
    return blen


cdef _append_frames(list out, const frame_t* frames, Py_ssize_t n):
    """``(ts_ns, linktype, data, wirelen)`` of n frames onto ``out`` (iteration, test helpers)."""
    cdef Py_ssize_t i
    for i in range(n):
        out.append((frames[i].ts_ns, frames[i].linktype,
                    PyBytes_FromStringAndSize(<const char*>frames[i].data, frames[i].caplen),
                    frames[i].wirelen))


cdef inline void _absorb(cap_state_t* st, const span_t* sp) noexcept nogil:
    """Move the reader past a span that began at its position: position and counters."""
    st.pos = sp.pos
    st.frames += sp.frames
    st.bytes += sp.bytes
    st.wire_bytes += sp.wire_bytes
    st.over_snaplen += sp.over_snaplen
    if sp.frames and st.fmt == FMT_PCAPNG:
        st.last_ts = sp.last_ts


# Speculative sync (span_sync): a candidate offset is taken for a record boundary only when this
# many records follow each other from it (or reach the end of the file exactly), each of them sane
# and, in a pcap file, within SYNC_MAX_GAP_S seconds of the one before.  A wrong guess costs a
# re-read, never a wrong frame: span_commit accepts a span only where the committed reading ended.
DEF SYNC_RECORDS = 8
DEF SYNC_MAX_GAP_S = 86400
# A plain record is at most MAX_CAPLEN + 16 (pcap) or BUF_HARD_CAP (pcapng) bytes long, so one
# starts within this many bytes of any offset before the last: the search stops there, which
# bounds its cost on any input (a span that finds nothing is read again by the reader).
DEF SYNC_WINDOW = 1 << 20


cdef inline bint _plausible_chain(const cap_state_t* st, size_t at) noexcept nogil:
    cdef frame_t f
    cdef bint over
    cdef size_t pos = at, n
    cdef int k
    cdef uint32_t sec, prev_sec = 0, sub
    for k in range(SYNC_RECORDS):
        if pos == st.end:
            return k > 0
        n = _plain_frame(st, st.base + pos, st.end - pos, &f, &over)
        if n == 0:
            return False
        if st.fmt == FMT_PCAP:
            # stricter than reading: a sane header is not enough where any byte may start one
            sec = rd32(st.base + pos, st.be)
            sub = rd32(st.base + pos + 4, st.be)
            if sub >= (1000000000u if st.nsec else 1000000u) or f.wirelen < f.caplen or over:
                return False
            if k > 0 and (sec - prev_sec + SYNC_MAX_GAP_S) > 2 * SYNC_MAX_GAP_S:
                return False
            prev_sec = sec
        pos += n
    return True


cdef int _new_iface(CaptureReader self, const uint8_t* p, uint32_t blen) except -1:
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef iface_t* it
    cdef iface_t* ni
    cdef uint32_t o, optend, code, olen, ncap
    if st.n_ifaces >= MAX_IFACES:
        st.skipped += 1
        return 0
    if st.n_ifaces == st.cap_ifaces:
        ncap = st.cap_ifaces * 2 if st.cap_ifaces else 8
        ni = <iface_t*>realloc(st.ifaces, ncap * sizeof(iface_t))
        if ni == NULL:
            raise MemoryError()
        st.ifaces = ni
        st.cap_ifaces = ncap
    it = &st.ifaces[st.n_ifaces]
    it.linktype = rd16(p + 8, st.be)
    it.snaplen = rd32(p + 12, st.be)
    it.ts_kind = 0
    it.ts_shift = 0
    it.ts_factor = 1000      # default resolution: microseconds
    it.ts_offset_ns = 0
    # Options (section 3.5): code, length, value padded to 32 bits; stop at end-of-options
    # or at the first option that does not fit.
    o = 16
    optend = blen - 4
    while o + 4 <= optend:
        code = rd16(p + o, st.be)
        olen = rd16(p + o + 2, st.be)
        if code == OPT_ENDOFOPT or olen > optend - o - 4:
            break
        if code == OPT_IF_TSRESOL and olen >= 1:
            set_tsresol(it, p[o + 4])
        elif code == OPT_IF_TSOFFSET and olen >= 8:
            it.ts_offset_ns = rd64(p + o + 4, st.be) * 1000000000ULL
        o += 4 + ((olen + 3) & ~3u)
    st.n_ifaces += 1
    if len(self._io.linktypes) < MAX_IFACES:
        self._io.linktypes.append(it.linktype)
    return 0


cdef int _step_pcapng(CaptureReader self, frame_t* f, Py_ssize_t n) except -1:
    cdef cap_state_t* st = <cap_state_t*>self._state
    cdef const uint8_t* p
    cdef uint32_t btype, blen, bom, iface, caplen, wirelen, snap, room
    cdef int r = _ensure(self, 8, n)
    cdef int be
    if r == ENS_YIELD:
        return ST_YIELD
    if r != ENS_OK:
        return _stop_truncated(self)
    p = st.base + st.pos
    btype = rd32(p, st.be)
    be = st.be
    if rd32(p, 0) == BT_SHB:
        # A new section may switch byte order: its length is read in the order its
        # byte-order magic gives (section 4.1).
        btype = BT_SHB
        r = _ensure(self, 12, n)
        if r == ENS_YIELD:
            return ST_YIELD
        if r != ENS_OK:
            return _stop_truncated(self)
        p = st.base + st.pos
        bom = rd32(p + 8, 0)
        if bom == BOM:
            be = 0
        elif bom == 0x4D3C2B1A:
            be = 1
        else:
            st.bad += 1
            return _stop_error(self, "pcapng section header with bad byte-order magic")
    blen = rd32(p + 4, be)
    if blen < 12 or blen % 4 != 0 or blen > MAX_BLOCK:
        st.bad += 1
        return _stop_error(self, f"pcapng block type 0x{btype:08x} with bad length {blen}")
    if blen > BUF_HARD_CAP:
        # Too large to buffer: skip it unparsed (a packet this large is not plausible).
        r = _discard(self, blen, n)
        if r == ST_YIELD:
            return ST_YIELD
        if r == ST_END:
            st.truncated += 1
            st.done = 1
            return ST_END
        if btype == BT_SHB:
            st.bad += 1
            return _stop_error(self, f"pcapng section header of {blen} bytes")
        if btype == BT_EPB or btype == BT_SPB or btype == BT_OPB:
            st.bad += 1
        else:
            st.skipped += 1
        return ST_NONE
    r = _ensure(self, blen, n)
    if r == ENS_YIELD:
        return ST_YIELD
    if r != ENS_OK:
        return _stop_truncated(self)
    p = st.base + st.pos
    if rd32(p + blen - 4, be) != blen:
        st.bad += 1
        return _stop_error(self, f"pcapng block type 0x{btype:08x}: trailing length "
                                f"{rd32(p + blen - 4, be)} != {blen}")
    if btype == BT_EPB or btype == BT_OPB:
        if blen < 32:
            st.bad += 1
            st.pos += blen
            return ST_NONE
        if btype == BT_EPB:
            iface = rd32(p + 8, be)
        else:
            iface = rd16(p + 8, be)
        caplen = rd32(p + 20, be)
        if iface >= st.n_ifaces:
            st.unknown_iface += 1
            st.pos += blen
            return ST_NONE
        if caplen > blen - 32 or caplen > MAX_CAPLEN:
            st.bad += 1
            st.pos += blen
            return ST_NONE
        _packet_block(st, p, be, iface, caplen, f)
    elif btype == BT_SPB:
        # Simple packet block (section 4.4): interface 0, no timestamp (we reuse the last
        # one seen so idle timers stay sane); captured length = min(original, snaplen, room).
        if blen < 16:
            st.bad += 1
            st.pos += blen
            return ST_NONE
        if st.n_ifaces == 0:
            st.unknown_iface += 1
            st.pos += blen
            return ST_NONE
        wirelen = rd32(p + 8, be)
        room = blen - 16
        caplen = wirelen
        snap = st.ifaces[0].snaplen
        if snap != 0 and caplen > snap:
            caplen = snap
        if caplen > room:
            caplen = room
        if caplen > MAX_CAPLEN:
            caplen = MAX_CAPLEN
        f.ts_ns = st.last_ts
        f.data = p + 12
        f.caplen = caplen
        f.wirelen = wirelen
        f.linktype = st.ifaces[0].linktype
        f.iface = 0
    else:
        if btype == BT_SHB:
            if blen < 28:
                st.bad += 1
                return _stop_error(self, f"pcapng section header with bad length {blen}")
            if rd16(p + 12, be) != 1:
                st.bad += 1
                return _stop_error(self, f"unsupported pcapng version {rd16(p + 12, be)}")
            st.be = be
            st.n_ifaces = 0         # interface numbers restart in every section
            st.generation += 1
        elif btype == BT_IDB:
            if blen < 20:
                st.bad += 1
            else:
                _new_iface(self, p, blen)
                st.generation += 1
        else:
            st.skipped += 1
        st.pos += blen
        return ST_NONE
    st.pos += blen
    st.frames += 1
    st.bytes += f.caplen
    st.wire_bytes += f.wirelen
    return ST_FRAME


cdef _sync_counters(CaptureReader self):
    cdef cap_state_t* st = <cap_state_t*>self._state
    c = self.counters
    io = self._io
    c["frames"] = st.frames
    c["bytes"] = st.bytes
    c["wire_bytes"] = st.wire_bytes
    c["truncated_records"] = st.truncated
    c["bad_records"] = st.bad
    c["skipped_blocks"] = st.skipped
    c["unknown_interface"] = st.unknown_iface
    c["over_snaplen"] = st.over_snaplen
    if "error" not in c:
        c["error"] = None
    c["format"] = ("pcap-ns" if st.nsec else "pcap") if st.fmt == FMT_PCAP else (
        "pcapng" if st.fmt == FMT_PCAPNG else None)
    c["compression"] = io.compression
    if io.compression is None:
        c["bytes_read"] = st.win_off + st.pos
    else:
        told = io.tell()
        c["bytes_read"] = told if told is not None else 0
    c["file_size"] = io.file_size


cdef class CaptureReader:
    """Read frames from a pcap or pcapng capture, optionally gzip or zstd compressed.

    Parameters
    ----------
    source : str | os.PathLike | binary file object
        A path (uncompressed files are mmap'ed) or an object with ``read()`` (read in a stream; it
        is not closed by the reader).

    Raises
    ------
    CaptureError
        The file is not a capture (unknown magic, header cut short or inconsistent); the message
        names the file.  Damage after the header is reported in ``counters`` instead.

    Example
    -------
    >>> with CaptureReader("trace.pcapng.zst") as r:          # doctest: +SKIP
    ...     for ts_ns, linktype, data, wirelen in r:
    ...         pass
    ...     r.counters["frames"]
    """

    def __cinit__(self, *args, **kwargs):
        self._state = calloc(1, sizeof(cap_state_t))
        if self._state == NULL:
            raise MemoryError()
        self._io = _Input()
        self.counters = {}

    def __dealloc__(self):
        cdef cap_state_t* st = <cap_state_t*>self._state
        if st != NULL:
            free(st.buf)
            free(st.ifaces)
            free(st)
            self._state = NULL

    def __init__(self, source):
        cdef cap_state_t* st = <cap_state_t*>self._state
        if self._io.name is not None:
            raise RuntimeError("CaptureReader is already initialised")
        self._source = source
        io = self._io
        if isinstance(source, (str, bytes, os.PathLike)):
            io.name = os.fsdecode(source)
            try:
                raw = open(source, "rb")
            except OSError as exc:
                raise CaptureError(f"{io.name}: cannot open capture: {exc.strerror or exc}") from exc
            io.raw = raw
            io.owned = True
        elif hasattr(source, "read"):
            io.name = str(getattr(source, "name", None) or f"<{type(source).__name__}>")
            io.raw = source
        else:
            raise TypeError(f"CaptureReader source must be a path or a binary file object, "
                            f"not {type(source).__name__}")
        try:
            _open_input(self)
            _read_header(self)
        except BaseException:
            self.close()
            raise
        _sync_counters(self)

    # --- batches -----------------------------------------------------------------------------
    cdef Py_ssize_t fill(self, frame_t* frames, Py_ssize_t max_frames) except -1:
        """Write up to max_frames frames; 0 means the end.  Frames stay valid until the next call."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef Py_ssize_t n = 0
        cdef int r
        if max_frames < 1:
            raise ValueError("fill() needs room for at least one frame")
        if st.done or st.closed or st.fmt == 0:     # fmt 0: __init__ never ran or failed
            return 0
        if st.mapped:
            _release_behind(st)
        while n < max_frames:
            if st.fmt == FMT_PCAP:
                r = _step_pcap(self, &frames[n], n)
            else:
                r = _step_pcapng(self, &frames[n], n)
            if r == ST_FRAME:
                n += 1
                if st.mapped:
                    _map_ahead(st, st.pos, &st.populated, &st.ahead)
            elif r == ST_YIELD:
                break
            elif r == ST_END:
                st.done = 1
                break
        _sync_counters(self)
        return n

    cdef Py_ssize_t fill_fast(self, frame_t* frames, Py_ssize_t max_frames, size_t stop) noexcept nogil:
        """fill() without the GIL for the plain records of a mapped capture that start before
        ``stop``: a span from the reader's position, taken at once.  Returns the frames written;
        0 means "use fill()" (any other block, damage, the end, a stream) or ``stop`` reached."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef span_t sp
        cdef Py_ssize_t n
        if st == NULL or not st.mapped or st.done or st.closed or st.fmt == 0:
            return 0
        self.span_begin(&sp, st.pos, stop)
        n = self.span_fill(&sp, frames, max_frames)
        self.span_take(&sp)
        return n

    # --- spans: byte ranges of a mapped capture read by several threads (kzfilter.threaded) ----
    cdef size_t span_sync(self, size_t at, size_t limit) noexcept nogil:
        """The first offset in [at, limit) that looks like a record boundary (a chain of sane
        records starts there), or SIZE_MAX.  A guess: span_commit checks it."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef size_t pos = at
        if st == NULL or not st.mapped or st.closed or st.fmt == 0:
            return <size_t>-1
        if limit > st.end:
            limit = st.end
        if limit - at > SYNC_WINDOW and limit > at:
            limit = at + SYNC_WINDOW
        if st.fmt == FMT_PCAPNG:
            pos = (pos + 3) & ~(<size_t>3)      # pcapng blocks are 32-bit aligned
        while pos < limit:
            if _plausible_chain(st, pos):
                return pos
            pos += 4 if st.fmt == FMT_PCAPNG else 1
        return <size_t>-1

    cdef void span_begin(self, span_t* sp, size_t start, size_t stop) noexcept nogil:
        """Set ``sp`` to read the records that start in [start, stop)."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        memset(sp, 0, sizeof(span_t))
        sp.pos = start
        sp.stop = stop
        sp.ahead = start
        sp.populated = start
        sp.generation = st.generation

    cdef Py_ssize_t span_fill(self, span_t* sp, frame_t* frames, Py_ssize_t max_frames) noexcept nogil:
        """Up to ``max_frames`` plain records of the span (whole, sane pcap records or pcapng
        Enhanced Packet Blocks of a known interface: ``_plain_frame``), without touching the
        reader's position; 0: the span reached its stop, the end, a record only fill() reads, or
        the reading has ended.  The caller keeps any other thread from reading sections or
        interfaces (fill()) meanwhile: the interface table is read in place."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef Py_ssize_t n = 0
        cdef size_t rec
        cdef bint over = False
        cdef frame_t* f
        if st == NULL or not st.mapped or st.closed or st.done or st.fmt == 0:
            return 0
        while n < max_frames and sp.pos < sp.stop:
            _map_ahead(st, sp.pos, &sp.populated, &sp.ahead)
            f = &frames[n]
            rec = _plain_frame(st, st.base + sp.pos, st.end - sp.pos, f, &over)
            if rec == 0:
                break
            sp.pos += rec
            sp.frames += 1
            sp.bytes += f.caplen
            sp.wire_bytes += f.wirelen
            sp.over_snaplen += over
            sp.last_ts = f.ts_ns
            n += 1
        return n

    cdef void span_take(self, const span_t* sp) noexcept nogil:
        """Take the records of a span that began at the reader's own position as read (the
        reader's plain records without the GIL: FrameDispatch.fill), and hand the pages behind
        back as fill() does.  The end of the file is left for fill() to find."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        _absorb(st, sp)
        _release_behind(st)

    cdef bint span_complete(self, const span_t* sp) noexcept nogil:
        """The span read every record that starts before its stop: it reached the stop, or the
        end of the file exactly at a record boundary."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return sp.pos >= sp.stop or sp.pos == st.end

    cdef int span_commit(self, const span_t* sp, size_t start) except -1:
        """Take the records of a span that started at ``start`` as read, when ``start`` is where
        the committed reading ended and no section or interface block was read since the span
        began (its records are then exactly fill()'s): 1 when it read to its stop, 2 when it
        stopped before (at a record only fill() reads: go on with fill() from there), 0 when it
        cannot be taken (read its range again with fill())."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef int whole = self.span_complete(sp)
        if st.closed or st.done or start != st.pos or sp.generation != st.generation:
            return 0
        _absorb(st, sp)
        if st.pos == st.end:
            st.done = 1
        _sync_counters(self)
        return 1 if whole else 2

    def release_behind(self):
        """Hand the pages behind the committed position back to the kernel, as reading does
        every RELEASE_BYTES (kzfilter.threaded calls it outside its lock after span_commit: the
        kernel's work of unmapping is a tenth of reading a capture).  Without the GIL; one
        thread at a time, and not while another thread reads with fill()."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        if st == NULL or not st.mapped or st.closed:
            return
        with nogil:
            _release_behind(st)

    def record_size(self, Py_ssize_t max_frames=1024):
        """Mean length in bytes of the next plain records of a mapped capture (up to
        ``max_frames`` of them, read without moving), or 0 where there are none: how
        kzfilter.threaded sizes its batches."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef span_t sp
        cdef frame_t frames[64]
        cdef Py_ssize_t n, total = 0
        if st == NULL or not st.mapped or st.closed or st.fmt == 0:
            return 0
        self.span_begin(&sp, st.pos, <size_t>-1)
        with nogil:
            while total < max_frames:
                n = self.span_fill(&sp, frames, 64 if max_frames - total > 64 else max_frames - total)
                if n <= 0:
                    break
                total += n
        return (sp.pos - st.pos) / total if total else 0

    def _read_fast(self):
        """Every frame, as ``__iter__`` gives them, read through fill_fast() where it applies and
        fill() elsewhere, as FrameDispatch reads: for tests that both paths agree."""
        cdef frame_t frames[64]
        cdef Py_ssize_t k
        out = []
        while True:
            with nogil:
                k = self.fill_fast(frames, 64, <size_t>-1)
            if k == 0:
                k = self.fill(frames, 1)    # one frame: fill_fast takes the next record again
                if k == 0:
                    return out
            _append_frames(out, frames, k)

    def _read_spans(self, size_t span, bint backwards=True):
        """Every frame, read as kzfilter.threaded reads a mapped capture: one frame (and the
        blocks before it) through fill(), then batches of ``span`` bytes read as spans, every
        batch before any commit (the last first when ``backwards``: no span knows where the one
        before ended), committed in order, and a batch whose span is not taken (or stops short)
        read on through fill_fast()/fill().  For tests that spans give fill()'s frames and
        counters whatever the guesses."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef frame_t frames[64]
        cdef span_t* sps = NULL
        cdef size_t origin, at, stop
        cdef Py_ssize_t nb, b, k
        cdef int rc
        if span < 1:
            raise ValueError("span must be >= 1")
        out = []
        _append_frames(out, frames, self.fill(frames, 1))
        if st.mapped and not st.done:
            origin = st.pos
            nb = <Py_ssize_t>((st.end - origin + span - 1) // span)
            sps = <span_t*>calloc(nb if nb else 1, sizeof(span_t))
            if sps == NULL:
                raise MemoryError()
            try:
                starts = [None] * nb
                got = [None] * nb
                for b in (range(nb - 1, -1, -1) if backwards else range(nb)):
                    at = origin + <size_t>b * span
                    stop = <size_t>-1 if b == nb - 1 else at + span
                    starts[b] = self.span_sync(at, stop)
                    got[b] = []
                    if starts[b] != <size_t>-1:
                        self.span_begin(&sps[b], <size_t>starts[b], stop)
                        while True:
                            k = self.span_fill(&sps[b], frames, 64)
                            if k <= 0:
                                break
                            _append_frames(got[b], frames, k)
                for b in range(nb):
                    if st.done:
                        break
                    stop = <size_t>-1 if b == nb - 1 else origin + <size_t>(b + 1) * span
                    rc = 0 if starts[b] == <size_t>-1 else self.span_commit(&sps[b], <size_t>starts[b])
                    if rc:
                        out.extend(got[b])
                    if rc != 1:
                        while st.pos < stop and not st.done:
                            k = self.fill_fast(frames, 64, stop)
                            if k == 0:
                                k = self.fill(frames, 1)
                                if k == 0:
                                    break
                            _append_frames(out, frames, k)
            finally:
                free(sps)
        while True:
            k = self.fill(frames, 64)
            if k == 0:
                break
            _append_frames(out, frames, k)
        return out

    # --- Python API --------------------------------------------------------------------------
    def __iter__(self):
        """Yield ``(ts_ns, linktype, data, wirelen)`` per frame (one bytes object each)."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        cdef Py_ssize_t k
        while True:
            st = <cap_state_t*>self._state
            if st == NULL:
                return
            k = self.fill(st.iter_frames, ITER_BATCH)
            if k == 0:
                return
            batch = []
            _append_frames(batch, st.iter_frames, k)
            yield from batch

    def drain(self, Py_ssize_t batch=256):
        """Read to the end through fill() without building frame objects; return frames read.

        For benchmarks and counting: the same C path the flow table uses.
        """
        cdef frame_t* frames
        cdef Py_ssize_t k, total = 0
        cdef uint64_t sink = 0
        if batch < 1:
            raise ValueError("batch must be >= 1")
        frames = <frame_t*>calloc(<size_t>batch, sizeof(frame_t))
        if frames == NULL:
            raise MemoryError()
        try:
            while True:
                k = self.fill(frames, batch)
                if k == 0:
                    break
                total += k
                sink += frames[k - 1].caplen
        finally:
            free(frames)
        return total

    @property
    def linktypes(self):
        """Link types in file order: the pcap header's, or one per pcapng interface block."""
        return list(self._io.linktypes)

    @property
    def buffer_capacity(self):
        """Bytes held by the streaming buffer (0 when mmap'ed): bounded whatever the file size."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return 0 if st.mapped else st.cap

    @property
    def mapped(self):
        """True when the capture is memory-mapped: frame pointers then stay valid until close()."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return bool(st.mapped)

    @property
    def position(self):
        """Offset of the next record in the mapped file (or in the streaming buffer)."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return st.pos

    @property
    def exhausted(self):
        """True once the reader has no more frames to give (end of file, or a stop on damage)."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return bool(st.done)

    @property
    def size(self):
        """Bytes of a mapped capture (0 when streamed)."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return st.end if st.mapped else 0

    def hold_from(self, offset):
        """Mapped captures: never hand back pages at or after ``offset`` (None: no limit).

        A consumer that keeps frames of earlier fills (a pipeline of batches) holds their pages
        mapped: handed-back pages are correct but cost a page fault each when touched again.
        """
        cdef cap_state_t* st = <cap_state_t*>self._state
        if offset is None:
            st.hold_set = 0
        else:
            st.hold = <size_t>offset
            st.hold_set = 1

    @property
    def buffer_peak(self):
        """Largest streaming buffer capacity reached so far (0 when mmap'ed)."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        return 0 if st.mapped else st.peak_cap

    @property
    def name(self):
        """File name used in messages."""
        return self._io.name

    def close(self):
        """Release the map, buffer and files; further reads yield nothing.  Idempotent."""
        cdef cap_state_t* st = <cap_state_t*>self._state
        st.closed = 1
        st.done = 1
        st.base = NULL
        self._io.close()
        free(st.buf)
        st.buf = NULL
        st.cap = 0
        st.end = 0
        st.pos = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"<CaptureReader {self._io.name!r} {self.counters.get('format')}>"

