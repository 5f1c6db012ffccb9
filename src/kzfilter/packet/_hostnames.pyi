"""Typed stub of kzfilter.packet._hostnames (compiled): TLS ClientHello, HTTP Host and DNS parsers.

The C functions (``tls_client_hello``, ``http_host``, ``dns_message``) are reached through
``_hostnames.pxd``; the Python wrappers below exist for tests and debugging and allocate.
"""
from typing import TypedDict

from typing_extensions import Buffer

NS_FOUND: int        # 0: a complete name was found
NS_NEED_MORE: int    # 1: the message is incomplete, feed more of the stream
NS_NOT_PROTO: int    # 2: these bytes are not this protocol
NS_NO_NAME: int      # 3: complete message without a name
NS_MALFORMED: int    # 4: recognised protocol, inconsistent length or field (or over a bound)
STATUS_NAMES: dict[int, str]
TLS_MAX_HELLO_BYTES: int   # 65536: a larger declared ClientHello is NS_MALFORMED at once
HTTP_MAX_HEAD_BYTES: int   # 16384: request head scanned before NS_MALFORMED
STARTTLS_MAX_COMMAND_BYTES: int  # 4096: command bytes scanned for STARTTLS before NS_NO_NAME

class TlsInfo(TypedDict):
    name: bytes | None       # first SNI host_name, raw bytes (not normalised)
    alpn: bytes | None       # first ALPN protocol offered
    ech: bool                # encrypted_client_hello (0xfe0d) or ESNI (0xffce) present
    hello_len: int           # ClientHello handshake message length, header included

class DnsInfo(TypedDict):
    name: bytes                      # first question name, ASCII lower-cased, dotted, no final dot
    qtype: int
    is_response: bool
    rcode: int
    answers: list[tuple[str, int]]   # (address text, ttl) of A/AAAA answer records, at most 32
    dropped: int                     # A/AAAA answers beyond the 32 stored

def parse_client_hello(stream: Buffer, is_records: bool = True) -> tuple[int, TlsInfo]: ...
def parse_http_host(stream: Buffer) -> tuple[int, bytes | None]: ...
def parse_dns(msg: Buffer) -> tuple[int, DnsInfo]: ...
def parse_quic_crypto(stream: Buffer) -> tuple[int, TlsInfo]: ...   # TLS ClientHello or Q050 CHLO
def parse_starttls(stream: Buffer) -> tuple[int, TlsInfo]: ...      # SMTP/POP3/IMAP then ClientHello
