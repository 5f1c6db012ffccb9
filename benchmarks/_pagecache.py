"""Put benchmark captures in the page cache as a capture read from disk is.

A capture just written (``make_workloads.py``, ``gen_captures.py``) is cached in 4 KiB pages; read
from disk, Linux 6.x on ext4/xfs caches it in large folios that a mapping covers with one 2 MiB
entry each.  kzfilter maps captures: mapping and unmapping a 735 MB capture page by page was ~45%
of one worker's CPU time on the development VM (0.22 s against 0.13 s for the same run).  Users'
captures come from disk, so the benchmarks measure that state: each capture's cached pages are
dropped, then it is read once in order.
"""
from __future__ import annotations

import os

_DONE: set[str] = set()


def as_read_from_disk(paths: list[str], once: bool = False) -> None:
    """Drop the captures' cached pages and read each once in order (``once``: skip a path
    already prepared in this process)."""
    for p in map(str, paths):
        if once and p in _DONE:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)                                  # dirty pages cannot be dropped
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            while os.read(fd, 8 << 20):
                pass
        finally:
            os.close(fd)
        _DONE.add(p)
