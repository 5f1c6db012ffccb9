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

cdef class CaptureReader:
    cdef object _source            # path or file object, for messages
    cdef public object counters    # dict: frames, bytes, skipped_* ... (see _capture.pyx)
    cdef void* _state              # private: cap_state_t* (parser state, buffer), owned, see _capture.pyx
    cdef object _io                # private: file, decompressor, mmap objects, linktypes list
    cdef Py_ssize_t fill(self, frame_t* frames, Py_ssize_t max_frames) except -1
    cdef Py_ssize_t fill_fast(self, frame_t* frames, Py_ssize_t max_frames) noexcept nogil
