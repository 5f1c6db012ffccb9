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
same threads merge each finished chunk and apply its verdicts (numpy); the caller's thread only
takes the results.  QUIC Initials are decrypted in C (libcrypto) without the GIL too, where
libcrypto loads (``kzfilter.packet._quic.bind_openssl``).
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .flow import _table
from .flow.records import RecordBatch
from .packet import _capture

if TYPE_CHECKING:
    from .match.classifier import Classifier

__all__ = ["threaded_file"]

BATCH_FRAMES = 16384      # frames per slot: the unit of reading and of applying a shard
CHUNKS_AHEAD = 2          # chunks of records read ahead of the caller: bounds memory
SLOTS = 4                 # slots in flight: their frames stay mapped (4 x 16384 frames)
POPULATE_AHEAD = 16 << 20  # an idle thread fills the page tables this far past the read position
POPULATE_STEP = 2 << 20    # ... this much per unit of work


class _Run:
    """N threads sharing the units of work of one dispatched capture.

    Units, in this order of priority: *read* the next batch of frames into a free slot (one
    thread at a time: the capture is a chain of records, the serial part), *apply* a filled slot
    to shard k (shard k's slots in order, one thread at a time per shard), *finish* a chunk (merge
    its N record batches and apply the verdicts: ``finish``, chunks in order), and *populate* the
    page tables ahead of the reader.  Each thread takes whatever unit is ready, so N threads keep N
    cores busy whatever the balance of the work, and the caller's thread only hands the finished
    chunks on.  Fixed reader and shard threads left the reader short of CPU and the shards
    waiting (measured: 0.27-0.32 s against 0.20 s of work per core).
    """

    def __init__(self, reader: Any, tables: list[Any], chunk_frames: int,
                 finish: Callable[[list[RecordBatch]], Any]) -> None:
        self.reader = reader
        self.tables = tables
        self.chunk_frames = chunk_frames
        self.finish = finish
        self.dispatch = _table.FrameDispatch(tables, SLOTS)
        n = len(tables)
        lock = threading.Lock()
        self.cond = threading.Condition(lock)      # the workers wait here for a unit
        self.ready = threading.Condition(lock)     # the caller waits here for a finished chunk
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
        self.shard_chunks = [0] * n                 # chunks shard k has handed over
        self.parts: dict[int, list[Any]] = {}       # chunk -> its N record batches
        self.finishing = False
        self.next_finish = 0                        # the next chunk to finish
        self.finished: dict[int, Any] = {}          # chunk -> finish()'s result, for the caller
        self.chunks_total: int | None = None        # known once every shard has applied the last
        self.stopping = False
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._work, name=f"kzfilter-split-{k}", daemon=True)
                        for k in range(n)]

    # -- scheduling (self.cond held) -----------------------------------------------------------
    def _hold(self) -> None:
        """Keep the pages of every slot in use (being read, or not yet applied) mapped."""
        starts = [self.start[s] for s in range(SLOTS) if s not in self.free]
        self.reader.hold_from(min(starts) if starts else None)

    def _pick(self) -> tuple[str, int] | None:
        """The next unit to run, or None when none is ready."""
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
        parts = self.parts.get(self.next_finish)
        if not self.finishing and parts is not None and all(p is not None for p in parts):
            return ("finish", self.next_finish)
        if not (self.populating or self.populate_idle or self.read_done):
            # Nothing else to do: take the kernel's page-table work off the reading thread.
            return ("populate", 0)
        return None

    def _all_done(self) -> bool:
        return self.chunks_total is not None and self.next_finish >= self.chunks_total

    # -- threads -------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                with self.cond:
                    unit = None
                    while not self.stopping and not self._all_done():
                        unit = self._pick()
                        if unit is not None:
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
                    elif kind == "finish":
                        self.finishing = True
                        parts = self.parts.pop(arg)
                    else:
                        self.populating = True
                if kind == "read":
                    self._read(arg)
                elif kind == "apply":
                    self._apply(arg, slot, end_chunk, last)
                elif kind == "finish":
                    out = self.finish(parts)
                    with self.cond:
                        self.finished[arg] = out
                        self.next_finish += 1
                        self.finishing = False
                        self.cond.notify_all()
                        self.ready.notify_all()
                else:
                    done = self.reader.populate_step(POPULATE_AHEAD, POPULATE_STEP)
                    with self.cond:
                        self.populating = False
                        self.populate_idle = done == 0
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with self.cond:
                if self.error is None:
                    self.error = exc
                self.stopping = True
                self.cond.notify_all()
                self.ready.notify_all()

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
            if end_chunk:
                c = self.shard_chunks[k]
                self.shard_chunks[k] += 1
                self.parts.setdefault(c, [None] * len(self.tables))[k] = records
                if last and all(n == self.shard_chunks[k] for n in self.shard_chunks):
                    self.chunks_total = self.shard_chunks[k]
                    self.ready.notify_all()
            self.cond.notify_all()

    # -- caller's side -------------------------------------------------------------------------
    def chunks(self) -> Iterator[Any]:
        """finish()'s result for each chunk, in capture order; raises a helper thread's error."""
        for t in self.threads:
            t.start()
        c = 0
        while True:
            with self.cond:
                while (c not in self.finished and self.error is None
                       and not (self.chunks_total is not None and c >= self.chunks_total)):
                    self.ready.wait()
                if self.error is not None:
                    raise self.error
                if c not in self.finished:
                    return
                out = self.finished.pop(c)
                self.chunks_taken += 1
                self.cond.notify_all()
            c += 1
            yield out

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
        def finish(parts: list[RecordBatch]) -> RecordBatch | None:
            merged = merge_sorted(parts)
            return apply_verdicts(clf, merged, match_client_ip) if len(merged) else None

        run = _Run(reader, tables, chunk_frames, finish)
        last = 0
        for batch in run.chunks():
            if progress is not None:
                # the read position (the counters dict catches up only at the end of the file)
                done = reader.position
                if done > last:
                    progress(done - last)
                    last = done
            if batch is not None:
                yield batch
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
