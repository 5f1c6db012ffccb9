"""Capture files: open a pcap / pcapng (plain, gzip or zstd) and sniff what a file is.

The reader itself is compiled (``_capture.pyx``); this module is the thin public face.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Union

from kzfilter.errors import CaptureError
from kzfilter.packet._capture import CaptureReader

__all__ = ["CaptureReader", "CaptureError", "open_capture", "sniff", "COUNTER_KEYS"]

Source = Union[str, "os.PathLike[str]", BinaryIO]

#: Keys always present in ``CaptureReader.counters``.
COUNTER_KEYS = (
    "frames", "bytes", "wire_bytes", "truncated_records", "bad_records", "skipped_blocks",
    "unknown_interface", "over_snaplen", "error", "format", "compression", "bytes_read",
    "file_size",
)

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_PCAP = {
    b"\xd4\xc3\xb2\xa1": "pcap", b"\xa1\xb2\xc3\xd4": "pcap",
    b"\x4d\x3c\xb2\xa1": "pcap-ns", b"\xa1\xb2\x3c\x4d": "pcap-ns",
}
_PCAPNG = b"\x0a\x0d\x0d\x0a"


def open_capture(source: Source) -> CaptureReader:
    """Open a capture for reading.

    Parameters: ``source`` is a path or a binary file object (pcap, pcapng; gzip or zstd
    compressed files are recognised by their magic, not their name).
    Returns: a ``CaptureReader`` (a context manager; iterate it or call ``fill()`` from Cython).
    Raises: ``CaptureError`` when the file is not a capture.

    >>> with open_capture("trace.pcap.gz") as r:     # doctest: +SKIP
    ...     n = r.drain()
    """
    return CaptureReader(source)


def sniff(head: bytes) -> tuple[str | None, str | None]:
    """Return ``(format, compression)`` guessed from the first bytes of a file.

    ``format`` is ``"pcap"``, ``"pcap-ns"``, ``"pcapng"`` or None (unknown, or compressed: the
    format is then only known after decompression); ``compression`` is None, ``"gzip"`` or ``"zstd"``.
    """
    if head[:2] == _GZIP:
        return None, "gzip"
    if head[:4] == _ZSTD:
        return None, "zstd"
    if head[:4] in _PCAP:
        return _PCAP[head[:4]], None
    if head[:4] == _PCAPNG:
        return "pcapng", None
    return None, None
