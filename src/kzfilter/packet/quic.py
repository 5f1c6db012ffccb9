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

The parsing (long headers, varints, header-protection arithmetic, the frame walk) is compiled
(:mod:`kzfilter.packet._quic`); here the ciphers are the ``cryptography`` package's (OpenSSL), built
once per connection ID.  The flow table decrypts the same way in C through libcrypto, without the
GIL (``_quic.open_initials_c``), and falls back to these functions where libcrypto cannot be
loaded.  The flow table hands the reassembled CRYPTO bytes to the compiled TLS parser
(:func:`client_hello_from_crypto`).

Example::

    ini = initial_crypto_frames(udp_payload)
    if ini is not None:
        status, info = client_hello_from_crypto(ini.frames)
"""
from __future__ import annotations

import functools
import hmac
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._build_check import import_compiled
from ._hostnames import NS_NEED_MORE, parse_quic_crypto

if TYPE_CHECKING:
    from ._hostnames import TlsInfo

_quic = import_compiled("kzfilter.packet._quic")

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

MAX_FRAMES_PER_PACKET: int = _quic.MAX_FRAMES_PER_PACKET          # 256 frames per Initial packet
MAX_PACKETS_PER_DATAGRAM: int = _quic.MAX_PACKETS_PER_DATAGRAM    # 8 coalesced packets (RFC 9000 12.2)
MAX_CRYPTO_BYTES = 16384        # CRYPTO stream bytes reassembled for the ClientHello

V1: int = _quic.V1
V2: int = _quic.V2
T050: int = _quic.T050
T051: int = _quic.T051
Q050: int = _quic.Q050
MVFST_22: int = _quic.MVFST_22
MVFST_27: int = _quic.MVFST_27
MVFST_EXP: int = _quic.MVFST_EXP

_V1_LABELS = (b"quic key", b"quic iv", b"quic hp")          # RFC 9001 5.1
_V2_LABELS = (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")    # RFC 9369 3.3.2


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
    return hmac.digest(salt, ikm, "sha256")   # one-shot: OpenSSL's HMAC without a Python object


def _hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes([i]), "sha256")
        out += block
        i += 1
    return out[:length]


@functools.lru_cache(maxsize=1024)    # a flow's Initials share one DCID: derive its keys once
def client_initial_keys(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """Return the client Initial ``(key, iv, hp)`` for a version and Destination Connection ID.

    Raises ``ValueError`` for a version this module cannot decrypt.
    """
    prof = _quic.version_profile(version)
    if prof is None:
        raise ValueError(f"unsupported QUIC version 0x{version:08x}")
    salt, v2_labels, _, _ = prof
    secret = _hkdf_expand_label(_hkdf_extract(salt, dcid), b"client in", 32)
    k, iv, hp = _V2_LABELS if v2_labels else _V1_LABELS
    return (_hkdf_expand_label(secret, k, 16), _hkdf_expand_label(secret, iv, 12),
            _hkdf_expand_label(secret, hp, 16))


@functools.lru_cache(maxsize=1024)
def initial_ciphers(version: int, dcid: bytes) -> tuple[AESGCM, CipherContext, bytes]:
    """The AEAD, the header-protection AES-ECB encryptor and the IV of a connection's client
    Initials, built once per DCID (building cipher objects costs more than decrypting a packet).

    The encryptor is never finalised: ECB keeps no state between blocks, so each packet's mask is
    one ``update`` of its 16-byte sample.  Raises ``ValueError`` for an unsupported version.
    """
    key, iv, hp = client_initial_keys(version, dcid)
    return AESGCM(key), Cipher(algorithms.AES(hp), modes.ECB()).encryptor(), iv


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


def decrypt_initial(datagram: bytes) -> tuple[str, QuicInitial | None]:
    """``("ok", initial)`` or ``(reason, None)`` in one pass; the reason is one of ``"not-quic"``,
    ``"not-initial"``, ``"unknown-version"``, ``"decrypt-failed"``, ``"malformed"``."""
    status, version, dcid, scid, frames, packets, truncated = _quic.open_initials(datagram, initial_ciphers)
    if status:
        return _quic.QS_NAMES[status], None
    return "ok", QuicInitial(version, dcid, scid, frames, packets, truncated)


def initial_crypto_frames(datagram: bytes) -> QuicInitial | None:
    """Decrypt the client Initial packets of one UDP payload and return their CRYPTO frames.

    Parameters: ``datagram`` one UDP payload.  Returns a :class:`QuicInitial` or None when the
    datagram is not a client Initial this module can decrypt (see :func:`quic_reason` for why).
    Never raises on bad input.
    """
    return decrypt_initial(datagram)[1]


def quic_reason(datagram: bytes) -> str:
    """Why :func:`initial_crypto_frames` returns None: ``"ok"`` when it does not, else one of
    ``"not-quic"``, ``"not-initial"``, ``"unknown-version"``, ``"decrypt-failed"``, ``"malformed"``.
    """
    return decrypt_initial(datagram)[0]


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
