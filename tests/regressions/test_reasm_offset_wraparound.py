"""Regression: an offset near 2**64 in the reassembly buffer wraps ``off + n`` around.

Found by probing ``StreamBuffer.add`` with extreme offsets (robustness work, issue 4).
``_reasm_add`` (src/kzfilter/flow/_table.pyx, ``cdef uint64_t end = off + n``) computes the end
of the segment in 64 bits; for ``off = 2**64 - 2`` and 6 bytes it wraps to 4, so the bytes, which
lie far past ``limit``, are neither stored nor counted as dropped, and ``maxend`` becomes 4: the
buffer then reports a gap that does not exist.  No memory is touched out of bounds (the copy loop
starts at the truncated offset and runs zero times), and the TCP and QUIC paths cannot produce
such offsets (TCP offsets are 32-bit sequence differences, QUIC varints stop at 2**62), so only
the test-facing ``StreamBuffer`` is exposed.  Expected: bytes at or past ``limit`` are dropped and
counted, whatever the offset.
"""
from __future__ import annotations

import pytest

from kzfilter.flow._table import StreamBuffer


@pytest.mark.parametrize("offset", [2**64 - 2, 2**64 - 1, 2**64 - 6])
def test_offset_near_2_64_is_dropped_not_a_gap(offset):
    buf = StreamBuffer(100)
    assert buf.add(offset, b"abcdef") is False
    assert buf.prefix() == b""
    assert buf.has_gap is False          # nothing is held past the prefix
    assert buf.dropped == 1              # the bytes lie past the limit: dropped and counted
    assert buf.add(0, b"xyz") is True and buf.prefix() == b"xyz" and not buf.has_gap
