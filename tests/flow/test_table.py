"""FlowTable: directions, counters, end reasons, eviction, names from every source."""
from __future__ import annotations

import dpkt
import pytest
from hypothesis import given, settings, strategies as st

from kzfilter.flow._table import FLOW_STRUCT_SIZE, FlowTable
from kzfilter.flow.records import RECORD_DTYPE, RecordBatch
from tests.conftest import shared_path
from tests.flow.frames import (
    ACK, C4, C6, FIN, NS, PSH, RST, S4, S6, SYN, chrome_client_hello, dns_message, handshake,
    http_request, read_capture, read_pcap, tcp, udp)


def run(frames, **opts) -> tuple[list, FlowTable]:
    t = FlowTable(**opts)
    for ts, frame, *link in frames:
        t.process_frame(ts, frame, *link)
    t.flush()
    return list(t.take_records()), t


def only(frames, **opts):
    recs, _ = run(frames, **opts)
    assert len(recs) == 1, recs
    return recs[0]


def test_struct_sizes():
    assert FLOW_STRUCT_SIZE <= 256
    assert RECORD_DTYPE.itemsize == 168


# -- directions and counting ------------------------------------------------------------------

def test_client_is_syn_sender_and_counts_are_bidirectional():
    frames = handshake()
    frames.append((3000, tcp(S4, 443, C4, 40000, ACK | PSH, 5001, 1001, b"x" * 100)))
    r = only(frames)
    assert (r.client_ip, r.client_port, r.server_ip, r.server_port) == (C4, 40000, S4, 443)
    assert (r.packets_c2s, r.packets_s2c) == (2, 2)
    assert r.bytes_c2s == sum(len(f) for _, f in frames[0::2][:1] + [frames[2]])
    assert r.bytes_s2c == len(frames[1][1]) + len(frames[3][1])
    assert r.transport == "tcp" and r.ip_version == 4
    assert r.tcp_flags == SYN | ACK | PSH and r.tcp_flags_text == "SAP"
    assert r.end_reason == "end-of-capture"
    assert r.no_name_reason == "no-payload" and r.name is None
    assert r.ts_start == 0.0 and r.ts_end == pytest.approx(3e-6)
    assert r.rate_c2s_bps == pytest.approx(r.bytes_c2s * 8 / 3e-6)


def test_client_is_syn_ack_receiver_when_syn_missed():
    frames = handshake()[1:]
    r = only(frames)
    assert (r.client_ip, r.client_port) == (C4, 40000)
    assert (r.packets_c2s, r.packets_s2c) == (1, 1)


def test_client_is_first_sender_otherwise():
    r = only([(0, udp(S4, 53, C4, 5555, b"\x00" * 4)), (10, udp(C4, 5555, S4, 53, b"\x00" * 4))])
    assert (r.client_ip, r.client_port) == (S4, 53)
    assert r.duration == pytest.approx(1e-8)


def test_ipv6_vlan_and_icmp_keys():
    frames = [(0, tcp(C6, 1, S6, 2, SYN, vlan=7)), (1, tcp(S6, 2, C6, 1, SYN | ACK, vlan=7)),
              (2, tcp(C6, 1, S6, 2, SYN, vlan=8))]
    icmp = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping"))
    ip = dpkt.ip.IP(src=bytes(4), dst=bytes([1, 1, 1, 1]), p=1, data=icmp)
    ip.len = 20 + len(bytes(icmp))
    frames.append((3, bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))))
    recs, t = run(frames)
    assert [(r.vlan, r.ip_version, r.packets_c2s, r.packets_s2c) for r in recs[:2]] == [
        (7, 6, 1, 1), (8, 6, 1, 0)]
    assert recs[0].client_ip == C6
    assert recs[2].transport == "icmp" and recs[2].no_name_reason == "not-applicable"
    assert t.counters["flows"] == 3


def test_nothing_lost_total_packets():
    frames = read_pcap(shared_path("pcaps", "ndpi", "chrome.pcap"))
    recs, t = run(frames, max_flows=2)
    c = t.counters
    assert sum(r.packets_c2s + r.packets_s2c for r in recs) == c["packets_attributed"]
    assert c["packets_attributed"] + sum(v for k, v in c.items() if k.startswith("skipped")) \
        == c["packets"] == len(frames)
    assert c["flows_active"] == 0 and c["records"] == len(recs) == c["flows"]


def test_skips_are_counted_not_raised():
    t = FlowTable()
    t.process_frame(0, b"")
    t.process_frame(1, b"\x00" * 13)
    t.process_frame(2, bytes(dpkt.ethernet.Ethernet(type=0x0806, data=b"\x00" * 28)))
    t.process_frame(3, b"\x45" * 40, linktype=65000)
    c = t.counters
    assert c["packets"] == 4 and c["packets_attributed"] == 0
    assert c["skipped_truncated"] >= 1 and c["skipped_not_ip"] == 1
    assert c["skipped_unsupported_link"] == 1


# -- end reasons --------------------------------------------------------------------------------

def _closing(flags_c, flags_s=None):
    frames = handshake()
    frames.append((10_000, tcp(C4, 40000, S4, 443, flags_c, 1001, 5001)))
    if flags_s is not None:
        frames.append((20_000, tcp(S4, 443, C4, 40000, flags_s, 5001, 1002)))
    return frames


def test_fin_both_sides_and_trailing_ack_absorbed():
    frames = _closing(FIN | ACK, FIN | ACK)
    frames.append((30_000, tcp(C4, 40000, S4, 443, ACK, 1002, 5002)))      # final ACK
    r = only(frames)
    assert r.end_reason == "fin"
    assert r.packets_c2s + r.packets_s2c == 6


def test_fin_one_side_is_not_closed():
    assert only(_closing(FIN | ACK)).end_reason == "end-of-capture"


def test_rst_ends_and_grace_expires():
    frames = _closing(RST)
    frames.append((3 * NS, tcp(C4, 40000, S4, 443, ACK, 1001, 5001)))  # after the 2 s grace
    recs, t = run(frames)
    assert [r.end_reason for r in recs] == ["rst", "end-of-capture"]
    assert recs[0].packets_c2s == 3 and recs[1].packets_c2s == 1


def test_syn_on_closed_flow_starts_a_new_one():
    frames = _closing(RST)
    frames += [(x[0] + 50_000, x[1]) for x in handshake(isn=9000)]
    recs, _ = run(frames)
    assert [r.end_reason for r in recs] == ["rst", "end-of-capture"]
    assert recs[1].flow_id > recs[0].flow_id      # flow_id: ordinal of the flow's first frame


def test_idle_timeouts_tcp_and_udp():
    frames = handshake() + [(0, udp(C4, 5000, S4, 9999, b"abc"))]
    frames.append((150 * NS, udp(C6, 1, S6, 2, b"x")))          # UDP idle (120 s) passed
    frames.append((400 * NS, udp(C6, 1, S6, 2, b"x")))          # TCP idle (300 s) passed
    recs, t = run(frames)
    by_port = {r.client_port: r for r in recs}
    assert by_port[5000].end_reason == "idle" and by_port[5000].ts_end == 0
    assert by_port[40000].end_reason == "idle"
    assert [r.end_reason for r in recs if r.client_port == 1] == ["idle", "end-of-capture"]
    assert t.counters["flows_idle"] == 3


def test_idle_checked_on_next_packet_even_without_sweep():
    frames = [(0, udp(C4, 1, S4, 2, b"x")), (200 * NS, udp(C4, 1, S4, 2, b"x"))]
    recs, _ = run(frames, sweep_interval=10_000)
    assert [r.end_reason for r in recs] == ["idle", "end-of-capture"]


def test_active_timeout():
    frames = [(i * 60 * NS, udp(C4, 1, S4, 2, b"x")) for i in range(40)]   # 39 minutes
    recs, t = run(frames)
    assert [r.end_reason for r in recs] == ["active-timeout", "end-of-capture"]
    assert recs[0].packets_c2s == 30 and recs[1].packets_c2s == 10
    assert t.counters["flows_active_timeout"] == 1


def test_evicted_lru_with_tiny_max_flows():
    frames = [(i, udp(C4, 1000 + i, S4, 53, b"x")) for i in range(5)]
    frames.append((10, udp(C4, 1000, S4, 53, b"x")))   # flow 0 again: evicted before
    recs, t = run(frames, max_flows=3)
    evicted = [r for r in recs if r.end_reason == "evicted"]
    assert [r.client_port for r in evicted] == [1000, 1001, 1002]
    assert t.counters["flows_evicted"] == 3
    assert sum(r.packets_c2s for r in recs) == 6


def test_records_sorted_by_emission_then_flow_id():
    frames = [(i, udp(C4, 1000 + i, S4, 9, b"x")) for i in range(5)]
    recs, _ = run(frames)
    assert [r.flow_id for r in recs] == [0, 1, 2, 3, 4]


# -- names -------------------------------------------------------------------------------------

def test_sni_in_one_segment_and_alpn():
    hello, sni = chrome_client_hello()
    frames = handshake() + [(3000, tcp(C4, 40000, S4, 443, ACK | PSH, 1001, 5001, hello))]
    recs, t = run(frames)
    r = recs[0]
    assert r.name == sni.decode() and r.name_source == "sni" and r.no_name_reason is None
    assert r.alpn == "h2" and r.ech is False
    assert t.counters["names_sni"] == 1


def test_sni_on_the_handshake_ack():
    """nDPI heuristic_tcp_ack_payload: the client's first bytes ride on the final ACK."""
    hello, sni = chrome_client_hello()
    frames = handshake()
    frames[2] = (2000, tcp(C4, 40000, S4, 443, ACK, 1001, 5001, hello))
    assert only(frames).name == sni.decode()


def test_sni_without_syn_uses_first_seq():
    hello, sni = chrome_client_hello()
    frames = [(0, tcp(C4, 40000, S4, 443, ACK, 77, 1, hello[:100])),
              (1, tcp(C4, 40000, S4, 443, ACK, 177, 1, hello[100:]))]
    assert only(frames).name == sni.decode()


def test_truncated_hello_gives_no_partial_name():
    hello, _ = chrome_client_hello()
    for cut in (1, 5, 60, 200, len(hello) - 1):
        frames = handshake() + [(3000, tcp(C4, 40000, S4, 443, ACK, 1001, 5001, hello[:cut]))]
        r = only(frames)
        assert r.name is None and r.no_name_reason == "truncated", cut


def test_gap_never_filled():
    hello, _ = chrome_client_hello()
    frames = handshake() + [(3000, tcp(C4, 40000, S4, 443, ACK, 1001, 5001, hello[:50])),
                            (4000, tcp(C4, 40000, S4, 443, ACK, 1101, 5001, hello[100:]))]
    r = only(frames)
    assert r.name is None and r.no_name_reason == "reassembly-gap"


def test_reassembly_limit():
    hs = handshake(sp=80)
    data = b"GET / HTTP/1.1\r\n" + b"X-Pad: aaaaaaaa\r\n" * 40
    segs = [(3000 + i, tcp(C4, 40000, S4, 80, ACK, 1001 + i * 100, 5001, data[i * 100:i * 100 + 100]))
            for i in range((len(data) + 99) // 100)]
    r = only(hs + segs, reasm_limit=256)
    assert r.name is None and r.no_name_reason == "reassembly-limit"
    assert only(hs + segs + [(9000, tcp(C4, 40000, S4, 80, ACK, 1001 + len(data), 5001,
                                           b"Host: h.example\r\n\r\n"))]).name == "h.example"


def test_http_host_port_removed_and_no_host_and_unknown():
    hs = handshake(sp=8080)
    r = only(hs + [(3000, tcp(C4, 40000, S4, 8080, ACK, 1001, 5001, http_request(b"a.b:8080")))])
    assert (r.name, r.name_source) == ("a.b", "http")
    r = only(hs + [(3000, tcp(C4, 40000, S4, 8080, ACK, 1001, 5001,
                             b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"))])
    assert (r.name, r.no_name_reason) == (None, "no-host")
    r = only(hs + [(3000, tcp(C4, 40000, S4, 8080, ACK, 1001, 5001, b"SSH-2.0-OpenSSH\r\n"))])
    assert (r.name, r.no_name_reason) == (None, "unknown-protocol")


def test_dns_over_tcp():
    msg = dns_message("tcp.example")
    framed = len(msg).to_bytes(2, "big") + msg
    hs = handshake(sp=53)
    frames = hs + [(3000, tcp(C4, 40000, S4, 53, ACK, 1001, 5001, framed[:7])),
                   (4000, tcp(C4, 40000, S4, 53, ACK, 1008, 5001, framed[7:]))]
    r = only(frames)
    assert (r.name, r.name_source) == ("tcp.example", "dns-query")


def test_dns_query_and_answer_association_and_ttl():
    q = dns_message("www.blocked.example", qid=7)
    a = dns_message("www.blocked.example", [("198.51.100.7", 60), ("2001:db8::7", 60)], qid=7,
                    response=True)
    frames = [(0, udp(C4, 5353 + 1, S4, 53, q)), (1000, udp(S4, 53, C4, 5354, a))]
    frames += [(x[0] + NS, x[1]) for x in handshake(s="198.51.100.7", sp=443)]
    # Same server after the TTL: no name.
    frames += [(x[0] + 100 * NS, x[1]) for x in handshake(cp=40001, s="198.51.100.7", sp=443)]
    # Another client: no name.
    frames += [(x[0] + 2 * NS, x[1]) for x in handshake(c="10.0.0.99", s="198.51.100.7")]
    recs, t = run(frames)
    dns, early, other, late = sorted(recs, key=lambda r: r.ts_start)
    assert (dns.name, dns.name_source, dns.packets_c2s, dns.packets_s2c) == (
        "www.blocked.example", "dns-query", 1, 1)
    assert (early.name, early.name_source, early.no_name_reason) == (
        "www.blocked.example", "dns-answer", None)
    assert (other.name, other.no_name_reason) == (None, "no-payload")
    assert (late.name, late.no_name_reason) == (None, "no-payload")
    assert t.counters["dns_answers_stored"] == 2 and t.counters["names_dns_answer"] == 1


def test_each_dns_query_name_on_one_udp_tuple_gets_its_own_record():
    # One resolver socket, three names: each new name ends the flow ("dns-next-query") and starts
    # the next, so the second name, and its verdict, is not hidden behind the first.  The response
    # stays with its query; a retransmission (same name, case changed by 0x20 randomisation) and
    # the AAAA query for the same name stay in the flow.
    def q(name, qid):
        return udp(C4, 40053, S4, 53, dns_message(name, qid=qid))

    def r(name, qid):
        return udp(S4, 53, C4, 40053, dns_message(name, [("198.51.100.9", 60)], qid=qid,
                                                  response=True))
    frames = [(0, q("allowed.example", 1)), (10, r("allowed.example", 1)),
              (20, q("Blocked.Example", 2)), (30, q("BLOCKED.example", 2)),
              (40, q("blocked.example", 3)), (50, r("blocked.example", 2)),
              (60, q("third.example", 4))]
    recs, t = run(frames)
    assert [(x.name, x.packets_c2s, x.packets_s2c, x.end_reason) for x in recs] == [
        ("allowed.example", 1, 1, "dns-next-query"),
        ("blocked.example", 3, 1, "dns-next-query"),
        ("third.example", 1, 0, "end-of-capture")]
    assert len({x.flow_id for x in recs}) == 3
    assert t.counters["flows"] == 3 and t.counters["records"] == 3


def test_dns_over_tcp_keeps_its_first_name():
    first, second = dns_message("one.example"), dns_message("two.example", qid=9)
    stream = b"".join(len(m).to_bytes(2, "big") + m for m in (first, second))
    frames = handshake(sp=53) + [(3000, tcp(C4, 40000, S4, 53, ACK | PSH, 1001, 5001, stream))]
    r = only(frames)
    assert (r.name, r.name_source) == ("one.example", "dns-query")


def test_dns_answer_does_not_override_own_name():
    a = dns_message("one.example", [(S4, 600)], response=True)
    hello, sni = chrome_client_hello()
    frames = [(0, udp(S4, 53, C4, 3333, a))]
    frames += handshake(t0=10) + [(9000, tcp(C4, 40000, S4, 443, ACK | PSH, 1001, 5001, hello))]
    recs, _ = run(frames)
    assert recs[0].name == "one.example" and recs[0].name_source == "dns-query"
    assert recs[1].name == sni.decode() and recs[1].name_source == "sni"


def test_dns_assoc_disabled_and_capped():
    a = dns_message("x.example", [("198.51.100.%d" % i, 600) for i in range(1, 6)], response=True)
    frames = [(0, udp(S4, 53, C4, 3333, a))] + handshake(s="198.51.100.1", t0=10)
    recs, t = run(frames, dns_assoc_max=2)
    assert recs[1].name is None                       # evicted: only the last two kept
    assert t.counters["dns_answers_evicted"] == 3
    frames = [(0, udp(S4, 53, C4, 3333, a))] + handshake(s="198.51.100.5", t0=10)
    assert run(frames, dns_assoc_max=2)[0][1].name == "x.example"
    assert run(frames, dns_assoc=False)[0][1].name is None


def test_udp_unknown_protocol_and_response_only_dns():
    r = only([(0, udp(C4, 1, S4, 9999, b"hello"))])
    assert r.no_name_reason == "unknown-protocol"
    a = dns_message("resp.example", [], response=True)
    r = only([(0, udp(S4, 53, C4, 1234, a))])
    assert (r.name, r.name_source) == ("resp.example", "dns-query")


@pytest.mark.parametrize("pcap, name", [
    ("quic-v2.pcapng", "test"),
    ("quic-29.pcap", None),
])
def test_quic_from_real_captures(pcap, name):
    frames = read_capture(shared_path("pcaps", "ndpi", pcap))
    recs, t = run(frames)
    named = [r for r in recs if r.name_source == "quic"]
    assert t.counters["quic_initials"] >= 1
    assert named, [(r.name, r.no_name_reason) for r in recs]
    if name is not None:
        assert named[0].name == name


@pytest.mark.parametrize("pcap, port, name, version", [
    ("quic.pcap", 57833, "mail.google.com", "Q024"),            # gQUIC public header, CHLO
    ("youtube_quic.pcap", 53859, "googleads.g.doubleclick.net", "Q035"),
    ("quic_q46_b.pcap", 45530, "upload.youtube.com", "Q046"),   # gQUIC long header, CHLO
    ("quic_0RTT.pcap", 51972, "ssl.gstatic.com", "v1"),         # 0-RTT seen before the Initial
])
def test_quic_names_nDPI_finds(pcap, port, name, version):
    recs, t = run(read_capture(shared_path("pcaps", "ndpi", pcap)))
    (r,) = [r for r in recs if port in (r.client_port, r.server_port)]
    assert (r.name, r.name_source, r.client_port) == (name, "quic", port)
    assert (t.counters["gquic_hellos"] > 0) == version.startswith("Q")


def test_gquic_chlo_truncated_and_without_sni():
    frames = read_capture(shared_path("pcaps", "ndpi", "quic.pcap"))
    ts, frame, lt, wl = next(f for f in frames if b"CHLO" in f[1] and b"SNI\x00" in f[1])
    cut = frame.index(b"SNI\x00") + 8
    for data, why in ((frame[:cut], "truncated"),):
        t = FlowTable()
        t.process_frame(ts, data, lt)
        t.flush()
        (r,) = list(t.take_records())
        assert (r.name, r.no_name_reason) == (None, why)
    # Q033 CHLO of quic.pcap without an SNI tag
    recs, _ = run(frames)
    (r,) = [r for r in recs if r.client_port == 40134]
    assert (r.name, r.no_name_reason) == (None, "no-sni")


def test_quic_hello_across_several_initials():
    frames = read_capture(shared_path("pcaps", "ndpi", "quic_frags_ch_in_multiple_packets.pcapng"))
    t = FlowTable()
    # Everything, but the two client Initials in reverse order.
    frames = [frames[1], frames[0]] + frames[2:]
    for ts, f, lt, wl in frames:
        t.process_frame(ts, f, lt, wl)
    t.flush()
    (r,) = list(t.take_records())
    # nDPI finds no SNI in this ClientHello either; it is complete only after both Initials.
    assert r.no_name_reason == "no-sni" and r.alpn == "h3-34"
    assert t.counters["quic_initials"] == 2


def test_quic_unknown_version():
    dg = bytes([0xC0]) + bytes.fromhex("1a2a3a4a") + bytes([8]) + b"\x01" * 8 + b"\x00" * 40
    r = only([(0, udp(C4, 50000, S4, 443, dg))])
    assert r.no_name_reason == "quic-unknown-version"


def test_take_records_batch_columns():
    hello, sni = chrome_client_hello()
    frames = handshake() + [(3000, tcp(C4, 40000, S4, 443, ACK | PSH, 1001, 5001, hello))]
    frames += [(5000, udp(C4, 1, S4, 2, b"x"))]
    t = FlowTable(capture_name="cap.pcap")
    for ts, f in frames:
        t.process_frame(ts, f)
    t.flush()
    b = t.take_records()
    assert isinstance(b, RecordBatch) and len(b) == 2
    buf, off = b.names_packed()
    assert buf[off[0]:off[1]] == sni and off[2] == off[1]
    assert b.column("capture") == ["cap.pcap", "cap.pcap"]
    assert len(t.take_records()) == 0


# -- differential: counting and direction against a plain-Python model ---------------------------

_HOSTS = [C4, S4, "10.0.0.2", C6, S6]
_packet = st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(0, 4), st.integers(0, 4),
                    st.sampled_from([1, 2, 443]), st.sampled_from([1, 2, 443]),
                    st.sampled_from([0, SYN, SYN | ACK, ACK, ACK | PSH]),
                    st.binary(max_size=30))


def _model(packets):
    """Flows keyed by transport + unordered endpoints; client by the SYN / SYN+ACK / first-sender
    rule; per-direction packets and bytes."""
    flows: dict = {}
    for proto, a, b, pa, pb, flags, payload, frame in packets:
        ea, eb = (_HOSTS[a], pa), (_HOSTS[b], pb)
        key = (proto, frozenset((ea, eb)))
        if key not in flows:
            if proto == "tcp" and flags & (SYN | ACK) == SYN | ACK:
                flows[key] = {"client": eb, "c2s": [0, 0], "s2c": [0, 0]}
            else:
                flows[key] = {"client": ea, "c2s": [0, 0], "s2c": [0, 0]}
        f = flows[key]
        side = f["c2s"] if ea == f["client"] and (ea != eb) else f["s2c"]
        if ea == eb:
            side = f["c2s"]
        side[0] += 1
        side[1] += len(frame)
    return flows


@settings(max_examples=200, deadline=None)
@given(st.lists(_packet, max_size=40))
def test_counts_match_python_model(raw):
    packets = []
    for proto, a, b, pa, pb, flags, payload in raw:
        if (":" in _HOSTS[a]) != (":" in _HOSTS[b]):
            b = a
        frame = (tcp(_HOSTS[a], pa, _HOSTS[b], pb, flags, 7, 0, payload) if proto == "tcp"
                 else udp(_HOSTS[a], pa, _HOSTS[b], pb, payload))
        packets.append((proto, a, b, pa, pb, flags, payload, frame))
    recs, t = run([(i, p[-1]) for i, p in enumerate(packets)])
    model = _model(packets)
    assert len(recs) == len(model) == t.counters["flows"]
    for r in recs:
        key = (r.transport, frozenset(((r.client_ip, r.client_port), (r.server_ip, r.server_port))))
        m = model[key]
        if (r.client_ip, r.client_port) != (r.server_ip, r.server_port):
            assert (r.client_ip, r.client_port) == m["client"]
        assert [r.packets_c2s + r.packets_s2c, r.bytes_c2s + r.bytes_s2c] == [
            m["c2s"][0] + m["s2c"][0], m["c2s"][1] + m["s2c"][1]]
        assert [r.packets_c2s, r.bytes_c2s] == m["c2s"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from([1, 101, 113, 228, 229, 0])),
                max_size=20), st.binary(min_size=1, max_size=60))
def test_garbage_never_crashes_and_nothing_is_lost(frames, tail):
    t = FlowTable(max_flows=4, reasm_limit=64)
    hello, _ = chrome_client_hello()
    base = tcp(C4, 1, S4, 443, ACK, 1, 1, hello[:40])
    for i, (data, lt) in enumerate(frames):
        t.process_frame(i, data, lt)
        # mutate a real frame too: header fields and payload bytes at random
        t.process_frame(i, base[:14] + data[:len(base) - 14] + base[14 + len(data):] + tail, 1)
    t.flush()
    recs = list(t.take_records())
    c = t.counters
    assert sum(r.packets_c2s + r.packets_s2c for r in recs) == c["packets_attributed"]
    assert c["packets"] == 2 * len(frames)
    assert all(r.name is None or r.name_source for r in recs)


@pytest.mark.parametrize("pcap, n_ech", [("tls_ech.pcapng", 1), ("tls_esni_sni_both.pcap", 2)])
def test_ech_and_esni_flagged_with_outer_name(pcap, n_ech):
    recs, _ = run(read_capture(shared_path("pcaps", "ndpi", pcap)))
    ech = [r for r in recs if r.ech]
    assert len(ech) == n_ech and all(r.name and r.name_source == "sni" for r in ech)


def test_process_reader_equals_frame_by_frame_and_batch():
    from kzfilter.packet.capture import open_capture

    path = shared_path("pcaps", "ndpi", "quic_frags_ch_out_of_order_same_packet_craziness.pcapng")
    a = FlowTable(capture_name="c")
    with open_capture(path) as reader:
        n = a.process_reader(reader)
    a.flush()
    frames = read_capture(path)
    b = FlowTable(capture_name="c")
    for ts, f, lt, wl in frames:
        b.process_frame(ts, f, lt, wl)
    b.flush()
    c = FlowTable(capture_name="c")
    assert c.process_frames([(ts, f, wl) for ts, f, lt, wl in frames], frames[0][2]) == n
    c.flush()
    ra, rb, rc = (t.take_records() for t in (a, b, c))
    assert n == len(frames) and len(ra) > 0
    assert ra.to_pandas().equals(rb.to_pandas()) and ra.to_pandas().equals(rc.to_pandas())
    assert a.counters == b.counters
