"""Fuzz every rule loader (citizenlab, hosts, domains, adblock, netset, zeek-intel, detection).

Input byte 0 picks the format (or detection) and strict/lenient mode; the rest is the file.

Contract checked: strict mode either loads or raises RuleSyntaxError whose message starts with the
file name and, for a line error, ``name:LINE:`` with LINE inside the file; lenient mode never raises
for a line problem, and ``rules + skipped`` never exceeds the data lines; no other exception type.
Every loaded rule compiles into a Classifier (nothing half-loads: a rule the loader accepts is one
the matcher accepts).
"""
from __future__ import annotations

import io
import re

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.errors import RuleSyntaxError
    from kzfilter.rules.loaders import FORMATS, load_rules

CHOICES = (None,) + tuple(FORMATS)
NAME = "fuzz.list"
LINE_RE = re.compile(r"^fuzz\.list:(\d+): ")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    fmt = CHOICES[(data[0] >> 1) % len(CHOICES)]
    strict = not (data[0] & 1)
    body = data[1:]
    stream = io.BytesIO(body)
    stream.name = NAME
    n_lines = body.count(b"\n") + 1
    try:
        rs = load_rules(stream, format=fmt, strict=strict)
    except RuleSyntaxError as exc:
        msg = str(exc)
        assert NAME in msg, msg
        m = LINE_RE.match(msg)
        if m:
            assert 1 <= int(m.group(1)) <= n_lines + 1, (msg, n_lines)
        return
    assert len(rs) <= max(n_lines, 1) * 64, (len(rs), n_lines)   # hosts lines may hold many names
    for rule in rs:
        assert 1 <= rule.line <= n_lines, (rule.line, n_lines)
    if len(rs):
        rs.compile()


def seeds() -> list[bytes]:
    out = []
    for s in _common.rule_seeds():
        for k in range(len(CHOICES)):
            out.append(bytes([k << 1]) + s)
    return out


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=4096)
