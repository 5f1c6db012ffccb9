"""Fuzz the TLS ClientHello parser (records and bare handshake) and its split-point consistency.

Contract checked: the status is one of NS_*; NS_FOUND gives a non-empty name no longer than the
input; a prefix of a message never yields a *different* name than the whole message (the flow
table parses growing prefixes and must not commit to a wrong name early).
"""
from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.packet import _hostnames as H

STATUSES = (H.NS_FOUND, H.NS_NEED_MORE, H.NS_NOT_PROTO, H.NS_NO_NAME, H.NS_MALFORMED)


def check(data: bytes, is_records: bool) -> None:
    st, info = H.parse_client_hello(data, is_records)
    assert st in STATUSES, st
    if st == H.NS_FOUND:
        assert info["name"], info
        assert len(info["name"]) <= len(data)
        # A cut inside the message: never a different name (NEED_MORE, or the same name).
        cut = len(data) // 2
        st2, info2 = H.parse_client_hello(data[:cut], is_records)
        assert st2 in STATUSES
        if st2 == H.NS_FOUND:
            assert info2["name"] == info["name"], (info, info2)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    is_records = not (data[0] & 1)
    payload = data[1:]
    check(payload, is_records)
    check(memoryview(bytearray(payload)), is_records)


def seeds() -> list[bytes]:
    out = []
    for s in _common.payload_seeds("tls"):
        out.append(b"\x00" + s)
        if len(s) > 5:
            out.append(b"\x01" + s[5:])     # the handshake without its record header (QUIC)
    return out


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=8192)
