"""The capture generator (tools/gen_captures.py) writes what it claims.

Every check decodes the capture independently of the generator: dpkt reads the file and parses
Ethernet/IP/TCP/UDP, TLS (dpkt.ssl), HTTP (dpkt.http) and DNS (dpkt.dns); TCP streams are
reassembled by sequence number here; checksums are recomputed with a plain RFC 1071 loop; QUIC
Initials are decrypted by a small RFC 9001 routine written here with the standard library's hmac
(its key derivation is checked against the RFC 9001 Appendix A.1 vector first).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import sys
from collections import defaultdict
from pathlib import Path

import dpkt
import idna
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import gen_captures as gc  # noqa: E402

# --------------------------------------------------------------------------------------------
# Independent helpers
# --------------------------------------------------------------------------------------------


def rfc1071(data: bytes) -> int:
    """Plain one's-complement checksum over big-endian 16-bit words (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total  # 0xFFFF when the stored checksum is right


def l4_checksum_ok(ip, proto: int) -> bool:
    l4 = bytes(ip.data)
    if isinstance(ip, dpkt.ip.IP):
        pseudo = ip.src + ip.dst + struct.pack("!BBH", 0, proto, len(l4))
    else:
        pseudo = ip.src + ip.dst + struct.pack("!IxxxB", len(l4), proto)
    return rfc1071(pseudo + l4) == 0xFFFF


def hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """RFC 8446 7.1 HKDF-Expand-Label with SHA-256 and empty context (RFC 5869 expand)."""
    info = struct.pack("!H", length) + bytes([6 + len(label)]) + b"tls13 " + label + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


V1_SALT = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")


def client_initial_keys(dcid: bytes) -> tuple[bytes, bytes, bytes]:
    initial = hmac.new(V1_SALT, dcid, hashlib.sha256).digest()
    secret = hkdf_expand_label(initial, b"client in", 32)
    return (hkdf_expand_label(secret, b"quic key", 16), hkdf_expand_label(secret, b"quic iv", 12),
            hkdf_expand_label(secret, b"quic hp", 16))


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = 1 << (buf[pos] >> 6)
    v = buf[pos] & 0x3F
    for b in buf[pos + 1:pos + n]:
        v = (v << 8) | b
    return v, pos + n


def decrypt_client_initial(dgram: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Remove header and payload protection (RFC 9001 5.3, 5.4); return (dcid, CRYPTO frames)."""
    assert dgram[0] & 0xF0 == 0xC0, "long header Initial"
    assert struct.unpack("!I", dgram[1:5])[0] == 1, "QUIC v1"
    pos = 5
    dcid = dgram[pos + 1:pos + 1 + dgram[pos]]
    pos += 1 + dgram[pos]
    pos += 1 + dgram[pos]  # scid
    tok_len, pos = read_varint(dgram, pos)
    pos += tok_len
    length, pos = read_varint(dgram, pos)
    key, iv, hp = client_initial_keys(dcid)
    sample = dgram[pos + 4:pos + 20]
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    first = dgram[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(dgram[pos:pos + pn_len], mask[1:]))
    header = bytes([first]) + dgram[1:pos] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big")))
    plain = AESGCM(key).decrypt(nonce, dgram[pos + pn_len:pos + length], header)
    frames = []
    i = 0
    while i < len(plain):
        ftype = plain[i]
        if ftype == 0x00:  # PADDING
            i += 1
        elif ftype == 0x06:  # CRYPTO
            off, i = read_varint(plain, i + 1)
            ln, i = read_varint(plain, i)
            frames.append((off, plain[i:i + ln]))
            i += ln
        else:
            raise AssertionError(f"unexpected frame type {ftype:#x} in a client Initial")
    return dcid, frames


def client_hello_info(hs_bytes: bytes) -> dict:
    """Parse a ClientHello handshake message with dpkt.ssl and decode SNI/ALPN/key shares by hand."""
    hs = dpkt.ssl.TLSHandshake(hs_bytes)
    assert hs.type == 1
    ch = hs.data
    assert isinstance(ch, dpkt.ssl.TLSClientHello)
    exts = dict(ch.extensions)
    info = {"sni": None, "alpn": [], "groups": {}, "ech": 0xFE0D in exts, "types": list(exts)}
    if 0 in exts:
        d = exts[0]
        (list_len,) = struct.unpack("!H", d[:2])
        assert list_len == len(d) - 2 and d[2] == 0
        (n,) = struct.unpack("!H", d[3:5])
        info["sni"] = d[5:5 + n].decode("ascii")
    if 16 in exts:
        d, i = exts[16][2:], 0
        while i < len(d):
            info["alpn"].append(d[i + 1:i + 1 + d[i]].decode())
            i += 1 + d[i]
    if 51 in exts:
        d, i = exts[51][2:], 0
        while i < len(d):
            g, ln = struct.unpack("!HH", d[i:i + 4])
            info["groups"][g] = ln
            i += 4 + ln
    return info


def reassemble(segments: list[tuple[int, bytes]], isn: int) -> bytes:
    """Contiguous bytes from isn on, whatever the arrival order, duplicates dropped."""
    data = {}
    for seq, payload in segments:
        data.setdefault((seq - isn) & 0xFFFFFFFF, payload)
    out = b""
    for off in sorted(data):
        if off == len(out):
            out += data[off]
        elif off < len(out):
            out += data[off][len(out) - off:]
    return out


# --------------------------------------------------------------------------------------------
# The demo capture, read back
# --------------------------------------------------------------------------------------------


class Flow:
    def __init__(self) -> None:
        self.up: list[tuple[int, bytes]] = []  # (seq, payload) or (0, datagram) for UDP
        self.down: list[tuple[int, bytes]] = []
        self.client_isn: int | None = None
        self.server_isn: int | None = None
        self.flags_up: list[int] = []


def read_flows(path: Path, rows: list) -> tuple[dict, int, int]:
    """Group packets by the manifest's 5-tuples; return flows, packet count, bad checksums."""
    keys = {}
    for r in rows:
        c, s = ipaddress.ip_address(r.client).packed, ipaddress.ip_address(r.server).packed
        proto = 6 if r.transport == "tcp" else 17
        keys[(c, r.cport, s, r.sport, proto)] = (r.flow, True)
        keys[(s, r.sport, c, r.cport, proto)] = (r.flow, False)
    flows: dict[int, Flow] = defaultdict(Flow)
    count = bad = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcapng.Reader(fh):
            count += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                if rfc1071(bytes(ip)[:20]) != 0xFFFF:
                    bad += 1
                proto = ip.p
            else:
                proto = ip.nxt
            if not l4_checksum_ok(ip, proto):
                bad += 1
            l4 = ip.data
            key = (ip.src, l4.sport, ip.dst, l4.dport, proto)
            assert key in keys, f"packet outside the manifest: {key}"
            fid, up = keys[key]
            f = flows[fid]
            if proto == 6:
                if l4.flags & dpkt.tcp.TH_SYN:
                    if up:
                        f.client_isn = l4.seq
                    else:
                        f.server_isn = l4.seq
                if up:
                    f.flags_up.append(l4.flags)
                if l4.data:
                    (f.up if up else f.down).append((l4.seq, bytes(l4.data)))
            else:
                (f.up if up else f.down).append((0, bytes(l4.data)))
    return flows, count, bad


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.pcapng"
    rows = gc.write_demo(str(path))
    flows, count, bad = read_flows(path, rows)
    return path, rows, flows, count, bad


def test_demo_is_deterministic_and_matches_committed_file(demo, tmp_path):
    path, *_ = demo
    again = tmp_path / "again.pcapng"
    gc.write_demo(str(again))
    assert again.read_bytes() == path.read_bytes()
    committed = REPO / "pcaps" / "demo.pcapng"
    assert committed.read_bytes() == path.read_bytes(), (
        "pcaps/demo.pcapng is stale: python tools/gen_captures.py demo --out pcaps/demo.pcapng")
    assert len(path.read_bytes()) < 200_000


def test_demo_flows_and_checksums(demo):
    _, rows, flows, count, bad = demo
    assert 20 <= len(rows) <= 40
    assert sorted(flows) == [r.flow for r in rows]  # every flow present, none extra
    assert bad == 0
    assert count > 300
    for r in rows:
        f = flows[r.flow]
        assert f.up and f.down, r
        if r.transport == "tcp":
            assert r.cport >= 49152 and f.client_isn is not None and f.server_isn is not None
            assert any(fl & dpkt.tcp.TH_FIN for fl in f.flags_up), "FIN close"
            assert len(reassemble(f.down, f.server_isn + 1)) > 1000, "bulk data downstream"
    assert any(":" in r.server for r in rows) and any("." in r.server for r in rows)


def test_demo_tls_client_hellos(demo):
    _, rows, flows, _, _ = demo
    tls = [r for r in rows if r.kind == "tls"]
    assert len(tls) >= 10
    for r in tls:
        f = flows[r.flow]
        stream = reassemble(f.up, f.client_isn + 1)
        rec = dpkt.ssl.TLSRecord(stream)
        assert rec.type == 22
        info = client_hello_info(rec.data)
        assert info["sni"] == r.name, r
        assert info["alpn"] == r.alpn
        assert info["ech"] == r.ech
        assert 0x1D in info["groups"]
        # the first data segments that carry the ClientHello record
        ch_len = 5 + len(rec.data)
        ch_segs = [(s, p) for s, p in f.up if (s - f.client_isn - 1) & 0xFFFFFFFF < ch_len]
        if r.pq:
            assert info["groups"].get(0x11EC) == 1216
            assert ch_len > 1500 and len({s for s, _ in ch_segs}) >= 2
        if r.split:
            assert len({s for s, _ in ch_segs}) >= 2
            assert not any(r.name.encode() in p for _, p in ch_segs), "SNI cut across segments"
        seqs = [s for s, _ in ch_segs]
        firsts = list(dict.fromkeys(seqs))  # arrival order, retransmissions dropped
        assert (firsts != sorted(firsts)) == r.out_of_order
        assert (len(seqs) != len(set(seqs))) == r.retransmit
        if r.ech:
            sh = dpkt.ssl.TLSRecord(reassemble(f.down, f.server_isn + 1))
            assert sh.type == 22 and dpkt.ssl.TLSHandshake(sh.data).type == 2


def test_demo_special_names(demo):
    _, rows, flows, _, _ = demo
    by_name = {r.name: r for r in rows if r.kind == "tls"}
    idn = [r for r in rows if r.name and r.name.endswith(".xn--80ao21a")]
    assert idn and idna.decode(idn[0].name).endswith(".қаз")
    assert "mail.example.kz" in by_name and "www.example.kz" in by_name
    gambling = shared_path("lists", "domains", "ut1", "gambling.domains").read_text().split()
    assert any(n in set(gambling) for n in by_name)
    # the direct-IP flow: no SNI, server inside a CIDR of the VPN list
    noname = [r for r in rows if r.kind == "tls" and r.name is None]
    assert len(noname) == 1
    cidrs = [ipaddress.ip_network(line.strip()) for line in
             shared_path("lists", "ip", "x4bnet-vpn", "vpn-ipv4.txt").read_text().split()
             if line.strip() and not line.startswith("#")]
    server = ipaddress.ip_address(noname[0].server)
    assert any(server in c for c in cidrs)


def test_demo_http_hosts(demo):
    _, rows, flows, _, _ = demo
    http = [r for r in rows if r.kind == "http"]
    assert len(http) >= 2 and any(r.split for r in http)
    for r in http:
        f = flows[r.flow]
        req = dpkt.http.Request(reassemble(f.up, f.client_isn + 1))
        assert req.method == "GET" and req.headers["host"] == r.name
        if r.split:
            assert len(f.up) == 2 and not any(r.name.encode() in p for _, p in f.up)
        resp = dpkt.http.Response(reassemble(f.down, f.server_isn + 1))
        assert resp.status == "200"


def test_demo_dns_and_dns_answer_only_flow(demo):
    _, rows, flows, _, _ = demo
    dns_rows = [r for r in rows if r.kind == "dns"]
    assert len(dns_rows) >= 4
    seen_types = set()
    for r in dns_rows:
        f = flows[r.flow]
        q = dpkt.dns.DNS(f.up[0][1])
        a = dpkt.dns.DNS(f.down[0][1])
        assert q.qr == dpkt.dns.DNS_Q and a.qr == dpkt.dns.DNS_R and q.id == a.id
        assert q.qd[0].name == r.name == a.qd[0].name
        got = []
        for rr in a.an:
            seen_types.add(rr.type)
            got.append(str(ipaddress.ip_address(rr.ip if rr.type == dpkt.dns.DNS_A else rr.ip6)))
        assert got == r.dns_answers
    assert seen_types == {dpkt.dns.DNS_A, dpkt.dns.DNS_AAAA}
    # a TCP flow with no name on the wire whose server only a DNS answer names
    answered = {a: r.name for r in dns_rows for a in r.dns_answers}
    opaque = [r for r in rows if r.kind == "tcp"]
    assert opaque and all(r.name is None and r.server in answered for r in opaque)
    for r in opaque:
        payload = reassemble(flows[r.flow].up, flows[r.flow].client_isn + 1)
        assert payload[0] not in (22, 23) and not payload.startswith(b"GET")


def test_independent_quic_key_derivation_matches_rfc9001_a1():
    key, iv, hp = client_initial_keys(bytes.fromhex("8394c8f03e515708"))
    assert key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    # and the generator derives the same (RFC 9001 A.1 server keys too)
    assert gc.initial_keys(bytes.fromhex("8394c8f03e515708"), client=True) == (key, iv, hp)
    skey, siv, shp = gc.initial_keys(bytes.fromhex("8394c8f03e515708"), client=False)
    assert skey.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert siv.hex() == "0ac1493ca1905853b0bba03e"
    assert shp.hex() == "c206b8d9b9f0f37644430b490eeaa314"


def test_demo_quic_initials_decrypt(demo):
    _, rows, flows, _, _ = demo
    quic = [r for r in rows if r.kind == "quic"]
    assert len(quic) >= 2 and any(r.pq for r in quic)
    for r in quic:
        f = flows[r.flow]
        initials = [d for _, d in f.up if d[0] & 0xF0 == 0xC0]
        assert all(len(d) >= 1200 for d in initials), "client Initials padded (RFC 9000 14.1)"
        crypto = []
        dcids = set()
        for d in initials:
            dcid, frames = decrypt_client_initial(d)
            dcids.add(dcid)
            crypto += frames
        assert len(dcids) == 1
        assert (len(initials) == 2) == r.pq
        hs = reassemble(crypto, 0)
        info = client_hello_info(hs[:4 + int.from_bytes(hs[1:4], "big")])
        assert info["sni"] == r.name and info["alpn"] == ["h3"]
        assert 0x39 in info["types"]
        if r.pq:
            assert info["groups"][0x11EC] == 1216


def test_quic_initial_decrypts_for_any_split():
    rng = gc.random.Random(1)
    ch = gc.client_hello(rng, "example.kz", ("h3",), quic_tp=b"")
    dcid = bytes(range(8))
    for split in (1, 37, len(ch) - 1):
        dgrams = gc.quic_client_initials(rng, ch, dcid, b"\x01\x02", split=split)
        assert [len(d) for d in dgrams] == [1200, 1200]
        crypto = [fr for d in dgrams for fr in decrypt_client_initial(d)[1]]
        assert reassemble(crypto, 0) == ch


# --------------------------------------------------------------------------------------------
# The benchmark captures, at small sizes
# --------------------------------------------------------------------------------------------


def _read_pcap(path: Path):
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            yield buf


def test_synthetic_small(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    stats = gc.write_synthetic(str(a), 20000, concurrent=200, names=["blocked.example.kz"])
    gc.write_synthetic(str(b), 20000, concurrent=200, names=["blocked.example.kz"])
    assert a.read_bytes() == b.read_bytes()
    assert stats["packets"] == 20000
    pool = set(gc.synthetic_names(20000, ["blocked.example.kz"]))
    tuples, snis, hosts, quic_initials, bad = set(), set(), set(), 0, 0
    for buf in _read_pcap(a):
        ip = dpkt.ethernet.Ethernet(buf).data
        proto = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
        if not l4_checksum_ok(ip, proto):
            bad += 1
        l4 = ip.data
        tuples.add(frozenset([(ip.src, l4.sport), (ip.dst, l4.dport)]))
        payload = bytes(l4.data)
        if proto == 6 and l4.dport == 443 and payload[:1] == b"\x16" and len(payload) > 200:
            try:
                rec = dpkt.ssl.TLSRecord(payload)
                snis.add(client_hello_info(rec.data)["sni"])
            except (dpkt.NeedData, dpkt.UnpackError):
                pass  # the first of two segments
        elif proto == 6 and payload.startswith(b"GET ") and payload.endswith(b"\r\n\r\n"):
            try:
                hosts.add(dpkt.http.Request(payload).headers["host"])
            except (dpkt.NeedData, dpkt.UnpackError):
                pass
        elif proto == 17 and l4.dport == 443 and payload[0] & 0xF0 == 0xC0:
            quic_initials += 1
            decrypt_client_initial(payload)
    assert bad == 0
    assert len(tuples) >= 400
    assert snis and snis <= pool and hosts and hosts <= pool
    assert quic_initials > 0
    assert 900 < stats["mean_frame"] < 1500


def test_scan_one_packet_per_flow(tmp_path):
    p = tmp_path / "scan.pcap"
    gc.write_scan(str(p), 5000)
    seen = set()
    n = 0
    for buf in _read_pcap(p):
        ip = dpkt.ethernet.Ethernet(buf).data
        tcp = ip.data
        assert tcp.flags == dpkt.tcp.TH_SYN and l4_checksum_ok(ip, 6)
        seen.add((ip.src, tcp.sport, ip.dst, tcp.dport))
        n += 1
    assert n == 5000 == len(seen)
