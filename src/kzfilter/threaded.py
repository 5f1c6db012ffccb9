"""One capture over N threads: read and dissect each frame once, track the flows in N shards.

``clf.classify(path, workers=N)`` on fewer captures than workers comes here for a mapped
(uncompressed) capture.  Splitting one capture over processes means every process reads and
dissects every frame and maps every page of the file (the kernel's page-table work alone is
~0.1 s per 735 MB per process): on bulk traffic that is half the work, done N times.  Here the
capture is mapped once: reading a batch of frames (:class:`~kzfilter.flow._table.FrameDispatch`:
the record chain, dissection, the symmetric key hash) is done once, and each shard's flow table
applies its events; both run in C without the GIL, and N threads share the two kinds of work.

Exactness: a shard receives, in capture order, its own frames, the other shards' DNS datagrams
(every shard keeps the whole DNS-answer table), the sweeps the whole table's clock triggers, and
the clock and frame count at the end of each batch, so its records are the single table's records
of its flows.  Every shard ends each chunk of ``CHUNK_FRAMES`` frames at the same frame and hands
its records over; the chunk's N batches are merged on (``emitted_ns``, ``flow_id``), the order of
one worker.  As with processes, ``max_flows`` is a per-shard cap: with eviction, records can depend
on N.

Pipeline: ``SLOTS`` batches of ``BATCH_FRAMES`` frames are in flight, at most ``CHUNKS_AHEAD``
chunks ahead of the caller (memory stays flat); the pages of frames in flight stay mapped.  The
caller's thread merges finished chunks and applies verdicts (numpy).  QUIC Initials still take
the GIL for their keys and ciphers (``cryptography``), as in one thread.
"""
from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .flow import _table
from .flow.records import RecordBatch
from .packet import _capture

if TYPE_CHECKING:
    from .match.classifier import Classifier

__all__ = ["threaded_file"]

BATCH_FRAMES = 8192       # frames per slot: the unit of reading and of applying a shard
CHUNKS_AHEAD = 2          # chunks of records read ahead of the caller: bounds memory
SLOTS = 4                 # slots in flight: their frames stay mapped (4 x 8192 frames)
POPULATE_AHEAD = 16 << 20  # an idle thread fills the page tables this far past the read position
POPULATE_STEP = 2 << 20    # ... this much per unit of work


class _Run:
    """N threads sharing the units of work of one dispatched capture.

    Units: *read* the next batch of frames into a free slot (one thread at a time: the capture is
    a chain of records), and *apply* a filled slot to shard k (shard k's slots in order, one
    thread at a time per shard).  Each thread takes whatever unit is ready, oldest slot first, so
    N threads keep N cores busy whatever the balance of reading and tracking; fixed reader and
    shard threads left the reader short of CPU and the shards waiting (measured: 0.27-0.32 s
    against 0.20 s of work per core).
    """

    def __init__(self, reader: Any, tables: list[Any], chunk_frames: int) -> None:
        self.reader = reader
        self.tables = tables
        self.chunk_frames = chunk_frames
        self.dispatch = _table.FrameDispatch(tables, SLOTS)
        n = len(tables)
        self.cond = threading.Condition()
        self.free = list(range(SLOTS))              # slots nobody uses
        self.filled: list[tuple[int, bool, bool]] = []   # (slot, end_chunk, last) in read order
        self.next_for = [0] * n                     # index into filled of shard k's next slot
        self.busy = [False] * n                     # shard k is being applied by some thread
        self.pending = [0] * SLOTS                  # shards yet to apply each filled slot
        self.start = [0] * SLOTS                    # file offset of each slot's first frame
        self.base = 0                               # index in the read order of filled[0]
        self.reading = False
        self.read_done = False
        self.populating = False
        self.populate_idle = False                  # nothing to populate until the next read
        self.in_chunk = 0
        self.chunks_read = 0                        # chunks whose last batch was read
        self.chunks_taken = 0                       # chunks the caller has taken
        self.stopping = False
        self.results: list[queue.Queue[Any]] = [queue.Queue() for _ in range(n)]
        self.threads = [threading.Thread(target=self._work, name=f"kzfilter-split-{k}", daemon=True)
                        for k in range(n)]

    # -- scheduling (self.cond held) -----------------------------------------------------------
    def _hold(self) -> None:
        """Keep the pages of every slot in use mapped."""
        starts = [self.start[s] for s in range(SLOTS) if self.pending[s] or
                  (self.reading and s not in self.free)]
        self.reader.hold_from(min(starts) if starts else None)

    def _pick(self) -> tuple[str, int] | None:
        """The next unit: ("read", slot) while a slot is free (reading is the serial part: it
        must never wait), else ("apply", shard) for the shard with the oldest ready slot."""
        if (not self.reading and not self.read_done and self.free
                and self.chunks_read - self.chunks_taken < CHUNKS_AHEAD):
            return ("read", self.free.pop(0))
        best = None
        for k, nxt in enumerate(self.next_for):
            if not self.busy[k] and nxt - self.base < len(self.filled):
                if best is None or nxt < self.next_for[best]:
                    best = k
        if best is not None:
            return ("apply", best)
        if not (self.populating or self.populate_idle or self.read_done):
            # Nothing else to do: take the kernel's page-table work off the reading thread.
            return ("populate", 0)
        return None

    # -- threads -------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                with self.cond:
                    unit = None
                    while not self.stopping:
                        unit = self._pick()
                        if unit is not None or all(
                                nxt - self.base >= len(self.filled) for nxt in self.next_for) \
                                and self.read_done:
                            break
                        self.cond.wait()
                    if unit is None:
                        return
                    kind, arg = unit
                    if kind == "read":
                        self.reading = True
                        self.start[arg] = self.reader.position
                        self._hold()
                    elif kind == "apply":
                        self.busy[arg] = True
                        slot, end_chunk, last = self.filled[self.next_for[arg] - self.base]
                    else:
                        self.populating = True
                if kind == "read":
                    self._read(arg)
                elif kind == "apply":
                    self._apply(arg, slot, end_chunk, last)
                else:
                    done = self.reader.populate_step(POPULATE_AHEAD, POPULATE_STEP)
                    with self.cond:
                        self.populating = False
                        self.populate_idle = done == 0
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with self.cond:
                self.stopping = True
                self.cond.notify_all()
            for q in self.results:
                q.put(exc)

    def _read(self, slot: int) -> None:
        want = min(BATCH_FRAMES, self.chunk_frames - self.in_chunk)
        got = self.dispatch.fill(self.reader, slot, want)
        self.in_chunk += got
        last = got < want
        end_chunk = last or self.in_chunk == self.chunk_frames
        if end_chunk:
            self.in_chunk = 0
        with self.cond:
            self.chunks_read += end_chunk
            self.reading = False
            self.populate_idle = False
            self.read_done = last
            self.pending[slot] = len(self.tables)
            self.filled.append((slot, end_chunk, last))
            self.cond.notify_all()

    def _apply(self, k: int, slot: int, end_chunk: bool, last: bool) -> None:
        table = self.tables[k]
        table.process_dispatched(self.dispatch, slot)
        if last:
            table.flush()
        records = table.take_records() if end_chunk else None
        with self.cond:
            self.busy[k] = False
            self.next_for[k] += 1
            self.pending[slot] -= 1
            if not self.pending[slot]:
                self.free.append(slot)
                # drop read-order entries every shard has applied
                while self.filled and min(self.next_for) > self.base:
                    self.filled.pop(0)
                    self.base += 1
                self._hold()
            self.cond.notify_all()
        if end_chunk:
            self.results[k].put(records)
        if last:
            self.results[k].put(None)

    # -- caller's side -------------------------------------------------------------------------
    def chunks(self) -> Iterator[list[RecordBatch]]:
        """Each chunk's N record batches, in capture order; raises a helper thread's error."""
        for t in self.threads:
            t.start()
        while True:
            parts = [q.get() for q in self.results]
            for part in parts:
                if isinstance(part, BaseException):
                    raise part
            if all(p is None for p in parts):
                return
            if any(p is None for p in parts):
                raise RuntimeError("kzfilter shards out of step")
            with self.cond:
                self.chunks_taken += 1
                self.cond.notify_all()
            yield parts

    def close(self) -> None:
        """Stop and join every thread (before the reader's map goes away)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for t in self.threads:
            if t.ident is not None:
                t.join()


def threaded_file(clf: "Classifier", path: str, workers: int, match_client_ip: bool,
                  flow_options: dict[str, Any], progress: Callable[[int], None] | None = None,
                  counters: dict[str, Any] | None = None,
                  chunk_frames: int | None = None) -> Iterator[RecordBatch] | None:
    """Batches with verdicts for one capture split over ``workers`` flow-table threads, or None
    when the capture cannot be mapped (compressed, or not a regular file; a pipe is not opened)."""
    import os

    from . import classify

    if not os.path.isfile(path):
        return None              # a pipe: opening it here would consume what the caller reads
    reader = _capture.CaptureReader(path)
    if not reader.mapped:
        reader.close()
        return None
    return _batches(clf, reader, path, workers, match_client_ip, flow_options, progress, counters,
                    int(chunk_frames or classify.CHUNK_FRAMES))


def _batches(clf: "Classifier", reader: Any, path: str, workers: int, match_client_ip: bool,
             flow_options: dict[str, Any], progress: Callable[[int], None] | None,
             counters: dict[str, Any] | None, chunk_frames: int) -> Iterator[RecordBatch]:
    from .classify import _merge_counters, apply_verdicts
    from .parallel import merge_sorted

    run = None
    try:
        tables = [_table.FlowTable(capture_name=path, shard_count=workers, shard_index=k,
                                   **flow_options) for k in range(workers)]
        run = _Run(reader, tables, chunk_frames)
        last = 0
        for parts in run.chunks():
            if progress is not None:
                # the read position (the counters dict catches up only at the end of the file)
                done = reader.position
                if done > last:
                    progress(done - last)
                    last = done
            merged = merge_sorted(parts)
            if len(merged):
                yield apply_verdicts(clf, merged, match_client_ip)
        if progress is not None:
            done = int(reader.counters.get("bytes_read", 0))
            if done > last:
                progress(done - last)
        if counters is not None:
            flows: dict[str, Any] = {}
            for t in tables:
                _merge_counters(flows, dict(t.counters))
            counters.update(capture=dict(reader.counters), flows=flows)
    finally:
        if run is not None:
            run.close()
        reader.close()
