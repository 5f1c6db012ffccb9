# Contract between the capture reader and its consumers (flow table, tests).
# The reader owns every byte a frame_t points to; pointers stay valid until the next fill()/close().
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t, uint64_t

ctypedef struct frame_t:
    int64_t ts_ns          # capture timestamp, nanoseconds since the epoch
    const uint8_t* data    # captured bytes of the frame
    uint32_t caplen        # number of bytes at data
    uint32_t wirelen       # original length on the wire (pcap orig_len / pcapng original length)
    uint16_t linktype      # LINKTYPE_* of the interface the frame came from
    uint16_t iface         # pcapng interface index (0 for pcap)

# One reading thread's cursor over a mapped capture (kzfilter.threaded reads byte ranges of one
# capture in parallel): plain records from ``pos`` while they start before ``stop``, with their
# own counters; CaptureReader.span_commit adds them once the range is known to start where the
# committed reading ended.
ctypedef struct span_t:
    size_t pos             # offset of the next record
    size_t stop            # read records that start before this offset
    size_t ahead           # bytes [pos, ahead) were prefetched
    size_t populated       # page tables of bytes [.., populated) were filled
    uint64_t frames
    uint64_t bytes
    uint64_t wire_bytes
    uint64_t over_snaplen
    int64_t last_ts
    uint64_t generation    # the reader's section generation the span was read under

cdef class CaptureReader:
    cdef object _source            # path or file object, for messages
    cdef public object counters    # dict: frames, bytes, skipped_* ... (see _capture.pyx)
    cdef void* _state              # private: cap_state_t* (parser state, buffer), owned, see _capture.pyx
    cdef object _io                # private: file, decompressor, mmap objects, linktypes list
    cdef Py_ssize_t fill(self, frame_t* frames, Py_ssize_t max_frames) except -1
    cdef Py_ssize_t fill_fast(self, frame_t* frames, Py_ssize_t max_frames, size_t stop) noexcept nogil
    cdef size_t span_sync(self, size_t at, size_t limit) noexcept nogil
    cdef void span_begin(self, span_t* sp, size_t start, size_t stop) noexcept nogil
    cdef void span_take(self, const span_t* sp) noexcept nogil
    cdef Py_ssize_t span_fill(self, span_t* sp, frame_t* frames, Py_ssize_t max_frames) noexcept nogil
    cdef bint span_complete(self, const span_t* sp) noexcept nogil
    cdef int span_commit(self, const span_t* sp, size_t start) except -1
