"""Reuse the memory of record arrays within one classification run.

A run hands over a batch of records per chunk of frames (about 4 MB per 25k records).  Allocated
afresh, every page of such an array is a page fault when first written, and a fault that hands out
a zeroed page cost 3-5 us on the VM we measure on: on 2M frames of real traffic, one worker took
~8k such faults per run, two threads twice as many.  A :class:`BufferPool` belongs to one run: it
hands out large buffers and takes a buffer back once nothing refers to it any more (the batch made
from it was dropped), so its pages stay mapped from one chunk to the next.  Nothing is kept after
the run: the pool goes with it.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["BufferPool"]

MIN_POOLED = 256 << 10      # smaller requests: np.empty (malloc's free lists serve them)
GRAIN = 64 << 10            # buffers are whole multiples of this
MAX_SLACK = 1.25            # a buffer serves requests of at least 1/MAX_SLACK of its size


class BufferPool:
    """Large uint8 buffers handed out and reused once unreferenced (thread-safe).

    A buffer is in use while any array made from it lives (numpy views keep their base alive),
    so a batch the caller keeps is never overwritten; the pool then makes new buffers, keeping at
    most ``max_buffers`` (the oldest are let go: they live on while referenced).
    """

    def __init__(self, max_buffers: int = 8) -> None:
        if max_buffers < 1:
            raise ValueError("a BufferPool holds at least one buffer")
        self.max_buffers = max_buffers
        self.reused = 0          # requests served by a buffer handed out before
        self.made = 0            # buffers made
        self._bufs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A writable uint8 array of ``nbytes`` bytes (contents undefined)."""
        if nbytes < MIN_POOLED:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            bufs = self._bufs
            best = -1
            for i in range(len(bufs)):
                size = bufs[i].nbytes
                # refcount 2: the list's reference and getrefcount's argument, so no array made
                # from the buffer is alive (do not bind bufs[i] to a name before this test)
                if nbytes <= size <= nbytes * MAX_SLACK and sys.getrefcount(bufs[i]) == 2:
                    if best < 0 or size < bufs[best].nbytes:
                        best = i
            if best >= 0:
                self.reused += 1
                return bufs[best][:nbytes]
            if len(bufs) >= self.max_buffers:
                free = [i for i in range(len(bufs)) if sys.getrefcount(bufs[i]) == 2]
                del bufs[free[0] if free else 0]
            buf = np.empty(-(-nbytes // GRAIN) * GRAIN, np.uint8)
            bufs.append(buf)
            self.made += 1
            return buf[:nbytes]

    def __len__(self) -> int:
        """Buffers held."""
        return len(self._bufs)
