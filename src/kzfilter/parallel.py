"""Classification over several cores of one machine (``clf.classify(paths, workers=N)``).

Two ways to split the work, chosen by the number of captures:

* **Many files** (at least as many captures as workers): one file per task, file ``i`` to worker
  process ``i % N``.  The parent reads the workers' streams in input order, so records come out
  capture by capture exactly as with one worker.
* **Few files** (one huge capture, or fewer captures than workers): each capture is split by the
  *symmetric* flow hash, so each shard owns whole flows, both directions
  (``FlowTable(shard_count=N, shard_index=k)``).  By default (:mod:`kzfilter.threaded`) the
  capture is mapped and read once in this process, and N threads share reading it and tracking
  the N shards, in C without the GIL.  A capture that cannot be mapped (compressed, a pipe), or
  ``split="processes"`` / ``KZFILTER_SPLIT=processes``, goes to N processes that each read the
  capture whole and keep their shard.  Either way every shard sees the frames of other shards
  drive its clock and their DNS responses feed its DNS-answer table, so a shard's records are
  exactly the one-worker records of its flows; shards hand over their records at the same chunks
  of frames (``classify.CHUNK_FRAMES``) and the N records of chunk ``c`` are merged on
  (``emitted_ns``, ``flow_id``), the order one worker produces.  Streaming: a few chunks are in
  flight at most.

Records are the same as with one worker, in the same order, for any N, **provided no flow is
evicted**: ``max_flows`` is a per-worker cap, so with eviction (a table full of flows) which flow is
evicted, and hence the records, can depend on N.

The compiled rule set reaches each worker once, never once per task: threads use it in place; a
forked worker process (the default where ``fork`` exists) starts with the parent's classifier in
its memory, its arrays shared copy-on-write; a spawned worker loads a ``.kzr`` file that the
parent saves once.  (Saving and loading 355k rules took 0.4 s of every run before.)  Verdicts are
applied in the worker processes, or in the caller's thread for the flow-table threads.
Progress: workers add the capture bytes they read to a shared counter (in the sharded mode only
shard 0 counts, so the total is the captures' size once); the parent reports the increments to the
``progress`` callback while it waits.
"""
from __future__ import annotations

import gc
import os
import queue as queue_mod
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .flow.buffers import BufferPool
from .flow.records import RecordBatch

if TYPE_CHECKING:
    from .classify import Classification

__all__ = ["parallel_batches", "shard_batches", "merge_sorted"]

# Messages a worker can have queued before it waits for the parent: bounds memory.
QUEUE_DEPTH = 4
# Seconds between two looks at the progress counter and the workers' health while waiting.
POLL_S = 0.2


# ---------------------------------------------------------------------------------------------
# Record batch helpers
# ---------------------------------------------------------------------------------------------

def merge_sorted(batches: Sequence[RecordBatch], pool: BufferPool | None = None) -> RecordBatch:
    """Merge batches each sorted on (emitted_ns, flow_id) into one batch sorted on that key
    (``pool`` supplies the merged array)."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return RecordBatch()
    if len(batches) == 1:
        return batches[0]
    return RecordBatch.merge(batches, pool)


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------

def shard_batches(clf: Any, path: str, shard_count: int = 1, shard_index: int = 0, *,
                  match_client_ip: bool = False, flow_options: dict[str, Any] | None = None,
                  chunk_frames: int | None = None, counters: dict[str, Any] | None = None,
                  progress: Callable[[int], None] | None = None) -> Iterator[RecordBatch | None]:
    """The records (with verdicts) of one shard of one capture, one item per chunk of frames:
    a batch sorted on (emitted_ns, flow_id), or None for a chunk that finished no flow of the shard.

    Every shard yields the same number of items (they read the same frames), which is what lets
    the parent merge chunk by chunk.  ``counters`` receives the reader's and table's counters.
    """
    from .classify import classify_file

    return classify_file(clf, path, match_client_ip, flow_options or {}, progress, counters,
                         shard_count=shard_count, shard_index=shard_index,
                         chunk_frames=chunk_frames, keep_empty=True)


def _worker(jobs: list[tuple[int, str, int, int]], rules: Any, match_client_ip: bool,
            flow_options: dict[str, Any], chunk_frames: int, out: Any, progress: Any,
            report_progress: bool) -> None:
    """Run ``jobs`` (file index, path, shard_count, shard_index) and put messages on ``out``:
    ``("chunk", file, batch or None)`` per chunk of frames, ``("end", file, counters)`` per job,
    ``("error", file, exception)`` on failure (then stop)."""
    from .match.classifier import Classifier

    def add(n: int) -> None:
        with progress.get_lock():
            progress.value += n

    file_idx = -1
    try:
        # forked: the parent's classifier itself (shared copy-on-write); spawned: the saved .kzr,
        # loaded once per worker, not once per task
        clf = rules if isinstance(rules, Classifier) else Classifier.load(rules)
        for file_idx, path, shard_count, shard_index in jobs:
            counters: dict[str, Any] = {}
            for batch in shard_batches(clf, path, shard_count, shard_index,
                                       match_client_ip=match_client_ip, flow_options=flow_options,
                                       chunk_frames=chunk_frames, counters=counters,
                                       progress=add if report_progress else None):
                out.put(("chunk", file_idx, batch))
            out.put(("end", file_idx, counters))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        try:
            import pickle

            pickle.dumps(exc)
            err: BaseException = exc
        except Exception:  # an exception that does not pickle: send its text
            err = RuntimeError(f"{type(exc).__name__}: {exc}")
        out.put(("error", file_idx, err))


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------

def _context() -> Any:
    """``fork`` where it exists (fast start, nothing to re-import); ``KZFILTER_MP_START`` overrides."""
    # Imported here: multiprocessing costs ~8 ms to import, and the threads that split one
    # capture (the default for fewer captures than workers) never need it.
    import multiprocessing as mp

    method = os.environ.get("KZFILTER_MP_START")
    if not method:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method)


class _Pool:
    """The worker processes of one run, their queues, and the shared progress counter."""

    def __init__(self, ctx: Any, plans: list[list[tuple[int, str, int, int]]], rules: Any,
                 result: "Classification", chunk_frames: int, progress_from: set[int]) -> None:
        self.progress_value = ctx.Value("q", 0)
        self.queues = [ctx.Queue(maxsize=QUEUE_DEPTH) for _ in plans]
        self.procs = []
        flow_options = dict(result.flow_options)
        for k, jobs in enumerate(plans):
            p = ctx.Process(target=_worker, name=f"kzfilter-worker-{k}", daemon=True,
                            args=(jobs, rules, result.match_client_ip, flow_options, chunk_frames,
                                  self.queues[k], self.progress_value, k in progress_from))
            p.start()
            self.procs.append(p)
        self.progress = result.progress
        self.reported = 0

    def _tick(self) -> None:
        if self.progress is not None:
            done = self.progress_value.value
            if done > self.reported:
                self.progress(done - self.reported)
                self.reported = done

    def get(self, k: int) -> tuple[str, int, Any]:
        """The next message of worker k; raises its error, or RuntimeError if it died."""
        q, proc = self.queues[k], self.procs[k]
        while True:
            try:
                msg = q.get(timeout=POLL_S)
            except queue_mod.Empty:
                self._tick()
                if not proc.is_alive():
                    try:                 # a last message may have arrived as it exited
                        msg = q.get(timeout=POLL_S)
                    except queue_mod.Empty:
                        raise RuntimeError(f"kzfilter worker {k} died (exit code {proc.exitcode})") from None
                else:
                    continue
            self._tick()
            if msg[0] == "error":
                raise msg[2]
            return msg

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=5)
        for q in self.queues:
            q.close()
            q.cancel_join_thread()
        self._tick()


def _merge_file_counters(total: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    from .classify import _merge_counters

    # Every shard read the same capture: its reader counters once; flow-table counters add up.
    one = {"capture": parts[0]["capture"], "flows": {}}
    for part in parts:
        _merge_counters(one["flows"], part["flows"])
    _merge_counters(total, one)


def parallel_batches(result: "Classification", workers: int, shard: bool | None = None,
                     split: str | None = None) -> Iterator[RecordBatch]:
    """Yield the batches of ``result`` (a Classification) computed by ``workers`` processes.

    Same records and order as ``workers=1`` (see the module docstring); sets ``result.counters``.
    ``shard`` forces (True) or forbids (False) splitting each capture by flow; None (default):
    split only when there are fewer captures than workers.  ``split`` says how a capture is
    split by flow: "threads" (default; ``KZFILTER_SPLIT`` overrides) reads it once in this process
    for N flow-table threads (kzfilter.threaded), "processes" has N processes read it whole.
    """
    from . import classify

    if workers < 1:
        raise ValueError("workers must be >= 1")
    paths = [str(p) for p in result.paths]
    for p in paths:                      # fail early and clearly, before any process starts
        if not os.path.exists(p):
            raise FileNotFoundError(f"no such capture: {p}")
    chunk_frames = int(classify.CHUNK_FRAMES)
    sharded = len(paths) < workers if shard is None else bool(shard)
    split = split or os.environ.get("KZFILTER_SPLIT") or "threads"
    if split not in ("threads", "processes"):
        raise ValueError(f"split must be 'threads' or 'processes', not {split!r}")
    if sharded and split == "threads":
        # One capture read once, its flows tracked by N threads (kzfilter.threaded); a capture
        # that cannot be mapped (compressed) falls back to the processes below.
        yield from _threaded_files(result, paths, workers, chunk_frames)
        return
    if sharded:
        for p in paths:
            if not os.path.isfile(p):
                raise ValueError(f"{p}: not a regular file: a capture split over processes is read "
                                 f"by each of them (use split='threads' or workers=1)")
        plans = [[(i, p, workers, k) for i, p in enumerate(paths)] for k in range(workers)]
        progress_from = {0}
    else:
        workers = min(workers, len(paths))
        plans = [[(i, p, 1, 0) for i, p in enumerate(paths) if i % workers == k] for k in range(workers)]
        progress_from = set(range(workers))
    ctx = _context()
    tmp = None
    rules: Any = result.clf      # a forked worker starts with the parent's memory: nothing to send
    if ctx.get_start_method() != "fork":
        tmp = tempfile.mkdtemp(prefix="kzfilter-")
        rules = os.path.join(tmp, "rules.kzr")
        result.clf.save(rules)   # saved once, loaded once per worker
    result.counters = {}
    gc.freeze()   # forked workers: the parent's objects (the rule set) are not traversed by their
    try:          # collector, which would touch, hence copy, every page that holds one
        pool = _Pool(ctx, plans, rules, result, chunk_frames, progress_from)
    finally:
        gc.unfreeze()
    try:
        for i in range(len(paths)):
            if sharded:
                yield from _sharded_file(pool, i, result.counters)
            else:
                k = i % workers
                while True:
                    kind, idx, payload = pool.get(k)
                    if idx != i:
                        raise RuntimeError(f"kzfilter worker {k}: message for file {idx}, expected {i}")
                    if kind == "end":
                        _merge_file_counters(result.counters, [payload])
                        break
                    if payload is not None:
                        yield payload
    finally:
        pool.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _threaded_files(result: "Classification", paths: list[str], workers: int,
                    chunk_frames: int) -> Iterator[RecordBatch]:
    """Each capture over ``workers`` flow-table threads; a compressed capture (not mapped) over
    ``workers`` processes that each read it whole; a pipe (it can be read only once) by one
    reader in this process, not split."""
    from .classify import Classification, _merge_counters
    from .threaded import threaded_file

    result.counters = {}
    for path in paths:
        counters: dict[str, Any] = {}
        batches = threaded_file(result.clf, path, workers, result.match_client_ip,
                                dict(result.flow_options), result.progress, counters, chunk_frames)
        if batches is not None:
            yield from batches
            _merge_counters(result.counters, counters)
            continue
        one = Classification(result.clf, path, match_client_ip=result.match_client_ip,
                             workers=1, progress=result.progress, **result.flow_options)
        if os.path.isfile(path):
            yield from parallel_batches(one, workers, shard=True, split="processes")
        else:
            yield from one.batches()
        _merge_counters(result.counters, one.counters)


def _sharded_file(pool: _Pool, i: int, counters: dict[str, Any]) -> Iterator[RecordBatch]:
    """One capture read by every worker, each keeping its shard: merge chunk by chunk."""
    n = len(pool.procs)
    buffers = BufferPool()
    while True:
        msgs = [pool.get(k) for k in range(n)]
        kinds = {m[0] for m in msgs}
        if any(m[1] != i for m in msgs) or len(kinds) != 1:
            raise RuntimeError(f"kzfilter workers out of step on file {i}: {[m[:2] for m in msgs]}")
        if kinds == {"end"}:
            _merge_file_counters(counters, [m[2] for m in msgs])
            return
        merged = merge_sorted([m[2] for m in msgs if m[2] is not None], buffers)
        if len(merged):
            yield merged
