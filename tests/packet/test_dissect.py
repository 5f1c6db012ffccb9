"""Tests of the packet dissector (kzfilter.packet._dissect).

References: dpkt's own parse of every frame in the nDPI captures (a small reference decoder below walks
dpkt's link/IP/TCP/UDP objects), nDPI's flow list (oracle.jsonl) for tunnelled traffic dpkt does not
open, hand-built frames (dpkt builds the layers it knows; the tunnel headers are packed by hand from
their RFCs), hypothesis for random bytes, and every prefix of real frames for truncation.
"""
from __future__ import annotations

import collections
import json
import socket
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzfilter._build_check import import_compiled
from tests.conftest import shared_path

D = import_compiled("kzfilter.packet._dissect")

OK, NOT_IP, TRUNC, MALF, UNSUP_LINK, FRAG, UNSUP_L4 = (D.DS_OK, D.DS_NOT_IP, D.DS_TRUNCATED, D.DS_MALFORMED,
                                                       D.DS_UNSUPPORTED_LINK, D.DS_FRAGMENT, D.DS_UNSUPPORTED_L4)
L4_NAMES = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPV6", 2: "IGMP", 50: "ESP", 132: "SCTP", 47: "GRE"}
UDP_TUNNEL_PORTS = {2152, 4789, 5247, 37008, 1701}


# ------------------------------------------------------------------------------------------------
# Capture reading (dpkt only: kzfilter's own reader is tested elsewhere).
# ------------------------------------------------------------------------------------------------

def _read_pcap_struct(data: bytes) -> tuple[int, list[bytes]]:
    """Classic pcap walker (both byte orders, micro/nano magic); stops at a cut-off record."""
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
              b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}[magic]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    frames, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, off + 8)[0]
        off += 16
        if off + incl > len(data):
            break
        frames.append(data[off:off + incl])
        off += incl
    return linktype, frames


def read_capture(path: Path) -> tuple[int, list[bytes]]:
    """Return (link type, frames); pcapng through dpkt (first interface's link type)."""
    raw = path.read_bytes()
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        with path.open("rb") as f:
            reader = dpkt.pcapng.Reader(f)
            frames = []
            try:
                for _ts, buf in reader:
                    frames.append(bytes(buf))
            except (dpkt.NeedData, dpkt.UnpackError, ValueError, struct.error):
                pass
            return reader.datalink(), frames
    return _read_pcap_struct(raw)


_CACHE: dict[str, list[tuple[str, int, list[bytes]]]] = {}


def captures(folder: str) -> list[tuple[str, int, list[bytes]]]:
    if folder not in _CACHE:
        base = shared_path("pcaps", folder)
        out = []
        for path in sorted(base.iterdir()):
            if path.suffix not in (".pcap", ".pcapng"):
                continue
            try:
                lt, frames = read_capture(path)
            except (KeyError, ValueError, struct.error, dpkt.UnpackError, dpkt.NeedData):
                out.append((path.name, -1, []))
                continue
            out.append((path.name, lt, frames))
        _CACHE[folder] = out
    return _CACHE[folder]


# ------------------------------------------------------------------------------------------------
# Independent reference: dpkt's parse.
# ------------------------------------------------------------------------------------------------

def _net_from_ethertype(etype: int, buf: bytes):
    if etype == 0x0800:
        return dpkt.ip.IP(buf)
    if etype == 0x86DD:
        return dpkt.ip6.IP6(buf)
    return None


def ref_decode(lt: int, buf: bytes) -> dict | str:
    """dpkt's view of a frame: a dict of fields, or a reason string why it is not comparable."""
    vlan = 0
    try:
        if lt == 1:
            eth = dpkt.ethernet.Ethernet(buf)
            tags = getattr(eth, "vlan_tags", None) or []
            vlan = tags[0].id if tags else 0
            if getattr(eth, "mpls_labels", None) or eth.type in (0x8863, 0x8864):
                return "l2-other"
            net = eth.data
        elif lt == 113:
            net = dpkt.sll.SLL(buf).data
        elif lt == 276:
            net = dpkt.sll2.SLL2(buf).data
        elif lt in (0, 108):
            net = dpkt.loopback.Loopback(buf).data
        elif lt in (12, 14, 101, 228, 229):
            net = dpkt.ip.IP(buf) if buf[:1] and buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
        elif lt == 104 or (lt in (9, 50) and buf[:1] in (b"\x0f", b"\x8f")):
            net = _net_from_ethertype(struct.unpack(">H", buf[2:4])[0], buf[4:])
        elif lt == 192:
            hl, dlt = struct.unpack_from("<HI", buf, 2)
            return ref_decode(dlt, buf[hl:])
        else:
            return "link"
    except (dpkt.UnpackError, dpkt.NeedData, struct.error, IndexError):
        return "dpkt-error"
    if isinstance(net, dpkt.ip.IP):
        if net.offset or net.mf:
            return "fragment"
        src, dst = socket.inet_ntop(socket.AF_INET, net.src), socket.inet_ntop(socket.AF_INET, net.dst)
    elif isinstance(net, dpkt.ip6.IP6):
        if 44 in getattr(net, "extension_hdrs", {}) and net.extension_hdrs[44] is not None:
            return "fragment"
        src, dst = socket.inet_ntop(socket.AF_INET6, net.src), socket.inet_ntop(socket.AF_INET6, net.dst)
    else:
        return "not-ip"
    l4 = net.data
    if net.p in (4, 41, 47):
        return "tunnel"
    if isinstance(l4, dpkt.tcp.TCP):
        return {"_net": net, "src": src, "dst": dst, "l4proto": 6, "sport": l4.sport, "dport": l4.dport,
                "tcp_flags": l4.flags & 0xFF, "seq": l4.seq, "payload": bytes(l4.data), "vlan": vlan}
    if isinstance(l4, dpkt.udp.UDP):
        if l4.sport in UDP_TUNNEL_PORTS or l4.dport in UDP_TUNNEL_PORTS:
            return "udp-tunnel-port"
        payload = bytes(l4.data)
        if 8 <= l4.ulen and l4.ulen - 8 < len(payload):   # UDP length bounds the payload (RFC 768)
            payload = payload[:l4.ulen - 8]
        return {"_net": net, "src": src, "dst": dst, "l4proto": 17, "sport": l4.sport, "dport": l4.dport,
                "tcp_flags": 0, "seq": 0, "payload": payload, "vlan": vlan}
    return "not-tcp-udp"


COMPARED = ("src", "dst", "l4proto", "sport", "dport", "tcp_flags", "seq", "payload", "vlan")


def _dpkt_leniency(ref: dict) -> bool:
    """Frames dpkt decodes although a header is inconsistent: dpkt ignores the IP version nibble
    and a TCP data offset (< 5 or past the IP datagram) that the RFCs make invalid."""
    net = ref["_net"]
    if isinstance(net, dpkt.ip.IP):
        if net.v != 4 or net.len < net.hl * 4:
            return True
        ip_payload = net.len - net.hl * 4
    else:
        if net.v != 6:
            return True
        ip_payload = net.plen
    l4 = net.data
    return isinstance(l4, dpkt.tcp.TCP) and (l4.off < 5 or l4.off * 4 > ip_payload)


def test_against_dpkt_on_ndpi_captures(capsys):
    """Every frame dpkt decodes to IP + TCP/UDP gets the same fields from us; the only differences
    are frames we call MALFORMED for a reason dpkt does not check."""
    report, mismatches, lenient = [], [], 0
    for name, lt, frames in captures("ndpi"):
        agree = total = 0
        for i, buf in enumerate(frames):
            ref = ref_decode(lt, buf)
            if isinstance(ref, str):
                continue
            total += 1
            status, ours = D.dissect_frame(buf, lt)
            if status == OK and ours["tunnel"] == 0 and all(ours[k] == ref[k] for k in COMPARED):
                agree += 1
            elif status == MALF and _dpkt_leniency(ref):
                lenient += 1
            else:
                mismatches.append((name, i, status, ours and {k: ours[k] for k in COMPARED if k != "payload"},
                                   {k: ref[k] for k in COMPARED if k != "payload"}))
        report.append((name, agree, total))
    with capsys.disabled():
        print("\ndpkt agreement per capture:", ", ".join(f"{n}: {a}/{t}" for n, a, t in report))
    assert mismatches == []
    assert sum(a for _n, a, _t in report) > 35000
    assert lenient == 6                 # 4 bad IP versions + 2 TCP offsets past the datagram (fuzz-2006-*)


# ------------------------------------------------------------------------------------------------
# nDPI's flows (oracle.jsonl): tunnels dpkt does not open, and every flow nDPI lists.
# ------------------------------------------------------------------------------------------------

def _oracle() -> dict[str, list[dict]]:
    flows: dict[str, list[dict]] = collections.defaultdict(list)
    with shared_path("pcaps", "ndpi", "oracle.jsonl").open() as f:
        for line in f:
            o = json.loads(line)
            flows[o["pcap"]].append(o)
    return flows


def _ndpi_ip_text(text: str, version: int) -> str:
    # ndpiReader rewrites every ":0:" to "::" in its IPv6 text (ndpi_patchIPv6Address).
    return text if version == 4 else text.replace(":0:", "::")


def _our_key(f: dict) -> tuple:
    v = f["ip_version"]
    return (L4_NAMES.get(f["l4proto"], str(f["l4proto"])),
            frozenset({(_ndpi_ip_text(f["src"], v), f["sport"]), (_ndpi_ip_text(f["dst"], v), f["dport"])}))


def _oracle_key(o: dict) -> tuple:
    return (o["l4"], frozenset({(o["src_ip"], o["src_port"] or 0), (o["dst_ip"], o["dst_port"] or 0)}))


_FLOWS: dict[str, dict[tuple, set]] = {}


def _flows_by_capture() -> dict[str, dict[tuple, set]]:
    """Our flow keys per capture, each with the set of tunnel kinds seen for it."""
    out = _FLOWS
    if out:
        return out
    for name, lt, frames in captures("ndpi"):
        keys: dict[tuple, set] = collections.defaultdict(set)
        for buf in frames:
            status, f = D.dissect_frame(buf, lt)
            if status in (OK, UNSUP_L4):
                keys[_our_key(f)].add(f["tunnel_kind"])
        out[name] = keys
    return out


def test_every_ndpi_flow_is_found():
    """The flows nDPI lists (3,333, any L4, tunnels included) are our flow keys, except the few
    fuzzed frames nDPI accepts and we call MALFORMED (IP version nibble, TCP data offset < 5)."""
    oracle, ours = _oracle(), _flows_by_capture()
    missing = [(p, _oracle_key(o)) for p, flows in oracle.items() for o in flows if _oracle_key(o) not in ours[p]]
    total = sum(len(v) for v in oracle.values())
    assert total == 3333
    assert len(missing) == 5, missing
    assert {p for p, _k in missing} == {"fuzz-2006-06-26-2594.pcap", "fuzz-2006-09-29-28586.pcap",
                                        "kerberos_fuzz.pcapng"}


def test_tunnels_match_ndpi():
    """Where nDPI decapsulated (tunnel = GTP, VXLAN, GRE, CAPWAP), our inner flow carries the same
    label; plain IP-in-IP (6in4tunnel.pcap) is unlabelled in nDPI and IPIP here; Teredo stays UDP."""
    oracle, ours = _oracle(), _flows_by_capture()
    labelled = collections.Counter()
    for pcap, flows in oracle.items():
        for o in flows:
            if o["tunnel"]:
                kinds = ours[pcap][_oracle_key(o)]
                assert o["tunnel"] in kinds, (pcap, o["tunnel"], kinds)
                labelled[o["tunnel"]] += 1
    assert labelled == {"GTP": 5, "VXLAN": 4, "GRE": 1, "CAPWAP": 5}
    sixinfour = [k for k, kinds in ours["6in4tunnel.pcap"].items() if "IPIP" in kinds]
    assert len(sixinfour) >= 7 and all(k in ours["6in4tunnel.pcap"] for k in map(_oracle_key, oracle["6in4tunnel.pcap"]))
    assert all(kinds == {None} for kinds in ours["teredo.pcap"].values())
    assert {_oracle_key(o) for o in oracle["teredo.pcap"]} <= set(ours["teredo.pcap"])


def test_vlan_outermost_and_ndpi_innermost():
    """`vlan` is the outermost 802.1Q/802.1ad id (dpkt's first tag); nDPI prints the innermost one,
    so every oracle VLAN is the innermost tag dpkt sees in that flow's frames (QinQ captures differ)."""
    oracle = _oracle()
    checked = qinq = 0
    for name, lt, frames in captures("ndpi"):
        inner: dict[tuple, set] = collections.defaultdict(set)
        for buf in frames:
            status, f = D.dissect_frame(buf, lt)
            if lt != 1 or status not in (OK, UNSUP_L4):
                continue
            tags = getattr(dpkt.ethernet.Ethernet(buf), "vlan_tags", None) or []
            assert f["vlan"] == (tags[0].id if tags else 0)
            if tags:
                inner[_our_key(f)].add(tags[-1].id)
                checked += 1
                qinq += len(tags) > 1
        for o in oracle[name]:
            if o["vlan"] is not None:
                assert o["vlan"] in inner[_oracle_key(o)], (name, o["vlan"])
    assert checked > 700 and qinq > 50     # 714 tagged frames, 92 of them QinQ


# ------------------------------------------------------------------------------------------------
# Invariants that hold for any input.
# ------------------------------------------------------------------------------------------------

def check_invariants(buf: bytes, lt: int) -> int:
    status, f = D.dissect_frame(buf, lt)
    assert 0 <= status <= 6
    if status not in (OK, UNSUP_L4, FRAG):
        assert f is None
        return status
    assert f["ip_version"] in (4, 6) and 0 <= f["tunnel"] <= 3
    off, n = f["payload_offset"], f["payload_len"]
    if status == FRAG:
        assert off == -1 and n == 0 and f["sport"] == f["dport"] == 0
        return status
    # The payload is a slice of the frame, never past the captured bytes.
    assert 0 <= off and off + n <= len(buf) and f["payload"] == buf[off:off + n]
    assert n <= f["payload_wire_len"]
    if status == OK:
        assert f["l4proto"] in (6, 17)
    else:
        assert f["sport"] == f["dport"] == 0 and f["tcp_flags"] == 0
    if f["l4proto"] != 6:
        assert f["seq"] == f["ack"] == f["tcp_flags"] == 0
    return status


# ------------------------------------------------------------------------------------------------
# Hand-built frames: dpkt builds Ethernet/VLAN/MPLS/PPPoE/SLL/IP/IP6/TCP/UDP/GRE; tunnel headers
# (GTP-U, VXLAN, CAPWAP, TZSP, L2TP) and IPv6 extension chains are packed from their RFCs.
# ------------------------------------------------------------------------------------------------

A4, B4 = "192.0.2.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8:1::2"
MAC1, MAC2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
HELLO = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"


def tcp(data: bytes = HELLO, sport: int = 40000, dport: int = 80, flags: int = 0x18, seq: int = 1234567):
    return dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=7654321, flags=flags, data=data)


def udp(data: bytes = b"\x12\x34payload", sport: int = 5353, dport: int = 53):
    return dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(data), data=data)


def ip4(l4=None, src: str = A4, dst: str = B4, p: int | None = None, **kw) -> bytes:
    l4 = tcp() if l4 is None else l4
    if p is None:
        p = 6 if isinstance(l4, dpkt.tcp.TCP) else 17 if isinstance(l4, dpkt.udp.UDP) else 0
    pkt = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=p, ttl=64, data=l4, **kw)
    return bytes(pkt)


def ip6(l4=None, src: str = A6, dst: str = B6, nxt: int | None = None, ext: bytes = b"") -> bytes:
    l4 = tcp() if l4 is None else l4
    if nxt is None:
        nxt = 6 if isinstance(l4, dpkt.tcp.TCP) else 17 if isinstance(l4, dpkt.udp.UDP) else 59
    body = ext + bytes(l4)
    hdr = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst),
                       nxt=nxt, hlim=64, plen=len(body))
    return bytes(hdr.pack_hdr()) + body


def ether(payload: bytes, etype: int = 0x0800, tags: tuple[int, ...] = (), tpids: tuple[int, ...] = ()) -> bytes:
    """Ethernet II with a stack of (tpid, vid) tags built by hand where dpkt's builder cannot."""
    out = MAC1 + MAC2
    for i, vid in enumerate(tags):
        out += struct.pack(">HH", tpids[i] if tpids else 0x8100, vid)
    return out + struct.pack(">H", etype) + payload


def ext_hdr(nxt: int, length_units: int = 0) -> bytes:
    """Generic IPv6 extension header (RFC 8200 section 4): next header, (len + 1) * 8 bytes, PadN."""
    size = (length_units + 1) * 8
    return bytes([nxt, length_units, 1, size - 4]) + bytes(size - 4)


def frag6(nxt: int, offset: int = 0, more: bool = False) -> bytes:
    return struct.pack(">BBHI", nxt, 0, (offset << 3) | int(more), 0xABCD)


def ah(nxt: int) -> bytes:
    return bytes([nxt, 4, 0, 0]) + struct.pack(">II", 0x100, 1) + bytes(12)   # (4 + 2) * 4 = 24 bytes


def gre(proto: int, payload: bytes, key: int | None = None, seq: int | None = None, csum: bool = False) -> bytes:
    flags, extra = 0, b""
    if csum:
        flags |= 0x8000
        extra += b"\x00\x00\x00\x00"
    if key is not None:
        flags |= 0x2000
        extra += struct.pack(">I", key)
    if seq is not None:
        flags |= 0x1000
        extra += struct.pack(">I", seq)
    return struct.pack(">HH", flags, proto) + extra + payload   # RFC 2784/2890 (dpkt's builder needs every option set)


def gtpu(inner: bytes, seq: int | None = None, ext: bytes | None = None) -> bytes:
    """GTP-U G-PDU (3GPP TS 29.281): version 1, PT 1, optional S / E with extension headers."""
    flags, opt = 0x30, b""
    if seq is not None or ext is not None:
        flags |= 0x02 if seq is not None else 0
        flags |= 0x04 if ext is not None else 0
        opt = struct.pack(">HBB", seq or 0, 0, 0x85 if ext is not None else 0) + (ext or b"")
    body = opt + inner
    return struct.pack(">BBHI", flags, 0xFF, len(body), 0x1234) + body


def vxlan(inner: bytes, vni: int = 42) -> bytes:
    return struct.pack(">BBHI", 0x08, 0, 0, vni << 8) + inner


def capwap(inner: bytes, native_80211: bool) -> bytes:
    """CAPWAP data header (RFC 5415 section 4.3), HLEN 2 words, WBID 1, T set for 802.11 frames."""
    return bytes([0, 2 << 3, (1 << 1) | int(native_80211), 0]) + b"\x00\x00\x00\x00" + inner


def wlan_data(inner_ip: bytes, etype: int = 0x0800, swapped: bool = False, qos: bool = False) -> bytes:
    fc = bytes([0x88 if qos else 0x08, 0x01])                       # data, ToDS
    if swapped:
        fc = fc[::-1]
    hdr = fc + b"\x00\x00" + MAC1 + MAC2 + MAC1 + b"\x00\x00" + (b"\x00\x00" if qos else b"")
    return hdr + b"\xaa\xaa\x03\x00\x00\x00" + struct.pack(">H", etype) + inner_ip


def tzsp(inner_eth: bytes) -> bytes:
    return bytes([1, 0, 0, 1]) + bytes([0, 10, 4, 0, 0, 0, 1]) + bytes([1]) + inner_eth   # pad, tag 10, END


def l2tp(ppp: bytes, with_len: bool = True, with_seq: bool = True) -> bytes:
    flags = 0x0002 | (0x4000 if with_len else 0) | (0x0800 if with_seq else 0)
    out = struct.pack(">H", flags) + (b"\x00\x00" if with_len else b"") + struct.pack(">HH", 7, 9)
    out += b"\x00\x01\x00\x02" if with_seq else b""
    return out + ppp


TCP4 = {"src": A4, "dst": B4, "ip_version": 4, "l4proto": 6, "sport": 40000, "dport": 80,
        "tcp_flags": 0x18, "seq": 1234567, "ack": 7654321, "payload": HELLO}
TCP6 = dict(TCP4, src=A6, dst=B6, ip_version=6)
UDP4 = {"src": A4, "dst": B4, "ip_version": 4, "l4proto": 17, "sport": 5353, "dport": 53,
        "payload": b"\x12\x34payload"}
UDP6 = dict(UDP4, src=A6, dst=B6, ip_version=6)
IN4 = {"src": "10.1.1.1", "dst": "10.2.2.2", "ip_version": 4, "l4proto": 6, "sport": 40000, "dport": 80,
       "payload": HELLO}
INNER4 = ip4(src="10.1.1.1", dst="10.2.2.2")
INNER6 = ip6(src="fd00::1", dst="fd00::2")
IN6 = dict(IN4, src="fd00::1", dst="fd00::2", ip_version=6)
SLL_HDR = struct.pack(">HHH8s", 0, 1, 6, MAC1 + b"\x00\x00")

# (id, linktype, frame, status, expected subset of fields)
CASES = [
    # Link types.
    ("eth-ipv4-tcp", 1, ether(ip4()), OK, dict(TCP4, vlan=0, tunnel=0, is_fragment=0)),
    ("eth-ipv6-udp", 1, ether(ip6(udp()), 0x86DD), OK, UDP6),
    ("dpkt-eth-vlan", 1, bytes(dpkt.ethernet.Ethernet(dst=MAC1, src=MAC2, vlan_tags=[dpkt.ethernet.VLANtag8021Q(id=100)],
                                                     data=dpkt.ip.IP(ip4()))), OK, dict(TCP4, vlan=100)),
    ("eth-qinq-88a8", 1, ether(ip4(), tags=(0x2000 | 300, 42), tpids=(0x88A8, 0x8100)), OK, dict(TCP4, vlan=300)),
    ("eth-qinq-9100", 1, ether(ip6(), 0x86DD, tags=(7, 8, 9), tpids=(0x9100, 0x9100, 0x8100)), OK, dict(TCP6, vlan=7)),
    ("eth-mpls-2-labels", 1, ether(struct.pack(">II", (16 << 12) | 64, (17 << 12) | 0x100 | 64) + ip4(), 0x8847),
     OK, TCP4),
    ("eth-mpls-ipv6", 1, ether(struct.pack(">I", (3 << 12) | 0x100 | 1) + ip6(), 0x8848), OK, TCP6),
    ("eth-vlan-mpls", 1, ether(struct.pack(">I", 0x100) + ip4(), 0x8847, tags=(5,)), OK, dict(TCP4, vlan=5)),
    ("eth-mpls-pseudowire", 1, ether(struct.pack(">I", 0x100) + b"\x00\x00\x00\x00" + ether(ip4()), 0x8847),
     NOT_IP, None),
    ("eth-pppoe-ipv4", 1, ether(bytes(dpkt.pppoe.PPPoE(session=1, len=2 + len(ip4()))) + b"\x00\x21" + ip4(), 0x8864),
     OK, TCP4),
    ("eth-pppoe-ipv6", 1, ether(struct.pack(">BBHHH", 0x11, 0, 1, 2 + len(ip6()), 0x57) + ip6(), 0x8864), OK, TCP6),
    ("eth-pppoe-lcp", 1, ether(struct.pack(">BBHHH", 0x11, 0, 1, 6, 0xC021) + b"\x01\x01\x00\x04", 0x8864), NOT_IP, None),
    ("eth-pppoe-discovery", 1, ether(struct.pack(">BBHH", 0x11, 0x09, 0, 0), 0x8863), NOT_IP, None),
    ("eth-arp", 1, ether(bytes(dpkt.arp.ARP()), 0x0806), NOT_IP, None),
    ("eth-8023-stp", 1, ether(b"\x42\x42\x03" + bytes(35), 38), NOT_IP, None),
    ("eth-8023-snap-ip", 1, ether(b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ip4(), 8 + len(ip4())), OK, TCP4),
    ("eth-8023-snap-other", 1, ether(b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + bytes(20), 28), NOT_IP, None),
    ("eth-padding", 1, ether(ip4(udp(b"x"))) + bytes(20), OK, dict(UDP4, payload=b"x", payload_wire_len=1)),
    ("sll-ipv4", 113, SLL_HDR + b"\x08\x00" + ip4(), OK, TCP4),
    ("dpkt-sll-ipv6", 113, bytes(dpkt.sll.SLL(ethtype=0x86DD, data=ip6())), OK, TCP6),
    ("sll-vlan", 113, SLL_HDR + b"\x81\x00" + struct.pack(">HH", 12, 0x0800) + ip4(), OK, dict(TCP4, vlan=12)),
    ("sll-llc", 113, SLL_HDR + b"\x00\x04" + b"\x42\x42\x03" + bytes(30), NOT_IP, None),
    ("dpkt-sll2-ipv4", 276, bytes(dpkt.sll2.SLL2(ethtype=0x0800, data=ip4())), OK, TCP4),
    ("sll2-ipv6", 276, struct.pack(">HHIHBB8s", 0x86DD, 0, 3, 1, 0, 6, MAC1) + ip6(), OK, TCP6),
    ("raw101-v4", 101, ip4(), OK, TCP4),
    ("raw101-v6", 101, ip6(), OK, TCP6),
    ("raw12-v4", 12, ip4(), OK, TCP4),
    ("raw14-v6", 14, ip6(), OK, TCP6),
    ("raw101-bad-nibble", 101, b"\x55" + ip4()[1:], MALF, None),
    ("ipv4-228", 228, ip4(), OK, TCP4),
    ("ipv4-228-given-v6", 228, ip6(), MALF, None),
    ("ipv6-229", 229, ip6(), OK, TCP6),
    ("ipv6-229-given-v4", 229, ip4() + bytes(40), MALF, None),
    ("null-le-inet", 0, struct.pack("<I", 2) + ip4(), OK, TCP4),
    ("null-be-inet", 0, struct.pack(">I", 2) + ip4(), OK, TCP4),
    *[(f"null-inet6-{fam}-{o}", 0, struct.pack(o + "I", fam) + ip6(), OK, TCP6)
      for fam in (10, 24, 28, 30) for o in "<>"],
    ("dpkt-loop-inet", 108, bytes(dpkt.loopback.Loopback(family=0x02000000, data=ip4())), OK, TCP4),
    ("loop-inet6-30", 108, struct.pack(">I", 30) + ip6(), OK, TCP6),
    ("null-other-family", 0, struct.pack("<I", 7) + ip4(), NOT_IP, None),
    ("ppp-ff03-ipv4", 9, b"\xff\x03\x00\x21" + ip4(), OK, TCP4),
    ("ppp-ipv6-no-addr", 9, b"\x00\x57" + ip6(), OK, TCP6),
    ("ppp-pfc-ipv4", 9, b"\x21" + ip4(), OK, TCP4),
    ("dpkt-ppp-ipv4", 9, bytes(dpkt.ppp.PPP(p=0x21, data=ip4())), OK, TCP4),
    ("ppp-lcp", 9, b"\xff\x03\xc0\x21\x01\x01\x00\x04", NOT_IP, None),
    ("ppp-mpls", 9, b"\xff\x03\x02\x81" + struct.pack(">I", 0x100) + ip4(), OK, TCP4),
    ("ppp-chdlc-framing", 9, b"\x0f\x00\x08\x00" + ip4(), OK, TCP4),
    ("ppphdlc-ipv4", 50, b"\xff\x03\x00\x21" + ip4(), OK, TCP4),
    ("chdlc-ipv4", 104, b"\x0f\x00\x08\x00" + ip4(), OK, TCP4),
    ("chdlc-ipv6-bcast", 104, b"\x8f\x00\x86\xdd" + ip6(), OK, TCP6),
    ("chdlc-slarp", 104, b"\x8f\x00\x80\x35" + bytes(20), NOT_IP, None),
    ("ppi-ether", 192, struct.pack("<BBHI", 0, 0, 8, 1) + ether(ip4()), OK, TCP4),
    ("ppi-fields-ether", 192, struct.pack("<BBHI", 0, 0, 32, 1) + bytes(24) + ether(ip4(), tags=(9,)), OK,
     dict(TCP4, vlan=9)),
    ("ppi-raw", 192, struct.pack("<BBHI", 0, 0, 8, 228) + ip4(), OK, TCP4),
    ("ppi-in-ppi", 192, struct.pack("<BBHI", 0, 0, 8, 192) + struct.pack("<BBHI", 0, 0, 8, 1) + ether(ip4()), MALF, None),
    ("ppi-short-len", 192, struct.pack("<BBHI", 0, 0, 4, 1) + ether(ip4()), MALF, None),
    ("unsupported-80211", 105, bytes(60), UNSUP_LINK, None),
    ("unsupported-big", 0xFFFFFFFF, ether(ip4()), UNSUP_LINK, None),
    # IPv4.
    ("ipv4-options", 101, ip4(opts=b"\x01\x01\x01\x00", hl=6), OK, TCP4),
    ("ipv4-ihl-4", 101, b"\x44" + ip4()[1:], MALF, None),
    ("ipv4-total-lt-header", 101, ip4()[:2] + b"\x00\x13" + ip4()[4:], MALF, None),
    ("ipv4-tso-total-0", 101, ip4()[:2] + b"\x00\x00" + ip4()[4:], OK, TCP4),
    ("ipv4-snapped", 101, ip4()[:-10], OK, dict(TCP4, payload=HELLO[:-10], payload_wire_len=len(HELLO))),
    ("ipv4-first-fragment", 101, ip4(mf=1), OK, dict(TCP4, is_fragment=1)),
    ("ipv4-df-not-fragment", 101, ip4(df=1), OK, dict(TCP4, is_fragment=0)),
    ("ipv4-later-fragment", 101, ip4(mf=1, offset=185), FRAG, {"src": A4, "dst": B4, "l4proto": 6, "sport": 0}),
    ("ipv4-last-fragment", 101, ip4(offset=185), FRAG, {"src": A4, "l4proto": 6}),
    ("ipv4-icmp", 101, ip4(dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=2)), p=1), UNSUP_L4,
     {"src": A4, "dst": B4, "l4proto": 1, "sport": 0, "dport": 0}),
    ("ipv4-sctp", 101, ip4(dpkt.sctp.SCTP(sport=1, dport=2, chunks=[]), p=132), UNSUP_L4, {"l4proto": 132, "sport": 0}),
    ("ipv4-udp-ulen-short", 101, ip4(dpkt.udp.UDP(sport=5353, dport=53, ulen=4, data=b"\x12\x34payload")), OK,
     dict(UDP4, payload_wire_len=9)),
    ("ipv4-udp-ulen-long", 101, ip4(dpkt.udp.UDP(sport=5353, dport=53, ulen=900, data=b"\x12\x34payload")), OK,
     dict(UDP4, payload_wire_len=9)),
    ("ipv4-udp-ulen-inside", 101, ip4(dpkt.udp.UDP(sport=5353, dport=53, ulen=12, data=b"\x12\x34payload")), OK,
     dict(UDP4, payload=b"\x12\x34pa", payload_wire_len=4)),
    ("ipv4-udp-first-fragment", 101, ip4(dpkt.udp.UDP(sport=5353, dport=53, ulen=3000, data=b"\x12\x34payload"),
                                         mf=1), OK, dict(UDP4, is_fragment=1, payload_wire_len=9)),
    ("tcp-doff-4", 101, ip4(dpkt.tcp.TCP(sport=1, dport=2, off=4)), MALF, None),
    ("tcp-doff-past-datagram", 101, ip4(dpkt.tcp.TCP(sport=1, dport=2, off=15)), MALF, None),
    ("tcp-options", 101, ip4(dpkt.tcp.TCP(sport=40000, dport=80, seq=1234567, ack=7654321, flags=0x18, off=7,
                                          opts=b"\x02\x04\x05\xb4\x01\x01\x04\x02", data=HELLO)), OK, TCP4),
    ("udp-truncated-header", 101, ip4(udp())[:24], TRUNC, None),
    # IPv6 extension headers.
    ("ipv6-ext-chain", 229, ip6(nxt=0, ext=ext_hdr(60) + ext_hdr(43, 1) + ext_hdr(44) + frag6(51, 0, True) + ah(6)), OK,
     dict(TCP6, is_fragment=1)),
    ("ipv6-mobility-udp", 229, ip6(udp(), nxt=135, ext=ext_hdr(17)), OK, UDP6),
    ("ipv6-atomic-fragment", 229, ip6(nxt=44, ext=frag6(6, 0, False)), OK, dict(TCP6, is_fragment=0)),
    ("ipv6-later-fragment", 229, ip6(nxt=0, ext=ext_hdr(44) + frag6(17, 100, True)), FRAG,
     {"src": A6, "l4proto": 17, "sport": 0}),
    ("ipv6-esp", 229, ip6(b"\x00\x00\x01\x00" + bytes(40), nxt=50), UNSUP_L4, {"src": A6, "l4proto": 50, "sport": 0}),
    ("ipv6-ah-esp", 229, ip6(b"\x00\x00\x01\x00" + bytes(40), nxt=51, ext=ah(50)), UNSUP_L4, {"l4proto": 50}),
    ("ipv6-no-next", 229, ip6(b"", nxt=60, ext=ext_hdr(59)), UNSUP_L4, {"l4proto": 59}),
    ("ipv6-icmp6", 229, ip6(bytes(dpkt.icmp6.ICMP6(type=128)), nxt=58), UNSUP_L4, {"l4proto": 58, "dst": B6}),
    ("ipv6-16-ext", 229, ip6(nxt=0, ext=b"".join(ext_hdr(0) for _ in range(15)) + ext_hdr(6)), OK, TCP6),
    ("ipv6-17-ext", 229, ip6(nxt=0, ext=b"".join(ext_hdr(0) for _ in range(16)) + ext_hdr(6)), MALF, None),
    ("ipv6-ext-past-plen", 229, ip6(b"", nxt=0, ext=bytes([6, 4]) + bytes(6)), MALF, None),
    ("ipv6-ext-past-capture", 229, (lambda b: b[:4] + struct.pack(">H", 48) + b[6:])(ip6(b"", nxt=0, ext=bytes([6, 0]))),
     TRUNC, None),
    ("ipv6-tso-plen-0", 229, (lambda b: b[:4] + b"\x00\x00" + b[6:])(ip6()), OK, TCP6),
    # Tunnels.
    ("ipip-4in4", 101, ip4(INNER4, p=4), OK, dict(IN4, tunnel=1, tunnel_kind="IPIP")),
    ("ipip-6in4", 1, ether(ip4(INNER6, p=41)), OK, dict(IN6, tunnel=1, tunnel_kind="IPIP")),
    ("ipip-4in6", 229, ip6(INNER4, nxt=4), OK, dict(IN4, tunnel=1)),
    ("ipip-6in6", 229, ip6(INNER6, nxt=41), OK, dict(IN6, tunnel=1)),
    ("ipip-inner-truncated", 101, ip4(INNER4[:12], p=4), UNSUP_L4, {"src": A4, "l4proto": 4, "tunnel": 0,
                                                                   "tunnel_kind": None}),
    ("gre-ipv4", 1, ether(ip4(gre(0x0800, INNER4), p=47), tags=(3,)), OK, dict(IN4, tunnel=2, tunnel_kind="GRE", vlan=3)),
    ("gre-cks-ipv6", 101, ip4(gre(0x86DD, INNER6, key=5, seq=9, csum=True), p=47), OK, dict(IN6, tunnel=2)),
    ("gre-teb", 101, ip4(gre(0x6558, ether(INNER4, tags=(77,)), key=1), p=47), OK, dict(IN4, tunnel=2, vlan=77)),
    ("gre-mpls", 101, ip4(gre(0x8847, struct.pack(">I", 0x100) + INNER4), p=47), OK, dict(IN4, tunnel=2)),
    ("gre-keepalive", 101, ip4(gre(0x0000, b""), p=47), UNSUP_L4, {"l4proto": 47, "tunnel": 0, "src": A4}),
    ("gre-pptp", 101, ip4(struct.pack(">BBHHHII", 0x30, 0x81, 0x880B, 4 + len(INNER4), 7, 1, 0) + b"\xff\x03\x00\x21"
                          + INNER4, p=47), OK, dict(IN4, tunnel=2, tunnel_kind="GRE")),
    ("gre-pptp-pfc", 101, ip4(struct.pack(">BBHHHI", 0x30, 0x01, 0x880B, 1 + len(INNER4), 7, 1) + b"\x21" + INNER4, p=47),
     OK, dict(IN4, tunnel=2)),
    ("gre-pptp-ack-only", 101, ip4(struct.pack(">BBHHHI", 0x20, 0x81, 0x880B, 0, 7, 1), p=47), UNSUP_L4, {"l4proto": 47}),
    ("gtpu", 1, ether(ip4(udp(gtpu(INNER4), 2152, 2152))), OK, dict(IN4, tunnel=3, tunnel_kind="GTP")),
    ("gtpu-seq", 101, ip4(udp(gtpu(INNER6, seq=5), 40000, 2152)), OK, dict(IN6, tunnel=3, tunnel_kind="GTP")),
    ("gtpu-ext", 101, ip4(udp(gtpu(INNER4, ext=b"\x01\x00\x01\x00"), 2152, 2152)), OK, dict(IN4, tunnel_kind="GTP")),
    ("gtpu-echo-not-gpdu", 101, ip4(udp(struct.pack(">BBHIHBB", 0x32, 1, 4, 0, 1, 0, 0), 2152, 2152)), OK,
     {"sport": 2152, "tunnel": 0, "src": A4}),
    ("vxlan", 101, ip4(udp(vxlan(ether(INNER4, tags=(5,))), 50000, 4789)), OK, dict(IN4, tunnel=3, tunnel_kind="VXLAN",
                                                                                  vlan=5)),
    ("vxlan-no-i-flag", 101, ip4(udp(b"\x00" + vxlan(ether(INNER4))[1:], 50000, 4789)), OK, {"dport": 4789, "tunnel": 0}),
    ("capwap-8023", 101, ip4(udp(capwap(ether(INNER4), False), 12000, 5247)), OK, dict(IN4, tunnel_kind="CAPWAP")),
    ("capwap-80211", 101, ip4(udp(capwap(wlan_data(INNER4), True), 5247, 12000)), OK, dict(IN4, tunnel_kind="CAPWAP")),
    ("capwap-80211-swapped-qos", 101, ip4(udp(capwap(wlan_data(INNER6, 0x86DD, True, True), True), 5247, 1)), OK,
     dict(IN6, tunnel_kind="CAPWAP")),
    ("capwap-80211-mgmt", 101, ip4(udp(capwap(b"\x40\x00" + bytes(40), True), 5247, 1)), OK, {"dport": 1, "tunnel": 0}),
    ("tzsp", 101, ip4(udp(tzsp(ether(INNER4)), 40000, 37008)), OK, dict(IN4, tunnel_kind="TZSP")),
    ("l2tp", 101, ip4(udp(l2tp(b"\xff\x03\x00\x21" + INNER4), 1701, 1701)), OK, dict(IN4, tunnel_kind="L2TP")),
    ("l2tp-short", 101, ip4(udp(l2tp(b"\x00\x57" + INNER6, False, False), 1701, 1701)), OK, dict(IN6, tunnel_kind="L2TP")),
    ("l2tp-control", 101, ip4(udp(b"\xc8\x02" + bytes(30), 1701, 1701)), OK, {"sport": 1701, "tunnel": 0}),
    ("teredo-not-decapsulated", 101, ip4(udp(INNER6, 3544, 50000)), OK, {"sport": 3544, "tunnel": 0, "src": A4}),
    ("gre-in-gtp-outermost-label", 101, ip4(udp(gtpu(ip4(gre(0x0800, INNER4), p=47)), 2152, 2152)), OK,
     dict(IN4, tunnel=3, tunnel_kind="GTP")),
]


@pytest.mark.parametrize("name,lt,frame,status,expected", CASES, ids=[c[0] for c in CASES])
def test_hand_built(name, lt, frame, status, expected):
    got, fields = D.dissect_frame(frame, lt)
    assert (D.STATUS_NAMES[got], got) == (D.STATUS_NAMES[status], status)
    if expected is None:
        assert fields is None
    else:
        assert {k: fields[k] for k in expected} == expected
    check_invariants(frame, lt)


def test_tunnel_bomb_is_bounded():
    """Ten IP-in-IP layers: four are peeled, the fifth header is the flow (kept as protocol 4)."""
    layers = [f"10.0.0.{i}" for i in range(11)]
    pkt = ip4(src="10.9.9.9", dst=layers[10])
    for i in range(9, -1, -1):
        pkt = ip4(pkt, src=layers[i], dst=layers[i], p=4)
    status, f = D.dissect_frame(pkt, 101)
    assert status == UNSUP_L4
    assert (f["src"], f["l4proto"], f["tunnel"]) == (layers[4], 4, 1)


def test_truncation_at_every_offset():
    """Every prefix of a plain frame: TRUNCATED before the payload, then OK with the same key and
    the captured part of the payload (payload_wire_len unchanged)."""
    frames = [(lt, fr) for _n, lt, fr, st, _e in CASES if st == OK and "tso" not in _n]
    checked = 0
    for lt, frame in frames:
        status, full = D.dissect_frame(frame, lt)
        if full["tunnel"]:
            for cut in range(len(frame) + 1):
                check_invariants(frame[:cut], lt)
            continue
        start, end = full["payload_offset"], full["payload_offset"] + full["payload_len"]
        for cut in range(len(frame) + 1):
            st_cut, f = D.dissect_frame(frame[:cut], lt)
            if cut < start:
                assert st_cut == TRUNC, (lt, frame.hex(), cut)
            else:
                assert st_cut == OK
                assert f["payload"] == frame[start:min(cut, end)]
                assert f["payload_wire_len"] == full["payload_wire_len"]
                assert (f["src"], f["dst"], f["sport"], f["dport"]) == (full["src"], full["dst"], full["sport"], full["dport"])
            checked += 1
    assert checked > 3000


# ------------------------------------------------------------------------------------------------
# Property tests.
# ------------------------------------------------------------------------------------------------

LINKTYPES = sorted(D.SUPPORTED_LINKTYPES) + [105, 127, 258]


def _real_samples() -> list[tuple[int, bytes]]:
    """A few real frames per link type from the nDPI captures, plus the hand-built ones."""
    per_lt: dict[int, list[bytes]] = collections.defaultdict(list)
    for _n, lt, frames in captures("ndpi"):
        for buf in frames[:40:7]:
            if len(per_lt[lt]) < 30:
                per_lt[lt].append(buf)
    samples = [(lt, b) for lt, bufs in per_lt.items() for b in bufs]
    return samples + [(lt, fr) for _n, lt, fr, _s, _e in CASES if lt != 0xFFFFFFFF]


SAMPLES: list[tuple[int, bytes]] = []


def samples() -> list[tuple[int, bytes]]:
    if not SAMPLES:
        SAMPLES.extend(_real_samples())
    return SAMPLES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LINKTYPES), st.binary(max_size=200))
def test_random_bytes_never_crash(lt, buf):
    check_invariants(buf, lt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_frames_never_crash(data):
    lt, frame = data.draw(st.sampled_from(samples()))
    frame = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 6))):
        if frame:
            frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    check_invariants(bytes(frame[:cut]), lt)
    check_invariants(bytes(frame), lt)


def test_module_constants_follow_the_contract():
    # Values of _dissect.pxd's enums, which the flow table compiles against.
    assert (OK, NOT_IP, TRUNC, MALF, UNSUP_LINK, FRAG, UNSUP_L4) == tuple(range(7))
    assert (D.TUN_NONE, D.TUN_IPIP, D.TUN_GRE, D.TUN_OTHER) == (0, 1, 2, 3)
    assert (D.LINKTYPE_ETHERNET, D.LINKTYPE_LINUX_SLL, D.LINKTYPE_LINUX_SLL2, D.LINKTYPE_PPI) == (1, 113, 276, 192)
    assert D.SUPPORTED_LINKTYPES == {0, 1, 9, 12, 14, 50, 101, 104, 108, 113, 192, 228, 229, 276}


def test_wrapper_inputs():
    frame = ether(ip4())
    for kind in (bytes, bytearray, memoryview):
        assert D.dissect_frame(kind(frame), 1)[1]["payload"] == HELLO
    assert D.dissect_frame(b"", 1) == (TRUNC, None)
    assert D.dissect_frame(frame, -1) == (UNSUP_LINK, None)
    assert D.dissect_frame(frame, 2**40) == (UNSUP_LINK, None)
    with pytest.raises(TypeError):
        D.dissect_frame("text", 1)


def test_batch_matches_single_frames():
    frames = [fr for _n, lt, fr, _s, _e in CASES if lt == 1] + [b""]
    buf = b"".join(frames)
    offsets = [sum(map(len, frames[:i])) for i in range(len(frames))]
    got = D.dissect_batch(buf, offsets, [len(f) for f in frames], 1)
    assert got.dtype.name == "uint8"
    assert list(got) == [D.dissect_frame(f, 1)[0] for f in frames]
    with pytest.raises(ValueError):
        D.dissect_batch(buf, [len(buf)], [1], 1)
    with pytest.raises(ValueError):
        D.dissect_batch(buf, [0, 1], [1], 1)


# ------------------------------------------------------------------------------------------------
# tcpdump's odd and malformed captures.
# ------------------------------------------------------------------------------------------------

def test_malformed_captures(capsys):
    by_file, by_status = {}, collections.Counter()
    for name, lt, frames in captures("malformed"):
        c = collections.Counter(D.STATUS_NAMES[check_invariants(buf, lt)] for buf in frames)
        by_file[name] = (lt, c)
        by_status.update(c)
    with capsys.disabled():
        print("\nmalformed captures, statuses:", dict(by_status))
    assert len(by_file) == 100
    assert by_file["empty.pcapng"][1] == {}
    assert by_file["LINKTYPE_IPV4.pcap"][1] == {"ok": 1}
    assert by_file["LINKTYPE_IPV4_invalid.pcap"][1] == {"malformed": 1}
    assert by_file["LINKTYPE_IPV6_invalid.pcap"][1] == {"malformed": 1}     # version nibble 4 under DLT 229
    assert by_file["hdlc_slarp.pcapng"][1] == {"not_ip": 7}                 # Cisco SLARP keepalives
    assert by_file["loopback.pcap"][1] == {"not_ip": 6}                     # Ethernet loopback 0x9000
    assert by_file["mpls-traceroute.pcap"][1] == {"ok": 9, "unsupported_l4": 9}   # PPP + MPLS: UDP probes, ICMP
    assert by_file["ipv6-bad-version.pcap"][1]["malformed"] == 2
    # Link types we do not decode are reported as such, and only those.
    for name, (lt, c) in by_file.items():
        if c:
            assert ("unsupported_link" in c) == (lt not in D.SUPPORTED_LINKTYPES), name
    assert by_status["ok"] + by_status["unsupported_l4"] > 150
