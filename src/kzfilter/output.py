"""Streaming writers for flow records: JSONL, CSV, a terminal table, and Parquet.

Every writer takes record batches as they finish, so memory stays flat however large the capture.
Field names and order are the record schema (``kzfilter.flow.records.RECORD_FIELDS``).
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from typing import IO, Any

from .flow.records import FIELD_NAMES, RecordBatch

__all__ = ["RECORD_SCHEMA_VERSION", "open_writer", "Summary", "FORMATS"]

# Bumped when a field changes meaning or type (adding fields keeps the version). Written into
# Parquet metadata as ``kzfilter.schema_version``.
RECORD_SCHEMA_VERSION = "1"
FORMATS = ("jsonl", "csv", "table", "parquet")


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


class _ParquetWriter:
    """One row group per batch, schema version in the file metadata."""

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self._pq = pq
        self.path = path
        self.writer: Any = None

    def write(self, batch: RecordBatch) -> None:
        table = batch.to_arrow()
        if self.writer is None:
            meta = dict(table.schema.metadata or {})
            meta[b"kzfilter.schema_version"] = RECORD_SCHEMA_VERSION.encode()
            self.schema = table.schema.with_metadata(meta)
            self.writer = self._pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        if self.writer is None:  # no flow at all: still write a valid, empty file with the schema
            self.write(RecordBatch())
        self.writer.close()


def open_writer(fmt: str, fh: IO[str] | None = None, path: str | None = None) -> Any:
    """A writer with ``write(batch)`` and ``close()`` for ``fmt`` (one of ``FORMATS``)."""
    if fmt == "parquet":
        if path is None:
            raise ValueError("the parquet format needs an output path (--output)")
        return _ParquetWriter(path)
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
