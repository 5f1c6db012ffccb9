# cython: language_level=3
"""QUIC client Initial parsing in C: long headers, varints, the frame walk, packet-number unmasking.

``kzfilter.packet.quic`` is the public face; this module does the per-datagram work that was
Python code: the long-header parse (RFC 9000 17.2), the variable-length integers (RFC 9000 16),
the header-protection removal arithmetic (RFC 9001 5.4) and the walk over PADDING, PING, ACK and
CRYPTO frames (RFC 9000 19).  The two ciphers stay in the ``cryptography`` package (OpenSSL):
:func:`open_initials` calls the AES-ECB encryptor (one 16-byte block per packet: the header
protection mask) and AES-GCM through the objects its ``ciphers`` callable returns, so each packet
costs two calls into ``cryptography`` and no Python-level parsing.

Every read is length-checked by hand; malformed input gives a ``QS_*`` status, never an
exception.  The version table (:func:`version_profile`, :data:`SALTS`) lives here so that the flow
table can refuse an unknown version in C, without the GIL.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import threading

# Versions (RFC 9000 15, RFC 9369 3.1, and the vendor versions nDPI and Wireshark decrypt).
V1 = 0x00000001
V2 = 0x6B3343CF
T050 = 0x54303530
T051 = 0x54303531
Q050 = 0x51303530
MVFST_22 = 0xFACEB001
MVFST_27 = 0xFACEB002
MVFST_EXP = 0xFACEB00E

cdef enum:
    SALT_V1, SALT_V2, SALT_D29, SALT_D23, SALT_D22, SALT_T050, SALT_T051, SALT_Q050

# Initial salts (RFC 9001 5.2, RFC 9369 3.3.1 and the drafts they replace), indexed by SALT_*.
# Q050's is the one Chromium used, as Wireshark (packet-quic.c) and nDPI (protocols/quic.c) publish.
SALTS = tuple(bytes.fromhex(h) for h in (
    "38762cf7f55934b34d179ae6a4c80cadccbb7f0a",     # v1, drafts 33-34
    "0dede3def700a6db819381be6e269dcbf9bd2ed9",     # v2
    "afbfec289993d24c9e9786f19c6111e04390a899",     # drafts 29-32
    "c3eef712c72ebb5a11a7d2432bb46365bef9f502",     # drafts 23-28, mvfst 27 and experimental
    "7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a",     # draft 22, mvfst 22
    "7ff579e5acd072915580304c43a2367c60488310",     # Google T050
    "7a4edef4e7ccee5fa4506c19124fc8ccda6e033d",     # Google T051
    "504574efd066fe2f9d945cfcdbd3a7f0d3b56b45",     # Google Q050
))

cdef enum:
    FRAME_PADDING = 0x00
    FRAME_PING = 0x01
    FRAME_ACK = 0x02
    FRAME_ACK_ECN = 0x03
    FRAME_CRYPTO = 0x06
    FRAME_CRYPTO_GQUIC = 0x08       # Google T05x / Q050 number the CRYPTO frame 0x08

QS_NAMES = ("ok", "not-quic", "not-initial", "unknown-version", "decrypt-failed", "malformed")
MAX_FRAMES_PER_PACKET = QUIC_MAX_FRAMES_PER_PACKET
MAX_PACKETS_PER_DATAGRAM = QUIC_MAX_PACKETS_PER_DATAGRAM


cdef bint quic_version_profile(uint32_t version, quic_profile_t* out) noexcept nogil:
    cdef uint32_t draft
    out.v2_labels = 0
    out.initial_type = 0
    out.crypto_frame = FRAME_CRYPTO
    if version == 0x00000001U:
        out.salt = SALT_V1
    elif version == 0x6B3343CFU:
        # RFC 9369 3.2: the v2 Initial is long-header type 0b01.
        out.salt, out.v2_labels, out.initial_type = SALT_V2, 1, 1
    elif version == 0x54303530U:
        out.salt, out.crypto_frame = SALT_T050, FRAME_CRYPTO_GQUIC
    elif version == 0x54303531U:
        out.salt, out.crypto_frame = SALT_T051, FRAME_CRYPTO_GQUIC
    elif version == 0x51303530U:
        out.salt, out.crypto_frame = SALT_Q050, FRAME_CRYPTO_GQUIC
    elif version == 0xFACEB001U:
        out.salt = SALT_D22
    elif version == 0xFACEB002U or version == 0xFACEB00EU:
        out.salt = SALT_D23
    elif version >> 8 == 0xFF0000U:
        draft = version & 0xFF
        if draft == 22:
            out.salt = SALT_D22
        elif 23 <= draft <= 28:
            out.salt = SALT_D23
        elif 29 <= draft <= 32:
            out.salt = SALT_D29
        elif 33 <= draft <= 34:
            out.salt = SALT_V1
        else:
            return False
    else:
        return False
    return True


cdef inline int _varint(const uint8_t* b, uint64_t n, uint64_t* pos, uint64_t* value) noexcept nogil:
    """RFC 9000 16: read a variable-length integer at *pos; -1 when it is cut (or *pos >= n)."""
    cdef uint64_t p = pos[0], size, v, i
    if p >= n:
        return -1
    size = (<uint64_t>1) << (b[p] >> 6)
    if p + size > n:
        return -1
    v = b[p] & 0x3F
    for i in range(1, size):
        v = (v << 8) | b[p + i]
    pos[0] = p + size
    value[0] = v
    return 0


cdef int quic_packet_header(const uint8_t* b, uint64_t n, uint64_t pos, bint first_packet,
                            quic_header_t* h) noexcept nogil:
    cdef uint64_t p, dcil, scil, token_len, length
    cdef uint8_t ptype
    h.first = b[pos]
    h.version = ((<uint32_t>b[pos + 1] << 24) | (<uint32_t>b[pos + 2] << 16)
                 | (<uint32_t>b[pos + 3] << 8) | b[pos + 4])
    if h.version == 0:
        return QS_NOT_INITIAL                       # Version Negotiation (RFC 9000 17.2.1)
    if not quic_version_profile(h.version, &h.profile):
        return QS_UNKNOWN_VERSION if first_packet else QH_STOP
    p = pos + 5
    dcil = b[p]
    if dcil > QUIC_MAX_CID or p + 1 + dcil >= n:
        return QS_MALFORMED
    h.dcid_off, h.dcid_len = <uint32_t>(p + 1), <uint32_t>dcil
    p += 1 + dcil
    scil = b[p]
    if scil > QUIC_MAX_CID or p + 1 + scil > n:
        return QS_MALFORMED
    h.scid_off, h.scid_len = <uint32_t>(p + 1), <uint32_t>scil
    p += 1 + scil
    ptype = (h.first >> 4) & 0x03
    if ptype != h.profile.initial_type:
        if first_packet:
            return QS_NOT_INITIAL
        if ptype == (h.profile.initial_type + 3) % 4:
            return QH_STOP                          # Retry has no Length field
        # 0-RTT / Handshake packets coalesced after the Initial: skip them by their Length.
        if _varint(b, n, &p, &length) < 0:
            return QS_MALFORMED
        h.end = p + length                          # < 2**63: no overflow
        return QH_SKIP
    if _varint(b, n, &p, &token_len) < 0:
        return QS_MALFORMED
    p += token_len                                  # past n is caught by the next read
    if _varint(b, n, &p, &length) < 0:
        return QS_MALFORMED
    h.pn_offset = p
    h.end = p + length
    # 4 bytes of packet number room + a 16-byte sample (RFC 9001 5.4.2) at least.
    if h.end > n or length < 20:
        return QS_MALFORMED
    return QH_INITIAL


cdef int quic_walk_frames(const uint8_t* p, uint64_t n, uint8_t crypto_frame,
                          quic_crypto_t* out, uint32_t* count) noexcept nogil:
    cdef uint64_t pos = 0, v, ranges, off, length, i
    cdef uint32_t frames = 0
    cdef uint8_t ftype
    count[0] = 0
    while pos < n:
        frames += 1
        if frames > QUIC_MAX_FRAMES_PER_PACKET:
            return QF_TRUNCATED
        ftype = p[pos]
        if ftype == FRAME_PADDING:
            # A run of PADDING counts as one frame: real Initials carry hundreds of zero bytes.
            while pos < n and p[pos] == 0:
                pos += 1
            continue
        if ftype == FRAME_PING:
            pos += 1
        elif (ftype == FRAME_ACK or ftype == FRAME_ACK_ECN) and crypto_frame == FRAME_CRYPTO:
            # ACK: largest, delay, range count, first range, ranges (gap, len)*, [3 ECN counts]
            pos += 1
            if (_varint(p, n, &pos, &v) < 0 or _varint(p, n, &pos, &v) < 0
                    or _varint(p, n, &pos, &ranges) < 0 or _varint(p, n, &pos, &v) < 0):
                return QF_ERROR
            if ranges > n:
                return QF_ERROR
            for i in range(ranges):
                if _varint(p, n, &pos, &v) < 0 or _varint(p, n, &pos, &v) < 0:
                    return QF_ERROR
            if ftype == FRAME_ACK_ECN:
                for i in range(3):
                    if _varint(p, n, &pos, &v) < 0:
                        return QF_ERROR
        elif ftype == crypto_frame:
            pos += 1
            if _varint(p, n, &pos, &off) < 0 or _varint(p, n, &pos, &length) < 0:
                return QF_ERROR
            if pos + length > n:
                return QF_ERROR
            out[count[0]].offset = off
            out[count[0]].start = <uint32_t>pos
            out[count[0]].length = <uint32_t>length
            count[0] += 1
            pos += length
        else:
            # CONNECTION_CLOSE or a type not allowed in Initial packets: stop cleanly, keeping the
            # CRYPTO data already read.
            return QF_TRUNCATED
    return QF_DONE


# ---- Python entry points ------------------------------------------------------------------------

def version_profile(uint32_t version):
    """``(salt, v2_labels, initial_type, crypto_frame)`` for a version we decrypt, else None."""
    cdef quic_profile_t prof
    if not quic_version_profile(version, &prof):
        return None
    return SALTS[prof.salt], bool(prof.v2_labels), prof.initial_type, prof.crypto_frame


def packet_header(const unsigned char[::1] buf, uint64_t pos=0, bint first_packet=True):
    """The long-header fields of the packet at ``buf[pos:]`` (tests and fuzzing).

    Returns ``(status, fields)``: status is a ``QS_*`` reject, ``QH_INITIAL``, ``QH_SKIP`` or
    ``QH_STOP``; fields (a dict) only for ``QH_INITIAL`` and ``QH_SKIP``.
    """
    cdef quic_header_t h
    cdef uint64_t n = buf.shape[0]
    cdef int st
    if pos + 7 > n or not (buf[pos] & 0x80):
        return QS_NOT_QUIC, None
    st = quic_packet_header(&buf[0], n, pos, first_packet, &h)
    if st != QH_INITIAL and st != QH_SKIP:
        return st, None
    return st, {"version": h.version, "first": h.first,
                "dcid": bytes(buf[h.dcid_off:h.dcid_off + h.dcid_len]),
                "scid": bytes(buf[h.scid_off:h.scid_off + h.scid_len]),
                "pn_offset": h.pn_offset if st == QH_INITIAL else None, "end": h.end}


def walk_frames(const unsigned char[::1] plain, int crypto_frame=FRAME_CRYPTO):
    """Walk a decrypted Initial payload: ``(QF_* status, [(offset, data), ...])`` (tests, fuzzing)."""
    cdef quic_crypto_t frames[QUIC_MAX_FRAMES_PER_PACKET]
    cdef uint32_t count, k
    cdef const uint8_t* p = &plain[0] if plain.shape[0] else NULL
    cdef int st = quic_walk_frames(p, plain.shape[0], <uint8_t>crypto_frame, frames, &count)
    return st, [(frames[k].offset, bytes(plain[frames[k].start:frames[k].start + frames[k].length]))
                for k in range(count)]


# A cryptography cipher context cannot be used by two threads at once (it raises "Already
# borrowed": Dask runs tasks in threads), and the ECB contexts are shared through the per-DCID
# cache: every mask computation takes this lock (uncontended, it costs ~50 ns).
_HP_LOCK = threading.Lock()
# cryptography.exceptions.InvalidTag, imported on the first decryption: importing the flow table
# (which cimports this module) does not load cryptography.
cdef object _InvalidTag = None

# One constant result per reject, so a refused datagram allocates nothing.
_REJECTED = tuple((st, 0, b"", b"", None, 0, False) for st in range(len(QS_NAMES)))


def open_initials(datagram, ciphers):
    """Decrypt every client Initial of one UDP payload and collect its CRYPTO frames.

    Parameters: ``datagram`` a bytes-like UDP payload; ``ciphers(version, dcid)`` returns
    ``(aead, hp, iv)``: an ``AESGCM``, an AES-ECB encryptor context (its ``update`` of the 16-byte
    sample gives the mask; ECB keeps no state, so one context serves every packet; calls to it are
    serialised by a module lock, so threads may share it) and the 12-byte IV.  Returns ``(status, version, dcid, scid, frames, packets, truncated)``: status ``QS_OK``
    with ``frames`` the ``(offset, data)`` of every CRYPTO frame in packet order, else a ``QS_*``
    reason and no frames.  Rules (kept from the Python decoder it replaces): a broken later packet
    or frame does not cost the CRYPTO data already read (``truncated`` is set); coalesced packets of
    another connection ID end the walk; a Retry or an unknown version after an Initial ends it.
    """
    cdef bytes buf = bytes(datagram)
    cdef const uint8_t* b = <const uint8_t*>PyBytes_AS_STRING(buf)
    cdef uint64_t n = PyBytes_GET_SIZE(buf), pos = 0, hlen
    cdef quic_header_t h
    cdef quic_crypto_t crypto[QUIC_MAX_FRAMES_PER_PACKET]
    cdef uint32_t count, k, first_dcid_off = 0, first_dcid_len = 0, version = 0
    cdef int st, walk, packets = 0, reject, it
    cdef bint truncated = False
    cdef uint8_t hdr0, pn_len
    cdef const uint8_t* mask_p
    cdef const uint8_t* plain_p
    cdef uint8_t* w
    cdef uint8_t* nonce_p
    cdef bytes dcid = None, scid = None, sample, mask, header, nonce, plain, iv
    cdef list frames = []
    global _InvalidTag
    if n < 7 or not (b[0] & 0x80):
        return _REJECTED[QS_NOT_QUIC]              # short header or too short for a long header
    if _InvalidTag is None:
        from cryptography.exceptions import InvalidTag
        _InvalidTag = InvalidTag
    for it in range(QUIC_MAX_PACKETS_PER_DATAGRAM):
        if pos >= n or not (b[pos] & 0x80) or pos + 7 > n:
            break                                   # the rest is a short-header packet or padding
        st = quic_packet_header(b, n, pos, dcid is None, &h)
        if st == QH_STOP:
            break
        if st == QH_SKIP:
            pos = h.end
            continue
        reject = st if st != QH_INITIAL else 0
        if not reject:
            if dcid is None:
                version = h.version
                first_dcid_off, first_dcid_len = h.dcid_off, h.dcid_len
                dcid = PyBytes_FromStringAndSize(<const char*>b + h.dcid_off, h.dcid_len)
                scid = PyBytes_FromStringAndSize(<const char*>b + h.scid_off, h.scid_len)
            elif h.dcid_len != first_dcid_len or memcmp(b + h.dcid_off, b + first_dcid_off,
                                                        first_dcid_len) != 0:
                break                               # a packet of another connection: not ours
            aead, hp, iv = ciphers(h.version, dcid)     # TypeError unless iv is bytes
            # RFC 9001 5.4.2: the sample starts 4 bytes after the packet number field's start.
            sample = PyBytes_FromStringAndSize(<const char*>b + h.pn_offset + 4, 16)
            with _HP_LOCK:
                mask = hp.update(sample)
            if len(mask) < 5 or len(iv) != 12:
                raise ValueError("ciphers() must give a 16-byte mask and a 12-byte IV")
            mask_p = <const uint8_t*>PyBytes_AS_STRING(mask)
            hdr0 = h.first ^ (mask_p[0] & 0x0F)    # long header: 4 protected bits
            pn_len = (hdr0 & 0x03) + 1
            # The associated data is the unprotected header, packet number included (RFC 9001 5.3).
            hlen = h.pn_offset + pn_len - pos
            header = PyBytes_FromStringAndSize(NULL, hlen)
            w = <uint8_t*>PyBytes_AS_STRING(header)
            memcpy(w, b + pos, hlen)
            w[0] = hdr0
            nonce = PyBytes_FromStringAndSize(<const char*>PyBytes_AS_STRING(iv), 12)
            nonce_p = <uint8_t*>PyBytes_AS_STRING(nonce)
            for k in range(pn_len):
                w[hlen - pn_len + k] ^= mask_p[1 + k]
                nonce_p[12 - pn_len + k] ^= w[hlen - pn_len + k]   # IV xor packet number (5.3)
            try:
                plain = aead.decrypt(nonce, PyBytes_FromStringAndSize(
                    <const char*>b + h.pn_offset + pn_len, h.end - h.pn_offset - pn_len), header)
            except _InvalidTag:
                if packets:
                    break
                reject = QS_DECRYPT_FAILED
        if not reject:
            packets += 1
            plain_p = <const uint8_t*>PyBytes_AS_STRING(plain)
            walk = quic_walk_frames(plain_p, PyBytes_GET_SIZE(plain), h.profile.crypto_frame,
                                    crypto, &count)
            for k in range(count):
                frames.append((crypto[k].offset, PyBytes_FromStringAndSize(
                    <const char*>plain_p + crypto[k].start, crypto[k].length)))
            if walk != QF_DONE:
                truncated = True
            if walk == QF_ERROR:
                # A frame runs past the payload: keep the CRYPTO data read before it, if any.
                if frames:
                    break
                reject = QS_MALFORMED
        if reject:
            # A broken later packet (or frame) does not cost the CRYPTO data already decrypted.
            if not frames:
                return _REJECTED[reject]
            truncated = True
            break
        pos = h.end
    if dcid is None:
        return _REJECTED[QS_NOT_QUIC]
    if packets == 0:
        return _REJECTED[QS_DECRYPT_FAILED]
    return QS_OK, version, dcid, scid, frames, packets, truncated
