"""Small captures with known contents, written byte by byte so tests know every record's offset.

The writers are independent of kzfilter's reader (plain ``struct`` per the pcap and pcapng
specifications: draft-ietf-opsawg-pcap, draft-ietf-opsawg-pcapng), so a test can cut or corrupt
a file at an exact record boundary and say which flows must survive.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from tests.flow.frames import ACK, FIN, PSH, SYN, tcp

NS = 1_000_000_000
T0 = 1_768_471_200 * NS


def tls_client_hello(sni: bytes, extra: bytes = b"") -> bytes:
    """A minimal TLS 1.2 ClientHello record carrying ``sni`` (RFC 8446 4.1.2, RFC 6066 3)."""
    name = b"\x00" + struct.pack("!H", len(sni)) + sni
    sni_ext = struct.pack("!HH", 0, len(name) + 2) + struct.pack("!H", len(name)) + name
    exts = sni_ext + extra
    body = (b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01" + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


@dataclass(frozen=True)
class Flow:
    """One TLS flow of the test captures: its client port, its SNI, its frames' indexes."""
    port: int
    name: str
    first: int      # index of its first frame in the capture
    last: int       # index of its last frame


def tls_flows(n: int, t0: int = T0) -> tuple[list[tuple[int, bytes]], list[Flow]]:
    """``n`` TLS flows one after another (no interleaving): handshake, ClientHello, FIN both ways.

    Returns ``(frames, flows)``; frames are ``(ts_ns, ethernet frame)``.
    """
    frames: list[tuple[int, bytes]] = []
    flows = []
    c, s = "100.64.0.1", "192.0.2.10"
    t = t0
    for k in range(n):
        port, name = 20000 + k, f"f{k}.example.com"
        hello = tls_client_hello(name.encode())
        first = len(frames)
        for ts_frame in (
            tcp(c, port, s, 443, SYN, 1000),
            tcp(s, 443, c, port, SYN | ACK, 5000, 1001),
            tcp(c, port, s, 443, ACK, 1001, 5001),
            tcp(c, port, s, 443, ACK | PSH, 1001, 5001, hello),
            tcp(s, 443, c, port, ACK, 5001, 1001 + len(hello)),
            tcp(c, port, s, 443, FIN | ACK, 1001 + len(hello), 5001),
            tcp(s, 443, c, port, FIN | ACK, 5001, 1002 + len(hello)),
            tcp(c, port, s, 443, ACK, 1002 + len(hello), 5002),
        ):
            frames.append((t, ts_frame))
            t += 1_000_000
        flows.append(Flow(port, name, first, len(frames) - 1))
        t += 10 * NS
    return frames, flows


def pcap_bytes(frames, snaplen: int = 65535, linktype: int = 1, nano: bool = True,
               caplens: dict[int, int] | None = None, wirelens: dict[int, int] | None = None,
               ) -> tuple[bytes, list[int]]:
    """A little-endian pcap and the offset of each record (header start); the last entry is the
    file size.  ``caplens`` / ``wirelens`` override the declared lengths of some records."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = bytearray(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    offsets = []
    for i, (ts, frame) in enumerate(frames):
        offsets.append(len(out))
        sec, frac = divmod(ts, NS)
        if not nano:
            frac //= 1000
        cap = (caplens or {}).get(i, len(frame))
        wire = (wirelens or {}).get(i, len(frame))
        out += struct.pack("<IIII", sec, frac, cap, wire) + frame
    offsets.append(len(out))
    return bytes(out), offsets


def pcapng_bytes(frames, linktype: int = 1, snaplen: int = 0,
                 block_lens: dict[int, int] | None = None) -> tuple[bytes, list[int]]:
    """A little-endian pcapng (SHB, one IDB with nanosecond timestamps, one EPB per frame) and the
    offset of each EPB; the last entry is the file size.  ``block_lens`` overrides the leading
    Block Total Length of some EPBs (corruption tests)."""
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = bytearray(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body
                    + struct.pack("<I", 12 + len(shb_body)))
    tsresol = struct.pack("<HHB3x", 9, 1, 9)              # if_tsresol = 10^-9
    idb_body = struct.pack("<HHI", linktype, 0, snaplen) + tsresol + struct.pack("<HH", 0, 0)
    out += struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body))
    offsets = []
    for i, (ts, frame) in enumerate(frames):
        offsets.append(len(out))
        pad = (-len(frame)) % 4
        body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
        body += frame + b"\x00" * pad
        total = 12 + len(body)
        lead = (block_lens or {}).get(i, total)
        out += struct.pack("<II", 6, lead) + body + struct.pack("<I", total)
    offsets.append(len(out))
    return bytes(out), offsets
