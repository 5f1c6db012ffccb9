"""Fuzz the QUIC Initial decryptor, the CRYPTO frame walk and CRYPTO reassembly.

Input byte 0 picks a mode:

0. raw datagram: ``initial_crypto_frames`` never raises; ``quic_reason`` is a known reason; the
   compiled parser (``kzfilter.packet._quic``) answers exactly as the Python model
   (tests/reference/quic_model.py).
1. fuzzed *plaintext* frames sealed as a real client Initial (RFC 9001 5, tools/gen_captures.py's
   independent implementation): the decryptor must open it (so the fuzzer reaches the frame walk:
   ACK ranges, CRYPTO offsets and lengths, thousands of frames), as the model does; the datagram
   then goes through a FlowTable as one UDP flow to port 443, twice, together with its coalesced copy.
2. CRYPTO reassembly: consistent slices of one stream, in fuzzed order with duplicates, must give
   back the stream (cut at MAX_CRYPTO_BYTES), and the ClientHello parse of it must not raise.
3. the compiled parsers without the ciphers, on raw bytes: ``walk_frames`` (both CRYPTO frame
   types) against the model's walk, and ``packet_header`` at the start and at a fuzzed offset.
   The Cython module has no coverage feedback (see _common), so this mode feeds it directly.
"""
from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports(include=["kzfilter"]):
    from kzfilter.flow._table import FlowTable
    from kzfilter.packet import _quic, quic
    from tests.reference import quic_model

import gen_captures as G   # noqa: E402 - tools/, the capture generator (its own QUIC sealing code)
from tests.flow.frames import udp  # noqa: E402

REASONS = {"ok", "not-quic", "not-initial", "unknown-version", "decrypt-failed", "malformed"}
HEADER_STATUSES = set(range(1, 6)) | {100, 101, 102}     # QS_* rejects, QH_INITIAL/SKIP/STOP


def same_as_model(datagram: bytes) -> str:
    """decrypt_initial's answer, checked against the Python model's."""
    reason, ini = quic.decrypt_initial(datagram)
    got = (reason, None if ini is None else
           (ini.version, ini.dcid, ini.scid, ini.frames, ini.packets, ini.truncated))
    want = quic_model.decrypt(datagram)
    assert got == want, (got[0], want[0], datagram[:64].hex())
    return reason


def model_walk(plain: bytes, crypto_type: int) -> tuple[int, list[tuple[int, bytes]]]:
    frames: list[tuple[int, bytes]] = []
    try:
        status = 1 if quic_model.walk_frames(plain, crypto_type, frames) else 0
    except (IndexError, quic_model._Reject):
        status = 2
    return status, frames


def seal(plain: bytes, dcid: bytes) -> bytes:
    keys = G.initial_keys(dcid, client=True)
    if len(plain) < 4:
        plain = plain + b"\x00" * (4 - len(plain))
    fixed = 1 + 4 + 1 + len(dcid) + 1 + 8 + 1 + 2 + 2 + 16
    pad = 1200 if fixed + len(plain) <= 1200 else None
    return G.protect_initial(keys, dcid, b"\x11" * 8, 0, plain, pad_to=pad)


def through_table(datagrams: list[bytes]) -> None:
    table = FlowTable(max_flows=8)
    for i, dg in enumerate(datagrams):
        table.process_frame(1_000_000_000 + i, udp("10.0.0.1", 50000, "192.0.2.1", 443, dg), 1, None)
    table.flush()
    recs = list(table.take_records())
    assert len(recs) == 1, recs


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, body = data[0] % 4, data[1:]
    if mode == 0:
        ini = quic.initial_crypto_frames(body)
        assert same_as_model(body) in REASONS
        if ini is not None:
            for off, chunk in ini.frames:
                assert off >= 0 and len(chunk) <= len(body)
        through_table([body])
    elif mode == 1:
        dcid = body[:8].ljust(8, b"\x00")
        plain = body[8:]
        dg = seal(plain, dcid)
        reason = same_as_model(dg)
        assert reason in ("ok", "malformed"), reason
        ini = quic.initial_crypto_frames(dg)
        if ini is not None:
            assert sum(len(c) for _, c in ini.frames) <= len(dg)   # PADDING may be inside
            quic.client_hello_from_crypto(ini.frames)
        through_table([dg, dg + dg[:1200] if len(dg) <= 1200 else dg])
    elif mode == 3:
        for crypto_type in (0x06, 0x08):
            assert _quic.walk_frames(body, crypto_type) == model_walk(body, crypto_type)
        for pos in (0, data[0] % 64):
            for first in (True, False):
                st, fields = _quic.packet_header(body, pos, first)
                assert st in HEADER_STATUSES, st
                if fields is not None:
                    assert fields["end"] >= pos + 7 and len(fields["dcid"]) <= 20
    else:
        fdp = atheris.FuzzedDataProvider(body)
        stream = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20000))
        frames = []
        for _ in range(fdp.ConsumeIntInRange(0, 64)):
            a = fdp.ConsumeIntInRange(0, len(stream))
            b = fdp.ConsumeIntInRange(a, len(stream))
            frames.append((a, stream[a:b]))
        # the whole stream, cut in order, so that the union always covers it
        cuts = sorted({0, len(stream)} | {fdp.ConsumeIntInRange(0, len(stream)) for _ in range(4)})
        frames += [(a, stream[a:b]) for a, b in zip(cuts, cuts[1:])]
        order = [fdp.ConsumeIntInRange(0, 1 << 30) for _ in frames]
        frames = [f for _, f in sorted(zip(order, frames), key=lambda t: t[0])]
        got = quic.reassemble_crypto(frames)
        assert got == stream[:quic.MAX_CRYPTO_BYTES], (len(got), len(stream))
        quic.client_hello_from_crypto(frames)


def seeds() -> list[bytes]:
    import random

    out = [b"\x00" + d for d in _common.payload_seeds("quic")]
    rng = random.Random(1)
    hello = _common.tls_client_hello(b"www.example.com")[5:]
    # CRYPTO frames as Chrome sends them: split, out of order, with PING and PADDING between
    pieces = [(0, hello[:100]), (100, hello[100:])]
    plain = b"".join(G.crypto_frame(o, d) + b"\x01\x00\x00" for o, d in reversed(pieces))
    out.append(b"\x01" + b"\x83\x94\xc8\xf0\x3e\x51\x57\x08" + plain)
    out.append(b"\x01" + bytes(8) + b"\x02\x05\x00\x03\x01\x01\x02\x01\x02" + G.crypto_frame(0, hello))
    out.append(b"\x01" + bytes(8) + G.crypto_frame(0, b"") * 300)
    out.append(b"\x02" + bytes(rng.randrange(256) for _ in range(600)))
    # mode 3: frame walks and raw headers
    out.append(b"\x03" + plain)
    out.append(b"\x03" + b"\x02\x05\x00\x03\x01\x01\x02\x01\x02" + G.crypto_frame(0, hello))
    out += [b"\x03" + d for d in _common.payload_seeds("quic")[:20]]
    return out


if __name__ == "__main__":
    _common.run(TestOneInput, seeds, max_len=4096)
