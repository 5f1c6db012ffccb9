"""Fuzz TCP reassembly through the flow table: fuzzed segment sequences of one client stream.

The input picks a stream (a real ClientHello or HTTP request from the seeds, or fuzzed bytes), an
ISN (so sequence numbers wrap around 2**32), whether the SYN is seen, then segments: stream
offset, length, flags, retransmitted or altered copies, server ACKs in between.

Contract checked:
* never an exception or a memory error, whatever the segments;
* oracle: when the handshake is seen, every copy is consistent with the stream and the segments
  cover the stream's first bytes up to the end of its message, the flow's name is the name that
  ``parse_client_hello`` / ``parse_http_host`` find in the whole stream (first-copy-wins can then
  only produce the stream itself).
"""
from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.flow._table import FlowTable
    from kzfilter.packet import _hostnames as H

from tests.flow.frames import ACK, C4, PSH, S4, SYN, tcp  # noqa: E402

STREAMS: list[bytes] = []


def streams() -> list[bytes]:
    if not STREAMS:
        STREAMS.extend(_common.payload_seeds("tls", 20) + _common.payload_seeds("http", 10))
    return STREAMS


def reference_name(stream: bytes) -> bytes | None:
    if stream[:1] == b"\x16":
        st, info = H.parse_client_hello(stream, True)
        return info["name"] if st == H.NS_FOUND else None
    st, name = H.parse_http_host(stream)
    if st != H.NS_FOUND:
        return None
    # the record keeps the Host without its ":port" (flow/records.py); the parser returns it whole
    host, sep, port = name.rpartition(b":")
    return host if sep and port.isdigit() and not name.endswith(b"]") else name


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, len(streams()))
    stream = streams()[choice] if choice < len(streams()) else fdp.ConsumeBytes(
        fdp.ConsumeIntInRange(1, 3000))
    if not stream:
        return
    isn = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
    with_syn = fdp.ConsumeBool()
    limit = fdp.PickValueInList([64, 1500, 16384])
    table = FlowTable(reasm_limit=limit)
    t = 1_000_000_000
    frames = []
    if with_syn:
        frames += [tcp(C4, 40000, S4, 443, SYN, isn), tcp(S4, 443, C4, 40000, SYN | ACK, 7, isn + 1)]
    consistent = True
    covered = bytearray(len(stream))
    for _ in range(fdp.ConsumeIntInRange(0, 40)):
        off = fdp.ConsumeIntInRange(0, len(stream) + 64)
        ln = fdp.ConsumeIntInRange(0, 1500)
        chunk = stream[off:off + ln]
        if fdp.ConsumeIntInRange(0, 15) == 0:          # an altered retransmission
            chunk = fdp.ConsumeBytes(len(chunk)) or chunk
            consistent = consistent and chunk == stream[off:off + ln]
        for i in range(off, min(off + len(chunk), len(stream))):
            covered[i] = 1
        flags = ACK | (PSH if fdp.ConsumeBool() else 0)
        frames.append(tcp(C4, 40000, S4, 443, flags, isn + 1 + off, 8, chunk))
        if fdp.ConsumeIntInRange(0, 3) == 0:
            frames.append(tcp(S4, 443, C4, 40000, ACK, 8, isn + 1 + off))
    if not frames:
        return
    for frame in frames:
        table.process_frame(t, frame, 1, None)
        t += 1000
    table.flush()
    batch = table.take_records()
    assert len(batch) == 1, len(batch)
    name = batch.name_bytes(0)
    rec = batch[0]
    assert (name is None) == (rec.no_name_reason is not None), (name, rec.no_name_reason)
    expected = reference_name(stream)
    if with_syn and consistent and expected is not None and len(stream) <= limit and all(covered):
        assert name == expected, (name, expected, rec.no_name_reason)


def seeds() -> list[bytes]:
    import random

    rng = random.Random(7)
    out = []
    for k in range(len(streams())):
        for _ in range(3):
            out.append(bytes([k]) + bytes(rng.randrange(256) for _ in range(200)))
    return out


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=2048)
