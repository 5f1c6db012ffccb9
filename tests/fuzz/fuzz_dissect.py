"""Fuzz the packet dissector (every supported link type) and the per-packet path of the flow table.

Input: one byte choosing the link type, then the frame.  Contract checked: ``dissect_frame``
returns a known status; on STATUS_OK the ports/protocol are in range and the payload is a slice of
the frame (offset + length inside it); the flow table takes the same frame without error and counts
it exactly once (attributed, or in one skip counter).
"""
from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.flow._table import FlowTable
    from kzfilter.packet import _dissect

LINKTYPES = sorted(_dissect.SUPPORTED_LINKTYPES) + [147, 0xFFFF]   # + unsupported ones
SKIPS = ("skipped_truncated", "skipped_malformed", "skipped_unsupported_link", "skipped_fragment",
         "skipped_not_ip", "skipped_other")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    lt = LINKTYPES[data[0] % len(LINKTYPES)]
    frame = data[1:]
    status, fields = _dissect.dissect_frame(frame, lt)
    assert status in _dissect.STATUS_NAMES, status
    if status == _dissect.DS_OK:
        assert fields is not None
        assert fields["ip_version"] in (4, 6)
        assert 0 <= fields["sport"] <= 0xFFFF and 0 <= fields["dport"] <= 0xFFFF
        off, ln = fields["payload_offset"], fields["payload_len"]
        assert 0 <= off and off + ln <= len(frame), (off, ln, len(frame))
        assert fields["payload"] == frame[off:off + ln]
        assert fields["payload_wire_len"] >= 0
    table = FlowTable(max_flows=4)
    table.process_frame(1_000_000_000, frame, lt, None)
    table.process_frame(2_000_000_000, frame, lt, len(frame) + 10)
    c = table.counters
    assert c["packets"] == 2
    assert c["packets_attributed"] + sum(c[k] for k in SKIPS) == 2, c
    table.flush()
    list(table.take_records())


def seeds() -> list[bytes]:
    out = []
    for lt, frame in _common.all_frames():
        if lt in LINKTYPES:
            out.append(bytes([LINKTYPES.index(lt)]) + frame)
    return list(dict.fromkeys(out))[:3000]


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=4096)
