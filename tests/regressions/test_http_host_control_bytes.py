"""Regression: the HTTP Host parser returns values with bare CR, NUL and other control bytes.

Found by fuzz_http.py (coverage-guided run, 2026-11-28; the first crash input is
tests/regressions/data/http_host_bare_cr.bin).  ``http_host`` (src/kzfilter/packet/_hostnames.pyx,
the header loop after "Header lines (RFC 9112 5)") splits lines at LF only and trims spaces and
tabs at both ends of the field value, but never looks inside it: ``Host: a.example<CR>X`` gives the
name ``b"a.example\\rX"``, and ``Host: a.example<NUL>evil.com`` gives a name with a NUL.  RFC 9110
5.5: a field value containing CR, LF or NUL is invalid and must be rejected (or those bytes
replaced by SP); RFC 9112 2.2: a bare CR is invalid.  The flow record then carries a "name" with
control bytes (``name_source="http"``), which the classifier refuses as a host name, so the flow
gets no verdict.  Expected: NS_MALFORMED for a Host value holding any control byte other than HTAB.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kzfilter.packet import _hostnames as H

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("value", [b"a.example\rX", b"a.example\x00evil.com", b"a.exa\x01mple",
                                   b"a.example\x7f"])
def test_host_value_with_control_bytes_is_malformed(value):
    status, name = H.parse_http_host(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")
    assert status == H.NS_MALFORMED, (status, name)


def test_fuzzer_input_gives_no_name_with_control_bytes():
    data = (DATA / "http_host_bare_cr.bin").read_bytes()
    status, name = H.parse_http_host(data)
    if status == H.NS_FOUND:
        assert not any(b < 0x20 and b != 0x09 or b == 0x7F for b in name), name


def test_clean_host_still_found():
    assert H.parse_http_host(b"GET / HTTP/1.1\r\nHost:\t a.example \t\r\n\r\n") == (H.NS_FOUND, b"a.example")
