# cython: language_level=3
"""Merge record batches that are each sorted on (emitted_ns, flow_id): one pass in C.

A capture split over N flow-table shards (kzfilter.threaded, kzfilter.parallel) hands over N
sorted batches per chunk of frames, and the records of one worker are their merge.  Concatenating,
sorting again and gathering with numpy cost ~0.1 us per record and more in byte-by-byte name
gathers: on 2M frames of real traffic, ~5% of the whole classification.  Here the N heads are
compared and each record is copied once, with its name and ALPN bytes, without the GIL.  The
threads of a split capture merge the shards' ``RecordChunk`` s in place (``merge_chunks``): their
records are read in the tables' own buffers, through each one's sort order, and never copied
into intermediate batches.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

import numpy as np

from kzfilter.flow._table cimport RecordChunk, rec_t


cdef inline bint _before(const rec_t* a, const rec_t* b) noexcept nogil:
    return a.emitted_ns < b.emitted_ns or (a.emitted_ns == b.emitted_ns and a.flow_id < b.flow_id)


cdef class _Sources:
    """The N inputs of one merge: per input its records (read through ``order`` when given),
    name and ALPN arenas and capture remap, as raw pointers; ``keep`` holds what they point
    into."""
    cdef Py_ssize_t nb
    cdef object ptrs, lens, arena_lens, keep
    cdef size_t[:, ::1] p           # records, names, alpn, remap, order (0: records in order)
    cdef int64_t[::1] ln            # records of each input
    cdef int64_t[:, ::1] al         # bytes of names, of alpn; entries of remap

    def __cinit__(self, Py_ssize_t nb):
        self.nb = nb
        self.ptrs = np.zeros((5, nb), dtype=np.uintp)
        self.lens = np.zeros(nb, dtype=np.int64)
        self.arena_lens = np.zeros((3, nb), dtype=np.int64)
        self.p = self.ptrs
        self.ln = self.lens
        self.al = self.arena_lens
        self.keep = []

    cdef void bytes_at(self, int row, Py_ssize_t k, arena):
        """Arena ``row`` (1 names, 2 alpn) of input k: any buffer (bytes, a uint8 array)."""
        cdef const uint8_t[::1] view = np.frombuffer(arena, dtype=np.uint8) if len(arena) else None
        self.keep.append(arena)
        self.al[row - 1, k] = len(arena)
        if len(arena):
            self.p[row, k] = <size_t>&view[0]

    cdef int remap_at(self, Py_ssize_t k, remap) except -1:
        cdef const uint16_t[::1] view
        remap = np.ascontiguousarray(remap, dtype=np.uint16)
        self.keep.append(remap)
        self.al[2, k] = remap.shape[0]
        if remap.shape[0]:
            view = remap
            self.p[3, k] = <size_t>&view[0]
        return 0

    cdef tuple merge(self, pool, bint want_order=True):
        """The merge itself: see merge_records (``order`` is None without ``want_order``)."""
        cdef Py_ssize_t nb = self.nb, k, i, total = 0, best, at
        cdef size_t rs = sizeof(rec_t)
        cdef size_t name_total = 0, alpn_total = 0
        starts = np.zeros(nb, dtype=np.int64)
        heads = np.zeros(nb, dtype=np.int64)
        cdef int64_t[::1] start = starts, head = heads, ln = self.ln
        cdef size_t[:, ::1] p = self.p
        cdef int64_t[:, ::1] al = self.al
        for k in range(nb):
            start[k] = total
            total += ln[k]
            name_total += al[0, k]
            alpn_total += al[1, k]
        if name_total >= 1 << 32 or alpn_total >= 1 << 32:
            raise ValueError("merge_records: the merged names would exceed 4 GiB (uint32 offsets)")
        out = np.empty(total * rs, dtype=np.uint8) if pool is None else pool.take(total * rs)
        # the arenas are written in place (bytes made for it, not yet shared), not copied after
        out_names = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>name_total)
        out_alpn = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>alpn_total)
        cdef uint8_t* onv = <uint8_t*>PyBytes_AS_STRING(out_names)
        cdef uint8_t* oav = <uint8_t*>PyBytes_AS_STRING(out_alpn)
        order = np.empty(total if want_order else 0, dtype=np.int64)
        cdef uint8_t[::1] ov = out
        cdef int64_t[::1] order_v = order
        cdef rec_t* dst = <rec_t*>&ov[0] if total else NULL
        cdef const rec_t* src
        cdef const rec_t* cand
        cdef size_t name_at = 0, alpn_at = 0
        cdef int bad = 0
        cdef Py_ssize_t bad_batch = -1
        with nogil:
            for i in range(total):
                best = -1
                src = NULL
                for k in range(nb):
                    if head[k] < ln[k]:
                        at = (<const int64_t*>p[4, k])[head[k]] if p[4, k] else head[k]
                        if at < 0 or at >= ln[k]:
                            bad = 2
                            bad_batch = k
                            break
                        cand = (<const rec_t*>p[0, k]) + at
                        if best < 0 or _before(cand, src):
                            best = k
                            src = cand
                if bad:
                    break
                memcpy(&dst[i], src, rs)
                if want_order:
                    order_v[i] = start[best] + head[best]
                head[best] += 1
                # the name and ALPN bytes, packed in record order; offsets checked against the arena
                if <int64_t>src.name_off + src.name_len > al[0, best] or \
                        <int64_t>src.alpn_off + src.alpn_len > al[1, best] or \
                        src.capture_idx >= al[2, best]:
                    bad = 1
                    bad_batch = best
                    break
                if src.name_len:
                    memcpy(&onv[name_at], <const uint8_t*>p[1, best] + src.name_off, src.name_len)
                dst[i].name_off = <uint32_t>name_at
                name_at += src.name_len
                if src.alpn_len:
                    memcpy(&oav[alpn_at], <const uint8_t*>p[2, best] + src.alpn_off, src.alpn_len)
                dst[i].alpn_off = <uint32_t>alpn_at
                alpn_at += src.alpn_len
                dst[i].capture_idx = (<const uint16_t*>p[3, best])[src.capture_idx]
        if bad == 2:
            raise ValueError(f"batch {bad_batch}: its order points outside its records")
        if bad:
            raise ValueError(f"batch {bad_batch}: a record's name, ALPN or capture index lies "
                             "outside its batch")
        # arenas hold only their batch's names, so the packed bytes normally fill them exactly
        return (out, out_names if name_at == name_total else out_names[:name_at],
                out_alpn if alpn_at == alpn_total else out_alpn[:alpn_at],
                order if want_order else None)


def merge_records(list arrays, list names, list alpns, list remaps, pool=None):
    """Merge ``arrays[k]`` (raw record bytes, each sorted on (emitted_ns, flow_id)) into one.

    ``names[k]``/``alpns[k]`` are the byte arenas batch k's ``name_off``/``alpn_off`` point
    into, ``remaps[k]`` (uint16) maps its ``capture_idx`` to the merged capture list.  Equal keys
    keep the batches' order (as a stable sort of their concatenation would).  Returns
    ``(records as bytes-per-record uint8 array, names, alpn, order)``: the merged arenas are packed
    in record order, and ``order[i]`` is the position of merged record i in the concatenation.
    ``pool`` (a :class:`~kzfilter.flow.buffers.BufferPool`) supplies the record array.
    """
    cdef Py_ssize_t nb = len(arrays), k
    cdef size_t rs = sizeof(rec_t)
    cdef const uint8_t[::1] rec_view
    if not (len(names) == len(alpns) == len(remaps) == nb):
        raise ValueError("merge_records needs one names, alpn and remap per array")
    cdef _Sources src = _Sources(nb)
    for k in range(nb):
        raw = np.ascontiguousarray(arrays[k]).view(np.uint8).reshape(-1)
        if raw.shape[0] % rs:
            raise ValueError(f"batch {k}: {raw.shape[0]} bytes is not a whole number of records")
        src.keep.append(raw)
        src.ln[k] = raw.shape[0] // rs
        if src.ln[k]:
            rec_view = raw
            src.p[0, k] = <size_t>&rec_view[0]
        src.bytes_at(1, k, names[k])
        src.bytes_at(2, k, alpns[k])
        src.remap_at(k, remaps[k])
    return src.merge(pool)


def merge_chunks(list chunks, list remaps, pool=None):
    """Merge the ``RecordChunk`` s of N shards in place, each read in its sort order
    (``chunk.order()``): as merge_records, on the records of ``take_records`` of each shard,
    without making those batches.  ``remaps[k]`` maps chunk k's capture indexes.  Returns
    ``(records, names, alpn)``."""
    cdef Py_ssize_t nb = len(chunks), k
    cdef RecordChunk chunk
    cdef const int64_t[::1] order_view
    if len(remaps) != nb:
        raise ValueError("merge_chunks needs one remap per chunk")
    cdef _Sources src = _Sources(nb)
    for k in range(nb):
        chunk = chunks[k]
        src.keep.append(chunk)
        src.ln[k] = chunk.n
        src.p[0, k] = <size_t>chunk.recs
        src.p[1, k] = <size_t>chunk.arena
        src.al[0, k] = chunk.arena_len
        src.p[2, k] = <size_t>chunk.alpn
        src.al[1, k] = chunk.alpn_len
        src.remap_at(k, remaps[k])
        if chunk.n:
            order = chunk.order()
            src.keep.append(order)
            order_view = order
            src.p[4, k] = <size_t>&order_view[0]
    return src.merge(pool, False)[:3]
