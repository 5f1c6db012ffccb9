# Contract of the application-layer name parsers used by the flow table.  Pure functions over bytes:
# no allocation, no GIL.  Every parser distinguishes "need more data" from "bad data" (dpkt's NeedData
# vs UnpackError): the flow table keeps reassembling on NS_NEED_MORE and gives up on the others.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    NS_FOUND = 0        # a complete name is at name/name_len
    NS_NEED_MORE = 1    # the message is incomplete: feed more of the stream
    NS_NOT_PROTO = 2    # these bytes are not this protocol
    NS_NO_NAME = 3      # complete message, but it carries no name (ClientHello without SNI, HTTP without Host)
    NS_MALFORMED = 4    # the protocol is recognised but a length or field is inconsistent

ctypedef struct tls_info_t:
    const uint8_t* name     # SNI host_name (points into the scratch buffer or the input)
    uint32_t name_len
    const uint8_t* alpn     # first ALPN protocol name offered, or NULL
    uint32_t alpn_len
    uint8_t ech             # 1 when encrypted_client_hello (0xfe0d) or legacy ESNI (0xffce) is present
    uint8_t _pad[3]
    uint32_t hello_len      # bytes of the ClientHello handshake message, header included

# stream: the first bytes of a TCP client stream (TLS records, is_records=1) or QUIC CRYPTO stream
# data (raw handshake messages, is_records=0).  Handshake bytes are copied into scratch when they are
# split across TLS records; scratch_cap bounds that copy (16 KiB is plenty: a ClientHello is < 16 KiB).
cdef int tls_client_hello(const uint8_t* stream, uint32_t length, int is_records,
                          uint8_t* scratch, uint32_t scratch_cap, tls_info_t* out) noexcept nogil

ctypedef struct name_ref_t:
    const uint8_t* name
    uint32_t name_len

# HTTP/1.x request: NS_FOUND once the Host header line is complete (port not stripped here),
# NS_NO_NAME at the end of the header block without Host, NS_NOT_PROTO when it is not a request.
cdef int http_host(const uint8_t* stream, uint32_t length, name_ref_t* out) noexcept nogil

ctypedef struct dns_answer_t:
    uint8_t addr[16]        # IPv4 in addr[0:4]
    uint8_t ip_version
    uint8_t _pad[3]
    uint32_t ttl

ctypedef struct dns_info_t:
    uint8_t name[256]       # first question name, dotted, lower-cased, no trailing dot
    uint32_t name_len
    uint16_t qtype
    uint8_t is_response
    uint8_t rcode
    uint32_t n_answers      # A/AAAA answers stored in answers[]
    uint32_t n_answers_dropped  # A/AAAA answers beyond the array
    dns_answer_t answers[32]

# msg: one DNS message (UDP payload, or a TCP message without its 2-byte length prefix).
cdef int dns_message(const uint8_t* msg, uint32_t length, dns_info_t* out) noexcept nogil

# stream: the reassembled CRYPTO stream of a QUIC Initial (raw handshake messages).  A TLS
# ClientHello is parsed as tls_client_hello(is_records=0); a Google QUIC Q050 CHLO message
# ("CHLO" tag/value map, carried in Q050's CRYPTO frames) gives its "SNI" tag.  Same statuses;
# out.alpn is never set for a CHLO.
cdef int quic_crypto_hello(const uint8_t* stream, uint32_t length, uint8_t* scratch,
                           uint32_t scratch_cap, tls_info_t* out) noexcept nogil

# stream: the client's first bytes of an SMTP (EHLO/HELO ... STARTTLS, RFC 3207), POP3
# (CAPA/USER/... STLS, RFC 2595) or IMAP (tag CAPABILITY ... tag STARTTLS, RFC 3501) session.
# NS_NOT_PROTO when the first command is none of those; NS_NEED_MORE until the STARTTLS/STLS
# line and the TLS ClientHello after it are complete; then tls_client_hello's result for the bytes
# after that line.  At most 4 KiB of command lines are scanned: beyond that without STARTTLS,
# NS_NO_NAME (a plaintext session); a control byte in a command line is NS_MALFORMED.
cdef int starttls_client_hello(const uint8_t* stream, uint32_t length, uint8_t* scratch,
                               uint32_t scratch_cap, tls_info_t* out) noexcept nogil
