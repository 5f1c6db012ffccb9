"""Fuzz the DNS message parser (queries, responses, compression pointers, many records).

Contract checked: a known status; the name is at most 255 bytes of printable ASCII in dotted form;
at most 32 answers stored, the rest counted in ``dropped``; every stored answer is a valid IPv4
or IPv6 address text with a TTL in 0..2**32-1.
"""
from __future__ import annotations

import ipaddress

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.packet import _hostnames as H

STATUSES = (H.NS_FOUND, H.NS_NEED_MORE, H.NS_NOT_PROTO, H.NS_NO_NAME, H.NS_MALFORMED)


def TestOneInput(data: bytes) -> None:
    st, info = H.parse_dns(data)
    assert st in STATUSES, st
    if st == H.NS_FOUND:
        name = info["name"]
        assert 0 < len(name) <= 255, name
        assert info["qtype"] >= 0
    assert len(info["answers"]) <= 32
    assert info["dropped"] >= 0
    for addr, ttl in info["answers"]:
        ipaddress.ip_address(addr)
        assert 0 <= ttl < 2 ** 32


def seeds() -> list[bytes]:
    import struct
    # a response with 40 A answers using a compression pointer to the question
    q = b"\x07example\x03com\x00\x00\x01\x00\x01"
    ans = b"".join(b"\xc0\x0c\x00\x01\x00\x01" + struct.pack("!IH", 60, 4) + bytes([10, 0, 0, i])
                   for i in range(40))
    big = struct.pack("!HHHHHH", 1, 0x8180, 1, 40, 0, 0) + q + ans
    loop = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    return _common.payload_seeds("dns") + [big, loop]


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=4096)
