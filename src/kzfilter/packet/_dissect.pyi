"""Typed stub of kzfilter.packet._dissect (the C entry point `dissect` is reachable via cimport only)."""
from typing import Final, TypedDict

import numpy as np
import numpy.typing as npt

class Fields(TypedDict):
    src: str
    dst: str
    ip_version: int
    l4proto: int
    sport: int
    dport: int
    tcp_flags: int
    seq: int
    ack: int
    vlan: int
    tunnel: int
    tunnel_kind: str | None
    is_fragment: int
    payload: bytes
    payload_offset: int
    payload_len: int
    payload_wire_len: int

DS_OK: Final[int]
DS_NOT_IP: Final[int]
DS_TRUNCATED: Final[int]
DS_MALFORMED: Final[int]
DS_UNSUPPORTED_LINK: Final[int]
DS_FRAGMENT: Final[int]
DS_UNSUPPORTED_L4: Final[int]
STATUS_NAMES: Final[dict[int, str]]

TUN_NONE: Final[int]
TUN_IPIP: Final[int]
TUN_GRE: Final[int]
TUN_OTHER: Final[int]
TUNNEL_KIND_NAMES: Final[dict[int, str | None]]

LINKTYPE_NULL: Final[int]
LINKTYPE_ETHERNET: Final[int]
LINKTYPE_PPP: Final[int]
LINKTYPE_RAW_12: Final[int]
LINKTYPE_RAW_14: Final[int]
LINKTYPE_PPP_HDLC: Final[int]
LINKTYPE_RAW: Final[int]
LINKTYPE_C_HDLC: Final[int]
LINKTYPE_LOOP: Final[int]
LINKTYPE_LINUX_SLL: Final[int]
LINKTYPE_PPI: Final[int]
LINKTYPE_IPV4: Final[int]
LINKTYPE_IPV6: Final[int]
LINKTYPE_LINUX_SLL2: Final[int]
SUPPORTED_LINKTYPES: Final[frozenset[int]]

def dissect_frame(data: bytes | bytearray | memoryview, linktype: int) -> tuple[int, Fields | None]: ...
def dissect_batch(
    data: bytes | bytearray | memoryview,
    offsets: npt.ArrayLike,
    lengths: npt.ArrayLike,
    linktype: int,
) -> npt.NDArray[np.uint8]: ...
