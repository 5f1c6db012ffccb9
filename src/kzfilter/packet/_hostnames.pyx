# cython: language_level=3
"""Application-layer name parsers: TLS ClientHello (SNI, ALPN, ECH), HTTP/1.x Host, DNS names.

The ``cdef`` functions declared in ``_hostnames.pxd`` are pure functions over bytes: no
allocation, no GIL, every read length-checked by hand.  Each returns one of the ``NS_*``
statuses and keeps "the message is incomplete" (``NS_NEED_MORE``) apart from "the bytes are wrong"
(``NS_NOT_PROTO``, ``NS_MALFORMED``), as dpkt keeps ``NeedData`` apart from ``UnpackError``.

Decisions the flow table relies on:

* Names are returned as found.  The SNI and the Host value are the raw bytes of the message,
  never empty but otherwise unchecked (non-ASCII, control bytes, ``host:port``); the DNS name only
  has its ASCII letters lower-cased, other bytes (``*``, a ``.`` inside a label, control bytes)
  are kept.  Normalisation (``rules.normalize``) validates and rejects; nDPI instead maps such
  bytes to ``_``.  A name is set only with ``NS_FOUND`` (DNS: also ``NS_NO_NAME``'s empty root).
* TLS: an empty ``host_name`` is treated as absent (``NS_NO_NAME``).  A handshake message whose
  declared size exceeds ``TLS_MAX_HELLO`` (64 KiB), or that needs reassembly across records and
  exceeds ``scratch_cap``, is ``NS_MALFORMED`` at once, so a stream claiming 16 MB is never waited
  for.  The first handshake message must be a ClientHello (type 1), otherwise ``NS_NOT_PROTO``
  (e.g. a capture that starts with the server's ServerHello).  An SSLv2-compatible ClientHello
  (RFC 6101 appendix E.2, RFC 5246 appendix E.2) cannot carry extensions, hence no SNI:
  ``NS_NO_NAME`` once its record is complete.
* TLS: once a complete, consistent ``server_name`` extension lying wholly inside the declared
  extensions block has been read, a LATER inconsistent extension (an ALPN list overrunning its
  extension, a cut extension header) no longer makes the hello ``NS_MALFORMED``: the SNI is
  returned (``NS_FOUND``), as a middlebox reading the hello sees it (nDPI's
  ``tls_invalid_reads.pcap``).  An inconsistency before the SNI, or inside it, stays malformed.
* QUIC CRYPTO stream (``quic_crypto_hello``): a TLS ClientHello, or a Google QUIC Q050 ``CHLO``
  tag/value message whose ``SNI`` tag is the name (``NS_NEED_MORE`` until the whole message).
* STARTTLS (``starttls_client_hello``): the client side of SMTP (EHLO/HELO first, RFC 3207),
  POP3 (CAPA/STLS/USER/AUTH/APOP first, RFC 2595) or IMAP (``tag CAPABILITY|STARTTLS|NOOP|ID``
  first, RFC 3501); command lines are scanned up to ``STARTTLS_MAX_COMMANDS`` (4 KiB) for the
  STARTTLS (POP3: STLS) line, then the bytes after it go to ``tls_client_hello``.
* HTTP: the whole request head (request line + headers) is bounded by ``HTTP_MAX_HEAD`` (16 KiB);
  the first non-empty ``Host`` header wins (name case-insensitive, no space before the colon,
  blanks around the value removed); obsolete line folding (RFC 9112 5.2) is not joined: a Host
  line is complete at its line feed.  CRLF and bare LF line ends are both accepted.
* DNS: a message shorter than its header, or whose first question is cut or inconsistent, is
  ``NS_MALFORMED``.  Once the question has parsed the status is ``NS_FOUND`` and the answers are
  best effort: the walk stops at the first truncated or inconsistent record (snap-length-cut
  captures, fuzzed packets) and keeps the A/AAAA records read before it, because the name is what
  classification needs.  The root name (empty) gives ``NS_NO_NAME`` with qtype and answers filled.
* HTTP request lines are read leniently, as nDPI does: several spaces between the parts
  (``http-manipulated.pcap``) and raw spaces inside the target (``WebattackRCE.pcap``) are
  accepted; the version must be the line's last token.  So "GET /x" without a line end stays
  ``NS_NEED_MORE`` until its line feed (or the 16 KiB bound).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

import ipaddress

# Bounds (documented in the module docstring and the .pyi).
cdef enum:
    TLS_MAX_HELLO = 65536       # largest ClientHello we wait for (4-byte header included)
    HTTP_MAX_HEAD = 16384       # largest HTTP request head we scan
    DNS_MAX_JUMPS = 128         # compression pointers followed per name
    SCRATCH_SIZE = 16384        # scratch used by the Python wrapper
    STARTTLS_MAX_COMMANDS = 4096  # command bytes scanned for STARTTLS/STLS before NS_NO_NAME

# The NS_* statuses are C enum constants (from the .pxd); publish the same values to Python.
globals().update(NS_FOUND=<int>NS_FOUND, NS_NEED_MORE=<int>NS_NEED_MORE,
                 NS_NOT_PROTO=<int>NS_NOT_PROTO, NS_NO_NAME=<int>NS_NO_NAME,
                 NS_MALFORMED=<int>NS_MALFORMED)
STATUS_NAMES = {NS_FOUND: "found", NS_NEED_MORE: "need-more", NS_NOT_PROTO: "not-proto",
                NS_NO_NAME: "no-name", NS_MALFORMED: "malformed"}
TLS_MAX_HELLO_BYTES = TLS_MAX_HELLO
HTTP_MAX_HEAD_BYTES = HTTP_MAX_HEAD
STARTTLS_MAX_COMMAND_BYTES = STARTTLS_MAX_COMMANDS


cdef inline uint32_t _be16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _be24(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 16) | (<uint32_t>p[1] << 8) | p[2]


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------

cdef int _tls_gather(const uint8_t* stream, uint32_t length, uint8_t* dst, uint32_t want,
                     uint32_t* got) noexcept nogil:
    """Copy the first ``want`` handshake bytes carried by the TLS records of ``stream`` into dst.

    RFC 8446 5.1: a handshake message may be fragmented across records; records are
    type(1) version(2) length(2).  A partial trailing record contributes the bytes present.
    Returns NS_FOUND with *got == want, NS_NEED_MORE with *got < want, or a failure status.
    """
    cdef uint32_t pos = 0, reclen, avail, take
    got[0] = 0
    while got[0] < want:
        if pos >= length:
            return NS_NEED_MORE
        # The record header may itself be cut: check the bytes that are there.
        if stream[pos] != 22:
            # A first byte other than handshake(22) is not TLS; a later record of another type
            # (alert, change_cipher_spec) in the middle of the ClientHello is an inconsistency.
            return NS_NOT_PROTO if pos == 0 else NS_MALFORMED
        if pos + 1 < length and stream[pos + 1] != 3:
            return NS_NOT_PROTO if pos == 0 else NS_MALFORMED
        if pos + 5 > length:
            return NS_NEED_MORE
        reclen = _be16(stream + pos + 3)
        # RFC 8446 5.1: zero-length handshake fragments are forbidden; 2^14 + 2048 is the
        # largest record any version allows (RFC 5246 6.2.3).
        if reclen == 0 or reclen > 16384 + 2048:
            return NS_MALFORMED
        pos += 5
        avail = length - pos
        if avail > reclen:
            avail = reclen
        take = want - got[0]
        if take > avail:
            take = avail
        memcpy(dst + got[0], stream + pos, take)
        got[0] += take
        pos += reclen
    return NS_FOUND


cdef int _tls_parse_hello(const uint8_t* m, uint32_t n, tls_info_t* out) noexcept nogil:
    """Parse one complete ClientHello; a failure leaves no name, ALPN or ECH flag behind."""
    cdef int st = _tls_parse_body(m, n, out)
    if st != NS_FOUND and st != NS_NO_NAME:
        out.name = NULL
        out.name_len = 0
        out.alpn = NULL
        out.alpn_len = 0
        out.ech = 0
    return st


cdef inline int _ext_broken(tls_info_t* out) noexcept nogil:
    """An extension after the server_name one is inconsistent: keep the SNI already read.

    A middlebox that reads the ClientHello sees that server_name (nDPI does, e.g. its
    tls_invalid_reads.pcap whose ALPN overruns the block), so the name counts; without it the
    message is NS_MALFORMED.  The ALPN is dropped unless it was read whole before the break.
    """
    return NS_FOUND if out.name != NULL else NS_MALFORMED


cdef int _tls_parse_body(const uint8_t* m, uint32_t n, tls_info_t* out) noexcept nogil:
    """Parse one complete ClientHello handshake message (header included, n bytes)."""
    # RFC 8446 4.1.2: legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
    # legacy_compression_methods<1..2^8-1> extensions<8..2^16-1>
    cdef uint32_t p = 4, end = n, l, ext_end, etype, elen, e, lst_end, q, nlen
    cdef const uint8_t* sni
    cdef uint32_t sni_len
    if n < 4 + 34 + 1:
        return NS_MALFORMED
    p += 34
    l = m[p]
    p += 1
    if l > 32 or p + l > end:
        return NS_MALFORMED
    p += l
    if p + 2 > end:
        return NS_MALFORMED
    l = _be16(m + p)
    p += 2
    if l & 1 or p + l > end:
        return NS_MALFORMED
    p += l
    if p + 1 > end:
        return NS_MALFORMED
    l = m[p]
    p += 1
    if p + l > end:
        return NS_MALFORMED
    p += l
    if p == end:
        return NS_NO_NAME            # TLS 1.0-style hello without extensions (RFC 5246 7.4.1.2)
    if p + 2 > end:
        return NS_MALFORMED
    l = _be16(m + p)
    p += 2
    if p + l > end:
        return NS_MALFORMED
    ext_end = p + l
    # Extensions (RFC 8446 4.2).  Once a complete, consistent server_name extension lying wholly
    # inside the declared block has been read, a LATER inconsistent extension does not cost the
    # name (_ext_broken); one before it does, as the walk cannot reach the name.
    while p < ext_end:
        if p + 4 > ext_end:
            return _ext_broken(out)
        etype = _be16(m + p)
        elen = _be16(m + p + 2)
        p += 4
        if p + elen > ext_end:
            return _ext_broken(out)
        e = p
        if etype == 0 and out.name == NULL:
            # RFC 6066 3: server_name_list<1..2^16-1> of (name_type(1), HostName<1..2^16-1>).
            # The whole list must be consistent before its first host_name is taken.
            if elen < 2:
                return NS_MALFORMED
            lst_end = e + 2 + _be16(m + e)
            if lst_end > e + elen:
                return NS_MALFORMED
            q = e + 2
            sni = NULL
            sni_len = 0
            while q < lst_end:
                if q + 3 > lst_end:
                    return NS_MALFORMED
                nlen = _be16(m + q + 1)
                if q + 3 + nlen > lst_end:
                    return NS_MALFORMED
                if m[q] == 0 and sni == NULL and nlen > 0:
                    sni = m + q + 3
                    sni_len = nlen
                q += 3 + nlen
            out.name = sni
            out.name_len = sni_len
        elif etype == 16 and out.alpn == NULL:
            # RFC 7301 3.1: ProtocolNameList protocol_name_list<2..2^16-1>, ProtocolName<1..2^8-1>
            if elen < 2:
                return _ext_broken(out)
            lst_end = e + 2 + _be16(m + e)
            if lst_end > e + elen:
                return _ext_broken(out)
            q = e + 2
            if q < lst_end:
                nlen = m[q]
                if q + 1 + nlen > lst_end:
                    return _ext_broken(out)
                if nlen > 0:
                    out.alpn = m + q + 1
                    out.alpn_len = nlen
        elif etype == 0xfe0d or etype == 0xffce:
            # draft-ietf-tls-esni: encrypted_client_hello (0xfe0d) and legacy encrypted_server_name
            out.ech = 1
        p += elen
    return NS_FOUND if out.name != NULL else NS_NO_NAME


cdef int _sslv2_hello(const uint8_t* s, uint32_t length) noexcept nogil:
    # SSLv2 record: 2-byte header with the high bit set and a 15-bit length, then msg_type 1
    # (CLIENT-HELLO), version (3,x).  It has no extensions, so no SNI.
    cdef uint32_t rlen
    if length < 2:
        return NS_NEED_MORE
    rlen = ((<uint32_t>s[0] & 0x7f) << 8) | s[1]
    if rlen < 9:
        return NS_NOT_PROTO
    if length < 3:
        return NS_NEED_MORE
    if s[2] != 1:
        return NS_NOT_PROTO
    if length < 4:
        return NS_NEED_MORE
    if s[3] != 3 and s[3] != 0:
        return NS_NOT_PROTO
    if length < 2 + rlen:
        return NS_NEED_MORE
    return NS_NO_NAME


cdef int tls_client_hello(const uint8_t* stream, uint32_t length, int is_records,
                          uint8_t* scratch, uint32_t scratch_cap, tls_info_t* out) noexcept nogil:
    cdef uint32_t got = 0, total, reclen
    cdef uint8_t hdr[4]
    cdef int st
    cdef const uint8_t* msg
    memset(out, 0, sizeof(tls_info_t))
    if length == 0:
        return NS_NEED_MORE
    if not is_records:
        # QUIC CRYPTO stream (RFC 9001 4.1.3): raw handshake messages, no record layer.
        if stream[0] != 1:
            return NS_NOT_PROTO
        if length < 4:
            return NS_NEED_MORE
        total = 4 + _be24(stream + 1)
        if total > TLS_MAX_HELLO:
            return NS_MALFORMED
        if length < total:
            return NS_NEED_MORE
        out.hello_len = total
        return _tls_parse_hello(stream, total, out)
    if stream[0] & 0x80:
        return _sslv2_hello(stream, length)
    # Fast path: the whole ClientHello sits in the first record, parse it in place.
    if length >= 9 and stream[0] == 22 and stream[1] == 3 and _be16(stream + 3) >= 4:
        reclen = _be16(stream + 3)
        if stream[5] != 1:
            return NS_NOT_PROTO
        total = 4 + _be24(stream + 6)
        if total > TLS_MAX_HELLO:
            return NS_MALFORMED
        if reclen >= total and reclen <= 16384 + 2048:
            if length < 5 + total:
                return NS_NEED_MORE
            out.hello_len = total
            return _tls_parse_hello(stream + 5, total, out)
    # Slow path: the handshake header or body spans records (record-layer fragmentation).
    st = _tls_gather(stream, length, hdr, 4, &got)
    if st != NS_FOUND:
        if st == NS_NEED_MORE and got >= 1 and hdr[0] != 1:
            return NS_NOT_PROTO
        return st
    if hdr[0] != 1:
        return NS_NOT_PROTO
    total = 4 + _be24(hdr + 1)
    if total > TLS_MAX_HELLO or total > scratch_cap or scratch == NULL:
        return NS_MALFORMED
    st = _tls_gather(stream, length, scratch, total, &got)
    if st != NS_FOUND:
        return st
    out.hello_len = total
    return _tls_parse_hello(scratch, total, out)


# ---------------------------------------------------------------------------------------------
# QUIC CRYPTO stream: a TLS ClientHello, or the CHLO of Google QUIC Q050
# ---------------------------------------------------------------------------------------------

cdef inline uint32_t _le32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef int _gquic_chlo_msg(const uint8_t* m, uint32_t n, tls_info_t* out) noexcept nogil:
    """SNI of a gQUIC CHLO handshake message at the start of m (Q050 carries it in CRYPTO frames).

    Chromium's QUIC crypto handshake message: tag "CHLO", tag count (uint16 LE), 2 bytes of
    padding, then per tag a 4-byte tag and the uint32 LE END offset of its value (offsets do not
    decrease), then the values.  The SNI is tag "SNI\0".  NS_NEED_MORE until the whole message
    (table and every value) is there, so a cut SNI is never returned.
    """
    cdef uint32_t ntags, table_end, i, prev = 0, end, sni_off = 0, sni_len = 0, total
    cdef const uint8_t* t
    cdef bint have_sni = False
    cdef const char* tag = b"CHLO"
    for i in range(4):
        if i >= n:
            return NS_NEED_MORE
        if m[i] != <uint8_t>tag[i]:
            return NS_NOT_PROTO
    if n < 8:
        return NS_NEED_MORE
    ntags = m[4] | (<uint32_t>m[5] << 8)
    if ntags == 0 or ntags > 1024:
        return NS_MALFORMED
    table_end = 8 + 8 * ntags
    if n < table_end:
        return NS_NEED_MORE
    for i in range(ntags):
        t = m + 8 + 8 * i
        end = _le32(t + 4)
        if end < prev or end > TLS_MAX_HELLO:
            return NS_MALFORMED
        if t[0] == 83 and t[1] == 78 and t[2] == 73 and t[3] == 0 and not have_sni:  # "SNI\0"
            have_sni = True
            sni_off = table_end + prev
            sni_len = end - prev
        prev = end
    total = table_end + prev
    if total > TLS_MAX_HELLO:
        return NS_MALFORMED
    if n < total:
        return NS_NEED_MORE
    out.hello_len = total
    if not have_sni or sni_len == 0:
        return NS_NO_NAME
    out.name = m + sni_off
    out.name_len = sni_len
    return NS_FOUND


cdef int quic_crypto_hello(const uint8_t* stream, uint32_t length, uint8_t* scratch,
                           uint32_t scratch_cap, tls_info_t* out) noexcept nogil:
    memset(out, 0, sizeof(tls_info_t))
    if length == 0:
        return NS_NEED_MORE
    if stream[0] == 67:                  # "C": a gQUIC CHLO, never a TLS handshake type
        return _gquic_chlo_msg(stream, length, out)
    return tls_client_hello(stream, length, 0, scratch, scratch_cap, out)


# ---------------------------------------------------------------------------------------------
# STARTTLS: SMTP (RFC 3207), POP3 (RFC 2595 4), IMAP (RFC 3501 6.2.1)
# ---------------------------------------------------------------------------------------------

cdef enum:
    ST_SMTP = 1
    ST_POP3 = 2
    ST_IMAP = 3


cdef int _word_at(const uint8_t* s, uint32_t n, uint32_t at, const char* w) noexcept nogil:
    """Case-insensitive match of w at s[at:], followed by SP, CR or LF.  NS_FOUND, NS_NEED_MORE
    (s ends inside a possible match) or NS_NOT_PROTO."""
    cdef uint32_t j = 0
    while w[j] != 0:
        if at + j >= n:
            return NS_NEED_MORE
        if _lower(s[at + j]) != _lower(<uint8_t>w[j]):
            return NS_NOT_PROTO
        j += 1
    if at + j >= n:
        return NS_NEED_MORE
    if s[at + j] == 32 or s[at + j] == 13 or s[at + j] == 10:
        return NS_FOUND
    return NS_NOT_PROTO


cdef inline bint _imap_tag_char(uint8_t c) noexcept nogil:
    # RFC 3501 9: tag = 1*<any ASTRING-CHAR except "+">; atom-specials excluded.
    return 33 <= c <= 126 and c != 40 and c != 41 and c != 123 and c != 37 and c != 42 \
        and c != 34 and c != 92 and c != 43


cdef int _starttls_kind(const uint8_t* s, uint32_t n, int* kind, uint32_t* tag_len) noexcept nogil:
    """Which command protocol the client's first line speaks (NS_FOUND with *kind)."""
    cdef int st, need = 0, i
    cdef uint32_t t = 0
    cdef const char* smtp[2]
    cdef const char* pop3[5]
    cdef const char* imap[4]
    smtp[0] = b"EHLO"; smtp[1] = b"HELO"
    pop3[0] = b"CAPA"; pop3[1] = b"STLS"; pop3[2] = b"USER"; pop3[3] = b"AUTH"; pop3[4] = b"APOP"
    imap[0] = b"CAPABILITY"; imap[1] = b"STARTTLS"; imap[2] = b"NOOP"; imap[3] = b"ID"
    for i in range(2):
        st = _word_at(s, n, 0, smtp[i])
        if st == NS_FOUND:
            kind[0] = ST_SMTP
            return st
        need |= st == NS_NEED_MORE
    for i in range(5):
        st = _word_at(s, n, 0, pop3[i])
        if st == NS_FOUND:
            kind[0] = ST_POP3
            return st
        need |= st == NS_NEED_MORE
    # IMAP: tag SP command.
    while t < n and t < 64 and _imap_tag_char(s[t]):
        t += 1
    if t == n and t < 64:
        return NS_NEED_MORE
    if t > 0 and t < n and s[t] == 32:
        for i in range(4):
            st = _word_at(s, n, t + 1, imap[i])
            if st == NS_FOUND:
                kind[0] = ST_IMAP
                tag_len[0] = t
                return st
            need |= st == NS_NEED_MORE
    return NS_NEED_MORE if need else NS_NOT_PROTO


cdef int starttls_client_hello(const uint8_t* stream, uint32_t length, uint8_t* scratch,
                               uint32_t scratch_cap, tls_info_t* out) noexcept nogil:
    cdef int kind = 0, st
    cdef uint32_t tag_len = 0, ls = 0, le, p, lim, a, cmd
    memset(out, 0, sizeof(tls_info_t))
    if length == 0:
        return NS_NEED_MORE
    st = _starttls_kind(stream, length, &kind, &tag_len)
    if st != NS_FOUND:
        return st
    lim = length if length < STARTTLS_MAX_COMMANDS else STARTTLS_MAX_COMMANDS
    p = 0
    while True:
        # One command line (RFC 5321 2.3.8, RFC 1939 3, RFC 3501 2.2): text up to LF.
        ls = p
        while p < lim and stream[p] != 10:
            if stream[p] < 32 and stream[p] != 9 and stream[p] != 13:
                return NS_MALFORMED          # binary data where a command line should be
            p += 1
        if p >= lim:
            return NS_NO_NAME if length >= STARTTLS_MAX_COMMANDS else NS_NEED_MORE
        le = p
        p += 1
        while le > ls and (stream[le - 1] == 13 or stream[le - 1] == 32):
            le -= 1
        # The command: after "tag SP" for IMAP (any tag: each command has its own).
        cmd = ls
        if kind == ST_IMAP:
            a = ls
            while a < le and stream[a] != 32:
                a += 1
            cmd = a + 1
        if kind == ST_POP3:
            st = _word_at(stream, le + 1, cmd, b"STLS") if cmd + 4 == le else NS_NOT_PROTO
        else:
            st = _word_at(stream, le + 1, cmd, b"STARTTLS") if cmd + 8 == le else NS_NOT_PROTO
        if st == NS_FOUND:
            # The server's "220"/"+OK"/"OK" reply comes on the other direction; the client's
            # next bytes are the TLS handshake (RFC 3207 4.2).
            if p >= length:
                return NS_NEED_MORE
            return tls_client_hello(stream + p, length - p, 1, scratch, scratch_cap, out)


# ---------------------------------------------------------------------------------------------
# HTTP/1.x
# ---------------------------------------------------------------------------------------------

# RFC 9110 9.3 methods, WebDAV (RFC 4918) and the SSDP/UPnP ones seen over HTTPU.
cdef extern from *:
    """
    static const char* const KZ_HTTP_METHODS[] = {
        "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH",
        "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
        "NOTIFY", "M-SEARCH", "SUBSCRIBE", "UNSUBSCRIBE"};
    #define KZ_N_HTTP_METHODS ((int)(sizeof(KZ_HTTP_METHODS) / sizeof(KZ_HTTP_METHODS[0])))
    """
    const char* const KZ_HTTP_METHODS[]
    int KZ_N_HTTP_METHODS


cdef int _http_method(const uint8_t* s, uint32_t length, uint32_t* mlen) noexcept nogil:
    """NS_FOUND with *mlen when s starts with a known method and a space."""
    cdef int i, prefix = 0
    cdef uint32_t j
    cdef const char* m
    for i in range(KZ_N_HTTP_METHODS):
        m = KZ_HTTP_METHODS[i]
        j = 0
        while m[j] != 0 and j < length and <uint8_t>m[j] == s[j]:
            j += 1
        if m[j] == 0:
            if j < length:
                if s[j] == 32:
                    mlen[0] = j
                    return NS_FOUND
            else:
                prefix = 1
        elif j == length:
            prefix = 1
    return NS_NEED_MORE if prefix else NS_NOT_PROTO


cdef inline uint8_t _lower(uint8_t c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef int http_host(const uint8_t* stream, uint32_t length, name_ref_t* out) noexcept nogil:
    cdef uint32_t mlen = 0, p, lim, ls, le, a, b, q
    cdef const char* ver = b"HTTP/1."
    cdef int st, k
    out.name = NULL
    out.name_len = 0
    st = _http_method(stream, length, &mlen)
    if st != NS_FOUND:
        return st
    lim = length if length < HTTP_MAX_HEAD else HTTP_MAX_HEAD
    # Request line (RFC 9112 3): method SP request-target SP HTTP-version CRLF.  Read leniently
    # like nDPI: the version is the line's last token, so a target with raw spaces
    # ("GET /x;cat /etc/passwd HTTP/1.1", WebattackRCE.pcap) still parses; control bytes other
    # than TAB/CR mean binary data, not HTTP.
    p = mlen + 1
    while p < lim and stream[p] != 10:
        if stream[p] < 32 and stream[p] != 9 and stream[p] != 13:
            return NS_NOT_PROTO
        p += 1
    if p >= lim:
        return NS_MALFORMED if length >= HTTP_MAX_HEAD else NS_NEED_MORE
    le = p                               # the LF
    if le > mlen + 1 and stream[le - 1] == 13:
        le -= 1
    # "<sp>HTTP/1.<digit>" ends the line, and a non-space target precedes it.
    if le < mlen + 1 + 1 + 9:
        return NS_NOT_PROTO
    a = le - 9
    if stream[a] != 32 or stream[le - 1] < 48 or stream[le - 1] > 57:
        return NS_NOT_PROTO
    for k in range(7):
        if stream[a + 1 + k] != <uint8_t>ver[k]:
            return NS_NOT_PROTO
    b = mlen + 1
    while b < a and stream[b] == 32:
        b += 1
    if b == a:
        return NS_NOT_PROTO              # empty request-target
    p += 1
    # Header lines (RFC 9112 5): field-name ":" OWS field-value OWS, CRLF or bare LF.
    while True:
        ls = p
        while p < lim and stream[p] != 10:
            p += 1
        if p >= lim:
            return NS_MALFORMED if length >= HTTP_MAX_HEAD else NS_NEED_MORE
        le = p                           # stream[le] is the LF
        p += 1
        if le > ls and stream[le - 1] == 13:
            le -= 1
        if le == ls:
            return NS_NO_NAME            # blank line: end of the header block without Host
        if le - ls >= 5 and _lower(stream[ls]) == 104 and _lower(stream[ls + 1]) == 111 \
                and _lower(stream[ls + 2]) == 115 and _lower(stream[ls + 3]) == 116 \
                and stream[ls + 4] == 58:
            a = ls + 5
            b = le
            while a < b and (stream[a] == 32 or stream[a] == 9):
                a += 1
            while b > a and (stream[b - 1] == 32 or stream[b - 1] == 9):
                b -= 1
            if b > a:
                # RFC 9110 5.5: a field value holding CR, LF, NUL or another control byte (HTAB
                # aside) is invalid; RFC 9112 2.2: a bare CR is invalid.  Such a Host is refused
                # whole rather than returned as a name with control bytes in it.
                for q in range(a, b):
                    if (stream[q] < 32 and stream[q] != 9) or stream[q] == 127:
                        return NS_MALFORMED
                out.name = stream + a
                out.name_len = b - a
                return NS_FOUND


# ---------------------------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------------------------

cdef int _dns_skip_name(const uint8_t* msg, uint32_t length, uint32_t* pos) noexcept nogil:
    """Advance *pos past a wire-format name (RFC 1035 4.1.4): labels, then 0 or a pointer."""
    cdef uint32_t p = pos[0], l
    while True:
        if p >= length:
            return NS_MALFORMED
        l = msg[p]
        if l == 0:
            pos[0] = p + 1
            return NS_FOUND
        if (l & 0xc0) == 0xc0:
            if p + 2 > length:
                return NS_MALFORMED
            pos[0] = p + 2
            return NS_FOUND
        if l & 0xc0:
            return NS_MALFORMED          # 0x40/0x80 label types (RFC 6891 obsoleted them)
        p += 1 + l


cdef int _dns_read_name(const uint8_t* msg, uint32_t length, uint32_t* pos,
                        uint8_t* name, uint32_t* name_len) noexcept nogil:
    """Decode the name at *pos into dotted, lower-cased text; *pos moves past its wire form."""
    cdef uint32_t p = pos[0], l, n = 0, wire = 0, jumps = 0, target, i, end_pos = 0
    cdef int jumped = 0
    cdef uint8_t c
    while True:
        if p >= length:
            return NS_MALFORMED
        l = msg[p]
        if l == 0:
            if not jumped:
                end_pos = p + 1
            break
        if (l & 0xc0) == 0xc0:
            if p + 2 > length:
                return NS_MALFORMED
            target = ((l & 0x3f) << 8) | msg[p + 1]
            # Loop protection: a pointer must go strictly backwards, and we follow at most
            # DNS_MAX_JUMPS of them.
            if target >= p or jumps >= DNS_MAX_JUMPS:
                return NS_MALFORMED
            jumps += 1
            if not jumped:
                end_pos = p + 2
                jumped = 1
            p = target
            continue
        if l & 0xc0:
            return NS_MALFORMED
        if p + 1 + l > length:
            return NS_MALFORMED
        wire += 1 + l
        if wire + 1 > 255:               # RFC 1035 2.3.4: 255 octets on the wire
            return NS_MALFORMED
        if n:
            name[n] = 46
            n += 1
        for i in range(l):
            c = msg[p + 1 + i]
            name[n] = c + 32 if 65 <= c <= 90 else c
            n += 1
        p += 1 + l
    pos[0] = end_pos
    name_len[0] = n
    return NS_FOUND


cdef int dns_message(const uint8_t* msg, uint32_t length, dns_info_t* out) noexcept nogil:
    cdef uint32_t qd, an, p, i, rtype, rclass, rdlen, ttl
    cdef int st
    cdef dns_answer_t* a
    out.name_len = 0
    out.qtype = 0
    out.is_response = 0
    out.rcode = 0
    out.n_answers = 0
    out.n_answers_dropped = 0
    # RFC 1035 4.1.1 header: id, flags (QR opcode AA TC RD | RA Z RCODE), 4 counts.
    if length < 12:
        return NS_MALFORMED
    out.is_response = msg[2] >> 7
    out.rcode = msg[3] & 0x0f
    if ((msg[2] >> 3) & 0x0f) > 6:       # opcodes 0-6 are assigned (RFC 1035, 1996, 2136, 8490)
        return NS_NOT_PROTO
    qd = _be16(msg + 4)
    an = _be16(msg + 6)
    if qd == 0:
        return NS_NO_NAME
    p = 12
    st = _dns_read_name(msg, length, &p, out.name, &out.name_len)
    if st != NS_FOUND:
        out.name_len = 0
        return st
    if p + 4 > length:
        out.name_len = 0
        return NS_MALFORMED
    out.qtype = <uint16_t>_be16(msg + p)
    p += 4
    st = NS_FOUND if out.name_len > 0 else NS_NO_NAME
    for i in range(1, qd):
        if _dns_skip_name(msg, length, &p) != NS_FOUND or p + 4 > length:
            return st                    # answers unreachable: best effort stops here
        p += 4
    if out.is_response:
        # RFC 1035 4.1.3 resource record: name type(2) class(2) ttl(4) rdlength(2) rdata.
        for i in range(an):
            if _dns_skip_name(msg, length, &p) != NS_FOUND or p + 10 > length:
                return st
            rtype = _be16(msg + p)
            rclass = _be16(msg + p + 2) & 0x7fff     # mDNS cache-flush bit (RFC 6762 10.2)
            ttl = _be32(msg + p + 4)
            rdlen = _be16(msg + p + 8)
            p += 10
            if p + rdlen > length:
                return st
            if rclass == 1 and ((rtype == 1 and rdlen == 4) or (rtype == 28 and rdlen == 16)):
                if out.n_answers < 32:
                    a = &out.answers[out.n_answers]
                    memset(a, 0, sizeof(dns_answer_t))
                    memcpy(a.addr, msg + p, rdlen)
                    a.ip_version = 4 if rtype == 1 else 6
                    a.ttl = ttl
                    out.n_answers += 1
                else:
                    out.n_answers_dropped += 1
            p += rdlen
    return st


# ---------------------------------------------------------------------------------------------
# Python wrappers (tests, debugging): they allocate, the cdef functions above do not.
# ---------------------------------------------------------------------------------------------

cdef const uint8_t _EMPTY[1]


cdef inline const uint8_t* _ptr(const unsigned char[::1] buf) noexcept:
    return &buf[0] if buf.shape[0] > 0 else _EMPTY


ctypedef int (*hello_fn)(const uint8_t* stream, uint32_t length, uint8_t* scratch,
                         uint32_t scratch_cap, tls_info_t* out) noexcept nogil


cdef int _hello_records(const uint8_t* s, uint32_t n, uint8_t* scratch, uint32_t cap,
                        tls_info_t* out) noexcept nogil:
    return tls_client_hello(s, n, 1, scratch, cap, out)


cdef int _hello_handshake(const uint8_t* s, uint32_t n, uint8_t* scratch, uint32_t cap,
                          tls_info_t* out) noexcept nogil:
    return tls_client_hello(s, n, 0, scratch, cap, out)


cdef tuple _run_hello(hello_fn parse, const unsigned char[::1] stream):
    """Run one of the ClientHello parsers over ``stream`` without the GIL: ``(status, info)``."""
    cdef tls_info_t info
    cdef uint8_t scratch[SCRATCH_SIZE]
    cdef const uint8_t* p = _ptr(stream)
    cdef uint32_t n = <uint32_t>stream.shape[0] if stream.shape[0] < 0xffffffff else 0xffffffff
    cdef int st
    with nogil:
        st = parse(p, n, scratch, SCRATCH_SIZE, &info)
    return st, _tls_dict(&info)


def parse_client_hello(const unsigned char[::1] stream, bint is_records=True):
    """Parse the ClientHello at the start of ``stream``.

    Parameters: ``stream`` the client's first bytes (TLS records when ``is_records``, else raw
    handshake messages from a QUIC CRYPTO stream).  Returns ``(status, info)`` where info has
    ``name`` (bytes or None), ``alpn`` (bytes or None), ``ech`` (bool) and ``hello_len`` (int).
    """
    return _run_hello(_hello_records if is_records else _hello_handshake, stream)


def parse_http_host(const unsigned char[::1] stream):
    """Return ``(status, host)`` for the HTTP/1.x request at the start of ``stream``."""
    cdef name_ref_t ref
    cdef const uint8_t* p = _ptr(stream)
    cdef uint32_t n = <uint32_t>stream.shape[0] if stream.shape[0] < 0xffffffff else 0xffffffff
    cdef int st
    with nogil:
        st = http_host(p, n, &ref)
    return st, (ref.name[:ref.name_len] if ref.name != NULL else None)


def parse_dns(const unsigned char[::1] msg):
    """Parse one DNS message; return ``(status, info)``.

    info: ``name`` (bytes, lower-cased, dotted), ``qtype``, ``is_response``, ``rcode``,
    ``answers`` (list of ``(ip text, ttl)`` for A/AAAA records of the answer section) and
    ``dropped`` (A/AAAA answers beyond the 32 stored).
    """
    cdef dns_info_t info
    cdef const uint8_t* p = _ptr(msg)
    cdef uint32_t n = <uint32_t>msg.shape[0] if msg.shape[0] < 0xffffffff else 0xffffffff
    cdef int st
    cdef uint32_t i
    with nogil:
        st = dns_message(p, n, &info)
    answers = []
    for i in range(info.n_answers):
        if info.answers[i].ip_version == 4:
            ip = str(ipaddress.IPv4Address((<const uint8_t*>info.answers[i].addr)[:4]))
        else:
            ip = str(ipaddress.IPv6Address((<const uint8_t*>info.answers[i].addr)[:16]))
        answers.append((ip, info.answers[i].ttl))
    return st, {
        "name": (<const uint8_t*>info.name)[:info.name_len],
        "qtype": info.qtype,
        "is_response": bool(info.is_response),
        "rcode": info.rcode,
        "answers": answers,
        "dropped": info.n_answers_dropped,
    }


def parse_quic_crypto(const unsigned char[::1] stream):
    """Parse the handshake message at the start of a QUIC CRYPTO stream.

    A TLS ClientHello (as ``parse_client_hello(stream, False)``) or a gQUIC Q050 CHLO (its SNI
    tag).  Returns ``(status, info)`` like :func:`parse_client_hello`.
    """
    return _run_hello(quic_crypto_hello, stream)


def parse_starttls(const unsigned char[::1] stream):
    """Parse the client side of an SMTP/POP3/IMAP session up to its STARTTLS ClientHello.

    Parameters: ``stream`` the client's first bytes (commands, then TLS records).  Returns
    ``(status, info)`` like :func:`parse_client_hello`: ``NS_NOT_PROTO`` when the stream does
    not start with an SMTP, POP3 or IMAP command, ``NS_NEED_MORE`` until the STARTTLS (POP3:
    STLS) line and the ClientHello after it are complete, ``NS_NO_NAME`` after
    ``STARTTLS_MAX_COMMAND_BYTES`` of commands without STARTTLS.

    >>> parse_starttls(b"EHLO me\\r\\nSTARTTLS\\r\\n")[0] == NS_NEED_MORE
    True
    """
    return _run_hello(starttls_client_hello, stream)


cdef dict _tls_dict(tls_info_t* info):
    return {
        "name": info.name[:info.name_len] if info.name != NULL else None,
        "alpn": info.alpn[:info.alpn_len] if info.alpn != NULL else None,
        "ech": bool(info.ech),
        "hello_len": info.hello_len,
    }
