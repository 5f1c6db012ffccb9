"""Fuzz the compiled host-name matcher: fuzzed rule sets, hostile names from traffic.

The input is decoded into up to 12 rules (exact, domain, wildcard patterns made of short labels
over a small alphabet, so that names hit them; keywords over a small alphabet with an upper-case
letter and a character no host name has) and up to 16 names of raw bytes (any case, dots, ports,
white space, bytes >= 0x80, over-long labels).

Contract checked: for every name, ``match_packed`` walking names in lanes that switch at every
trie node, over a small hot top, and one at a time, and ``match_one``, give exactly the winner
and status of the plain-Python model (tests/reference/names_model.py).
"""
from __future__ import annotations

import atheris
import numpy as np

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.match import _automaton as A

from tests.reference.names_model import NamesModel  # noqa: E402

ALPHABET = b"ab-_x1"
KEYWORD_ALPHABET = b"ab.-xA/"  # upper case folds; '/' is in no host name, so such a keyword never hits
HOT_TOPS = (0, 48, 2**62)      # bytes of trie top walked without switching lanes


def _text(fdp: atheris.FuzzedDataProvider, alphabet: bytes, most: int) -> bytes:
    size = fdp.ConsumeIntInRange(1, most)
    return bytes(alphabet[b % len(alphabet)] for b in fdp.ConsumeBytes(size)) or alphabet[:1]


def _rules(fdp: atheris.FuzzedDataProvider) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    pats, kinds, prios = [], [], []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 3:
            pat = _text(fdp, KEYWORD_ALPHABET, 4)
        else:
            pat = b".".join(_text(fdp, ALPHABET, 4) for _ in range(fdp.ConsumeIntInRange(1, 3)))
        pats.append(pat)
        kinds.append(kind)
        prios.append(fdp.ConsumeIntInRange(0, 3))
    return pats, np.array(kinds, dtype=np.uint8), np.array(prios, dtype=np.uint64)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    pats, kinds, prios = _rules(fdp)
    names = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)) for _ in range(fdp.ConsumeIntInRange(1, 16))]
    auto = A.NameAutomaton(pats, kinds, prios)
    model = NamesModel(pats, kinds, prios)
    expect = [model.match_one(n) for n in names]
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(n) for n in names])
    buf = b"".join(names)
    for hot in HOT_TOPS:
        old = A._set_hot_bytes(hot)
        try:
            rule, status = auto.match_packed(buf, offsets)
        finally:
            A._set_hot_bytes(old)
        assert list(zip(rule.tolist(), status.tolist())) == expect, (hot, names)
    for name, want in zip(names, expect):
        assert auto.match_one(name) == want, name


def seeds() -> list[bytes]:
    # rule count, then per rule kind/length/bytes/priority, then names: start from readable cases
    return [b"\x03\x01\x02ab\x00\x02\x01x\x01\x03\x02ab\x00\x04WWW.AB.x:443 .ab\x05a.b.c",
            b"\x01\x00\x01a\x00\x02\x05a." + b"b" * 70 + b"\x03\xc3\xa9.a",
            bytes(range(256))]


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=4096)
