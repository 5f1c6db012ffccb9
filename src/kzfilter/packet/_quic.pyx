# cython: language_level=3
"""QUIC client Initial parsing in C: long headers, varints, the frame walk, packet-number unmasking.

``kzfilter.packet.quic`` is the public face; this module does the per-datagram work that was
Python code: the long-header parse (RFC 9000 17.2), the variable-length integers (RFC 9000 16),
the header-protection removal arithmetic (RFC 9001 5.4) and the walk over PADDING, PING, ACK and
CRYPTO frames (RFC 9000 19).  Two paths decrypt:

* :func:`open_initials` (the public ``kzfilter.packet.quic`` functions) calls the ``cryptography``
  package's AES-ECB encryptor (one 16-byte block per packet: the header protection mask) and
  AES-GCM through the objects its ``ciphers`` callable returns, with the GIL;
* :func:`open_initials_c` / ``quic_open_initials_c`` (the flow table) does the same walk with the
  key schedule and both ciphers from libcrypto (OpenSSL), bound at run time by
  :func:`bind_openssl`, without the GIL.  Where no libcrypto loads, the flow table keeps the first
  path.  Both give the same answer for every datagram.

Every read is length-checked by hand; malformed input gives a ``QS_*`` status, never an
exception.  The version table (:func:`version_profile`, :data:`SALTS`) lives here so that the flow
table can refuse an unknown version in C, without the GIL.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy, memset
from libc.stdlib cimport free, malloc

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


# Decrypting one Initial takes three steps that each path does its own way: the keys of a version
# and DCID (and the IV), the header-protection mask of a sample, and the AEAD open.  _open_walk
# does the rest, the same for both paths: the coalesced packets, header protection removal,
# nonce, frame walk and every rule about what a broken packet costs.
ctypedef int (*keys_f)(void* ctx, uint32_t version, const uint8_t* dcid, uint32_t dcid_len,
                       uint8_t* iv) noexcept nogil
ctypedef int (*mask_f)(void* ctx, const uint8_t* sample, uint8_t* mask) noexcept nogil
ctypedef int (*open_f)(void* ctx, const uint8_t* nonce, const uint8_t* aad, int aad_len,
                       const uint8_t* sealed, int sealed_len, uint8_t* out) noexcept nogil

ctypedef struct initial_ops_t:
    keys_f keys         # 0, or -1 (error)
    mask_f mask         # 0, or -1 (error); writes 5 bytes at least
    open_f open         # 0 (plaintext: sealed_len - 16 bytes), 1 (tag does not verify), -1 (error)

cdef enum:
    GCM_TAG = 16


cdef int _open_walk(const uint8_t* b, uint64_t n, const initial_ops_t* ops, void* ctx,
                    uint8_t* plain, quic_crypto_t* frames, quic_open_t* res) noexcept nogil:
    """Decrypt every client Initial of the datagram b[:n]: a QS_* status (QS_OK: res and frames
    are set), or -1 when a step failed (an error, not an answer about the datagram).

    ``plain`` has room for n bytes (each plaintext is shorter than its packet), ``frames`` for
    QUIC_OPEN_MAX_FRAMES entries, whose ``start`` is an offset into ``plain``."""
    cdef uint64_t pos = 0, hlen = 0, used = 0, header_len
    cdef quic_header_t h
    cdef uint32_t count, k, first_dcid_off = 0, first_dcid_len = 0, keys_version = 0
    cdef int st, walk, reject, it, rc
    cdef bint have_dcid = False, have_keys = False
    cdef uint8_t hdr0, pn_len = 0
    cdef uint8_t iv[12]
    cdef uint8_t mask[16]
    cdef uint8_t nonce[12]
    cdef uint8_t header[256]     # the unprotected header (the AEAD's associated data)
    cdef uint8_t* aad
    res.packets = 0
    res.truncated = 0
    res.count = 0
    res.version = 0
    if n < 7 or not (b[0] & 0x80):
        return QS_NOT_QUIC                          # short header or too short for a long header
    for it in range(QUIC_MAX_PACKETS_PER_DATAGRAM):
        if pos >= n or not (b[pos] & 0x80) or pos + 7 > n:
            break                                   # the rest is a short-header packet or padding
        st = quic_packet_header(b, n, pos, not have_dcid, &h)
        if st == QH_STOP:
            break
        if st == QH_SKIP:
            pos = h.end
            continue
        reject = st if st != QH_INITIAL else 0
        if not reject:
            if not have_dcid:
                have_dcid = True
                res.version = h.version
                first_dcid_off, first_dcid_len = h.dcid_off, h.dcid_len
                res.dcid_off, res.dcid_len = h.dcid_off, h.dcid_len
                res.scid_off, res.scid_len = h.scid_off, h.scid_len
            elif h.dcid_len != first_dcid_len or memcmp(b + h.dcid_off, b + first_dcid_off,
                                                        first_dcid_len) != 0:
                break                               # a packet of another connection: not ours
            if not have_keys or keys_version != h.version:
                if ops.keys(ctx, h.version, b + first_dcid_off, first_dcid_len, iv) < 0:
                    return -1
                have_keys, keys_version = True, h.version
            # RFC 9001 5.4.2: the sample starts 4 bytes after the packet number field's start.
            if ops.mask(ctx, b + h.pn_offset + 4, mask) < 0:
                return -1
            hdr0 = h.first ^ (mask[0] & 0x0F)       # long header: 4 protected bits
            pn_len = (hdr0 & 0x03) + 1
            # The associated data is the unprotected header, packet number included (RFC 9001 5.3).
            header_len = h.pn_offset + pn_len - pos
            aad = header
            if header_len > sizeof(header):
                aad = <uint8_t*>malloc(header_len)  # a long token: rare
                if aad == NULL:
                    return -1
            memcpy(aad, b + pos, header_len)
            aad[0] = hdr0
            memcpy(nonce, iv, 12)
            for k in range(pn_len):
                aad[header_len - pn_len + k] ^= mask[1 + k]
                nonce[12 - pn_len + k] ^= aad[header_len - pn_len + k]   # IV xor packet number
            rc = ops.open(ctx, nonce, aad, <int>header_len, b + h.pn_offset + pn_len,
                          <int>(h.end - h.pn_offset - pn_len), plain + used)
            if aad != header:
                free(aad)
            if rc < 0:
                return -1
            if rc == 1:
                if res.packets:
                    break
                reject = QS_DECRYPT_FAILED
        if not reject:
            res.packets += 1
            hlen = h.end - h.pn_offset - pn_len - GCM_TAG
            walk = quic_walk_frames(plain + used, hlen, h.profile.crypto_frame,
                                    frames + res.count, &count)
            for k in range(count):
                frames[res.count + k].start += <uint32_t>used
            res.count += count
            used += hlen
            if walk != QF_DONE:
                res.truncated = 1
            if walk == QF_ERROR:
                # A frame runs past the payload: keep the CRYPTO data read before it, if any.
                if res.count:
                    break
                reject = QS_MALFORMED
        if reject:
            # A broken later packet (or frame) does not cost the CRYPTO data already decrypted.
            if not res.count:
                return reject
            res.truncated = 1
            break
        pos = h.end
    if not have_dcid:
        return QS_NOT_QUIC
    if res.packets == 0:
        return QS_DECRYPT_FAILED
    return QS_OK


cdef _opened(int st, bytes buf, bytearray plain, const quic_crypto_t* frames,
             const quic_open_t* res):
    """The Python answer of _open_walk: ``(status, version, dcid, scid, frames, packets,
    truncated)``."""
    cdef uint32_t k
    if st != QS_OK:
        return _REJECTED[st]
    return (QS_OK, res.version, buf[res.dcid_off:res.dcid_off + res.dcid_len],
            buf[res.scid_off:res.scid_off + res.scid_len],
            [(frames[k].offset, bytes(plain[frames[k].start:frames[k].start + frames[k].length]))
             for k in range(res.count)], res.packets, bool(res.truncated))


cdef _open_datagram(datagram, const initial_ops_t* ops, void* ctx, bint release_gil, holder):
    """Run _open_walk over a bytes-like datagram; a step's Python error (in holder) is raised."""
    cdef bytes buf = bytes(datagram)
    cdef const uint8_t* b = <const uint8_t*>PyBytes_AS_STRING(buf)
    cdef uint64_t n = PyBytes_GET_SIZE(buf)
    cdef bytearray plain = bytearray(n + 1)
    cdef uint8_t* pp = <uint8_t*>(<char*>plain)
    cdef quic_crypto_t* frames
    cdef quic_open_t res
    cdef int st
    frames = <quic_crypto_t*>PyMem_Malloc(QUIC_OPEN_MAX_FRAMES * sizeof(quic_crypto_t))
    if frames == NULL:
        raise MemoryError()
    try:
        if release_gil:
            with nogil:
                st = _open_walk(b, n, ops, ctx, pp, frames, &res)
        else:
            st = _open_walk(b, n, ops, ctx, pp, frames, &res)
        if st < 0:
            if holder is not None and holder.error is not None:
                raise holder.error
            raise MemoryError("libcrypto failed")
        return _opened(st, buf, plain, frames, &res)
    finally:
        PyMem_Free(frames)


# -- the cryptography path --------------------------------------------------------------------

cdef class _PyCiphers:
    """The ``ciphers`` callable's objects for the datagram being opened, and a step's error."""
    cdef object ciphers
    cdef object aead
    cdef object hp
    cdef bytes iv
    cdef public object error


cdef int _py_keys(void* ctx, uint32_t version, const uint8_t* dcid, uint32_t dcid_len,
                  uint8_t* iv) noexcept nogil:
    with gil:
        c = <_PyCiphers>ctx
        try:
            aead, hp, c.iv = c.ciphers(version, PyBytes_FromStringAndSize(<const char*>dcid,
                                                                          dcid_len))
            if len(c.iv) != 12:
                raise ValueError("ciphers() must give a 16-byte mask and a 12-byte IV")
            c.aead, c.hp = aead, hp
            memcpy(iv, PyBytes_AS_STRING(c.iv), 12)
            return 0
        except BaseException as exc:
            c.error = exc
            return -1


cdef int _py_mask(void* ctx, const uint8_t* sample, uint8_t* mask) noexcept nogil:
    cdef Py_ssize_t m
    with gil:
        c = <_PyCiphers>ctx
        try:
            with _HP_LOCK:
                out = c.hp.update(PyBytes_FromStringAndSize(<const char*>sample, 16))
            m = len(out)
            if m < 5:
                raise ValueError("ciphers() must give a 16-byte mask and a 12-byte IV")
            memcpy(mask, PyBytes_AS_STRING(out), m if m < 16 else 16)
            return 0
        except BaseException as exc:
            c.error = exc
            return -1


cdef int _py_open(void* ctx, const uint8_t* nonce, const uint8_t* aad, int aad_len,
                  const uint8_t* sealed, int sealed_len, uint8_t* out) noexcept nogil:
    with gil:
        c = <_PyCiphers>ctx
        try:
            plain = c.aead.decrypt(PyBytes_FromStringAndSize(<const char*>nonce, 12),
                                   PyBytes_FromStringAndSize(<const char*>sealed, sealed_len),
                                   PyBytes_FromStringAndSize(<const char*>aad, aad_len))
        except _InvalidTag:
            return 1
        except BaseException as exc:
            c.error = exc
            return -1
        if len(plain) != sealed_len - GCM_TAG:
            c.error = ValueError("the AEAD gave a plaintext of the wrong length")
            return -1
        memcpy(out, PyBytes_AS_STRING(plain), sealed_len - GCM_TAG)
        return 0


cdef initial_ops_t _PY_OPS = initial_ops_t(_py_keys, _py_mask, _py_open)


def open_initials(datagram, ciphers):
    """Decrypt every client Initial of one UDP payload and collect its CRYPTO frames.

    Parameters: ``datagram`` a bytes-like UDP payload; ``ciphers(version, dcid)`` returns
    ``(aead, hp, iv)``: an ``AESGCM``, an AES-ECB encryptor context (its ``update`` of the 16-byte
    sample gives the mask; ECB keeps no state, so one context serves every packet; calls to it are
    serialised by a module lock, so threads may share it) and the 12-byte IV.  Returns
    ``(status, version, dcid, scid, frames, packets, truncated)``: status ``QS_OK`` with
    ``frames`` the ``(offset, data)`` of every CRYPTO frame in packet order, else a ``QS_*``
    reason and no frames.  Rules (kept from the Python decoder it replaces): a broken later packet
    or frame does not cost the CRYPTO data already read (``truncated`` is set); coalesced packets
    of another connection ID end the walk; a Retry or an unknown version after an Initial ends it.
    """
    global _InvalidTag
    if _InvalidTag is None:
        from cryptography.exceptions import InvalidTag
        _InvalidTag = InvalidTag
    holder = _PyCiphers()
    holder.ciphers = ciphers
    return _open_datagram(datagram, &_PY_OPS, <void*>holder, False, holder)


# ---- Client Initials in C, with OpenSSL's libcrypto ---------------------------------------------
# The flow table decrypts client Initials without the GIL through libcrypto (the OpenSSL that
# CPython's hashlib and ssl already load), called through function pointers that
# bind_openssl() resolves with ctypes: no OpenSSL headers at build time, and where no libcrypto
# can be loaded the flow table keeps the ``cryptography`` path above.  Both paths give the same
# answer for every datagram (tests/packet/test_quic_parser.py checks them against the model).
# Per new connection the Python path builds the key schedule and two cipher objects (~80 us
# measured, the GIL held); here it is five HMACs, done once per (version, DCID) with the flow
# table's key cache, and two cipher calls per packet, and threads decrypt in parallel.

ctypedef void* (*ctx_new_f)() noexcept nogil
ctypedef void (*ctx_free_f)(void* ctx) noexcept nogil
ctypedef const void* (*getter_f)() noexcept nogil
ctypedef void* (*fetch_f)(void* libctx, const char* algorithm, const char* properties) noexcept nogil
ctypedef int (*init_f)(void* ctx, const void* cipher, void* engine, const uint8_t* key,
                       const uint8_t* iv) noexcept nogil
ctypedef int (*update_f)(void* ctx, uint8_t* out, int* outl, const uint8_t* data,
                         int inl) noexcept nogil
ctypedef int (*final_f)(void* ctx, uint8_t* out, int* outl) noexcept nogil
ctypedef int (*ctrl_f)(void* ctx, int op, int arg, void* ptr) noexcept nogil
ctypedef uint8_t* (*hmac_f)(const void* md, const void* key, int key_len, const uint8_t* data,
                            size_t n, uint8_t* out, unsigned int* out_len) noexcept nogil

ctypedef struct ossl_t:
    ctx_new_f ctx_new
    ctx_free_f ctx_free
    init_f encrypt_init
    update_f encrypt_update
    init_f decrypt_init
    update_f decrypt_update
    final_f decrypt_final
    ctrl_f ctrl
    hmac_f hmac
    const void* sha256
    const void* aes_ecb
    const void* aes_gcm

cdef enum:
    CTRL_AEAD_SET_TAG = 0x11    # EVP_CTRL_AEAD_SET_TAG (OpenSSL 1.1 and 3)

cdef ossl_t _ossl
cdef bint _ossl_bound = False
cdef bint _c_enabled = False
cdef uint8_t _salt_bytes[8][20]
_ossl_library = None        # the ctypes handle: keeps libcrypto loaded

_LIBCRYPTO_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", "libcrypto.3.dylib",
                    "libcrypto.dylib", "libcrypto-3-x64.dll", "libcrypto-1_1-x64.dll")


def bind_openssl():
    """Find libcrypto (OpenSSL 1.1 or 3) and enable the C path; returns whether it is enabled.

    ``KZFILTER_QUIC_CRYPTO=python`` in the environment keeps the ``cryptography`` path.
    Idempotent; call it with the GIL (the flow table does, when it is created)."""
    global _ossl_bound, _c_enabled, _ossl_library
    if _ossl_bound:
        return _c_enabled
    _ossl_bound = True
    import os
    if os.environ.get("KZFILTER_QUIC_CRYPTO", "").lower() == "python":
        return False
    import ctypes
    for name in _LIBCRYPTO_NAMES + (None,):
        if name is None:
            # Last resort: find_library runs ldconfig or the compiler in a subprocess.
            import ctypes.util
            name = ctypes.util.find_library("crypto")
            if not name:
                break
        try:
            lib = ctypes.CDLL(name)
            _bind(lib)
        except (OSError, AttributeError):
            continue
        _ossl_library = lib
        _c_enabled = True
        return True
    return False


cdef uintptr_t _addr(lib, str name) except 0:
    import ctypes
    cdef uintptr_t a = <uintptr_t>(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0)
    if a == 0:
        raise AttributeError(name)
    return a


cdef _bind(lib):
    """Resolve every function first, then fill _ossl: a library that lacks one is not used."""
    global _ossl
    cdef ossl_t o
    cdef fetch_f cipher_fetch = NULL
    cdef fetch_f md_fetch = NULL
    cdef int k
    o.ctx_new = <ctx_new_f>_addr(lib, "EVP_CIPHER_CTX_new")
    o.ctx_free = <ctx_free_f>_addr(lib, "EVP_CIPHER_CTX_free")
    o.encrypt_init = <init_f>_addr(lib, "EVP_EncryptInit_ex")
    o.encrypt_update = <update_f>_addr(lib, "EVP_EncryptUpdate")
    o.decrypt_init = <init_f>_addr(lib, "EVP_DecryptInit_ex")
    o.decrypt_update = <update_f>_addr(lib, "EVP_DecryptUpdate")
    o.decrypt_final = <final_f>_addr(lib, "EVP_DecryptFinal_ex")
    o.ctrl = <ctrl_f>_addr(lib, "EVP_CIPHER_CTX_ctrl")
    o.hmac = <hmac_f>_addr(lib, "HMAC")
    if hasattr(lib, "EVP_CIPHER_fetch"):
        # OpenSSL 3: fetch the algorithms once.  The 1.1-style getters make every init look the
        # cipher up again in the provider store, under its lock.
        cipher_fetch = <fetch_f>_addr(lib, "EVP_CIPHER_fetch")
        md_fetch = <fetch_f>_addr(lib, "EVP_MD_fetch")
        o.aes_ecb = cipher_fetch(NULL, b"AES-128-ECB", NULL)
        o.aes_gcm = cipher_fetch(NULL, b"AES-128-GCM", NULL)
        o.sha256 = md_fetch(NULL, b"SHA256", NULL)
    else:
        o.aes_ecb = (<getter_f>_addr(lib, "EVP_aes_128_ecb"))()
        o.aes_gcm = (<getter_f>_addr(lib, "EVP_aes_128_gcm"))()
        o.sha256 = (<getter_f>_addr(lib, "EVP_sha256"))()
    if o.aes_ecb == NULL or o.aes_gcm == NULL or o.sha256 == NULL:
        raise AttributeError("libcrypto has no AES-128-ECB, AES-128-GCM or SHA256")
    for k in range(len(SALTS)):
        memcpy(_salt_bytes[k], <const uint8_t*>PyBytes_AS_STRING(SALTS[k]), 20)
    _ossl = o
    # The RFC 9001 A.1 key schedule must come out right before this path is trusted.
    if client_initial_keys_c(0x00000001, bytes.fromhex("8394c8f03e515708")) != (
            bytes.fromhex("1f369613dd76d5467730efcbe3b1a22d"),
            bytes.fromhex("fa044b2f42a3fd3b46fb255c"),
            bytes.fromhex("9f50449e04a0e810283a1e9933adedd2")):
        memset(&_ossl, 0, sizeof(ossl_t))
        raise AttributeError("libcrypto gives a wrong RFC 9001 key schedule")


def c_path_enabled():
    """True when the flow table decrypts client Initials in C (bind_openssl() found libcrypto)."""
    return _c_enabled


def set_c_path(bint enabled):
    """Tests: switch the flow table's C path off (the ``cryptography`` path) and on again."""
    global _c_enabled
    if enabled and not _ossl_bound:
        bind_openssl()
    _c_enabled = bool(enabled) and _ossl_library is not None


cdef bint quic_c_ready() noexcept nogil:
    return _c_enabled


cdef int _expand_label(const uint8_t* secret, const char* label, uint32_t label_len,
                       uint32_t length, uint8_t* out) noexcept nogil:
    """RFC 8446 7.1 HKDF-Expand-Label(secret, label, "", length) for length <= 32: one block."""
    cdef uint8_t info[64]
    cdef uint8_t block[32]
    cdef unsigned int got = 0
    cdef uint32_t n = 0
    info[0] = <uint8_t>(length >> 8)
    info[1] = <uint8_t>length
    info[2] = <uint8_t>(6 + label_len)
    memcpy(info + 3, b"tls13 ", 6)
    memcpy(info + 9, label, label_len)
    n = 9 + label_len
    info[n] = 0              # empty context
    info[n + 1] = 1          # T(1)
    if _ossl.hmac(_ossl.sha256, secret, 32, info, n + 2, block, &got) == NULL or got != 32:
        return -1
    memcpy(out, block, length)
    return 0


cdef int _initial_keys(uint32_t version, const uint8_t* dcid, uint32_t dcid_len, uint8_t* key,
                       uint8_t* iv, uint8_t* hp) noexcept nogil:
    """The client Initial key, IV and header-protection key (RFC 9001 5.2, RFC 9369 3.3)."""
    cdef quic_profile_t prof
    cdef uint8_t initial[32]
    cdef uint8_t client[32]
    cdef unsigned int got = 0
    if not quic_version_profile(version, &prof):
        return -1
    if _ossl.hmac(_ossl.sha256, _salt_bytes[prof.salt], 20, dcid, dcid_len, initial,
                  &got) == NULL or got != 32:
        return -1
    if _expand_label(initial, b"client in", 9, 32, client) < 0:
        return -1
    if prof.v2_labels:
        if (_expand_label(client, b"quicv2 key", 10, 16, key) < 0
                or _expand_label(client, b"quicv2 iv", 9, 12, iv) < 0
                or _expand_label(client, b"quicv2 hp", 9, 16, hp) < 0):
            return -1
    elif (_expand_label(client, b"quic key", 8, 16, key) < 0
            or _expand_label(client, b"quic iv", 7, 12, iv) < 0
            or _expand_label(client, b"quic hp", 7, 16, hp) < 0):
        return -1
    return 0


def client_initial_keys_c(uint32_t version, bytes dcid):
    """``(key, iv, hp)`` from the C key schedule (tests: equal to quic.client_initial_keys)."""
    cdef uint8_t key[16]
    cdef uint8_t iv[12]
    cdef uint8_t hp[16]
    if _ossl.hmac == NULL:
        raise RuntimeError("libcrypto is not bound")
    if len(dcid) > QUIC_MAX_CID or _initial_keys(
            version, <const uint8_t*>PyBytes_AS_STRING(dcid), len(dcid), key, iv, hp) < 0:
        raise ValueError(f"unsupported QUIC version 0x{version:08x}")
    return (PyBytes_FromStringAndSize(<char*>key, 16), PyBytes_FromStringAndSize(<char*>iv, 12),
            PyBytes_FromStringAndSize(<char*>hp, 16))


ctypedef struct _c_keys_t:
    uint8_t key[16]
    uint8_t hp[16]
    quic_key_cache_t* cache     # may be NULL


cdef int _c_keys(void* ctx, uint32_t version, const uint8_t* dcid, uint32_t dcid_len,
                 uint8_t* iv) noexcept nogil:
    cdef _c_keys_t* k = <_c_keys_t*>ctx
    cdef quic_key_entry_t* e
    cdef uint32_t h = 2166136261U ^ version, i
    if k.cache == NULL or dcid_len > 20:
        return _initial_keys(version, dcid, dcid_len, k.key, iv, k.hp)
    for i in range(dcid_len):
        h = (h ^ dcid[i]) * 16777619U       # FNV-1a
    e = &k.cache.entries[h % QUIC_KEY_CACHE]
    if not (e.valid and e.version == version and e.dcid_len == dcid_len
            and memcmp(e.dcid, dcid, dcid_len) == 0):
        if _initial_keys(version, dcid, dcid_len, e.key, e.iv, e.hp) < 0:
            e.valid = 0
            return -1
        e.valid, e.version, e.dcid_len = 1, version, <uint8_t>dcid_len
        memcpy(e.dcid, dcid, dcid_len)
    memcpy(k.key, e.key, 16)
    memcpy(iv, e.iv, 12)
    memcpy(k.hp, e.hp, 16)
    return 0


cdef int _c_mask(void* ctx, const uint8_t* sample, uint8_t* mask) noexcept nogil:
    """RFC 9001 5.4.3: AES-128-ECB of the 16-byte sample."""
    cdef _c_keys_t* k = <_c_keys_t*>ctx
    cdef void* cctx = _ossl.ctx_new()
    cdef int outl = 0, ok
    if cctx == NULL:
        return -1
    ok = (_ossl.encrypt_init(cctx, _ossl.aes_ecb, NULL, k.hp, NULL) == 1
          and _ossl.encrypt_update(cctx, mask, &outl, sample, 16) == 1 and outl == 16)
    _ossl.ctx_free(cctx)
    return 0 if ok else -1


cdef int _c_open(void* ctx, const uint8_t* nonce, const uint8_t* aad, int aad_len,
                 const uint8_t* sealed, int sealed_len, uint8_t* out) noexcept nogil:
    """AES-128-GCM open (RFC 9001 5.3)."""
    cdef _c_keys_t* k = <_c_keys_t*>ctx
    cdef void* cctx
    cdef int outl = 0, fin = 0, rc
    if sealed_len < GCM_TAG:
        return 1
    cctx = _ossl.ctx_new()
    if cctx == NULL:
        return -1
    rc = -1
    if (_ossl.decrypt_init(cctx, _ossl.aes_gcm, NULL, k.key, nonce) == 1
            and _ossl.decrypt_update(cctx, NULL, &outl, aad, aad_len) == 1
            and _ossl.decrypt_update(cctx, out, &outl, sealed, sealed_len - GCM_TAG) == 1
            and _ossl.ctrl(cctx, CTRL_AEAD_SET_TAG, GCM_TAG,
                           <void*>(sealed + sealed_len - GCM_TAG)) == 1):
        rc = 0 if _ossl.decrypt_final(cctx, out + outl, &fin) == 1 else 1
    _ossl.ctx_free(cctx)
    return rc


cdef initial_ops_t _C_OPS = initial_ops_t(_c_keys, _c_mask, _c_open)


cdef int quic_open_initials_c(const uint8_t* b, uint64_t n, uint8_t* plain,
                              quic_crypto_t* frames, quic_open_t* res,
                              quic_key_cache_t* cache) noexcept nogil:
    """open_initials() with libcrypto's ciphers, without the GIL (see the .pxd)."""
    cdef _c_keys_t keys
    keys.cache = cache
    return _open_walk(b, n, &_C_OPS, &keys, plain, frames, res)


def open_initials_c(datagram):
    """open_initials() through the C path: the same ``(status, version, dcid, scid, frames,
    packets, truncated)``.  Raises RuntimeError when libcrypto is not bound."""
    cdef _c_keys_t keys
    if _ossl.hmac == NULL:
        raise RuntimeError("libcrypto is not bound")
    keys.cache = NULL
    return _open_datagram(datagram, &_C_OPS, &keys, True, None)
