"""Typed stub of kzfilter.packet._quic (compiled): QUIC client Initial parsing and decryption.

The C functions (``quic_version_profile``, ``quic_packet_header``, ``quic_walk_frames``) are reached
through ``_quic.pxd``; ``packet_header`` and ``walk_frames`` below exist for tests and fuzzing.
"""
from typing import Any, Callable, TypedDict

from typing_extensions import Buffer

V1: int
V2: int
T050: int
T051: int
Q050: int
MVFST_22: int
MVFST_27: int
MVFST_EXP: int
SALTS: tuple[bytes, ...]
QS_NAMES: tuple[str, ...]            # status -> reason: "ok", "not-quic", "not-initial", ...
MAX_FRAMES_PER_PACKET: int           # 256
MAX_PACKETS_PER_DATAGRAM: int        # 8

class HeaderFields(TypedDict):
    version: int
    first: int                       # first byte, still header-protected
    dcid: bytes
    scid: bytes
    pn_offset: int | None            # Initial only
    end: int                         # Initial: end of the packet; skipped packet: next packet

def version_profile(version: int) -> tuple[bytes, bool, int, int] | None: ...
def packet_header(buf: Buffer, pos: int = 0, first_packet: bool = True) -> tuple[int, HeaderFields | None]: ...
def walk_frames(plain: Buffer, crypto_frame: int = 6) -> tuple[int, list[tuple[int, bytes]]]: ...
def open_initials(
    datagram: Buffer, ciphers: Callable[[int, bytes], tuple[Any, Any, bytes]]
) -> tuple[int, int, bytes, bytes, list[tuple[int, bytes]] | None, int, bool]: ...

# The C path (libcrypto bound at run time; the flow table uses it without the GIL).
def bind_openssl() -> bool: ...      # KZFILTER_QUIC_CRYPTO=python keeps the cryptography path
def c_path_enabled() -> bool: ...
def set_c_path(enabled: bool) -> None: ...
def client_initial_keys_c(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes]: ...
def open_initials_c(
    datagram: Buffer,
) -> tuple[int, int, bytes, bytes, list[tuple[int, bytes]] | None, int, bool]: ...
