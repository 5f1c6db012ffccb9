#!/usr/bin/env python3
"""Deterministic capture generator for kzfilter's demo, fast tests and benchmarks.

Three captures, all Ethernet, all built from a fixed seed so that two runs write identical bytes:

``demo``
    A small pcapng (~30 flows) that exercises every hostname path of kzfilter: TLS SNI (normal,
    large post-quantum ClientHellos spanning two TCP segments, out-of-order and retransmitted
    segments, ECH with an outer public name, an IDN name under ``.қаз``, no SNI at all), QUIC v1
    Initials protected per RFC 9001 section 5 (one and two datagrams), HTTP/1.1 ``Host`` (one split
    over two segments), DNS A/AAAA answers, a flow reached only through a DNS answer, and a
    direct-IP flow into a VPN CIDR.  :func:`demo_flows` lists what is in it (the manifest).
``synthetic``
    Millions of packets (~1.2 KB on average) over tens of thousands of interleaved flows with the
    same mix, written as a stream (memory stays flat).  The bulk path patches precomputed payloads
    with ``struct`` and reuses their precomputed checksum sums.
``scan``
    One-packet flows: TCP SYNs from many sources (a port scan), the worst case for a flow table.

Addresses: clients are in the CGNAT range 100.64.0.0/10 (what an ISP's filter sees), servers in
the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) so that no
real host is named, except the demo's direct-IP flow, which must land inside a real VPN CIDR.

No kzfilter import: this file checks kzfilter, so it must not depend on it.

Usage::

    python tools/gen_captures.py demo --out pcaps/demo.pcapng [--manifest demo.json]
    python tools/gen_captures.py synthetic --packets 3000000 --out bench-data/synthetic.pcap
    python tools/gen_captures.py scan --flows 1000000 --out bench-data/oneflow.pcap
"""
from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import os
import random
import struct
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Callable, Iterator, Sequence

import dpkt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.hmac import HMAC

SEED = 20260115
# 2026-01-15 10:00:00 UTC: every capture starts here, so timestamps are reproducible too.
BASE_TS_NS = 1768471200 * 1_000_000_000

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")  # the upstream router, as seen on a tap
ETH_TYPE_IP4 = 0x0800
ETH_TYPE_IP6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
LINKTYPE_ETHERNET = 1

TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MSS = 1460  # Ethernet MTU 1500 minus 20 (IPv4) and 20 (TCP without options)

# --------------------------------------------------------------------------------------------
# Capture writers (own minimal writers: byte-exact and deterministic, no host info in headers)
# --------------------------------------------------------------------------------------------


class PcapWriter:
    """Classic libpcap writer (microsecond timestamps, Ethernet link type)."""

    def __init__(self, fileobj: BinaryIO, snaplen: int = 262144) -> None:
        self._f = fileobj
        self._f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self._rec = struct.Struct("<IIII")
        self.count = 0

    def write(self, ts_ns: int, frame: bytes) -> None:
        us = ts_ns // 1000
        n = len(frame)
        self._f.write(self._rec.pack(us // 1_000_000, us % 1_000_000, n, n))
        self._f.write(frame)
        self.count += 1


class PcapngWriter:
    """pcapng writer: one Section Header, one Ethernet Interface Description, Enhanced Packet Blocks.

    Timestamps use the default resolution (microseconds, no ``if_tsresol`` option).  The IDB
    carries an ``if_name`` option so that readers must skip options (pcapng spec, section 4.2).
    """

    def __init__(self, fileobj: BinaryIO, if_name: str = "tap0") -> None:
        self._f = fileobj
        # Section Header Block: byte-order magic, version 1.0, section length unknown (-1).
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        self._block(0x0A0D0D0A, shb_body)
        name = if_name.encode()
        opt = struct.pack("<HH", 2, len(name)) + name + b"\x00" * (-len(name) % 4)
        opt += struct.pack("<HH", 0, 0)  # opt_endofopt
        self._block(0x00000001, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0) + opt)
        self.count = 0

    def _block(self, btype: int, body: bytes) -> None:
        body += b"\x00" * (-len(body) % 4)
        total = len(body) + 12
        self._f.write(struct.pack("<II", btype, total) + body + struct.pack("<I", total))

    def write(self, ts_ns: int, frame: bytes) -> None:
        us = ts_ns // 1000
        n = len(frame)
        self._block(0x00000006, struct.pack("<IIIII", 0, us >> 32, us & 0xFFFFFFFF, n, n) + frame)
        self.count += 1


# --------------------------------------------------------------------------------------------
# Checksums (RFC 1071).  Sums are taken over little-endian 16-bit words with array('H'): the
# one's-complement sum is byte-order independent, so packing the folded result '<H' is exact.
# --------------------------------------------------------------------------------------------


def sum16(data: bytes) -> int:
    """Unfolded one's-complement partial sum of ``data`` (little-endian words, odd byte padded)."""
    if len(data) & 1:
        data = data + b"\x00"
    return sum(array("H", data))


def fold(total: int) -> bytes:
    """Fold a partial sum and return the 2 checksum bytes, ready to place in a header."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return struct.pack("<H", ~total & 0xFFFF)


_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ETH4 = SERVER_MAC + CLIENT_MAC + b"\x08\x00"
_ETH4_R = CLIENT_MAC + SERVER_MAC + b"\x08\x00"
_ETH6 = SERVER_MAC + CLIENT_MAC + b"\x86\xdd"
_ETH6_R = CLIENT_MAC + SERVER_MAC + b"\x86\xdd"


def l3_frame(src: bytes, dst: bytes, proto: int, l4: bytes, l4sum: int, *, to_server: bool,
             ident: int = 0, ttl: int = 64) -> bytes:
    """Ethernet + IPv4/IPv6 frame around a transport segment whose checksum field is zero.

    ``l4sum`` is the partial sum of ``l4``; the pseudo-header (RFC 793 / RFC 8200 section 8.1) is
    added here and the checksum written at its offset (16 for TCP, 6 for UDP).
    """
    n = len(l4)
    csum_at = 16 if proto == IPPROTO_TCP else 6
    if len(src) == 4:
        total = l4sum + sum16(src + dst) + sum16(struct.pack("!BBH", 0, proto, n))
        c = fold(total)
        if proto == IPPROTO_UDP and c == b"\x00\x00":
            c = b"\xff\xff"  # RFC 768: a computed zero is sent as all ones
        l4 = l4[:csum_at] + c + l4[csum_at + 2:]
        hdr = bytearray(_IP4.pack(0x45, 0, 20 + n, ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst))
        hdr[10:12] = fold(sum16(bytes(hdr)))
        return (_ETH4 if to_server else _ETH4_R) + bytes(hdr) + l4
    total = l4sum + sum16(src + dst) + sum16(struct.pack("!IHBB", n, 0, 0, proto))
    c = fold(total)
    if proto == IPPROTO_UDP and c == b"\x00\x00":
        c = b"\xff\xff"
    l4 = l4[:csum_at] + c + l4[csum_at + 2:]
    return (_ETH6 if to_server else _ETH6_R) + _IP6.pack(0x60000000, n, proto, ttl, src, dst) + l4


_SYN_OPTS = bytes.fromhex("020405b4" "0101" "0402" "01030307")  # MSS 1460, SACK-perm, WS 7


def tcp_segment(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
                psum: int | None = None, window: int = 64240) -> tuple[bytes, int]:
    """TCP header + payload with a zero checksum, and its partial sum (payload sum reusable)."""
    opts = b""
    if flags & TH_SYN:
        opts = _SYN_OPTS
    else:
        window >>= 7  # window scale 7 was negotiated in the SYN options (RFC 7323 2.2)
    hdr = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                    ((20 + len(opts)) // 4) << 4, flags, window, 0, 0) + opts
    if psum is None:
        psum = sum16(payload)
    # the header is always an even length, so the two partial sums simply add up
    return hdr + payload, sum16(hdr) + psum


def udp_datagram(sport: int, dport: int, payload: bytes) -> tuple[bytes, int]:
    hdr = _UDP.pack(sport, dport, 8 + len(payload), 0)
    return hdr + payload, sum16(hdr) + sum16(payload)


# --------------------------------------------------------------------------------------------
# TLS 1.3 messages (RFC 8446) with the extensions browsers send
# --------------------------------------------------------------------------------------------

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SCT = 0x0012
EXT_STATUS_REQUEST = 0x0005
EXT_COMPRESS_CERTIFICATE = 0x001B
EXT_RECORD_SIZE_LIMIT = 0x001C
EXT_DELEGATED_CREDENTIALS = 0x0022
EXT_EXTENDED_MASTER_SECRET = 0x0017
EXT_SESSION_TICKET = 0x0023
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_PSK_MODES = 0x002D
EXT_KEY_SHARE = 0x0033
EXT_QUIC_TRANSPORT_PARAMETERS = 0x0039
EXT_ECH = 0xFE0D  # draft-ietf-tls-esni encrypted_client_hello
EXT_RENEGOTIATION_INFO = 0xFF01

GROUP_X25519 = 0x001D
GROUP_X25519MLKEM768 = 0x11EC  # hybrid: 1184-byte ML-KEM-768 encapsulation key + 32-byte X25519
MLKEM_SHARE_LEN = 1216


def _u16(v: int) -> bytes:
    return struct.pack("!H", v)


def _vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _vec16(b: bytes) -> bytes:
    return _u16(len(b)) + b


def _ext(etype: int, body: bytes) -> bytes:
    return _u16(etype) + _vec16(body)


def sni_extension(name: str) -> bytes:
    """server_name extension (RFC 6066 section 3): a list holding one host_name entry."""
    raw = name.encode("ascii")
    return _ext(EXT_SERVER_NAME, _vec16(b"\x00" + _vec16(raw)))


def alpn_extension(protocols: Sequence[str]) -> bytes:
    """ALPN extension (RFC 7301 section 3.1)."""
    return _ext(EXT_ALPN, _vec16(b"".join(_vec8(p.encode()) for p in protocols)))


def client_hello(rng: random.Random, sni: str | None, alpn: Sequence[str] = ("h2", "http/1.1"), *,
                 pq: bool = False, ech: bool = False, quic_tp: bytes | None = None) -> bytes:
    """A TLS 1.3 ClientHello handshake message (type 1, 24-bit length, body).

    ``pq`` adds X25519MLKEM768 (1216 bytes) and P-256 key shares, which make the message ~1.6 KB so it
    spans two TCP segments or two QUIC Initial datagrams.  ``ech`` adds an outer
    encrypted_client_hello extension; ``sni`` is then the ECH public name and the real name is
    only inside the (random) encrypted payload.  ``quic_tp`` adds quic_transport_parameters and
    drops the TCP-only extensions and the legacy session id (RFC 9001 section 8.4).
    """
    quic = quic_tp is not None
    suites = [0x1301, 0x1302, 0x1303]
    if not quic:
        suites += [0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
                   0x009D, 0x002F, 0x0035]
    exts = []
    if sni is not None:
        exts.append(sni_extension(sni))
    exts.append(_ext(EXT_EXTENDED_MASTER_SECRET, b""))
    if not quic:
        exts.append(_ext(EXT_RENEGOTIATION_INFO, b"\x00"))
    groups = ([GROUP_X25519MLKEM768] if pq else []) + [GROUP_X25519, 0x0017, 0x0018]
    exts.append(_ext(EXT_SUPPORTED_GROUPS, _vec16(b"".join(_u16(g) for g in groups))))
    if not quic:
        exts.append(_ext(EXT_EC_POINT_FORMATS, _vec8(b"\x00")))
        exts.append(_ext(EXT_SESSION_TICKET, b""))
    if alpn:
        exts.append(alpn_extension(alpn))
    sigalgs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    exts.append(_ext(EXT_SIGNATURE_ALGORITHMS, _vec16(b"".join(_u16(s) for s in sigalgs))))
    exts.append(_ext(EXT_SCT, b""))
    if not quic:
        exts.append(_ext(EXT_STATUS_REQUEST, b"\x01\x00\x00\x00\x00"))  # OCSP, RFC 6066 8
        exts.append(_ext(EXT_DELEGATED_CREDENTIALS, _vec16(b"".join(_u16(s) for s in sigalgs[:4]))))
        exts.append(_ext(EXT_RECORD_SIZE_LIMIT, _u16(0x4001)))  # RFC 8449
    exts.append(_ext(EXT_COMPRESS_CERTIFICATE, _vec8(_u16(2))))  # brotli, RFC 8879
    shares = b""
    if pq:
        shares += _u16(GROUP_X25519MLKEM768) + _vec16(rng.randbytes(MLKEM_SHARE_LEN))
    shares += _u16(GROUP_X25519) + _vec16(rng.randbytes(32))
    if pq:
        # Firefox-style: a P-256 share (uncompressed point, 65 bytes) next to the hybrid one
        shares += _u16(0x0017) + _vec16(b"\x04" + rng.randbytes(64))
    exts.append(_ext(EXT_KEY_SHARE, _vec16(shares)))
    exts.append(_ext(EXT_PSK_MODES, _vec8(b"\x01")))
    exts.append(_ext(EXT_SUPPORTED_VERSIONS, _vec8(_u16(0x0304) + _u16(0x0303))))
    if quic:
        exts.append(_ext(EXT_QUIC_TRANSPORT_PARAMETERS, quic_tp))
    if ech:
        # ECHClientHello, outer variant: type 0, HPKE suite (HKDF-SHA256, AES-128-GCM), config id,
        # enc (X25519 public key), encrypted payload (random here: nobody can read the inner name).
        body = b"\x00" + _u16(0x0001) + _u16(0x0001) + bytes([rng.randrange(256)])
        body += _vec16(rng.randbytes(32)) + _vec16(rng.randbytes(rng.choice((176, 208, 240))))
        exts.append(_ext(EXT_ECH, body))
    body = _u16(0x0303) + rng.randbytes(32)
    body += _vec8(b"" if quic else rng.randbytes(32))
    body += _vec16(b"".join(_u16(s) for s in suites)) + _vec8(b"\x00")
    body += _vec16(b"".join(exts))
    return b"\x01" + len(body).to_bytes(3, "big") + body


def server_hello(rng: random.Random, *, quic: bool = False) -> bytes:
    """A TLS 1.3 ServerHello handshake message (X25519 share, TLS_AES_128_GCM_SHA256)."""
    exts = _ext(EXT_SUPPORTED_VERSIONS, _u16(0x0304))
    exts += _ext(EXT_KEY_SHARE, _u16(GROUP_X25519) + _vec16(rng.randbytes(32)))
    body = _u16(0x0303) + rng.randbytes(32) + _vec8(b"" if quic else rng.randbytes(32))
    body += _u16(0x1301) + b"\x00" + _vec16(exts)
    return b"\x02" + len(body).to_bytes(3, "big") + body


def tls_record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    """One TLS record (RFC 8446 section 5.1); callers keep payloads under 2^14 bytes."""
    return struct.pack("!BHH", content_type, version, len(payload)) + payload


def tls_server_flight(rng: random.Random) -> bytes:
    """ServerHello record, ChangeCipherSpec, then an 'encrypted' flight as application_data."""
    out = tls_record(22, server_hello(rng))
    out += tls_record(20, b"\x01")
    out += tls_record(23, rng.randbytes(rng.randrange(1200, 2600)))
    return out


# --------------------------------------------------------------------------------------------
# QUIC v1 Initial packets (RFC 9000 section 17.2.2, protection per RFC 9001 section 5)
# --------------------------------------------------------------------------------------------

QUIC_V1 = 0x00000001
QUIC_V1_INITIAL_SALT = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 5.2


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!H", length) + _vec8(full) + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def initial_keys(dcid: bytes, *, client: bool) -> tuple[bytes, bytes, bytes]:
    """(key, iv, hp) of the client's or server's Initial packets for this original DCID."""
    initial_secret = hkdf_extract(QUIC_V1_INITIAL_SALT, dcid)
    secret = hkdf_expand_label(initial_secret, "client in" if client else "server in", 32)
    return (hkdf_expand_label(secret, "quic key", 16), hkdf_expand_label(secret, "quic iv", 12),
            hkdf_expand_label(secret, "quic hp", 16))


def quic_varint(v: int) -> bytes:
    """RFC 9000 section 16 variable-length integer (shortest encoding)."""
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return struct.pack("!H", 0x4000 | v)
    if v < 0x40000000:
        return struct.pack("!I", 0x80000000 | v)
    return struct.pack("!Q", 0xC000000000000000 | v)


def crypto_frame(offset: int, data: bytes) -> bytes:
    """CRYPTO frame (RFC 9000 section 19.6)."""
    return b"\x06" + quic_varint(offset) + quic_varint(len(data)) + data


def protect_initial(keys: tuple[bytes, bytes, bytes], dcid: bytes, scid: bytes, pn: int,
                    frames: bytes, pad_to: int | None = 1200) -> bytes:
    """One protected Initial packet, its frames padded with PADDING so the packet is ``pad_to`` long.

    Packet number length is 2 bytes; the Length field is a 2-byte varint.  Payload protection is
    AES-128-GCM with nonce = iv XOR packet number and the unprotected header as AAD (RFC 9001
    5.3); header protection masks the low 4 bits of byte 0 and the packet number with
    AES-ECB(hp, 16-byte sample taken 4 bytes after the packet number start) (RFC 9001 5.4).
    """
    key, iv, hp = keys
    pn_len = 2
    first = 0xC0 | (0 << 4) | (pn_len - 1)  # long header, fixed bit, type Initial
    head = bytes([first]) + struct.pack("!I", QUIC_V1) + _vec8(dcid) + _vec8(scid) + b"\x00"
    fixed = len(head) + 2 + pn_len + 16  # + Length varint + packet number + AEAD tag
    if pad_to is not None:
        if fixed + len(frames) > pad_to:
            raise ValueError("frames do not fit in one Initial packet")
        frames = frames + b"\x00" * (pad_to - fixed - len(frames))
    length = pn_len + len(frames) + 16
    header = head + struct.pack("!H", 0x4000 | length) + pn.to_bytes(pn_len, "big")
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big")))
    sealed = AESGCM(key).encrypt(nonce, frames, header)
    pn_off = len(header) - pn_len
    sample = sealed[4 - pn_len:4 - pn_len + 16]
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    hb = bytearray(header)
    hb[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        hb[pn_off + i] ^= mask[1 + i]
    return bytes(hb) + sealed


def quic_transport_params(scid: bytes) -> bytes:
    """A few transport parameters (RFC 9000 section 18.2), as Chrome-like values."""
    def tp(pid: int, value: bytes) -> bytes:
        return quic_varint(pid) + quic_varint(len(value)) + value
    out = tp(0x01, quic_varint(30000))  # max_idle_timeout
    out += tp(0x04, quic_varint(15728640))  # initial_max_data
    out += tp(0x08, quic_varint(100))  # initial_max_streams_bidi
    out += tp(0x0F, scid)  # initial_source_connection_id
    return out


def quic_client_initials(rng: random.Random, ch: bytes, dcid: bytes, scid: bytes,
                         split: int | None = None) -> list[bytes]:
    """The client's Initial datagrams (each 1200 bytes) carrying ``ch`` in CRYPTO frames.

    ``split`` forces the CRYPTO data to break at that offset; otherwise it breaks only where one
    datagram is full (a post-quantum ClientHello needs two).
    """
    keys = initial_keys(dcid, client=True)
    room = 1200 - (1 + 4 + 1 + len(dcid) + 1 + len(scid) + 1 + 2 + 2 + 16) - 8
    cuts = [0]
    while cuts[-1] < len(ch):
        nxt = min(len(ch), cuts[-1] + room)
        if split is not None and cuts[-1] < split < nxt:
            nxt = split
        cuts.append(nxt)
    return [protect_initial(keys, dcid, scid, pn, crypto_frame(a, ch[a:b]))
            for pn, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def quic_server_initial(rng: random.Random, odcid: bytes, client_scid: bytes,
                        server_scid: bytes) -> bytes:
    """The server's first Initial (ACK frame + ServerHello in CRYPTO), under the server keys."""
    keys = initial_keys(odcid, client=False)
    ack = b"\x02\x00\x00\x00\x00"  # ACK: largest 0, delay 0, 0 extra ranges, first range 0
    return protect_initial(keys, client_scid, server_scid, 0,
                           ack + crypto_frame(0, server_hello(rng, quic=True)), pad_to=None)


def quic_handshake_like(rng: random.Random, dcid: bytes, scid: bytes, size: int) -> bytes:
    """A long-header Handshake packet with an opaque payload (not decryptable, as on the wire)."""
    first = 0xC0 | (2 << 4) | 1
    head = bytes([first]) + struct.pack("!I", QUIC_V1) + _vec8(dcid) + _vec8(scid)
    body = rng.randbytes(size)
    return head + struct.pack("!H", 0x4000 | len(body)) + body


def quic_short(rng: random.Random, dcid: bytes, size: int) -> bytes:
    """A 1-RTT short-header packet with an opaque payload."""
    return bytes([0x40 | rng.randrange(0x40)]) + dcid + rng.randbytes(size)


# --------------------------------------------------------------------------------------------
# Flow builders: each returns a list of (time offset in ns, frame) for one flow
# --------------------------------------------------------------------------------------------

Packets = list[tuple[int, bytes]]


@dataclass
class Endpoints:
    client: bytes
    server: bytes
    cport: int
    sport: int

    @property
    def v6(self) -> bool:
        return len(self.client) == 16


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


class TcpSession:
    """Builds one TCP connection's packets: handshake, data both ways, FIN close."""

    def __init__(self, ep: Endpoints, rng: random.Random, rtt_ns: int = 30_000_000) -> None:
        self.ep, self.rng, self.rtt = ep, rng, rtt_ns
        self.cseq = rng.getrandbits(32)
        self.sseq = rng.getrandbits(32)
        self.t = 0
        self.ident_c = rng.getrandbits(16)
        self.ident_s = rng.getrandbits(16)
        self.out: Packets = []

    def _emit(self, to_server: bool, seq: int, ack: int, flags: int, payload: bytes = b"",
              psum: int | None = None) -> None:
        ep = self.ep
        if to_server:
            seg, s = tcp_segment(ep.cport, ep.sport, seq, ack, flags, payload, psum)
            self.ident_c += 1
            frame = l3_frame(ep.client, ep.server, IPPROTO_TCP, seg, s, to_server=True,
                             ident=self.ident_c, ttl=64)
        else:
            seg, s = tcp_segment(ep.sport, ep.cport, seq, ack, flags, payload, psum, window=65160)
            self.ident_s += 1
            frame = l3_frame(ep.server, ep.client, IPPROTO_TCP, seg, s, to_server=False,
                             ident=self.ident_s, ttl=52)
        self.out.append((self.t, frame))

    def _tick(self, ns: int) -> None:
        self.t += ns

    def handshake(self) -> "TcpSession":
        self._emit(True, self.cseq, 0, TH_SYN)
        self._tick(self.rtt // 2)
        self._emit(False, self.sseq, self.cseq + 1, TH_SYN | TH_ACK)
        self.cseq += 1
        self.sseq += 1
        self._tick(self.rtt // 2)
        self._emit(True, self.cseq, self.sseq, TH_ACK)
        return self

    def client_send(self, data: bytes, cuts: Sequence[int] = (), order: Sequence[int] | None = None,
                    retransmit: int | None = None) -> "TcpSession":
        """Send ``data`` client->server as segments cut at ``cuts`` (plus MSS limits).

        ``order`` permutes the segments on the wire (out-of-order delivery); ``retransmit`` sends
        segment number ``retransmit`` again after the others, as after a lost ACK.
        """
        segs = _segments(data, cuts)
        idx = list(order) if order is not None else list(range(len(segs)))
        for i in idx:
            off, chunk = segs[i]
            self._tick(200_000)
            self._emit(True, self.cseq + off, self.sseq, TH_PSH | TH_ACK, chunk)
        if retransmit is not None:
            self._tick(self.rtt * 3)  # an RTO later
            off, chunk = segs[retransmit]
            self._emit(True, self.cseq + off, self.sseq, TH_PSH | TH_ACK, chunk)
        self.cseq += len(data)
        self._tick(self.rtt // 2)
        self._emit(False, self.sseq, self.cseq, TH_ACK)
        return self

    def server_send(self, data: bytes) -> "TcpSession":
        """Send ``data`` server->client in MSS segments, the client ACKing every second one."""
        self._tick(1_000_000)
        segs = _segments(data, ())
        for n, (off, chunk) in enumerate(segs):
            self._tick(120_000)
            self._emit(False, self.sseq + off, self.cseq, TH_ACK | (TH_PSH if off + len(chunk) ==
                                                                     len(data) else 0), chunk)
            if n % 2 == 1:
                self._tick(20_000)
                self._emit(True, self.cseq, self.sseq + off + len(chunk), TH_ACK)
        self.sseq += len(data)
        if len(segs) % 2:  # an odd last segment is ACKed after the delayed-ACK timer
            self._tick(self.rtt // 2)
            self._emit(True, self.cseq, self.sseq, TH_ACK)
        return self

    def close(self) -> Packets:
        self._tick(5_000_000)
        self._emit(True, self.cseq, self.sseq, TH_FIN | TH_ACK)
        self.cseq += 1
        self._tick(self.rtt // 2)
        self._emit(False, self.sseq, self.cseq, TH_FIN | TH_ACK)
        self.sseq += 1
        self._tick(self.rtt // 2)
        self._emit(True, self.cseq, self.sseq, TH_ACK)
        return self.out


def _segments(data: bytes, cuts: Sequence[int]) -> list[tuple[int, bytes]]:
    """Split ``data`` at the given offsets and wherever a piece would exceed the MSS."""
    bounds = sorted({0, len(data), *[c for c in cuts if 0 < c < len(data)]})
    out = []
    for a, b in zip(bounds, bounds[1:]):
        for off in range(a, b, MSS):
            out.append((off, data[off:min(b, off + MSS)]))
    return out


def udp_exchange(ep: Endpoints, up: Sequence[bytes], down: Sequence[bytes],
                 rtt_ns: int = 30_000_000) -> Packets:
    """Client datagrams, then (one half-RTT later) the server's datagrams."""
    out: Packets = []
    t = 0
    ident = 0x1000 + ep.cport
    for p in up:
        seg, s = udp_datagram(ep.cport, ep.sport, p)
        out.append((t, l3_frame(ep.client, ep.server, IPPROTO_UDP, seg, s, to_server=True,
                                ident=ident)))
        ident += 1
        t += 100_000
    t += rtt_ns // 2
    for p in down:
        seg, s = udp_datagram(ep.sport, ep.cport, p)
        out.append((t, l3_frame(ep.server, ep.client, IPPROTO_UDP, seg, s, to_server=False,
                                ident=ident, ttl=52)))
        ident += 1
        t += 150_000
    return out


def dns_exchange(ep: Endpoints, rng: random.Random, name: str, qtype: str,
                 answers: Sequence[str]) -> Packets:
    """A DNS query and its response (RFC 1035) over UDP port 53, built with dpkt."""
    qt = dpkt.dns.DNS_A if qtype == "A" else dpkt.dns.DNS_AAAA
    q = dpkt.dns.DNS(id=rng.getrandbits(16), op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name=name,
                                                                                    type=qt)])
    query = bytes(q)
    r = dpkt.dns.DNS(query)
    r.op = dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA
    r.an = []
    for a in answers:
        rr = dpkt.dns.DNS.RR(name=name, type=qt, cls=dpkt.dns.DNS_IN, ttl=300)
        if qt == dpkt.dns.DNS_A:
            rr.ip = _ip(a)
        else:
            rr.ip6 = _ip(a)
        r.an.append(rr)
    return udp_exchange(ep, [query], [bytes(r)], rtt_ns=8_000_000)


def tls_flow(ep: Endpoints, rng: random.Random, sni: str | None, *, alpn=("h2", "http/1.1"),
             pq: bool = False, ech: bool = False, cuts: Sequence[int] = (),
             order: Sequence[int] | None = None, retransmit: int | None = None,
             up_bytes: int = 600, down_bytes: int = 3000) -> Packets:
    """A TLS 1.3 connection: handshake, ClientHello, server flight, bulk both ways, FIN."""
    ch = tls_record(22, client_hello(rng, sni, alpn, pq=pq, ech=ech), version=0x0301)
    s = TcpSession(ep, rng).handshake()
    s.client_send(ch, cuts=cuts, order=order, retransmit=retransmit)
    s.server_send(tls_server_flight(rng))
    s.client_send(tls_record(20, b"\x01") + tls_record(23, rng.randbytes(74)))
    if up_bytes:
        s.client_send(tls_record(23, rng.randbytes(up_bytes)))
    if down_bytes:
        s.server_send(tls_record(23, rng.randbytes(down_bytes)))
    return s.close()


def http_flow(ep: Endpoints, rng: random.Random, host: str, path: str = "/", *,
              cuts: Sequence[int] = (), body_bytes: int = 2500) -> Packets:
    """A plain HTTP/1.1 GET with Host and a 200 response."""
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)"
           f"\r\nAccept: */*\r\nConnection: close\r\n\r\n").encode()
    body = b"<html><body>" + bytes(rng.choice(b"abcdefghij \n") for _ in range(body_bytes)) + b"</html>"
    resp = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    s = TcpSession(ep, rng).handshake()
    s.client_send(req, cuts=cuts)
    s.server_send(resp)
    return s.close()


def raw_tcp_flow(ep: Endpoints, rng: random.Random, up: int, down: int) -> Packets:
    """A TCP connection carrying opaque (non-TLS, non-HTTP) bytes both ways."""
    s = TcpSession(ep, rng).handshake()
    s.client_send(b"\x00\x01KZ" + rng.randbytes(up))
    s.server_send(b"\x00\x02" + rng.randbytes(down))
    return s.close()


def quic_flow(ep: Endpoints, rng: random.Random, sni: str, *, pq: bool = False,
              split: int | None = None, down_packets: int = 6) -> Packets:
    """A QUIC v1 connection start: client Initial(s), server Initial + Handshake, 1-RTT data."""
    dcid = rng.randbytes(8)
    scid = rng.randbytes(8)
    sscid = rng.randbytes(8)
    ch = client_hello(rng, sni, ("h3",), pq=pq, quic_tp=quic_transport_params(scid))
    up = quic_client_initials(rng, ch, dcid, scid, split=split)
    down = [quic_server_initial(rng, dcid, scid, sscid) + quic_handshake_like(rng, scid, sscid, 900)]
    down += [quic_short(rng, scid, rng.randrange(1100, 1240)) for _ in range(down_packets)]
    out = udp_exchange(ep, up, down)
    t = out[-1][0] + 2_000_000
    seg, s = udp_datagram(ep.cport, ep.sport, quic_short(rng, sscid, 40))
    out.append((t, l3_frame(ep.client, ep.server, IPPROTO_UDP, seg, s, to_server=True)))
    return out


# --------------------------------------------------------------------------------------------
# The demo capture
# --------------------------------------------------------------------------------------------

RESOLVER4 = "192.0.2.53"
IDN_NAME = "xn--80aswg.xn--80ao21a"  # сайт.қаз
VPN_IP = "2.26.157.10"  # inside 2.26.157.0/24 of x4bnet-vpn/vpn-ipv4.txt


@dataclass
class DemoFlow:
    """One line of the demo manifest: what the flow is and what a filter can learn from it."""
    flow: int
    kind: str  # tls, quic, http, dns, tcp
    name: str | None  # the name visible on the wire (SNI, Host, DNS question), None if none
    client: str
    cport: int
    server: str
    sport: int
    transport: str  # tcp or udp
    note: str = ""
    dns_answers: list[str] = field(default_factory=list)
    pq: bool = False  # ClientHello spans 2 TCP segments / 2 QUIC datagrams
    split: bool = False  # ClientHello / request split into segments on purpose
    out_of_order: bool = False
    retransmit: bool = False
    ech: bool = False
    alpn: list[str] = field(default_factory=list)


def demo_flows() -> list[DemoFlow]:
    """The manifest of the demo capture, in flow order (the capture interleaves them by time)."""
    F = DemoFlow
    rows = [
        F(0, "dns", "respublika-kz.com", "100.64.7.21", 0, RESOLVER4, 53, "udp",
          "DNS A answer for a blocked political site", dns_answers=["203.0.113.10"]),
        F(1, "tls", "respublika-kz.com", "100.64.7.21", 0, "203.0.113.10", 443, "tcp",
          "political criticism (citizenlab kz POLR)", alpn=["h2", "http/1.1"]),
        F(2, "tls", "www.ablyazov.info", "100.64.7.22", 0, "203.0.113.11", 443, "tcp",
          "POLR; X25519MLKEM768 ClientHello spans 2 TCP segments", pq=True,
          alpn=["h2", "http/1.1"]),
        F(3, "tls", "ratel.kz", "100.64.7.23", 0, "203.0.113.12", 443, "tcp",
          "news; large ClientHello, its 2 segments arrive out of order", pq=True,
          out_of_order=True, alpn=["h2", "http/1.1"]),
        F(4, "tls", "fergana.agency", "100.64.7.24", 0, "203.0.113.13", 443, "tcp",
          "news; ClientHello split inside the SNI, first segment retransmitted", split=True,
          retransmit=True, alpn=["h2", "http/1.1"]),
        F(5, "dns", "rus.azattyq.org", "100.64.7.25", 0, RESOLVER4, 53, "udp",
          "DNS AAAA answer", dns_answers=["2001:db8:f::25"]),
        F(6, "tls", "rus.azattyq.org", "2001:db8:100::25", 0, "2001:db8:f::25", 443, "tcp",
          "news over IPv6", alpn=["h2", "http/1.1"]),
        F(7, "dns", "www.azattyq.org", "100.64.7.26", 0, RESOLVER4, 53, "udp",
          "DNS A answer", dns_answers=["203.0.113.14"]),
        F(8, "quic", "www.azattyq.org", "100.64.7.26", 0, "203.0.113.14", 443, "udp",
          "news over QUIC v1, one Initial", alpn=["h3"]),
        F(9, "quic", "meduza.io", "100.64.7.27", 0, "203.0.113.15", 443, "udp",
          "news over QUIC; post-quantum ClientHello over 2 Initial datagrams", pq=True,
          split=True, alpn=["h3"]),
        F(10, "quic", "static.example.com", "2001:db8:100::27", 0, "2001:db8:f::30", 443, "udp",
          "harmless QUIC over IPv6", alpn=["h3"]),
        F(11, "http", "sarap.kz", "100.64.7.28", 0, "198.51.100.20", 80, "tcp",
          "POLR over plain HTTP"),
        F(12, "http", "guljan.org", "100.64.7.29", 0, "198.51.100.21", 80, "tcp",
          "POLR; GET split across 2 segments inside the Host header", split=True),
        F(13, "tls", "1win-kz-casino.kz", "100.64.7.30", 0, "203.0.113.16", 443, "tcp",
          "gambling (ut1 gambling.domains)", alpn=["h2", "http/1.1"]),
        F(14, "tls", "pornoelena.net", "100.64.7.31", 0, "203.0.113.17", 443, "tcp",
          "pornography (citizenlab kz PORN)", alpn=["h2", "http/1.1"]),
        F(15, "tls", "www.example.kz", "100.64.7.32", 0, "203.0.113.18", 443, "tcp",
          "under a blocked parent example.kz", alpn=["h2", "http/1.1"]),
        F(16, "tls", "mail.example.kz", "100.64.7.32", 0, "203.0.113.19", 443, "tcp",
          "allowed exception under blocked example.kz", alpn=["h2", "http/1.1"]),
        F(17, "tls", "kaspi.kz", "100.64.7.33", 0, "203.0.113.20", 443, "tcp",
          "harmless", alpn=["h2", "http/1.1"]),
        F(18, "dns", "example.org", "100.64.7.34", 0, RESOLVER4, 53, "udp",
          "harmless DNS", dns_answers=["198.51.100.22"]),
        F(19, "http", "example.org", "100.64.7.34", 0, "198.51.100.22", 80, "tcp", "harmless"),
        F(20, "tls", IDN_NAME, "100.64.7.35", 0, "203.0.113.21", 443, "tcp",
          "IDN under .қаз (сайт.қаз) as an A-label in the SNI", alpn=["h2", "http/1.1"]),
        F(21, "tls", "cloudflare-ech.com", "100.64.7.36", 0, "203.0.113.22", 443, "tcp",
          "ECH (0xfe0d): only the outer public name is visible", ech=True,
          alpn=["h2", "http/1.1"]),
        F(22, "tls", None, "100.64.7.37", 0, VPN_IP, 443, "tcp",
          "no SNI; server inside blocked VPN CIDR 2.26.157.0/24 (x4bnet-vpn)", alpn=["h2"]),
        F(23, "dns", "browsec.com", "100.64.7.38", 0, RESOLVER4, 53, "udp",
          "DNS A answer of an anonymizer (citizenlab ANON)", dns_answers=["198.51.100.77"]),
        F(24, "tcp", None, "100.64.7.38", 0, "198.51.100.77", 8443, "tcp",
          "no name on the wire: opaque bytes to an address named only by the DNS answer"),
        F(25, "tls", "vlast.kz", "100.64.7.39", 0, "203.0.113.23", 443, "tcp",
          "news; ALPN http/1.1 only", alpn=["http/1.1"]),
        F(26, "dns", "kaspi.kz", "2001:db8:100::40", 0, "2001:db8:53::53", 53, "udp",
          "harmless; DNS query over IPv6 transport, A answer", dns_answers=["203.0.113.20"]),
        F(27, "tls", "egov.kz", "100.64.7.41", 0, "203.0.113.24", 443, "tcp",
          "harmless; post-quantum ClientHello (2 segments)", pq=True, alpn=["h2", "http/1.1"]),
    ]
    rng = random.Random(f"{SEED}:ports")
    used: set[int] = set()
    for r in rows:
        while True:
            p = rng.randrange(49152, 65536)  # IANA dynamic range (RFC 6335)
            if p not in used:
                used.add(p)
                r.cport = p
                break
    return rows


def build_demo_flow(f: DemoFlow) -> Packets:
    rng = random.Random(f"{SEED}:demo:{f.flow}")
    ep = Endpoints(_ip(f.client), _ip(f.server), f.cport, f.sport)
    if f.kind == "dns":
        qtype = "AAAA" if ":" in f.dns_answers[0] else "A"
        return dns_exchange(ep, rng, f.name, qtype, f.dns_answers)
    if f.kind == "http":
        cuts = ()
        if f.split:
            cuts = (len(f"GET / HTTP/1.1\r\nHost: {f.name[:4]}"),)
        return http_flow(ep, rng, f.name, cuts=cuts)
    if f.kind == "tcp":
        return raw_tcp_flow(ep, rng, 600, 4000)
    if f.kind == "quic":
        return quic_flow(ep, rng, f.name, pq=f.pq, split=None)
    cuts: tuple[int, ...] = ()
    if f.split:
        # cut in the middle of the SNI host name: record(5) + hs(4) + version/random(34) + ...
        cuts = (_sni_offset(rng, f) + 3,)
    order = [1, 0] if f.out_of_order else None
    return tls_flow(ep, rng, f.name, alpn=tuple(f.alpn), pq=f.pq, ech=f.ech, cuts=cuts,
                    order=order, retransmit=0 if f.retransmit else None)


def _sni_offset(rng: random.Random, f: DemoFlow) -> int:
    """Offset of the SNI host name inside the ClientHello record that tls_flow will build.

    Computed on a throwaway copy of the flow's generator so the real build draws the same bytes.
    """
    probe = random.Random()
    probe.setstate(rng.getstate())
    # tls_flow builds the ClientHello first, before TcpSession draws anything: mirror that.
    rec = tls_record(22, client_hello(probe, f.name, tuple(f.alpn), pq=f.pq, ech=f.ech))
    return rec.index(f.name.encode())


def write_packets(writer, flows: Sequence[Packets], starts: Sequence[int]) -> int:
    """Merge per-flow packet lists by timestamp (stable) and write them."""
    merged = heapq.merge(*[[(st + t, i, j, fr) for j, (t, fr) in enumerate(pk)]
                           for i, (pk, st) in enumerate(zip(flows, starts))])
    n = 0
    for ts, _, _, frame in merged:
        writer.write(BASE_TS_NS + ts, frame)
        n += 1
    return n


def write_demo(path: str) -> list[DemoFlow]:
    """Write the demo capture (pcapng) to ``path``; return its manifest."""
    rows = demo_flows()
    flows = [build_demo_flow(f) for f in rows]
    starts = []
    t = 0
    for f in rows:
        # DNS lookups come just before the connection they enable; flows overlap in time
        t += 3_000_000 if f.kind == "dns" else 40_000_000
        starts.append(t)
    with open(path, "wb") as fh:
        write_packets(PcapngWriter(fh), flows, starts)
    return rows


# --------------------------------------------------------------------------------------------
# The synthetic benchmark capture (streaming)
# --------------------------------------------------------------------------------------------

_SYLLABLES = ["ka", "za", "kh", "al", "ma", "ty", "as", "ta", "na", "nur", "sul", "tan", "ber",
              "ik", "ol", "ke", "zh", "ar", "ly", "sem", "ey", "kos", "tau", "ai", "bek", "gul"]
_TLDS = ["kz", "kz", "kz", "ru", "com", "com", "org", "net", "info", "xn--80ao21a", "io"]
_PREFIXES = ["", "", "www.", "api.", "cdn.", "static.", "m.", "img.", "news.", "shop."]


def synthetic_names(count: int, extra: Sequence[str] = ()) -> list[str]:
    """A deterministic pool of plausible host names, with ``extra`` names (e.g. a blocklist) mixed in."""
    rng = random.Random(f"{SEED}:names")
    names = set()
    while len(names) < count:
        label = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randrange(2, 5)))
        names.add(f"{rng.choice(_PREFIXES)}{label}{rng.randrange(100) if rng.random() < .2 else ''}"
                  f".{rng.choice(_TLDS)}")
    out = sorted(names) + list(extra)
    rng.shuffle(out)
    return out


class _BulkPool:
    """Precomputed random payloads (full MSS) with their checksum partial sums."""

    def __init__(self, rng: random.Random, n: int = 64) -> None:
        self.chunks = [rng.randbytes(MSS) for _ in range(n)]
        self.sums = [sum16(c) for c in self.chunks]


def _fast_tcp_flow(ep: Endpoints, rng: random.Random, first: list[bytes], reply: bytes,
                   down_segs: int, up_segs: int, pool: _BulkPool,
                   order: Sequence[int] | None = None) -> Iterator[bytes]:
    """Streaming TCP flow: handshake, client first flight, server reply, bulk, FIN.

    Bulk segments reuse the pool's payloads and checksum sums, so a bulk packet costs one header
    pack plus a short header sum.
    """
    c, s, cp, sp = ep.client, ep.server, ep.cport, ep.sport
    cseq = rng.getrandbits(32)
    sseq = rng.getrandbits(32)

    def up(seq, ack, flags, payload=b"", psum=None):
        seg, sm = tcp_segment(cp, sp, seq, ack, flags, payload, psum)
        return l3_frame(c, s, IPPROTO_TCP, seg, sm, to_server=True)

    def down(seq, ack, flags, payload=b"", psum=None):
        seg, sm = tcp_segment(sp, cp, seq, ack, flags, payload, psum, window=65160)
        return l3_frame(s, c, IPPROTO_TCP, seg, sm, to_server=False, ttl=52)

    yield up(cseq, 0, TH_SYN)
    yield down(sseq, cseq + 1, TH_SYN | TH_ACK)
    cseq += 1
    sseq += 1
    yield up(cseq, sseq, TH_ACK)
    offs = []
    o = 0
    for p in first:
        offs.append(o)
        o += len(p)
    for i in (order if order is not None else range(len(first))):
        yield up(cseq + offs[i], sseq, TH_PSH | TH_ACK, first[i])
    cseq += o
    for off, chunk in _segments(reply, ()):
        yield down(sseq + off, cseq, TH_ACK, chunk)
    sseq += len(reply)
    n = len(pool.chunks)
    for k in range(down_segs):
        j = rng.randrange(n)
        yield down(sseq, cseq, TH_ACK, pool.chunks[j], pool.sums[j])
        sseq += MSS
        if k % 6 == 5:  # stretch ACKs (GRO): one per 6 full segments keeps the average ~1.2 KB
            yield up(cseq, sseq, TH_ACK)
    for k in range(up_segs):
        j = rng.randrange(n)
        yield up(cseq, sseq, TH_ACK, pool.chunks[j], pool.sums[j])
        cseq += MSS
        if k % 6 == 5:
            yield down(sseq, cseq, TH_ACK)
    yield up(cseq, sseq, TH_FIN | TH_ACK)
    yield down(sseq, cseq + 1, TH_FIN | TH_ACK)
    yield up(cseq + 1, sseq + 1, TH_ACK)


def _frames_only(pk: Packets) -> Iterator[bytes]:
    for _, fr in pk:
        yield fr


class SyntheticMix:
    """Draws flows for the synthetic capture: kinds, names, addresses and sizes, all seeded."""

    KINDS = (("tls", 40), ("tls_pq", 15), ("tls_split", 5), ("quic", 12), ("quic_pq", 5),
             ("http", 8), ("dns", 12), ("raw", 3))

    def __init__(self, seed: int = SEED, names: Sequence[str] = (), name_count: int = 20000,
                 mean_bulk_segments: int = 70) -> None:
        self.rng = random.Random(f"{seed}:synthetic")
        self.names = synthetic_names(name_count, names)
        self.pool = _BulkPool(self.rng)
        self.mean_bulk = mean_bulk_segments
        kinds, weights = zip(*self.KINDS)
        self._kinds, self._weights = kinds, weights
        self.flow_count = 0
        # a server address per name, so a DNS answer and the later flow agree
        self._server_cache: dict[str, tuple[bytes, bytes]] = {}

    def _servers(self, name: str) -> tuple[bytes, bytes]:
        srv = self._server_cache.get(name)
        if srv is None:
            h = random.Random(f"{SEED}:srv:{name}")
            v4 = bytes([203, 0, 113, h.randrange(1, 255)]) if h.random() < .5 else \
                bytes([198, 51, 100, h.randrange(1, 255)])
            v6 = bytes.fromhex("20010db8000f0000") + h.randbytes(8)
            srv = (v4, v6)
            if len(self._server_cache) < 200000:
                self._server_cache[name] = srv
        return srv

    def new_flow(self) -> Iterator[bytes]:
        r = self.rng
        self.flow_count += 1
        kind = r.choices(self._kinds, self._weights)[0]
        name = r.choice(self.names)
        v6 = r.random() < 0.15
        v4s, v6s = self._servers(name)
        if v6:
            client = bytes.fromhex("20010db80100") + r.randbytes(10)
            server = v6s
        else:
            client = bytes([100, 64 + r.randrange(64), r.randrange(256), r.randrange(1, 255)])
            server = v4s
        cport = r.randrange(32768, 61000)  # Linux ephemeral range
        frng = random.Random(r.getrandbits(64))
        bulk = int(r.expovariate(1 / self.mean_bulk))
        if kind == "dns":
            resolver = _ip("2001:db8:53::53") if v6 else _ip(RESOLVER4)
            qtype = "AAAA" if r.random() < 0.3 else "A"
            ans = ["2001:db8:f::" + format(r.randrange(1, 0xFFFF), "x")] if qtype == "AAAA" \
                else [str(ipaddress.ip_address(v4s))]
            return _frames_only(dns_exchange(Endpoints(client, resolver, cport, 53), frng, name,
                                             qtype, ans))
        if kind.startswith("quic"):
            ep = Endpoints(client, server, cport, 443)
            return _frames_only(quic_flow(ep, frng, name, pq=kind == "quic_pq",
                                          down_packets=min(bulk, 400)))
        ep = Endpoints(client, server, cport, 80 if kind == "http" else 443)
        if kind == "http":
            req = (f"GET /{r.randrange(10**6)} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: curl/8.5.0"
                   f"\r\nAccept: */*\r\n\r\n").encode()
            reply = (f"HTTP/1.1 200 OK\r\nContent-Length: {bulk * MSS}\r\n\r\n").encode()
            first = [req]
            if r.random() < 0.2:
                cut = req.index(b"Host: ") + 8
                first = [req[:cut], req[cut:]]
            return _fast_tcp_flow(ep, frng, first, reply, bulk, 0, self.pool)
        if kind == "raw":
            ep.sport = 8443
            return _fast_tcp_flow(ep, frng, [frng.randbytes(300)], frng.randbytes(200), bulk,
                                  bulk // 4, self.pool)
        ch = tls_record(22, client_hello(frng, name, pq=kind == "tls_pq"), version=0x0301)
        if kind == "tls_split":
            cut = ch.index(name.encode()) + len(name) // 2
            first = [ch[:cut], ch[cut:]]
        else:
            first = [ch[a:a + MSS] for a in range(0, len(ch), MSS)]
        order = [1, 0] if len(first) == 2 and r.random() < 0.1 else None
        return _fast_tcp_flow(ep, frng, first, tls_server_flight(frng), bulk, bulk // 8 + 1,
                              self.pool, order=order)


def write_synthetic(path: str, packets: int, *, concurrent: int = 2000, seed: int = SEED,
                    names: Sequence[str] = (), progress: Callable[[int], None] | None = None) -> dict:
    """Stream ``packets`` packets of interleaved flows to a pcap at ``path``; return statistics.

    ``concurrent`` flows are open at any time; each step emits the next packet of a randomly
    chosen open flow, and a finished flow is replaced by a new one.  Memory stays flat.
    """
    mix = SyntheticMix(seed, names)
    r = random.Random(f"{seed}:sched")
    active = [mix.new_flow() for _ in range(concurrent)]
    ts = BASE_TS_NS
    total_bytes = 0
    with open(path, "wb", buffering=1 << 22) as fh:
        w = PcapWriter(fh)
        rnd = r.random
        n = 0
        while n < packets:
            i = int(rnd() * concurrent)
            try:
                frame = next(active[i])
            except StopIteration:
                active[i] = mix.new_flow()
                continue
            ts += 2000 + int(rnd() * 16000)
            w.write(ts, frame)
            total_bytes += len(frame)
            n += 1
            if progress is not None and n % 500000 == 0:
                progress(n)
    return {"packets": n, "flows_started": mix.flow_count, "bytes": total_bytes,
            "mean_frame": total_bytes / max(n, 1)}


# --------------------------------------------------------------------------------------------
# The one-packet-flow capture (a SYN scan from many sources)
# --------------------------------------------------------------------------------------------

SCAN_PORTS = (22, 23, 80, 443, 445, 3389, 8080, 8443, 1194, 51820)


def write_scan(path: str, flows: int, *, seed: int = SEED) -> dict:
    """Write ``flows`` TCP SYNs, each its own flow: distinct (source address, port) per packet.

    Sources walk 100.64.0.0/10 (4M addresses, so up to 4M flows have distinct sources); targets
    are 256 addresses of 203.0.113.0/24 on common ports.  10% of packets are IPv6.
    """
    if flows > 1 << 22:
        raise ValueError("at most 4194304 one-packet flows")
    r = random.Random(f"{seed}:scan")
    base = int(ipaddress.ip_address("100.64.0.0"))
    v6base = bytes.fromhex("20010db8020000000000")
    step = 2654435761 % (1 << 22) | 1  # odd stride: a permutation of the /10
    ts = BASE_TS_NS
    hdr_tcp = struct.Struct("!HHIIBBHHH")
    # SYN options are constant: fold their sum in once
    opt_sum = sum16(_SYN_OPTS)
    with open(path, "wb", buffering=1 << 22) as fh:
        w = PcapWriter(fh)
        for i in range(flows):
            src_n = base + (i * step) % (1 << 22)
            sport = 1024 + r.getrandbits(16) % 64000
            dport = SCAN_PORTS[r.getrandbits(8) % len(SCAN_PORTS)]
            dst = bytes([203, 0, 113, r.getrandbits(8)])
            seq = r.getrandbits(32)
            tcp = hdr_tcp.pack(sport, dport, seq, 0, 0x80, TH_SYN, 1024, 0, 0) + _SYN_OPTS
            s = sum16(tcp[:20]) + opt_sum
            if i % 10 == 9:
                src = v6base + i.to_bytes(6, "big")
                dst = bytes.fromhex("20010db8000f00000000000000000001")
            else:
                src = src_n.to_bytes(4, "big")
            frame = l3_frame(src, dst, IPPROTO_TCP, tcp, s, to_server=True, ident=i, ttl=48)
            ts += 500 + r.getrandbits(10)
            w.write(ts, frame)
    return {"packets": flows, "flows": flows}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="small demo pcapng with every hostname path")
    d.add_argument("--out", required=True)
    d.add_argument("--manifest", help="also write the flow list as JSON here ('-' for stdout)")
    s = sub.add_parser("synthetic", help="large interleaved benchmark pcap (streamed)")
    s.add_argument("--packets", type=int, default=2_000_000)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=SEED)
    s.add_argument("--concurrent", type=int, default=2000, help="open flows at any time")
    s.add_argument("--names", help="file of extra host names (one per line) to mix in")
    c = sub.add_parser("scan", help="one-packet flows (SYN scan from many sources)")
    c.add_argument("--flows", type=int, default=1_000_000)
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    t0 = time.perf_counter()
    if a.cmd == "demo":
        rows = write_demo(a.out)
        info = {"flows": len(rows)}
        if a.manifest:
            text = json.dumps([asdict(r) for r in rows], indent=1, ensure_ascii=False)
            if a.manifest == "-":
                print(text)
            else:
                with open(a.manifest, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")
    elif a.cmd == "synthetic":
        extra: list[str] = []
        if a.names:
            with open(a.names, encoding="utf-8") as fh:
                extra = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        info = write_synthetic(a.out, a.packets, concurrent=a.concurrent, seed=a.seed, names=extra,
                               progress=lambda n: print(f"  {n} packets", file=sys.stderr))
    else:
        info = write_scan(a.out, a.flows, seed=a.seed)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps({"out": a.out, **info}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
