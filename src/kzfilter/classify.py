"""The pipeline: captures -> flow records -> verdicts.

``Classifier.classify(paths)`` returns a :class:`Classification`: iterate it for records (streamed,
batch by batch, memory flat in capture size), or build a whole table with ``to_pandas()`` /
``to_arrow()``.  Verdicts are applied per batch with the batch APIs of the classifier, so the cost
per flow is a few numpy operations, not a Python call.

Verdict rule (documented in docs/rules.md, "Flows"): a name rule matching the flow's name decides;
else an address rule matching the server address; else, only with ``match_client_ip=True``, an
address rule matching the client address.  ``matched_on`` says which: "name", "ip", "client-ip".
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ._build_check import import_compiled
from .flow.buffers import BufferPool
from .flow.records import RecordBatch
from .flow.tracker import FlowTracker

if TYPE_CHECKING:
    from .match.classifier import Classifier

_capture = import_compiled("kzfilter.packet._capture")
_table = import_compiled("kzfilter.flow._table")

__all__ = ["Classification", "ClassifyingTracker", "apply_verdicts", "classify_paths"]

PathLike = str | os.PathLike[str]
# Frames processed between two hand-overs of finished records: bounds memory on huge captures.
CHUNK_FRAMES = 1 << 18


def _ips_as_rule_ids(clf: "Classifier", raw: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Batch address verdicts for (n, 16) raw addresses (IPv4 in the first 4 bytes)."""
    ids = np.full(len(raw), -1, dtype=np.int32)
    v4 = version == 4
    if v4.any():
        addrs = np.ascontiguousarray(raw[v4, :4]).view(">u4").ravel().astype(np.uint32)
        ids[v4] = clf.match_ips(addrs).rule_id
    v6 = version == 6
    if v6.any():
        ids[v6] = clf.match_ips(np.ascontiguousarray(raw[v6])).rule_id
    return ids


def apply_verdicts(clf: "Classifier", batch: RecordBatch, match_client_ip: bool = False) -> RecordBatch:
    """Fill the verdict columns (action, category, rule, lists, matched_on) of ``batch`` in place.

    The matching itself is three batch calls; the action, category and rule text columns are array
    takes from per-rule values the classifier builds once; Python work per matched flow is one
    memo look-up for its ``lists``.  A batch of unmatched flows costs a few numpy operations.
    """
    n = len(batch)
    if n == 0:
        return batch
    arr = batch.array
    buf, offsets = batch.names_packed()
    name_ids = clf.match_names_packed(buf, offsets).rule_id
    name_ids = np.where(arr["name_source_code"] != 0, name_ids, -1)
    server_ids = _ips_as_rule_ids(clf, arr["server_ip_raw"], arr["ip_version"])
    rule_id = np.where(name_ids >= 0, name_ids, server_ids)
    on_code = np.where(name_ids >= 0, 0, np.where(server_ids >= 0, 1, -1))
    if match_client_ip:
        client_ids = _ips_as_rule_ids(clf, arr["client_ip_raw"], arr["ip_version"])
        use_client = (rule_id < 0) & (client_ids >= 0)
        rule_id = np.where(use_client, client_ids, rule_id)
        on_code = np.where(use_client, 2, on_code)

    matched = np.flatnonzero(rule_id >= 0)
    if not len(matched):
        return batch
    ids, codes = rule_id[matched], on_code[matched]
    columns = [np.full(n, None, dtype=object) for _ in range(4)]    # action, category, rule, on
    for col, values in zip(columns, (*clf._verdict_columns(ids), _MATCHED_ON[codes])):
        col[matched] = values
    # Every list that matched, not only the winner's: one single-query answer per distinct query.
    lists = np.empty(n, dtype=object)
    lists.fill(())                       # one shared empty tuple for the unmatched flows
    for i, query, rid in zip(matched.tolist(), _queries(batch, buf, matched, codes), ids.tolist()):
        lists[i] = clf._flow_lists(query, rid)      # a tuple, shared by the flows of one query
    action, category, rule, on = columns
    batch.set_verdicts(action, category, rule, lists, on)
    return batch


def _queries(batch: RecordBatch, names: bytes, rows: np.ndarray, codes: np.ndarray) -> list[tuple[int, bytes]]:
    """What each matched flow matched on: ``(0, raw name)`` or ``(4 or 6, packed address)``."""
    arr = batch.array
    out: list[tuple[int, bytes]] = [(0, b"")] * len(rows)
    by_name = np.flatnonzero(codes == 0)
    starts = arr["name_off"][rows[by_name]].tolist()
    ends = (arr["name_off"][rows[by_name]] + arr["name_len"][rows[by_name]]).tolist()
    for j, a, b in zip(by_name.tolist(), starts, ends):
        out[j] = (0, names[a:b])
    for j in np.flatnonzero(codes != 0).tolist():
        i = int(rows[j])
        version = int(arr["ip_version"][i])
        raw = arr["server_ip_raw" if codes[j] == 1 else "client_ip_raw"][i]
        out[j] = (version, raw[:4].tobytes() if version == 4 else raw.tobytes())
    return out


_MATCHED_ON = np.array(["name", "ip", "client-ip"], dtype=object)


class Classification:
    """Flow records of one or more captures with their verdicts, produced on demand.

    Iterating streams :class:`~kzfilter.flow.records.FlowRecord` objects; ``batches()`` streams
    :class:`~kzfilter.flow.records.RecordBatch` objects; ``to_pandas()`` / ``to_arrow()`` build one
    table.  Each of these runs the captures again (deterministically), so memory stays flat unless
    you ask for a whole table.  ``counters`` holds the capture and flow-table counters of the last run.
    """

    def __init__(self, clf: "Classifier", paths: PathLike | Sequence[PathLike], *,
                 match_client_ip: bool = False, workers: int = 1,
                 progress: Callable[[int], None] | None = None, **flow_options: Any) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("classify needs at least one capture")
        self.clf = clf
        self.match_client_ip = match_client_ip
        self.workers = workers
        self.flow_options = flow_options
        self.progress = progress
        self.counters: dict[str, Any] = {}

    def batches(self) -> Iterator[RecordBatch]:
        """Yield record batches with verdicts, in a deterministic order (capture by capture)."""
        if self.workers > 1:
            from .parallel import parallel_batches

            yield from parallel_batches(self, self.workers)
            return
        self.counters = {}
        for path in self.paths:
            counters: dict[str, Any] = {}
            for batch in classify_file(self.clf, path, self.match_client_ip, self.flow_options,
                                       self.progress, counters):
                if batch is not None:
                    yield batch
            _merge_counters(self.counters, counters)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches():
            yield from batch

    def to_record_batch(self) -> RecordBatch:
        return RecordBatch.concat(self.batches())

    def to_pandas(self) -> Any:
        """All records as a pandas DataFrame (columns: the record schema)."""
        return self.to_record_batch().to_pandas()

    def to_arrow(self) -> Any:
        """All records as a pyarrow Table (columns: the record schema), built batch by batch."""
        import pyarrow as pa

        tables = [b.to_arrow() for b in self.batches()]
        if not tables:
            return RecordBatch().to_arrow()
        return pa.concat_tables(tables)


def _merge_counters(total: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            _merge_counters(total.setdefault(key, {}), value)
        elif value is not None:
            total.setdefault(key, [])
            if isinstance(total[key], list):
                # a list is already a total (one value per capture): extend, do not nest
                total[key].extend(value) if isinstance(value, list) else total[key].append(value)


def classify_file(clf: "Classifier", path: PathLike, match_client_ip: bool, flow_options: dict[str, Any],
                  progress: Callable[[int], None] | None = None, counters: dict[str, Any] | None = None,
                  *, shard_count: int = 1, shard_index: int = 0, chunk_frames: int | None = None,
                  keep_empty: bool = False) -> Iterator[RecordBatch | None]:
    """Yield batches with verdicts for one capture (or one flow-hash shard of it), a chunk of frames
    at a time.

    ``counters`` (if given) receives the capture reader's and the flow table's counters at the end.
    With ``keep_empty`` a chunk that finished no flow yields None, so that every shard of a capture
    yields the same number of items (what lets ``kzfilter.parallel`` merge shards chunk by chunk).
    """
    chunk = int(chunk_frames or CHUNK_FRAMES)
    reader = _capture.CaptureReader(str(path))
    table = _table.FlowTable(capture_name=str(path), shard_count=shard_count, shard_index=shard_index,
                             **flow_options)
    last = 0
    buffers = BufferPool()     # the record arrays of chunks the caller has dropped are reused
    try:
        while True:
            # process_reader returns the frames it read; fewer than asked means the capture ended.
            more = table.process_reader(reader, max_frames=chunk) == chunk
            if progress is not None:
                done = int(reader.counters.get("bytes_read", 0))
                progress(done - last)
                last = done
            if not more:
                table.flush()
            batch = table.take_records(buffers)
            if len(batch):
                yield apply_verdicts(clf, batch, match_client_ip)
            elif keep_empty:
                yield None
            if not more:
                break
    finally:
        if counters is not None:
            counters.update(capture=dict(reader.counters), flows=dict(table.counters))
        reader.close()


def classify_paths(clf: "Classifier", paths: PathLike | Sequence[PathLike], **kwargs: Any) -> Classification:
    """``clf.classify(...)``: see :class:`Classification`."""
    return Classification(clf, paths, **kwargs)


class ClassifyingTracker(FlowTracker):
    """A :class:`~kzfilter.flow.tracker.FlowTracker` whose records carry the classifier's verdicts.

    Feed it raw frames (``feed``) or dpkt packets (``feed_dpkt``); ``records()`` / ``close()`` return
    record batches with verdicts.
    """

    def __init__(self, clf: "Classifier", match_client_ip: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self._clf = clf
        self._match_client_ip = match_client_ip

    def records(self) -> RecordBatch:
        return apply_verdicts(self._clf, super().records(), self._match_client_ip)

    def flush(self) -> RecordBatch:
        return apply_verdicts(self._clf, super().flush(), self._match_client_ip)

    def close(self) -> RecordBatch:
        return apply_verdicts(self._clf, super().close(), self._match_client_ip)


def run_classify_cli(clf: "Classifier", args: Any, out: Any) -> int:
    """``kzfilter classify``: stream records to the chosen writer, progress on a terminal, summary."""
    import sys

    from .output import BINARY_FORMATS, Summary, open_writer

    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        total = sum(Path(p).stat().st_size for p in args.capture)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="kzfilter", file=sys.stderr)
    result = Classification(clf, args.capture, match_client_ip=args.match_client_ip,
                            workers=getattr(args, "workers", 1), progress=bar.update if bar else None)
    fh = None
    if args.format in BINARY_FORMATS:
        writer = open_writer(args.format, None, args.output, partition_by=getattr(args, "partition_by", None))
    else:
        if args.output:
            fh = open(args.output, "w", encoding="utf-8", newline="")
        writer = open_writer(args.format, fh if fh is not None else out)
    summary = Summary()
    try:
        for batch in result.batches():
            writer.write(batch)
            summary.add(batch)
    finally:
        writer.close()
        if fh is not None:
            fh.close()
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(summary.render(result.counters), file=sys.stderr)
    return 0
