"""QUIC Initial packet protection removal (RFC 9001 section 5) and CRYPTO stream reassembly.

A client's first datagram carries one or more Initial packets (RFC 9000 12.2: coalesced) whose
keys derive from the Destination Connection ID alone, so a passive observer can decrypt them and
read the TLS ClientHello (RFC 9001 5.2).  This module does that for:

* QUIC v1 (0x00000001, RFC 9001 salt), QUIC v2 (0x6b3343cf, RFC 9369: own salt, ``quicv2 *``
  labels, Initial long-header type 0b01 instead of 0b00);
* IETF drafts 22 (draft-22 salt), 23-28 (draft-23 salt), 29-32 (draft-29 salt), 33-34 (v1 salt);
* Facebook mvfst 0xfaceb001 (draft-22 salt), 0xfaceb002 and 0xfaceb00e "experimental" (draft-23
  salt), as nDPI and Wireshark map them;
* Google T050/T051 (QUIC with TLS, own salts, CRYPTO frame type 0x08);
* Google Q050 (0x51303530): the IETF long header and Initial protection with its own salt and the
  v1 labels, CRYPTO frame type 0x08 as in T05x, but the handshake inside is Google's QUIC crypto
  CHLO (a tag/value map whose ``SNI`` tag is the name), not TLS.  The salt is the one Chromium
  used for Q050 and that Wireshark (``packet-quic.c``) and nDPI (``protocols/quic.c``) publish.

It runs in Python with the ``cryptography`` package: QUIC is a small share of flows and AES-GCM is
done in C by OpenSSL anyway.  The flow table hands the reassembled CRYPTO bytes to the compiled
TLS parser (:func:`client_hello_from_crypto`).

Example::

    ini = initial_crypto_frames(udp_payload)
    if ini is not None:
        status, info = client_hello_from_crypto(ini.frames)
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._hostnames import NS_NEED_MORE, parse_quic_crypto

if TYPE_CHECKING:
    from ._hostnames import TlsInfo

__all__ = [
    "QuicInitial",
    "initial_crypto_frames",
    "quic_reason",
    "client_hello_from_crypto",
    "client_initial_keys",
    "reassemble_crypto",
    "version_name",
    "MAX_FRAMES_PER_PACKET",
    "MAX_CRYPTO_BYTES",
]

MAX_FRAMES_PER_PACKET = 256     # frames examined per Initial packet before giving up on the rest
MAX_CRYPTO_BYTES = 16384        # CRYPTO stream bytes reassembled for the ClientHello
MAX_PACKETS_PER_DATAGRAM = 8    # coalesced packets examined per datagram (RFC 9000 12.2)

# Initial salts (RFC 9001 5.2, RFC 9369 3.3.1 and the drafts they replace).
_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
_SALT_D22 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
_SALT_T050 = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T051 = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")
_SALT_Q050 = bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45")

V1 = 0x00000001
V2 = 0x6B3343CF
T050 = 0x54303530
T051 = 0x54303531
Q050 = 0x51303530
MVFST_22 = 0xFACEB001
MVFST_27 = 0xFACEB002
MVFST_EXP = 0xFACEB00E

_FRAME_PADDING = 0x00
_FRAME_PING = 0x01
_FRAME_ACK = 0x02
_FRAME_ACK_ECN = 0x03
_FRAME_CRYPTO = 0x06
_FRAME_CRYPTO_GQUIC = 0x08      # Google T05x number the CRYPTO frame 0x08


@dataclass(frozen=True)
class _Profile:
    salt: bytes
    labels: tuple[bytes, bytes, bytes]   # key, iv, hp labels (RFC 9001 5.1 / RFC 9369 3.3.2)
    initial_type: int                    # long-header packet type bits of an Initial
    crypto_frame: int


_V1_LABELS = (b"quic key", b"quic iv", b"quic hp")
_V2_LABELS = (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")


def _profile(version: int) -> _Profile | None:
    """Keys and header layout for a version, or None when we cannot decrypt it."""
    if version == V1:
        return _Profile(_SALT_V1, _V1_LABELS, 0, _FRAME_CRYPTO)
    if version == V2:
        # RFC 9369 3.2: Initial is type 0b01 in v2.
        return _Profile(_SALT_V2, _V2_LABELS, 1, _FRAME_CRYPTO)
    if version == T050:
        return _Profile(_SALT_T050, _V1_LABELS, 0, _FRAME_CRYPTO_GQUIC)
    if version == T051:
        return _Profile(_SALT_T051, _V1_LABELS, 0, _FRAME_CRYPTO_GQUIC)
    if version == Q050:
        return _Profile(_SALT_Q050, _V1_LABELS, 0, _FRAME_CRYPTO_GQUIC)
    if version == MVFST_22:
        return _Profile(_SALT_D22, _V1_LABELS, 0, _FRAME_CRYPTO)
    if version in (MVFST_27, MVFST_EXP):
        return _Profile(_SALT_D23, _V1_LABELS, 0, _FRAME_CRYPTO)
    if version >> 8 == 0xFF0000:
        draft = version & 0xFF
        if draft == 22:
            return _Profile(_SALT_D22, _V1_LABELS, 0, _FRAME_CRYPTO)
        if 23 <= draft <= 28:
            return _Profile(_SALT_D23, _V1_LABELS, 0, _FRAME_CRYPTO)
        if 29 <= draft <= 32:
            return _Profile(_SALT_D29, _V1_LABELS, 0, _FRAME_CRYPTO)
        if 33 <= draft <= 34:
            return _Profile(_SALT_V1, _V1_LABELS, 0, _FRAME_CRYPTO)
    return None


def version_name(version: int) -> str:
    """Human-readable version in nDPI's ``quic_version`` spelling (``V-1``, ``Draft-29``)."""
    if version == V1:
        return "V-1"
    if version == V2:
        return "V-2"
    if version >> 8 == 0xFF0000:
        return f"Draft-{version & 0xFF}"
    if version in (MVFST_22, MVFST_27):
        return "MVFST-22" if version == MVFST_22 else "MVFST-27"
    if version == MVFST_EXP:
        return "MVFST-EXP"
    raw = version.to_bytes(4, "big")
    if raw[:1] in (b"Q", b"T") and raw[1:].isdigit():
        return raw.decode()
    return f"0x{version:08x}"


# --- RFC 5869 HKDF and RFC 8446 7.1 HKDF-Expand-Label, SHA-256 only ------------------------------

def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


@functools.lru_cache(maxsize=1024)    # a flow's Initials share one DCID: derive its keys once
def client_initial_keys(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """Return the client Initial ``(key, iv, hp)`` for a version and Destination Connection ID.

    Raises ``ValueError`` for a version this module cannot decrypt.
    """
    prof = _profile(version)
    if prof is None:
        raise ValueError(f"unsupported QUIC version 0x{version:08x}")
    secret = _hkdf_expand_label(_hkdf_extract(prof.salt, dcid), b"client in", 32)
    k, iv, hp = prof.labels
    return (_hkdf_expand_label(secret, k, 16), _hkdf_expand_label(secret, iv, 12),
            _hkdf_expand_label(secret, hp, 16))


@functools.lru_cache(maxsize=1024)
def _client_ciphers(version: int, dcid: bytes) -> tuple[AESGCM, Cipher, int]:
    """The AEAD, the header-protection cipher and the IV (as an int) of a connection's client
    Initials, built once per DCID: building cipher objects cost more than decrypting a packet."""
    key, iv, hp = client_initial_keys(version, dcid)
    return AESGCM(key), Cipher(algorithms.AES(hp), modes.ECB()), int.from_bytes(iv, "big")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """RFC 9000 16: read a variable-length integer; raise IndexError when cut."""
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        raise IndexError("varint cut")
    v = first & 0x3F
    for b in buf[pos + 1: pos + n]:
        v = (v << 8) | b
    return v, pos + n


@dataclass
class QuicInitial:
    """The decrypted client Initial packets of one datagram.

    ``frames`` holds ``(offset, data)`` of every CRYPTO frame, in packet order; ``packets`` counts
    the Initial packets decrypted; ``truncated`` is set when a packet had more than
    ``MAX_FRAMES_PER_PACKET`` frames or an unknown frame type stopped the walk early.
    """

    version: int
    dcid: bytes
    scid: bytes
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    packets: int = 0
    truncated: bool = False


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _frames(plain: bytes, crypto_type: int, out: QuicInitial) -> None:
    """Walk the frames of a decrypted Initial payload (RFC 9000 12.4, 19)."""
    pos, count, n = 0, 0, len(plain)
    while pos < n:
        count += 1
        if count > MAX_FRAMES_PER_PACKET:
            out.truncated = True
            return
        ftype = plain[pos]
        if ftype == _FRAME_PADDING:
            # A run of PADDING counts as one frame: real Initials carry hundreds of zero bytes.
            pos = n - len(plain[pos:].lstrip(b"\x00"))
            continue
        if ftype == _FRAME_PING:
            pos += 1
        elif ftype in (_FRAME_ACK, _FRAME_ACK_ECN) and crypto_type == _FRAME_CRYPTO:
            # ACK: largest, delay, range count, first range, ranges (gap, len)*, [3 ECN counts]
            _, pos = _varint(plain, pos + 1)
            _, pos = _varint(plain, pos)
            ranges, pos = _varint(plain, pos)
            _, pos = _varint(plain, pos)
            if ranges > n:
                raise _Reject("malformed")
            for _ in range(ranges):
                _, pos = _varint(plain, pos)
                _, pos = _varint(plain, pos)
            if ftype == _FRAME_ACK_ECN:
                for _ in range(3):
                    _, pos = _varint(plain, pos)
        elif ftype == crypto_type:
            off, pos = _varint(plain, pos + 1)
            ln, pos = _varint(plain, pos)
            if pos + ln > n:
                raise _Reject("malformed")
            out.frames.append((off, bytes(plain[pos: pos + ln])))
            pos += ln
        else:
            # CONNECTION_CLOSE or a type not allowed in Initial packets: stop cleanly, keeping the
            # CRYPTO data already read.
            out.truncated = True
            return


def _decrypt_packets(datagram: bytes) -> QuicInitial:
    """Decrypt every client Initial in the datagram, or raise _Reject(reason)."""
    buf = bytes(datagram)
    if len(buf) < 7 or not buf[0] & 0x80:
        raise _Reject("not-quic")      # short header or too short for a long header
    result: QuicInitial | None = None
    pos = 0
    for _ in range(MAX_PACKETS_PER_DATAGRAM):
        try:
            if pos >= len(buf) or not buf[pos] & 0x80:
                break                      # the rest is a short-header packet or padding
            if pos + 7 > len(buf):
                break
            first = buf[pos]
            version = int.from_bytes(buf[pos + 1: pos + 5], "big")
            if version == 0:
                raise _Reject("not-initial")   # Version Negotiation (RFC 9000 17.2.1)
            prof = _profile(version)
            if prof is None:
                if result is None:
                    raise _Reject("unknown-version")
                break
            p = pos + 5
            dcil = buf[p]
            if dcil > 20 or p + 1 + dcil >= len(buf):
                raise _Reject("malformed")
            dcid = buf[p + 1: p + 1 + dcil]
            p += 1 + dcil
            scil = buf[p]
            if scil > 20 or p + 1 + scil > len(buf):
                raise _Reject("malformed")
            scid = buf[p + 1: p + 1 + scil]
            p += 1 + scil
            try:
                ptype = (first >> 4) & 0x03
                if ptype != prof.initial_type:
                    if result is None:
                        raise _Reject("not-initial")
                    # 0-RTT / Handshake packets after the Initial: skip them by their Length.
                    if ptype == (prof.initial_type + 3) % 4:    # Retry has no Length: stop
                        break
                    length, p = _varint(buf, p)
                    pos = p + length
                    continue
                token_len, p = _varint(buf, p)
                p += token_len
                length, p = _varint(buf, p)
            except IndexError:
                raise _Reject("malformed") from None
            pn_offset = p
            end = pn_offset + length
            if end > len(buf) or length < 20:
                raise _Reject("malformed")
            if result is None:
                result = QuicInitial(version, bytes(dcid), bytes(scid))
            elif dcid != result.dcid:
                break                      # a packet of another connection: not ours to decrypt
            aead, hp_cipher, iv_int = _client_ciphers(version, result.dcid)
            # RFC 9001 5.4.2: the sample starts 4 bytes after the packet number field's start.
            sample = buf[pn_offset + 4: pn_offset + 20]
            enc = hp_cipher.encryptor()
            mask = enc.update(sample) + enc.finalize()
            hdr0 = first ^ (mask[0] & 0x0F)
            pn_len = (hdr0 & 0x03) + 1
            pn_field = buf[pn_offset: pn_offset + pn_len]
            pn_bytes = bytes(b ^ m for b, m in zip(pn_field, mask[1: 1 + pn_len]))
            header = bytes([hdr0]) + buf[pos + 1: pn_offset] + pn_bytes
            pn = int.from_bytes(pn_bytes, "big")
            nonce = (iv_int ^ pn).to_bytes(12, "big")
            try:
                plain = aead.decrypt(nonce, buf[pn_offset + pn_len: end], header)
            except InvalidTag:
                if result.packets == 0:
                    raise _Reject("decrypt-failed") from None
                break
            result.packets += 1
            try:
                _frames(plain, prof.crypto_frame, result)
            except (IndexError, _Reject):
                # A frame runs past the payload: keep the CRYPTO data read before it, if any.
                result.truncated = True
                if not result.frames:
                    raise _Reject("malformed") from None
                break
            pos = end
        except _Reject:
            # A broken later packet (or frame) does not cost the CRYPTO data already decrypted.
            if result is None or not result.frames:
                raise
            result.truncated = True
            break
    if result is None or result.packets == 0:
        raise _Reject("not-quic" if result is None else "decrypt-failed")
    return result


def initial_crypto_frames(datagram: bytes) -> QuicInitial | None:
    """Decrypt the client Initial packets of one UDP payload and return their CRYPTO frames.

    Parameters: ``datagram`` one UDP payload.  Returns a :class:`QuicInitial` or None when the
    datagram is not a client Initial this module can decrypt (see :func:`quic_reason` for why).
    Never raises on bad input.
    """
    try:
        return _decrypt_packets(datagram)
    except _Reject:
        return None


def decrypt_initial(datagram: bytes) -> tuple[str, QuicInitial | None]:
    """``("ok", frames)`` or ``(reason, None)`` in one pass (the flow table's entry point)."""
    try:
        return "ok", _decrypt_packets(datagram)
    except _Reject as exc:
        return exc.reason, None


def quic_reason(datagram: bytes) -> str:
    """Why :func:`initial_crypto_frames` returns None: ``"ok"`` when it does not, else one of
    ``"not-quic"``, ``"not-initial"``, ``"unknown-version"``, ``"decrypt-failed"``, ``"malformed"``.
    """
    try:
        _decrypt_packets(datagram)
    except _Reject as exc:
        return exc.reason
    return "ok"


def reassemble_crypto(frames: list[tuple[int, bytes]], limit: int = MAX_CRYPTO_BYTES) -> bytes:
    """Return the contiguous CRYPTO stream bytes from offset 0, from frames in any order.

    Overlaps and duplicates are allowed (RFC 9000 2.2 requires the copies to be identical, so the
    bytes already held win); bytes past ``limit`` are ignored; the result stops at the first gap.
    """
    out = bytearray()
    for off, data in sorted(frames, key=lambda f: f[0]):
        if off > len(out) or len(out) >= limit:
            break
        if off + len(data) > len(out):
            out += data[len(out) - off:]
    return bytes(out[:limit])


def client_hello_from_crypto(frames: list[tuple[int, bytes]]) -> tuple[int, TlsInfo]:
    """Reassemble CRYPTO frames (out of order, overlapping, duplicated) and parse the ClientHello.

    Returns the ``(status, info)`` of :func:`kzfilter.packet._hostnames.parse_quic_crypto`: a TLS
    ClientHello parsed as with ``parse_client_hello(stream, False)``, or the ``SNI`` tag of a
    Q050 CHLO; ``NS_NEED_MORE`` while the stream has a gap before the message ends.
    """
    stream = reassemble_crypto(frames)
    if not stream:
        return NS_NEED_MORE, {"name": None, "alpn": None, "ech": False, "hello_len": 0}
    return parse_quic_crypto(stream)
