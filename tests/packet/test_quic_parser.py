"""Tests of the compiled QUIC Initial parser (kzfilter.packet._quic) against the Python model.

The oracle is tests/reference/quic_model.py, the Python decoder this module replaced, with its own
version table, key schedule and a fresh AES-ECB context per packet.  Every datagram must give the
same reason, or the same (version, DCID, SCID, CRYPTO frames, packets, truncated): the QUIC
datagrams of the nDPI captures, every prefix of real and built Initials, mutated headers, and
hypothesis-built plaintexts sealed as client Initials.  Malformed input gives a reason, never an
exception.  Both decryption paths answer every one of them: ``cryptography`` (open_initials) and
the C path through libcrypto that the flow table uses (open_initials_c).
"""
from __future__ import annotations

import functools
import random
import sys
import threading
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzfilter.flow._table import FlowTable
from kzfilter.packet import _quic, quic
from tests.flow.frames import udp
from tests.packet.test_hostnames import capture_files, iter_ip
from tests.packet.test_quic import (
    CLIENT_HELLO, CRYPTO_FRAME, DCID, REASONS, RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL, V1,
    V2, crypto, pad, protect)
from tests.conftest import REQUIRE_SHARED
from tests.reference import quic_model

HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QH_INITIAL, QH_SKIP, QH_STOP = 100, 101, 102
QF_DONE, QF_TRUNCATED, QF_ERROR = 0, 1, 2


def compiled(datagram: bytes):
    """decrypt_initial's answer in the model's shape."""
    reason, ini = quic.decrypt_initial(datagram)
    assert reason in REASONS
    if ini is None:
        return reason, None
    return reason, (ini.version, ini.dcid, ini.scid, ini.frames, ini.packets, ini.truncated)


C_PATH = _quic.bind_openssl()


def c_path(datagram: bytes):
    """open_initials_c's answer in the model's shape."""
    status, version, dcid, scid, frames, packets, truncated = _quic.open_initials_c(datagram)
    if status:
        return _quic.QS_NAMES[status], None
    return "ok", (version, dcid, scid, frames, packets, truncated)


def assert_same(datagram: bytes) -> str:
    got, want = compiled(datagram), quic_model.decrypt(datagram)
    assert got == want, (datagram[:48].hex(), got[0], want[0])
    if C_PATH:
        got_c = c_path(datagram)
        assert got_c == want, ("C path", datagram[:48].hex(), got_c[0], want[0])
    return got[0]


def test_c_path_is_bound():
    """libcrypto ships with every CPython that has hashlib's OpenSSL; CI must test the C path."""
    if not C_PATH:
        message = "no libcrypto could be loaded: only the cryptography path is tested"
        if REQUIRE_SHARED:
            pytest.fail(message + "; .ci/run requires the C path")
        pytest.skip(message)
    assert _quic.c_path_enabled()
    assert c_path(RFC9001_CLIENT_INITIAL)[0] == "ok" and c_path(RFC9369_CLIENT_INITIAL)[0] == "ok"


@HYP
@given(st.sampled_from([V1, V2, 0xFF00001D, 0xFF000017, 0xFF000016, 0x54303530, 0x54303531,
                        0x51303530, 0xFACEB001, 0xFACEB002, 0xFACEB00E]),
       st.binary(min_size=0, max_size=20))
def test_c_key_schedule_matches_python(version, dcid):
    if not C_PATH:
        pytest.skip("the C path is off: no libcrypto, or KZFILTER_QUIC_CRYPTO=python")
    assert _quic.client_initial_keys_c(version, dcid) == quic.client_initial_keys(version, dcid)


def test_c_key_schedule_refuses_unknown_versions():
    if not C_PATH:
        pytest.skip("the C path is off: no libcrypto, or KZFILTER_QUIC_CRYPTO=python")
    with pytest.raises(ValueError, match="unsupported"):
        _quic.client_initial_keys_c(0x1A2A3A4A, b"\x01" * 8)
    with pytest.raises(ValueError):
        _quic.client_initial_keys_c(V1, b"\x01" * 21)


def model_walk(plain: bytes, crypto_type: int = 0x06):
    frames: list[tuple[int, bytes]] = []
    try:
        status = QF_TRUNCATED if quic_model.walk_frames(plain, crypto_type, frames) else QF_DONE
    except (IndexError, quic_model._Reject):
        status = QF_ERROR
    return status, frames


@functools.lru_cache(maxsize=1)
def ndpi_long_header_datagrams() -> tuple[bytes, ...]:
    """Every distinct UDP payload with the long-header bit in the nDPI QUIC captures."""
    out: dict[bytes, None] = {}
    for path in capture_files():
        if "quic" not in path.name:
            continue
        for ip in iter_ip(path):
            l4 = ip.data
            if isinstance(l4, dpkt.udp.UDP) and len(l4.data) >= 7 and l4.data[0] & 0x80:
                out[bytes(l4.data)] = None
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------

def test_version_table_matches_the_model():
    versions = [V1, V2, 0, 0x54303530, 0x54303531, 0x51303530, 0x51303436, 0xFACEB001, 0xFACEB002,
                0xFACEB00E, 0xFACEB003, 0x1A2A3A4A, 0xFFFFFFFF]
    versions += [0xFF000000 | d for d in range(256)] + [0xFE000000 | d for d in range(40)]
    versions += random.Random(1).sample(range(1 << 32), 2000)
    known = 0
    for v in versions:
        got, want = _quic.version_profile(v), quic_model.profile(v)
        if want is None:
            assert got is None, hex(v)
            continue
        known += 1
        salt, labels, initial_type, crypto_frame = want
        assert got == (salt, labels[0] == "quicv2 key", initial_type, crypto_frame), hex(v)
    assert known == 2 + 3 + 3 + 13       # v1, v2, T050/T051/Q050, mvfst x3, drafts 22-34


# --------------------------------------------------------------------------------------------
# Differential: real datagrams, prefixes, mutations
# --------------------------------------------------------------------------------------------

def test_ndpi_quic_datagrams_match_the_model():
    dgs = ndpi_long_header_datagrams()
    reasons = [assert_same(d) for d in dgs]
    # Not vacuous: the captures hold decryptable Initials of several versions, and rejects.
    assert reasons.count("ok") >= 100 and {"unknown-version", "decrypt-failed"} <= set(reasons)
    versions = {compiled(d)[1][0] for d in dgs if compiled(d)[0] == "ok"}
    assert {V1, V2, 0xFF00001D, 0x51303530, 0x54303531} <= versions, sorted(map(hex, versions))


def _coalesced() -> bytes:
    """An Initial, a 0-RTT packet (skipped by its Length), another Initial, then padding."""
    a, b = crypto(0, CLIENT_HELLO[:100]), crypto(100, CLIENT_HELLO[100:])
    return (protect(b"\x01" + a, pn=0) + protect(b"\x00" * 40, ptype=1, pn=1)
            + protect(pad(b, 900), pn=2) + bytes(30))


@pytest.mark.parametrize("name", ["rfc9001", "rfc9369", "coalesced"])
def test_every_prefix_matches_the_model(name):
    dg = {"rfc9001": RFC9001_CLIENT_INITIAL, "rfc9369": RFC9369_CLIENT_INITIAL,
          "coalesced": _coalesced()}[name]
    assert assert_same(dg) == "ok"
    seen = {assert_same(dg[:i]) for i in range(len(dg))}
    assert seen >= {"not-quic", "malformed"}, seen
    if name == "coalesced":
        ini = quic.initial_crypto_frames(dg)
        assert ini is not None and ini.packets == 2
        assert sorted(ini.frames) == [(0, CLIENT_HELLO[:100]), (100, CLIENT_HELLO[100:])]


@HYP
@given(st.sampled_from(["rfc9001", "rfc9369", "coalesced", "ndpi"]), st.data())
def test_mutated_datagrams_match_the_model(base, data):
    if base == "ndpi":
        dg = data.draw(st.sampled_from(ndpi_long_header_datagrams()))
    else:
        dg = {"rfc9001": RFC9001_CLIENT_INITIAL, "rfc9369": RFC9369_CLIENT_INITIAL,
              "coalesced": _coalesced()}[base]
    b = bytearray(dg)
    # Header bytes (lengths, connection IDs, types, versions) are where the parser branches.
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, min(len(b), 64) - 1))
        b[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        b = b[:data.draw(st.integers(0, len(b)))] + data.draw(st.binary(max_size=64))
    assert_same(bytes(b))


def test_garbage_is_a_reason_never_an_exception():
    rng = random.Random(5)
    for n in list(range(0, 40)) + [100, 1200, 1500, 65535]:
        for first in (0x80, 0xC0, 0xC3, 0xD0, 0xF0, 0xFF):
            dg = bytes([first]) + bytes(rng.randrange(256) for _ in range(max(0, n - 1)))
            assert_same(dg[:n])
    assert assert_same(b"\xc0\x00\x00\x00\x01" + b"\xff" * 1300) == "malformed"    # DCID length 255


# --------------------------------------------------------------------------------------------
# Sealed plaintexts: the frame walk behind real encryption
# --------------------------------------------------------------------------------------------

_PIECES = [
    b"\x00" * 7, b"\x01", crypto(0, b"hello"), crypto(5, b"abc"), b"\x02\x01\x00\x00\x00",
    b"\x02\x05\x00\x02\x01\x01\x02\x01\x02", b"\x03\x01\x00\x01\x00\x00\x00\x01\x02\x03",
    b"\x06\x80\x00\x00\x01\x02ab", b"\x08\x00\x03xyz", b"\x1c\x00\x00\x00",   # gQUIC CRYPTO, CLOSE
    b"\x06", b"\x06\x00\x44", b"\x02\xff", b"\x02\x00\x00\xc0", b"\x02\x00\x00\x7f\x00",  # cut
]


@HYP
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(min_size=1, max_size=12)),
                max_size=40),
       st.sampled_from([V1, V2, 0x51303530]), st.booleans())
def test_sealed_frames_match_the_model(pieces, version, twice):
    plain = b"".join(pieces)
    plain += bytes(max(0, 4 - len(plain)))      # room for the header-protection sample
    dg = protect(plain, version=version, pn=len(pieces))
    if twice:
        dg += protect(plain, version=version, pn=len(pieces) + 1)
    assert assert_same(dg) in ("ok", "malformed")
    crypto_type = 0x08 if version == 0x51303530 else 0x06
    assert _quic.walk_frames(plain, crypto_type) == model_walk(plain, crypto_type)


def test_walk_frames_limits_and_errors():
    assert _quic.walk_frames(b"") == (QF_DONE, [])
    assert _quic.walk_frames(b"\x00" * 1000 + crypto(0, b"x")) == (QF_DONE, [(0, b"x")])
    # 256 frames are walked, the 257th stops the walk (a PADDING run counts as one frame)
    frames = b"".join(crypto(i, b"a") for i in range(256))
    assert _quic.walk_frames(frames) == (QF_DONE, [(i, b"a") for i in range(256)])
    st_, got = _quic.walk_frames(frames + b"\x01")
    assert st_ == QF_TRUNCATED and len(got) == 256
    assert _quic.walk_frames(b"\x01" * 300)[0] == QF_TRUNCATED
    # an 8-byte varint offset survives; a length past the payload is an error, frames before kept
    big = b"\x06\xff\xff\xff\xff\xff\xff\xff\xff\x01z"
    assert _quic.walk_frames(big) == (QF_DONE, [((1 << 62) - 1, b"z")])
    assert _quic.walk_frames(crypto(0, b"ab") + b"\x06\x00\x05abc") == (QF_ERROR, [(0, b"ab")])
    assert _quic.walk_frames(b"\x02\x00\x00\xbf\xff\xff\xff\x00")[0] == QF_ERROR   # 1e9 ranges
    # Google's CRYPTO type 0x08: ACK and 0x06 are not walked there
    assert _quic.walk_frames(b"\x08\x00\x01q", 0x08) == (QF_DONE, [(0, b"q")])
    assert _quic.walk_frames(b"\x02\x00\x00\x00\x00", 0x08) == (QF_TRUNCATED, [])
    assert _quic.walk_frames(crypto(0, b"q"), 0x08) == (QF_TRUNCATED, [])


# --------------------------------------------------------------------------------------------
# Header fields
# --------------------------------------------------------------------------------------------

def test_packet_header_fields():
    st_, h = _quic.packet_header(RFC9001_CLIENT_INITIAL)
    assert st_ == QH_INITIAL
    assert (h["version"], h["dcid"], h["scid"]) == (V1, DCID, b"")
    # first byte, version, DCID length + 8, SCID length, token length, 2-byte Length
    assert h["pn_offset"] == 1 + 4 + 1 + 8 + 1 + 1 + 2 and h["end"] == len(RFC9001_CLIENT_INITIAL)
    token = protect(pad(CRYPTO_FRAME), scid=b"\x11" * 20, token=b"t" * 70)
    st_, h = _quic.packet_header(token)
    assert st_ == QH_INITIAL and h["scid"] == b"\x11" * 20
    assert h["pn_offset"] == 1 + 4 + 1 + 8 + 1 + 20 + 2 + 70 + 2
    assert quic.initial_crypto_frames(token).frames == [(0, CLIENT_HELLO)]


def test_packet_header_rejects():
    dg = bytearray(RFC9001_CLIENT_INITIAL)
    qs = {name: i for i, name in enumerate(_quic.QS_NAMES)}
    assert _quic.packet_header(b"\xc0\x00\x00\x00\x00\x08" + bytes(30))[0] == qs["not-initial"]
    assert _quic.packet_header(b"\xc0\x1a\x2a\x3a\x4a" + bytes(30))[0] == qs["unknown-version"]
    assert _quic.packet_header(b"\xc0\x1a\x2a\x3a\x4a" + bytes(30), first_packet=False)[0] == QH_STOP
    assert _quic.packet_header(bytes(dg[:5]) + b"\x15" + bytes(40))[0] == qs["malformed"]  # DCID 21
    assert _quic.packet_header(bytes(dg[:15]))[0] == qs["malformed"]     # SCID length cut
    assert _quic.packet_header(bytes(dg[:16]))[0] == qs["malformed"]     # token length cut
    assert _quic.packet_header(bytes(dg[:17]))[0] == qs["malformed"]     # Length varint cut
    assert _quic.packet_header(bytes(dg[:600]))[0] == qs["malformed"]    # Length past the end
    tok = bytes(dg[:15]) + b"\xbf\xff\xff\xff" + bytes(1200)             # token of 1 GB
    assert _quic.packet_header(tok)[0] == qs["malformed"]
    short = bytes(dg[:15]) + b"\x00\x13" + bytes(30)                     # Length 19 < 20
    assert _quic.packet_header(short)[0] == qs["malformed"]
    zero_rtt = protect(b"\x00" * 40, ptype=1)
    assert _quic.packet_header(zero_rtt)[0] == qs["not-initial"]
    st_, h = _quic.packet_header(zero_rtt, first_packet=False)
    assert st_ == QH_SKIP and h["end"] == len(zero_rtt)
    retry = b"\xf0" + bytes(dg[1:40])
    assert _quic.packet_header(retry, first_packet=False)[0] == QH_STOP
    assert _quic.packet_header(b"\x40" + bytes(40)) == (qs["not-quic"], None)
    assert _quic.packet_header(bytes(dg), pos=len(dg) - 3) == (qs["not-quic"], None)


# --------------------------------------------------------------------------------------------
# Sharing the cached ciphers
# --------------------------------------------------------------------------------------------

def test_threads_share_the_cached_ciphers():
    # The header-protection encryptor is cached per DCID and shared; cryptography raises
    # "Already borrowed" when two threads use one context at once (Dask runs tasks in threads).
    dg = RFC9001_CLIENT_INITIAL
    errors: list[str] = []
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(2000):
            try:
                reason = quic.quic_reason(dg)
            except Exception as exc:    # noqa: BLE001 - the thread must report, not die
                reason = repr(exc)
            if reason != "ok":
                errors.append(reason)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def test_every_mask_computation_holds_the_lock(monkeypatch):
    class Recording:
        def __init__(self) -> None:
            self.lock, self.entered = threading.Lock(), 0

        def __enter__(self) -> None:
            self.lock.acquire()
            self.entered += 1

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    rec = Recording()
    monkeypatch.setattr(_quic, "_HP_LOCK", rec)
    assert quic.initial_crypto_frames(_coalesced()).packets == 2
    assert rec.entered == 2 and not rec.lock.locked()


# --------------------------------------------------------------------------------------------
# The flow table's use of it
# --------------------------------------------------------------------------------------------

def _table(datagrams):
    t = FlowTable()
    for i, dg in enumerate(datagrams):
        t.process_frame(1_000_000 + i, udp("10.0.0.1", 50000, "192.0.2.1", 443, dg))
    t.flush()
    (r,) = list(t.take_records())
    return r, t.counters


def test_long_token_header_decrypts_on_both_paths():
    # The AEAD's associated data is the whole header, token included: 300 bytes of token put it
    # past the C path's stack buffer.
    dg = protect(pad(b"\x01" + CRYPTO_FRAME, 1100), token=bytes(range(256)) + bytes(44))
    assert assert_same(dg) == "ok"


@pytest.mark.parametrize("c_on", [False, True])
def test_flow_table_refuses_unknown_versions_and_names_known_ones(c_on):
    if c_on and not C_PATH:
        pytest.skip("the C path is off: no libcrypto, or KZFILTER_QUIC_CRYPTO=python")
    _quic.set_c_path(c_on)
    try:
        _check_flow_table_quic()
    finally:
        _quic.set_c_path(True)


def _check_flow_table_quic():
    unknown = b"\xc0\x1a\x2a\x3a\x4a\x08" + b"\x01" * 8 + bytes(1200)
    r, c = _table([unknown, unknown])
    assert r.no_name_reason == "quic-unknown-version" and r.name is None
    assert (c["quic_initials"], c["quic_failed"]) == (1, 1)     # given up after the first
    r, c = _table([RFC9369_CLIENT_INITIAL])
    assert r.name == "example.com" and r.name_source == "quic" and r.alpn == "alpn"
    assert (c["quic_initials"], c["quic_failed"]) == (1, 0)
    damaged = bytearray(RFC9001_CLIENT_INITIAL)
    damaged[1199] ^= 1
    r, c = _table([bytes(damaged), RFC9001_CLIENT_INITIAL])      # a retransmission decrypts
    assert r.name == "example.com" and (c["quic_initials"], c["quic_failed"]) == (2, 1)


def _records_of(paths, c_on: bool):
    from kzfilter.packet._capture import CaptureReader

    _quic.set_c_path(c_on)
    try:
        out = []
        for path in paths:
            t = FlowTable(capture_name=path.name)
            with CaptureReader(str(path)) as reader:
                t.process_reader(reader)
            t.flush()
            out.append((path.name, [r.as_dict() for r in t.take_records()], dict(t.counters)))
        return out
    finally:
        _quic.set_c_path(True)


def test_flow_table_gives_the_same_records_on_both_paths(tmp_path):
    """Every record and counter of the nDPI QUIC captures, and of a synthetic capture with a
    thousand QUIC connections, is the same whether Initials are decrypted in C or by
    ``cryptography``."""
    if not C_PATH:
        pytest.skip("the C path is off: no libcrypto, or KZFILTER_QUIC_CRYPTO=python")
    from tests.packet.test_hostnames import capture_files as ndpi_files

    from tests.conftest import write_synthetic_capture

    paths = [p for p in ndpi_files() if "quic" in p.name]
    paths.append(write_synthetic_capture(tmp_path, 20000, concurrent=400))
    c_records, py_records = _records_of(paths, True), _records_of(paths, False)
    assert c_records == py_records
    named = sum(1 for _, recs, _ in c_records for r in recs if r["name_source"] == "quic")
    assert named >= 50, named          # not vacuous: QUIC names found on both paths


def test_key_cache_tells_versions_and_connection_ids_apart():
    """The C path caches keys by (version, DCID) in 256 buckets: 1,500 connection IDs, each used
    by a QUIC v1 and a QUIC v2 connection in turn, share the buckets; every Initial must still
    decrypt with its own keys (a cache that matched on the bucket alone fails this)."""
    if not C_PATH:
        pytest.skip("the C path is off: no libcrypto, or KZFILTER_QUIC_CRYPTO=python")
    rng = random.Random(9)
    hello = pad(b"\x01" + CRYPTO_FRAME, 1100)
    flows = []
    for _ in range(1500):
        dcid = rng.randbytes(8)
        flows += [protect(hello, version=V1, dcid=dcid), protect(hello, version=V2, dcid=dcid)]
    t = FlowTable()
    for i, dg in enumerate(flows):
        t.process_frame(1_000_000 + i, udp("10.0.0.1", 1024 + i % 60000, "192.0.%d.1" % (i // 60000),
                                           443, dg))
    t.flush()
    records = list(t.take_records())
    assert len(records) == len(flows)
    assert all(r.name == "example.com" and r.name_source == "quic" for r in records), \
        [r.no_name_reason for r in records if r.name is None][:5]
    assert t.counters["quic_failed"] == 0


def test_python_crypto_can_be_forced():
    """KZFILTER_QUIC_CRYPTO=python keeps the cryptography path (the escape hatch the docs name):
    a fresh interpreter then does not bind libcrypto, and the flow table still names QUIC."""
    import os
    import subprocess

    code = (
        "from kzfilter.packet import _quic\n"
        "from kzfilter.flow._table import FlowTable\n"
        "from tests.flow.frames import udp\n"
        "from tests.packet.test_quic import RFC9001_CLIENT_INITIAL\n"
        "t = FlowTable()\n"
        "t.process_frame(1, udp('10.0.0.1', 5000, '192.0.2.1', 443, RFC9001_CLIENT_INITIAL))\n"
        "t.flush()\n"
        "(r,) = list(t.take_records())\n"
        "print(_quic.c_path_enabled(), r.name, r.name_source)\n"
    )
    env = dict(os.environ, KZFILTER_QUIC_CRYPTO="python")
    root = str(Path(__file__).resolve().parents[2])     # tests/ is imported from the checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), root) if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.split() == ["False", "example.com", "quic"]
