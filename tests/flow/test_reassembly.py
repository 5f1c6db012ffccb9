"""Reassembly of the client's first bytes: the buffer against a plain-Python model, and names out
of ClientHellos / HTTP requests split at every byte offset, reordered, retransmitted, overlapped."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from kzfilter.flow._table import FlowTable, StreamBuffer
from tests.flow.frames import ACK, C4, PSH, S4, chrome_client_hello, handshake, http_request, tcp


class ModelStream:
    """Plain-Python model: bytes held by offset, first copy wins, bounded by limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[int, int] = {}

    def add(self, off: int, data: bytes) -> None:
        for i, b in enumerate(data):
            if off + i < self.limit:
                self.held.setdefault(off + i, b)

    def prefix(self) -> bytes:
        out = bytearray()
        while len(out) in self.held:
            out.append(self.held[len(out)])
        return bytes(out)

    def has_gap(self) -> bool:
        return bool(self.held) and max(self.held) >= len(self.prefix())


segments = st.lists(st.tuples(st.integers(0, 3000), st.binary(min_size=0, max_size=400)),
                    max_size=25)


@settings(max_examples=250, deadline=None)
@given(segments, st.sampled_from([64, 100, 2048, 2500, 16384]))
def test_buffer_matches_model(segs, limit):
    buf, model = StreamBuffer(limit), ModelStream(limit)
    for off, data in segs:
        before = len(model.prefix())
        grew = buf.add(off, data)
        model.add(off, data)
        assert grew == (len(model.prefix()) > before)
        assert buf.prefix() == model.prefix()
    assert buf.has_gap == model.has_gap()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_consistent_copies_in_any_order_give_the_stream(stream, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0] + cuts + [len(stream)]
    segs = [(a, stream[a:b]) for a, b in zip(bounds, bounds[1:])]
    # overlapping retransmissions of random ranges
    for _ in range(data.draw(st.integers(0, 5))):
        a = data.draw(st.integers(0, len(stream) - 1))
        b = data.draw(st.integers(a, len(stream)))
        segs.append((a, stream[a:b]))
    segs = data.draw(st.permutations(segs))
    buf = StreamBuffer(4096)
    for off, chunk in segs:
        buf.add(off, chunk)
    assert buf.prefix() == stream and not buf.has_gap


def test_limit_drops_are_counted():
    buf = StreamBuffer(100)
    buf.add(90, b"x" * 20)
    buf.add(200, b"y")
    assert buf.dropped == 2
    buf.add(0, b"a" * 90)
    assert buf.prefix() == b"a" * 90 + b"x" * 10


# -- through the table ---------------------------------------------------------------------------

def _name(segments, sp=443, **opts):
    """Run a handshake plus the client segments (offset, bytes) and return (name, reason)."""
    t = FlowTable(**opts)
    for ts, f in handshake(sp=sp):
        t.process_frame(ts, f)
    for i, (off, data) in enumerate(segments):
        t.process_frame(10_000 + i, tcp(C4, 40000, S4, sp, ACK | PSH, 1001 + off, 5001, data))
    t.flush()
    (r,) = list(t.take_records())
    return r.name, r.no_name_reason


def test_client_hello_split_at_every_offset():
    hello, sni = chrome_client_hello()
    want = (sni.decode(), None)
    for k in range(1, len(hello)):
        a, b = (0, hello[:k]), (k, hello[k:])
        assert _name([a, b]) == want, k
        assert _name([b, a]) == want, k
        assert _name([a, a, b, b]) == want, k
        assert _name([(0, hello[:k]), (max(0, k - 7), hello[max(0, k - 7):])]) == want, k


def test_client_hello_one_byte_at_a_time():
    hello, sni = chrome_client_hello()
    segs = [(i, hello[i:i + 1]) for i in range(len(hello))]
    assert _name(segs)[0] == sni.decode()
    assert _name(segs[::-1])[0] == sni.decode()
    random.Random(7).shuffle(segs)
    assert _name(segs + segs[:50])[0] == sni.decode()


def test_client_hello_prefixes_never_give_a_partial_name():
    hello, sni = chrome_client_hello()
    for k in range(1, len(hello)):
        name, why = _name([(0, hello[:k])])
        assert name is None and why == "truncated", k
        if k + 1 >= len(hello):
            continue
        # the rest arrives after a hole: still nothing
        name, why = _name([(0, hello[:k]), (k + 1, hello[k + 1:])])
        assert name is None and why == "reassembly-gap", k


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_client_hello_random_segmentation(data):
    hello, sni = chrome_client_hello()
    cuts = sorted(data.draw(st.lists(st.integers(1, len(hello) - 1), max_size=8, unique=True)))
    bounds = [0] + cuts + [len(hello)]
    segs = [(a, hello[a:b]) for a, b in zip(bounds, bounds[1:])]
    extra = data.draw(st.lists(st.tuples(st.integers(0, len(hello) - 1), st.integers(1, 300)),
                               max_size=4))
    segs += [(a, hello[a:a + n]) for a, n in extra]
    segs = data.draw(st.permutations(segs))
    assert _name(segs) == (sni.decode(), None)


def test_http_request_split_at_every_offset():
    req = http_request(b"split.example")
    for k in range(1, len(req)):
        assert _name([(k, req[k:]), (0, req[:k])], sp=80) == ("split.example", None), k


def test_retransmission_before_the_isn_is_clipped():
    hello, sni = chrome_client_hello()
    # A segment that starts 3 bytes before offset 0 (bogus), carrying junk there.
    t = FlowTable()
    for ts, f in handshake():
        t.process_frame(ts, f)
    t.process_frame(9000, tcp(C4, 40000, S4, 443, ACK, 1001 - 3, 5001, b"zzz" + hello))
    t.flush()
    assert next(iter(t.take_records())).name == sni.decode()


@pytest.mark.parametrize("limit", [64, 300])
def test_hello_longer_than_the_limit(limit):
    hello, _ = chrome_client_hello()
    assert _name([(0, hello[:200]), (200, hello[200:])], reasm_limit=limit) == (
        None, "reassembly-limit")
