"""Streaming writers for flow records: JSONL, CSV, a terminal table, Parquet and Arrow IPC.

Every writer takes record batches as they finish, so memory stays flat however large the capture.
Field names and order are the record schema (``kzfilter.flow.records.RECORD_FIELDS``).

Parquet writes one row group per batch; Arrow writes the Arrow IPC *file* format (Feather v2, read
it with ``pyarrow.feather.read_table`` or ``pyarrow.ipc.open_file``), one record batch per batch.
Both carry ``kzfilter.schema_version`` (:data:`RECORD_SCHEMA_VERSION`) in the schema metadata.

Partitioned output (``partition_by=("capture", "date")``, either or both): ``path`` is a directory
holding a Hive-style dataset, ``capture=<capture path, URI-encoded>/date=<YYYY-MM-DD>/part-0.parquet``
(``date``: UTC day of the flow's ``ts_start``).  As usual for Hive datasets, a partition column is
not repeated inside the files: ``pyarrow.dataset.dataset(path, partitioning="hive")`` (or
``pandas.read_parquet(path)``) gives it back from the directory names, URI-decoded.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from typing import IO, Any, Sequence
from urllib.parse import quote

from .flow.records import FIELD_NAMES, RecordBatch

__all__ = ["RECORD_SCHEMA_VERSION", "open_writer", "Summary", "FORMATS", "BINARY_FORMATS",
           "PARTITION_KEYS", "arrow_schema", "partition_values"]

# Bumped when a field changes meaning or type (adding fields keeps the version). Written into
# Parquet metadata as ``kzfilter.schema_version``.
RECORD_SCHEMA_VERSION = "1"
FORMATS = ("jsonl", "csv", "table", "parquet", "arrow")
# Formats written to a path (not a text stream).
BINARY_FORMATS = ("parquet", "arrow")
PARTITION_KEYS = ("capture", "date")
SCHEMA_VERSION_KEY = b"kzfilter.schema_version"


def _rows(batch: RecordBatch) -> Any:
    cols = batch.columns()
    values = [cols[name] for name in FIELD_NAMES]
    for row in zip(*values):
        yield [_plain(v) for v in row]


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class _JsonlWriter:
    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh

    def write(self, batch: RecordBatch) -> None:
        dumps = json.dumps
        self.fh.writelines(dumps(dict(zip(FIELD_NAMES, row)), ensure_ascii=False) + "\n" for row in _rows(batch))

    def close(self) -> None:
        self.fh.flush()


class _CsvWriter:
    """CSV with a header; ``lists`` joined with ``;``, None as an empty cell."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self.writer = csv.writer(fh, lineterminator="\n")
        self.writer.writerow(FIELD_NAMES)

    def write(self, batch: RecordBatch) -> None:
        for row in _rows(batch):
            self.writer.writerow(["" if v is None else ";".join(v) if isinstance(v, list) else v for v in row])

    def close(self) -> None:
        self.fh.flush()


class _TableWriter:
    """A fixed-width table for people: one line per flow, the fields that say what happened."""

    HEADER = f"{'start':<15} {'proto':<5} {'client':<41} {'server':<41} {'name':<40} {'source':<10} verdict"

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        fh.write(self.HEADER + "\n")

    def write(self, batch: RecordBatch) -> None:
        import datetime as dt

        for r in batch:
            when = dt.datetime.fromtimestamp(r.ts_start, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            client = f"{r.client_ip}:{r.client_port}" if r.client_port else r.client_ip
            server = f"{r.server_ip}:{r.server_port}" if r.server_port else r.server_ip
            name = r.name if r.name is not None else f"({r.no_name_reason})"
            if r.ech:
                name = f"{name} [ECH]"   # the real name is encrypted; this is the outer one
            verdict = "-"
            if r.action:
                verdict = f"{r.action.upper()} {r.category or ''} on {r.matched_on}".replace("  ", " ")
            self.fh.write(f"{when:<15} {r.transport:<5} {client:<41} {server:<41} {name[:40]:<40} "
                          f"{r.name_source or '-':<10} {verdict}\n")

    def close(self) -> None:
        self.fh.flush()


def arrow_schema(drop: Sequence[str] = ()) -> Any:
    """The pyarrow schema of the records (minus ``drop``) with the schema version in its metadata."""
    schema = RecordBatch().to_arrow().schema
    for name in drop:
        schema = schema.remove(schema.get_field_index(name))
    meta = dict(schema.metadata or {})
    meta[SCHEMA_VERSION_KEY] = RECORD_SCHEMA_VERSION.encode()
    return schema.with_metadata(meta)


class _FileWriter:
    """Parquet (one row group per write) or Arrow IPC file (one record batch per write) at ``path``."""

    def __init__(self, path: str, fmt: str, drop: Sequence[str] = ()) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = arrow_schema(drop)
        self.path = path
        if fmt == "parquet":
            self.writer: Any = pq.ParquetWriter(path, self.schema)
        else:
            self.sink = pa.OSFile(path, "wb")
            self.writer = pa.ipc.new_file(self.sink, self.schema)
        self.fmt = fmt

    def write_table(self, table: Any) -> None:
        if table.num_rows:
            self.writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        self.writer.close()
        if self.fmt == "arrow":
            self.sink.close()


class _ParquetWriter:
    """One file: Parquet or Arrow IPC, a row group / record batch per batch of finished flows.

    An empty result still writes a valid file with the schema."""

    def __init__(self, path: str, fmt: str = "parquet") -> None:
        self.file = _FileWriter(path, fmt)
        self.path = path

    def write(self, batch: RecordBatch) -> None:
        if len(batch):
            self.file.write_table(batch.to_arrow())

    def close(self) -> None:
        self.file.close()


def partition_values(batch: RecordBatch, key: str) -> list[str]:
    """The partition value of each record for ``key`` ("capture": its capture path; "date": the
    UTC day of ts_start, YYYY-MM-DD)."""
    if key == "capture":
        return [str(c) for c in batch.column("capture")]
    if key == "date":
        days = batch.array["ts_start_ns"].astype("datetime64[ns]").astype("datetime64[D]")
        return [str(d) for d in days]
    raise ValueError(f"unknown partition key {key!r} (expected {' and/or '.join(PARTITION_KEYS)})")


class _PartitionedWriter:
    """A Hive-style directory dataset, one open file per partition, rows routed batch by batch.

    ``part_name`` names the file in each partition directory (``part-0.parquet`` by default; the
    Dask writer gives each task its own name so tasks never share a file)."""

    def __init__(self, root: str, fmt: str, keys: Sequence[str], part_name: str | None = None) -> None:
        keys = tuple(keys)
        if not keys or len(set(keys)) != len(keys):
            raise ValueError("partition_by needs distinct keys among " + ", ".join(PARTITION_KEYS))
        for key in keys:
            if key not in PARTITION_KEYS:
                raise ValueError(f"unknown partition key {key!r} (expected {' and/or '.join(PARTITION_KEYS)})")
        self.root = root
        self.fmt = fmt
        self.keys = keys
        self.part_name = part_name or f"part-0.{fmt}"
        self.drop = [k for k in keys if k in FIELD_NAMES]
        self.files: dict[tuple[str, ...], _FileWriter] = {}
        os.makedirs(root, exist_ok=True)

    def write(self, batch: RecordBatch) -> None:
        import pyarrow as pa

        if not len(batch):
            return
        values = [partition_values(batch, k) for k in self.keys]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, key in enumerate(zip(*values)):
            groups.setdefault(key, []).append(i)
        table = batch.to_arrow().drop_columns(self.drop)
        for key, rows in groups.items():
            writer = self.files.get(key)
            if writer is None:
                sub = os.path.join(self.root, *(f"{k}={quote(v, safe='')}" for k, v in zip(self.keys, key)))
                os.makedirs(sub, exist_ok=True)
                writer = self.files[key] = _FileWriter(os.path.join(sub, self.part_name), self.fmt, self.drop)
            writer.write_table(table.take(pa.array(rows, type=pa.int64())))

    def close(self) -> None:
        for writer in self.files.values():
            writer.close()
        self.files.clear()


def open_writer(fmt: str, fh: IO[str] | None = None, path: str | None = None,
                partition_by: Sequence[str] | None = None, part_name: str | None = None) -> Any:
    """A writer with ``write(batch)`` and ``close()`` for ``fmt`` (one of ``FORMATS``).

    Parquet and Arrow need ``path`` (a file, or with ``partition_by`` a directory); the text formats
    need ``fh``.
    """
    if fmt in BINARY_FORMATS:
        if path is None:
            raise ValueError(f"the {fmt} format needs an output path (--output)")
        if partition_by:
            return _PartitionedWriter(path, fmt, partition_by, part_name)
        return _ParquetWriter(path, fmt)
    if partition_by:
        raise ValueError(f"partitioning needs the parquet or arrow format, not {fmt}")
    if fh is None:
        raise ValueError(f"the {fmt} format needs a text stream")
    writers = {"jsonl": _JsonlWriter, "csv": _CsvWriter, "table": _TableWriter}
    try:
        return writers[fmt](fh)
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r} (expected one of {', '.join(FORMATS)})") from None


class Summary:
    """Running totals for the end-of-run summary: flows, names found, verdicts by category."""

    def __init__(self) -> None:
        self.flows = 0
        self.named = 0
        self.by_source: Counter[str] = Counter()
        self.verdicts: Counter[tuple[str, str]] = Counter()

    def add(self, batch: RecordBatch) -> None:
        self.flows += len(batch)
        for source in batch.column("name_source"):
            if source is not None:
                self.named += 1
                self.by_source[source] += 1
        for action, category in zip(batch.column("action"), batch.column("category")):
            if action is not None:
                self.verdicts[(action, category or "-")] += 1

    def render(self, counters: dict[str, Any] | None = None) -> str:
        lines = [f"flows: {self.flows}, with a name: {self.named}"
                 + (f" ({', '.join(f'{k} {v}' for k, v in self.by_source.most_common())})" if self.named else "")]
        if self.verdicts:
            lines.append("verdicts: " + ", ".join(f"{a} {c}: {n}" for (a, c), n in sorted(self.verdicts.items())))
        else:
            lines.append("verdicts: no flow matched a rule")
        if counters:
            cap = counters.get("capture", {})
            flows = counters.get("flows", {})
            skipped = {k: v for k, v in flows.items() if k.startswith("skipped") and v}
            lines.append(f"packets: {flows.get('packets', cap.get('frames', 0))}"
                         + (f", skipped: {skipped}" if skipped else "")
                         + (f", flows evicted: {flows['flows_evicted']}" if flows.get("flows_evicted") else ""))
            errors = cap.get("error")
            if errors:
                lines.append(f"capture problems: {errors}")
        return "\n".join(lines)
