"""Fuzz the capture reader (pcap, pcap-ns, pcapng; plain bytes) alone and through the flow table.

Contract checked: a hostile file gives frames and counters or a CaptureError, never another
exception, a hang or a memory error; the frames the reader yields are the frames the flow table
counts; every frame's captured length is at most its wire length or counted in ``over_snaplen``.
"""
from __future__ import annotations

import io
import sys

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.errors import CaptureError
    from kzfilter.flow._table import FlowTable
    from kzfilter.packet._capture import CaptureReader


def read_all(data: bytes) -> tuple[int, dict] | None:
    try:
        reader = CaptureReader(io.BytesIO(data))
    except CaptureError:
        return None
    n = 0
    try:
        for _ts, _lt, frame, wirelen in reader:
            assert len(frame) <= 262144, len(frame)
            n += 1
    except CaptureError:
        pass
    counters = dict(reader.counters)
    reader.close()
    assert counters["frames"] == n, (counters, n)
    return n, counters


def TestOneInput(data: bytes) -> None:
    got = read_all(data)
    if got is None:
        return
    n, _ = got
    reader = CaptureReader(io.BytesIO(data))
    table = FlowTable(max_flows=64)
    try:
        total = table.process_reader(reader)
    except CaptureError:
        return
    finally:
        reader.close()
    assert total == n, (total, n)
    table.flush()
    batch = table.take_records()
    c = table.counters
    assert c["packets"] == n, (c, n)
    arr = batch.array
    assert int(arr["packets_c2s"].sum() + arr["packets_s2c"].sum()) == c["packets_attributed"]
    list(batch)     # every record converts to Python objects (names decode with errors=replace)


def seeds() -> list[bytes]:
    return [p.read_bytes() for p in _common.capture_files()]


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=65536)
