"""Plain-Python reference model of QUIC client Initial decryption: the oracle for packet/_quic.

This is the Python decoder kzfilter used before the parsing moved to C (``kzfilter.packet._quic``),
kept whole and on its own (its own version table and salts; the key schedule is the capture
generator's, tools/gen_captures.py, on cryptography's HKDF): long-header parse, varints,
header-protection removal with a fresh AES-ECB context per packet, AES-GCM, and the frame walk.  ``decrypt(datagram)`` returns what ``kzfilter.packet.quic.decrypt_initial`` must return:
``(reason, None)`` or ``("ok", (version, dcid, scid, frames, packets, truncated))``.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_TOOLS = str(Path(__file__).resolve().parents[2] / "tools")
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)
from gen_captures import hkdf_expand_label, hkdf_extract  # noqa: E402 - tools/, independent HKDF

MAX_FRAMES_PER_PACKET = 256
MAX_PACKETS_PER_DATAGRAM = 8

_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
_SALT_D22 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
_SALT_T050 = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T051 = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")
_SALT_Q050 = bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45")
_V1_LABELS = ("quic key", "quic iv", "quic hp")
_V2_LABELS = ("quicv2 key", "quicv2 iv", "quicv2 hp")


def profile(version: int) -> tuple[bytes, tuple[str, str, str], int, int] | None:
    """(salt, labels, Initial packet type, CRYPTO frame type) of a version, or None."""
    if version == 0x00000001:
        return _SALT_V1, _V1_LABELS, 0, 0x06
    if version == 0x6B3343CF:
        return _SALT_V2, _V2_LABELS, 1, 0x06
    gquic = {0x54303530: _SALT_T050, 0x54303531: _SALT_T051, 0x51303530: _SALT_Q050}
    if version in gquic:
        return gquic[version], _V1_LABELS, 0, 0x08
    if version == 0xFACEB001:
        return _SALT_D22, _V1_LABELS, 0, 0x06
    if version in (0xFACEB002, 0xFACEB00E):
        return _SALT_D23, _V1_LABELS, 0, 0x06
    if version >> 8 == 0xFF0000:
        draft = version & 0xFF
        for lo, hi, salt in ((22, 22, _SALT_D22), (23, 28, _SALT_D23), (29, 32, _SALT_D29),
                             (33, 34, _SALT_V1)):
            if lo <= draft <= hi:
                return salt, _V1_LABELS, 0, 0x06
    return None


@functools.lru_cache(maxsize=256)
def _ciphers(version: int, dcid: bytes) -> tuple[AESGCM, bytes, int]:
    prof = profile(version)
    assert prof is not None
    salt, (k, iv, hp), _, _ = prof
    secret = hkdf_expand_label(hkdf_extract(salt, dcid), "client in", 32)
    return (AESGCM(hkdf_expand_label(secret, k, 16)), hkdf_expand_label(secret, hp, 16),
            int.from_bytes(hkdf_expand_label(secret, iv, 12), "big"))


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        raise IndexError("varint cut")
    v = first & 0x3F
    for b in buf[pos + 1: pos + n]:
        v = (v << 8) | b
    return v, pos + n


def walk_frames(plain: bytes, crypto_type: int, frames: list[tuple[int, bytes]]) -> bool:
    """Append the CRYPTO frames to ``frames``; True when the walk stopped early (truncated).

    Raises IndexError or _Reject when a frame runs past the payload.
    """
    pos, count, n = 0, 0, len(plain)
    while pos < n:
        count += 1
        if count > MAX_FRAMES_PER_PACKET:
            return True
        ftype = plain[pos]
        if ftype == 0x00:
            pos = n - len(plain[pos:].lstrip(b"\x00"))
            continue
        if ftype == 0x01:
            pos += 1
        elif ftype in (0x02, 0x03) and crypto_type == 0x06:
            _, pos = _varint(plain, pos + 1)
            _, pos = _varint(plain, pos)
            ranges, pos = _varint(plain, pos)
            _, pos = _varint(plain, pos)
            if ranges > n:
                raise _Reject("malformed")
            for _ in range(ranges):
                _, pos = _varint(plain, pos)
                _, pos = _varint(plain, pos)
            if ftype == 0x03:
                for _ in range(3):
                    _, pos = _varint(plain, pos)
        elif ftype == crypto_type:
            off, pos = _varint(plain, pos + 1)
            ln, pos = _varint(plain, pos)
            if pos + ln > n:
                raise _Reject("malformed")
            frames.append((off, bytes(plain[pos: pos + ln])))
            pos += ln
        else:
            return True
    return False


def _decrypt(datagram: bytes) -> tuple[int, bytes, bytes, list[tuple[int, bytes]], int, bool]:
    buf = bytes(datagram)
    if len(buf) < 7 or not buf[0] & 0x80:
        raise _Reject("not-quic")
    first_dcid: bytes | None = None
    version0, scid0, frames, packets, truncated = 0, b"", [], 0, False
    pos = 0
    for _ in range(MAX_PACKETS_PER_DATAGRAM):
        try:
            if pos >= len(buf) or not buf[pos] & 0x80 or pos + 7 > len(buf):
                break
            first = buf[pos]
            version = int.from_bytes(buf[pos + 1: pos + 5], "big")
            if version == 0:
                raise _Reject("not-initial")
            prof = profile(version)
            if prof is None:
                if first_dcid is None:
                    raise _Reject("unknown-version")
                break
            _, _, initial_type, crypto_type = prof
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
                if ptype != initial_type:
                    if first_dcid is None:
                        raise _Reject("not-initial")
                    if ptype == (initial_type + 3) % 4:
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
            if first_dcid is None:
                first_dcid, version0, scid0 = dcid, version, scid
            elif dcid != first_dcid:
                break
            aead, hp, iv_int = _ciphers(version, first_dcid)
            enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
            mask = enc.update(buf[pn_offset + 4: pn_offset + 20]) + enc.finalize()
            hdr0 = first ^ (mask[0] & 0x0F)
            pn_len = (hdr0 & 0x03) + 1
            pn_bytes = bytes(b ^ m for b, m in zip(buf[pn_offset: pn_offset + pn_len], mask[1: 1 + pn_len]))
            header = bytes([hdr0]) + buf[pos + 1: pn_offset] + pn_bytes
            nonce = (iv_int ^ int.from_bytes(pn_bytes, "big")).to_bytes(12, "big")
            try:
                plain = aead.decrypt(nonce, buf[pn_offset + pn_len: end], header)
            except InvalidTag:
                if packets == 0:
                    raise _Reject("decrypt-failed") from None
                break
            packets += 1
            try:
                truncated |= walk_frames(plain, crypto_type, frames)
            except (IndexError, _Reject):
                truncated = True
                if not frames:
                    raise _Reject("malformed") from None
                break
            pos = end
        except _Reject:
            if first_dcid is None or not frames:
                raise
            truncated = True
            break
    if first_dcid is None:
        raise _Reject("not-quic")
    if packets == 0:
        raise _Reject("decrypt-failed")
    return version0, first_dcid, scid0, frames, packets, truncated


def decrypt(datagram: bytes) -> tuple[str, tuple[int, bytes, bytes, list[tuple[int, bytes]], int, bool] | None]:
    """``("ok", (version, dcid, scid, frames, packets, truncated))`` or ``(reason, None)``."""
    try:
        return "ok", _decrypt(datagram)
    except _Reject as exc:
        return exc.reason, None
