"""Frame builders for the flow tests (dpkt is the independent serialiser) and real payloads."""
from __future__ import annotations

import socket
from functools import lru_cache

import dpkt

from tests.conftest import shared_path

C4, S4 = "10.0.0.1", "93.184.216.34"
C6, S6 = "2001:db8::1", "2001:db8::2"
MAC_C, MAC_S = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
NS = 1_000_000_000


def ip_bytes(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def ether(l4, src: str, dst: str, proto: int, vlan: int | None = None) -> bytes:
    if ":" in src:
        ip = dpkt.ip6.IP6(src=ip_bytes(src), dst=ip_bytes(dst), nxt=proto, hlim=64, data=l4)
        ip.plen = len(bytes(l4))
        etype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=ip_bytes(src), dst=ip_bytes(dst), p=proto, ttl=64, data=l4)
        ip.len = 20 + len(bytes(l4))
        etype = dpkt.ethernet.ETH_TYPE_IP
    if vlan is not None:
        tag = dpkt.ethernet.VLANtag8021Q(id=vlan, type=etype)
        eth = dpkt.ethernet.Ethernet(src=MAC_C, dst=MAC_S, type=dpkt.ethernet.ETH_TYPE_8021Q,
                                     vlan_tags=[tag], data=ip)
        return bytes(eth)
    return bytes(dpkt.ethernet.Ethernet(src=MAC_C, dst=MAC_S, type=etype, data=ip))


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, seq: int = 0, ack: int = 0,
        payload: bytes = b"", vlan: int | None = None) -> bytes:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                       flags=flags, win=65535, data=payload)
    return ether(seg, src, dst, dpkt.ip.IP_PROTO_TCP, vlan)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    dg = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    dg.ulen = 8 + len(payload)
    return ether(dg, src, dst, dpkt.ip.IP_PROTO_UDP)


SYN, ACK, FIN, RST, PSH = (dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST,
                           dpkt.tcp.TH_PUSH)


def handshake(c=C4, cp=40000, s=S4, sp=443, isn=1000, sisn=5000, t0=0):
    """SYN, SYN+ACK, ACK as (ts_ns, frame); client stream offset 0 is isn + 1."""
    return [
        (t0, tcp(c, cp, s, sp, SYN, isn)),
        (t0 + 1000, tcp(s, sp, c, cp, SYN | ACK, sisn, isn + 1)),
        (t0 + 2000, tcp(c, cp, s, sp, ACK, isn + 1, sisn + 1)),
    ]


def dns_message(name: str, answers: list[tuple[str, int]] = (), qid: int = 0x1234,
                response: bool = False) -> bytes:
    msg = dpkt.dns.DNS(id=qid)
    q = dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN)
    msg.qd = [q]
    if response:
        msg.qr = dpkt.dns.DNS_R
        an = []
        for addr, ttl in answers:
            v6 = ":" in addr
            rr = dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_AAAA if v6 else dpkt.dns.DNS_A,
                                 cls=dpkt.dns.DNS_IN, ttl=ttl)
            rr.rdata = ip_bytes(addr)
            rr.rlen = len(rr.rdata)
            if v6:
                rr.ip6 = rr.rdata
            else:
                rr.ip = rr.rdata
            an.append(rr)
        msg.an = an
    return bytes(msg)


@lru_cache(maxsize=None)
def chrome_client_hello() -> tuple[bytes, bytes]:
    """(ClientHello TLS record bytes, its SNI) from the first client flow of nDPI's chrome.pcap."""
    path = shared_path("pcaps", "ndpi", "chrome.pcap")
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            seg = eth.data.data
            if isinstance(seg, dpkt.tcp.TCP) and seg.dport == 443 and bytes(seg.data)[:1] == b"\x16":
                data = bytes(seg.data)
                rec = dpkt.ssl.TLSRecord(data)
                hello = dpkt.ssl.TLSHandshake(rec.data).data
                sni = next(v for t, v in hello.extensions if t == 0)
                return data, sni[5:]   # server_name_list: len(2) type(1) len(2) name
    raise AssertionError("no ClientHello in chrome.pcap")


def http_request(host: bytes = b"www.example.com") -> bytes:
    return (b"GET /index.html HTTP/1.1\r\nUser-Agent: test\r\nHost: " + host
            + b"\r\nAccept: */*\r\n\r\n")


def read_pcap(path) -> list[tuple[int, bytes]]:
    """(ts_ns, frame) of a pcap or pcapng file, read with dpkt (Ethernet link type assumed)."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        return [(round(ts * NS), bytes(buf)) for ts, buf in reader]


def read_capture(path) -> list[tuple[int, bytes, int, int]]:
    """(ts_ns, frame, linktype, wirelen) of any capture, read with kzfilter's CaptureReader."""
    from kzfilter.packet.capture import open_capture

    with open_capture(path) as reader:
        return [(ts, bytes(data), lt, wl) for ts, lt, data, wl in reader]
