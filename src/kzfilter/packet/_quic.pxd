# Contract of the QUIC Initial parsers (RFC 9000 17.2, 19; RFC 9001 5): pure functions over bytes,
# no allocation, no GIL.  The decryption itself (AES-ECB header protection, AES-GCM) is done either
# with the `cryptography` package by _quic.open_initials, which holds the GIL only for those two
# calls, or with libcrypto by quic_open_initials_c, without the GIL (the flow table's path).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum:
    QS_OK = 0               # at least one client Initial decrypted
    QS_NOT_QUIC = 1         # short header, too short for a long header, or no packet in it
    QS_NOT_INITIAL = 2      # Version Negotiation, or a long-header packet of another type first
    QS_UNKNOWN_VERSION = 3  # a version whose Initial salt we do not know
    QS_DECRYPT_FAILED = 4   # the AEAD tag does not verify (not a client Initial, or damaged)
    QS_MALFORMED = 5        # a length, connection ID or frame runs past its packet

cdef enum:
    QUIC_MAX_FRAMES_PER_PACKET = 256    # frames examined per Initial before giving up on the rest
    QUIC_MAX_PACKETS_PER_DATAGRAM = 8   # coalesced packets examined per datagram (RFC 9000 12.2)
    QUIC_MAX_CID = 20                   # RFC 9000 17.2: connection IDs are at most 20 bytes (v1)

ctypedef struct quic_profile_t:
    uint8_t salt            # index into _quic.SALTS
    uint8_t v2_labels       # 1: RFC 9369 "quicv2 key/iv/hp" labels, 0: RFC 9001 "quic key/iv/hp"
    uint8_t initial_type    # long-header packet type bits of an Initial (0b00; 0b01 in QUIC v2)
    uint8_t crypto_frame    # CRYPTO frame type: 0x06, but 0x08 in Google T05x / Q050

# 1 and *out filled for a version we can decrypt, else 0.
cdef bint quic_version_profile(uint32_t version, quic_profile_t* out) noexcept nogil

# Statuses of quic_packet_header beyond the QS_* rejects above.
cdef enum:
    QH_INITIAL = 100        # a client Initial: pn_offset and end are set
    QH_SKIP = 101           # a 0-RTT/Handshake packet after the Initial: the next one is at `end`
    QH_STOP = 102           # stop the datagram here (Retry, an unknown version after an Initial)

ctypedef struct quic_header_t:
    uint32_t version
    uint8_t first           # first byte, still header-protected
    quic_profile_t profile
    uint32_t dcid_off, dcid_len, scid_off, scid_len
    uint64_t pn_offset      # Initial: where the protected packet number starts
    uint64_t end            # Initial: end of the packet; QH_SKIP: start of the next packet

# The long-header packet at buf[pos:] (pos + 7 <= n and buf[pos] & 0x80, checked by the caller).
# first_packet: no Initial of this datagram was accepted yet, so anything but an Initial rejects it.
cdef int quic_packet_header(const uint8_t* buf, uint64_t n, uint64_t pos, bint first_packet,
                            quic_header_t* out) noexcept nogil

ctypedef struct quic_crypto_t:
    uint64_t offset         # CRYPTO stream offset
    uint32_t start, length  # the frame's data in the plaintext

cdef enum:
    QF_DONE = 0             # every frame read
    QF_TRUNCATED = 1        # stopped early, cleanly: the frame limit, or a frame type not walked
    QF_ERROR = 2            # a frame runs past the payload (the CRYPTO frames before it are kept)

# Walk the frames of one decrypted Initial payload (RFC 9000 12.4, 19): PADDING, PING, ACK (IETF
# versions only) and CRYPTO frames of type crypto_frame.  Writes at most QUIC_MAX_FRAMES_PER_PACKET
# CRYPTO frames to out, their number to *count.
cdef int quic_walk_frames(const uint8_t* plain, uint64_t n, uint8_t crypto_frame,
                          quic_crypto_t* out, uint32_t* count) noexcept nogil

# ---- Client Initials in C (libcrypto bound at run time by _quic.bind_openssl) ----------------
cdef enum:
    QUIC_OPEN_MAX_FRAMES = 2048     # QUIC_MAX_PACKETS_PER_DATAGRAM * QUIC_MAX_FRAMES_PER_PACKET

ctypedef struct quic_open_t:
    uint32_t version                # of the first Initial
    uint32_t dcid_off, dcid_len, scid_off, scid_len   # of the first Initial, in the datagram
    uint32_t count                  # CRYPTO frames written
    uint32_t packets                # Initials decrypted
    uint8_t truncated

# True once bind_openssl() found libcrypto (and the C path is not switched off).
cdef bint quic_c_ready() noexcept nogil

# Client Initial keys already derived, by (version, DCID): a connection sends several Initials,
# and retransmits them.  Direct-mapped; one per flow table (no locking).
cdef enum:
    QUIC_KEY_CACHE = 256

ctypedef struct quic_key_entry_t:
    uint32_t version
    uint8_t valid
    uint8_t dcid_len
    uint8_t dcid[20]
    uint8_t key[16]
    uint8_t iv[12]
    uint8_t hp[16]

ctypedef struct quic_key_cache_t:
    quic_key_entry_t entries[QUIC_KEY_CACHE]

# open_initials() without the GIL: plain has room for n bytes, frames for QUIC_OPEN_MAX_FRAMES
# entries (start: offset into plain); keys may be NULL (no cache).  A QS_* status, or -1 when
# libcrypto failed.
cdef int quic_open_initials_c(const uint8_t* buf, uint64_t n, uint8_t* plain,
                              quic_crypto_t* frames, quic_open_t* res,
                              quic_key_cache_t* keys) noexcept nogil
