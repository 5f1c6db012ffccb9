"""Fuzz the HTTP/1.x Host parser.

Contract checked: a known status; NS_FOUND gives a name that occurs in the input and holds no
control byte but HTAB (RFC 9110 5.5: CR, LF, NUL make a field value invalid); a prefix of the
head never gives another name.
"""
from __future__ import annotations

import os

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.packet import _hostnames as H

# KZFILTER_FUZZ_KNOWN=http-ctl skips the check that found tests/regressions/
# test_http_host_control_bytes.py, so a long run can look for other bugs while that one is open.
KNOWN = set(os.environ.get("KZFILTER_FUZZ_KNOWN", "").split(","))
STATUSES = (H.NS_FOUND, H.NS_NEED_MORE, H.NS_NOT_PROTO, H.NS_NO_NAME, H.NS_MALFORMED)


def TestOneInput(data: bytes) -> None:
    st, name = H.parse_http_host(data)
    assert st in STATUSES, st
    if st == H.NS_FOUND:
        assert name and name in data, name
        if "http-ctl" not in KNOWN:
            assert not any(c < 0x20 and c != 0x09 or c == 0x7F for c in name), name
        for cut in (len(data) // 2, len(data) - 1):
            st2, name2 = H.parse_http_host(data[:cut])
            if st2 == H.NS_FOUND:
                assert name2 == name, (name, name2)


def seeds() -> list[bytes]:
    return _common.payload_seeds("http") + [
        b"GET / HTTP/1.1\r\nhost:   a.example\t\r\nX: y\r\n\r\n",
        b"POST /x HTTP/1.0\nHost: [2001:db8::1]:80\n\n",
    ]


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=20000)
