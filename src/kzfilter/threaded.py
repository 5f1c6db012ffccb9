"""One capture over N threads: read and dissect each frame once, track the flows in N shards.

``clf.classify(path, workers=N)`` on fewer captures than workers comes here for a mapped
(uncompressed) capture.  Splitting one capture over processes means every process reads and
dissects every frame and maps every page of the file (the kernel's page-table work alone is
~0.1 s per 735 MB per process): on bulk traffic that is half the work, done N times.  Here the
capture is mapped once and cut into batches of records by byte range.  Reading a batch
(:class:`~kzfilter.flow._table.FrameDispatch`: the record chain, dissection, the symmetric key
hash) is done once, and each shard's flow table applies its events; both run in C without the
GIL, and N threads share the work.  Several threads read several batches at once: a capture is a
chain of records, so a batch's first record is found by a guess, and the batch is taken only if
it starts exactly where the batch before it ended (else it is read again on from there): no
thread waits for the chain, and the frames are exactly those of one reader.

Exactness: a shard receives, in capture order, its own frames, the other shards' DNS datagrams
(every shard keeps the whole DNS-answer table) and each batch's sweeps of the whole table (found
once in the batch's clock track, the frames that move the table clock, when it is committed),
which it makes at their frames; frames are
numbered within their batch and a batch's first ordinal is known when it is committed, so a
shard's records are the single table's records of its flows.  Every shard ends each chunk of
about ``CHUNK_FRAMES`` frames at the same batch and hands its records over, by swapping its
record buffers with a spare ``RecordChunk`` (no copy, no new memory); the chunk's N record chunks
are merged in place on (``emitted_ns``, ``flow_id``), the order of one worker, and go back as
spares.  As with processes, ``max_flows`` is a per-shard cap: with eviction, records can depend
on N.

Pipeline: ``SLOTS`` batches of about ``BATCH_FRAMES`` frames are in flight, at most
``CHUNKS_AHEAD`` chunks ahead of the caller (memory stays flat); the pages of frames in flight
stay mapped.  The same threads merge each finished chunk and apply its verdicts (numpy); the
caller's thread only takes the results.  QUIC Initials are decrypted in C (libcrypto) without the
GIL too, where libcrypto loads (``kzfilter.packet._quic.bind_openssl``).
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .flow import _table
from .flow.buffers import BufferPool
from .flow.records import RecordBatch
from .packet import _capture

if TYPE_CHECKING:
    from .match.classifier import Classifier

__all__ = ["threaded_file"]

BATCH_BYTES = 0           # bytes of the capture per batch; 0: about BATCH_FRAMES frames' worth
BATCH_FRAMES = 16384      # frames per batch, the unit of reading and of applying a shard
MIN_BATCH_BYTES = 1 << 20
MAX_BATCH_BYTES = 32 << 20
HEAD_FRAMES = 1024        # frames the caller's thread reads first (and the blocks before them)
CHUNKS_AHEAD = 2          # chunks of records read ahead of the caller: bounds memory
SLOTS = 4                 # batches in flight: their frames stay mapped
_BIG = 1 << 62            # the last batch's stop: the end of the file, whatever it is


def batch_bytes(mean_record: float) -> int:
    """Bytes per batch: BATCH_BYTES, or about BATCH_FRAMES records of ``mean_record`` bytes."""
    if BATCH_BYTES:
        return max(1, int(BATCH_BYTES))
    return int(min(max((mean_record or 1024) * BATCH_FRAMES, MIN_BATCH_BYTES), MAX_BATCH_BYTES))


class _Run:
    """N threads sharing the units of work of one dispatched capture.

    The caller's thread reads the head of the capture (its first HEAD_FRAMES frames and any
    blocks before them) through the reader; the rest is cut into batches by byte range, each of
    about BATCH_FRAMES records of the mean length seen so far (``_new_bounds``): a batch holds
    the records that start in its range.  Units:

    * *finish* a chunk (first): merge its N record chunks in place (``RecordBatch.merge_chunks``,
      in C) and apply the verdicts (``finish``); chunks start finishing in order and several may
      finish at once (the caller takes them in order);
    * *serial*: read batch b on from where batch b - 1 ended, through the reader
      (``FrameDispatch.fill``), when its span could not be taken whole (a block only the reader
      parses, damage, a wrong guess); alone: no span runs meanwhile (the reader's interface table
      may change);
    * *span*: read the next batch into a free slot (``FrameDispatch.read_span``), from its first
      record found by a guess (a chain of sane records), or exactly when the batch before is
      committed.  Batches are committed in order, each only if it starts where the one before
      ended.  One thread reads before anything else; the others read when nothing else is ready,
      so reading is never the serial part (each thread reads beside the others rather than wait);
    * *apply* a committed batch to shard k (shard k's batches in order, one thread at a time per
      shard).

    Each thread takes whatever unit is ready, so N threads keep N cores busy whatever the balance
    of the work, and the caller's thread only hands the finished chunks on.
    """

    def __init__(self, reader: Any, tables: list[Any], chunk_frames: int,
                 finish: Callable[[list[Any]], Any]) -> None:
        self.reader = reader
        self.tables = tables
        self.chunk_frames = chunk_frames
        self.finish = finish
        self.dispatch = _table.FrameDispatch(tables, SLOTS)
        n = len(tables)
        self.spares: list[Any] = []                 # RecordChunks whose chunk was merged
        lock = threading.Lock()
        self.cond = threading.Condition(lock)      # the workers wait here for a unit
        self.ready = threading.Condition(lock)     # the caller waits here for a finished chunk
        self.free = list(range(SLOTS))              # slots nobody uses
        self.slot_of: dict[int, int] = {}           # batch -> its slot, from reading to commit
        self.read: dict[int, int] = {}              # batch -> 0 read, 1 to finish by fill, -1 redo
        self.next_read = 0                          # the next batch to read
        self.next_commit = 0                        # the next batch to commit
        self.spans = 0                              # spans being read
        self.serial = False                         # a serial unit runs
        self.releasing = False                      # a thread hands pages back to the kernel
        self.filled: list[tuple[int, bool, bool]] = []   # (slot, end_chunk, last) in order
        self.next_for = [0] * n                     # index into filled of shard k's next slot
        self.busy = [False] * n                     # shard k is being applied by some thread
        self.pending = [0] * SLOTS                  # shards yet to apply each committed slot
        self.start = [0] * SLOTS                    # first byte each slot in use may point to
        self.base = 0                               # index in the read order of filled[0]
        self.read_done = False
        self.in_chunk = 0
        self.chunks_read = 0                        # chunks whose last batch was committed
        self.chunks_taken = 0                       # chunks the caller has taken
        self.chunk_ends: dict[int, int] = {}        # chunk -> offset after its last record
        self.taken_position = 0                     # offset after the chunks taken so far
        self.shard_chunks = [0] * n                 # chunks shard k has handed over
        self.parts: dict[int, list[Any]] = {}       # chunk -> its N record batches
        self.next_finish = 0                        # the next chunk to start finishing
        self.chunks_finished = 0                    # chunks whose finish has returned
        self.finished: dict[int, Any] = {}          # chunk -> finish()'s result, for the caller
        self.chunks_total: int | None = None        # known once every shard has applied the last
        self.stopping = False
        self.error: BaseException | None = None
        # The head of the capture (section and interface blocks, the first frames) is read here,
        # on from the file header, by the reader itself; the spans cover the rest.
        slot = self.free.pop(0)
        self.start[slot] = reader.position
        self._hold()
        self.dispatch.fill(reader, slot, HEAD_FRAMES)
        self.next_at = reader.position              # where the next batch's byte range starts
        self.bounds: dict[int, tuple[int, int]] = {}     # batch -> its byte range, until committed
        # the mean record length: of the records after the head, until batches are committed
        self.sample = reader.record_size(1024)
        self._hand_over(slot)
        self.threads = [threading.Thread(target=self._work, name=f"kzfilter-split-{k}", daemon=True)
                        for k in range(n)]

    def _new_bounds(self) -> tuple[int, int]:
        """The next batch's byte range (its records start in [at, stop)), in the order batches
        start: about BATCH_FRAMES records of the mean length of those committed so far (the
        first records of a capture are often shorter: connection set-ups)."""
        frames = self.dispatch.frames_read
        mean = self.reader.position / frames if frames > HEAD_FRAMES else self.sample
        at = self.next_at
        stop = at + batch_bytes(mean)
        if stop >= self.reader.size:
            stop = _BIG                             # the last batch: to the end of the file
        self.next_at = stop
        return at, stop

    # -- scheduling (self.cond held) -----------------------------------------------------------
    def _hold(self) -> None:
        """Keep the pages of every slot in use (being read, or not yet applied) mapped."""
        starts = [self.start[s] for s in range(SLOTS) if s not in self.free]
        self.reader.hold_from(min(starts) if starts else None)

    def _finish_ready(self) -> bool:
        """Every shard has handed over its records of chunk next_finish."""
        parts = self.parts.get(self.next_finish)
        return parts is not None and all(p is not None for p in parts)

    def _pick(self) -> tuple[str, int] | None:
        """The next unit to run, or None when none is ready."""
        if self._finish_ready():
            # first: it hands a chunk on to the caller (who may then let reading go on) and
            # frees its records; finishes of successive chunks may run at once
            return ("finish", self.next_finish)
        redo = self.read.get(self.next_commit)
        can_read = False
        if redo is not None and redo != 0:
            if not self.serial and not self.spans and not self.releasing:
                return ("serial", self.next_commit)
        else:
            can_read = (not self.serial and not self.read_done and bool(self.free)
                        and (self.next_at < self.reader.size or self.next_read == 0)
                        and self.chunks_read - self.chunks_taken < CHUNKS_AHEAD)
        if can_read and not self.spans:
            return ("span", self.next_read)
        best = None
        for k, nxt in enumerate(self.next_for):
            if not self.busy[k] and nxt - self.base < len(self.filled):
                if best is None or nxt < self.next_for[best]:
                    best = k
        if best is not None:
            return ("apply", best)
        if can_read:
            return ("span", self.next_read)     # nothing else to do: read beside the reader
        return None

    def _all_done(self) -> bool:
        return self.chunks_total is not None and self.chunks_finished >= self.chunks_total

    def _committed(self, slot: int) -> None:
        """Batch next_commit (in ``slot``) is committed: hand it to the shards."""
        del self.slot_of[self.next_commit]
        self.read.pop(self.next_commit, None)
        self.bounds.pop(self.next_commit, None)
        self.next_commit += 1
        self._hand_over(slot)

    def _hand_over(self, slot: int) -> None:
        """The committed batch in ``slot`` goes to the shards, in capture order."""
        self.in_chunk += self.dispatch.frames_in(slot)
        last = bool(self.reader.exhausted)
        end_chunk = last or self.in_chunk >= self.chunk_frames
        if end_chunk:
            self.in_chunk = 0
            self.chunk_ends[self.chunks_read] = self.reader.position
            self.chunks_read += 1
        self.pending[slot] = len(self.tables)
        self.filled.append((slot, end_chunk, last))
        if last:
            self.read_done = True
            # batches read past the end of the reading (it stopped on damage) are dropped; the
            # slot of one still being read is freed by its reader
            for b, s in list(self.slot_of.items()):
                del self.slot_of[b]
                self.bounds.pop(b, None)
                if self.read.pop(b, None) is not None:
                    self.free.append(s)
            self._hold()

    def _commit_ready(self) -> None:
        """Commit the read batches that follow the committed ones, in order."""
        while not self.read_done and self.read.get(self.next_commit) == 0:
            slot = self.slot_of[self.next_commit]
            taken = self.dispatch.commit(self.reader, slot)
            if taken != 1:
                self.read[self.next_commit] = 1 if taken == 2 else -1
                return
            self._committed(slot)

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
                    if kind == "span":
                        slot = self.free.pop(0)
                        self.next_read += 1
                        self.slot_of[arg] = slot
                        self.spans += 1
                        at, stop = self.bounds[arg] = self._new_bounds()
                        exact = arg == self.next_commit
                        if exact:
                            at = self.reader.position
                        self.start[slot] = at
                        self._hold()
                    elif kind == "serial":
                        self.serial = True
                        slot = self.slot_of[arg]
                        append = self.read[arg] == 1
                        stop = self.bounds[arg][1]
                        if not append:
                            self.start[slot] = self.reader.position
                            self._hold()
                    elif kind == "apply":
                        self.busy[arg] = True
                        slot, end_chunk, last = self.filled[self.next_for[arg] - self.base]
                    else:
                        self.next_finish += 1
                        parts = self.parts.pop(arg)
                if kind == "span":
                    self.dispatch.read_span(self.reader, slot, at, stop, exact)
                    with self.cond:
                        self.spans -= 1
                        if arg in self.slot_of:
                            self.read[arg] = 0
                            self._commit_ready()
                        else:                       # dropped meanwhile: the reading ended
                            self.free.append(slot)
                            self._hold()
                        self.cond.notify_all()
                        release = not (self.releasing or self.serial)
                        self.releasing = release
                    if release:
                        # Unmapping the pages behind the reading is the kernel's work (a tenth
                        # of reading): outside the lock, so that it holds up no other thread.
                        self.reader.release_behind()
                        with self.cond:
                            self.releasing = False
                            self.cond.notify_all()
                elif kind == "serial":
                    self.dispatch.fill(self.reader, slot, _BIG, None if stop == _BIG else stop,
                                       append)
                    with self.cond:
                        self.serial = False
                        self._committed(slot)
                        self._commit_ready()
                        self.cond.notify_all()
                elif kind == "apply":
                    self._apply(arg, slot, end_chunk, last)
                else:
                    out = self.finish(parts)
                    with self.cond:
                        for part in parts:          # merged: their buffers serve again
                            part.clear()
                            self.spares.append(part)
                        self.finished[arg] = out
                        self.chunks_finished += 1
                        self.cond.notify_all()
                        self.ready.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with self.cond:
                if self.error is None:
                    self.error = exc
                self.stopping = True
                self.cond.notify_all()
                self.ready.notify_all()

    def _apply(self, k: int, slot: int, end_chunk: bool, last: bool) -> None:
        table = self.tables[k]
        table.process_dispatched(self.dispatch, slot)
        if last:
            table.flush()
        records = None
        if end_chunk:
            with self.cond:
                spare = self.spares.pop() if self.spares else _table.RecordChunk()
            records = table.swap_records(spare)
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
                self.taken_position = self.chunk_ends.pop(c)
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

    run = None
    try:
        tables = [_table.FlowTable(capture_name=path, shard_count=workers, shard_index=k,
                                   **flow_options) for k in range(workers)]
        buffers = BufferPool(2 * (CHUNKS_AHEAD + 1))

        def finish(parts: list[Any]) -> RecordBatch | None:
            merged = RecordBatch.merge_chunks(parts, buffers)
            return apply_verdicts(clf, merged, match_client_ip) if len(merged) else None

        run = _Run(reader, tables, chunk_frames, finish)
        last = 0
        for batch in run.chunks():
            if progress is not None:
                # where the records handed over end (reading runs ahead of them)
                done = run.taken_position
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
