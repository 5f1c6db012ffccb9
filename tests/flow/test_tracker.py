"""FlowTracker (feed-it-yourself, dpkt objects) and the RecordBatch containers."""
from __future__ import annotations

import dpkt
import numpy as np
import pytest

from kzfilter.flow.records import (
    FIELD_NAMES, RECORD_DTYPE, RECORD_FIELDS, FlowRecord, RecordBatch, tcp_flags_text)
from kzfilter.flow.tracker import FlowTracker
from tests.conftest import shared_path
from tests.flow.frames import (
    ACK, C4, NS, PSH, S4, chrome_client_hello, handshake, http_request, ip_bytes, read_pcap, tcp,
    udp)


def _tls_frames():
    hello, sni = chrome_client_hello()
    return handshake() + [(3000, tcp(C4, 40000, S4, 443, ACK | PSH, 1001, 5001, hello))], sni


def test_feed_float_seconds_and_int_ns_agree():
    frames, sni = _tls_frames()
    a, b = FlowTracker(), FlowTracker()
    for ts, f in frames:
        a.feed(1_700_000_000 + ts / 1e9, f)
        b.feed(1_700_000_000 * NS + ts, f)
    ra, rb = a.close(), b.close()
    assert len(ra) == len(rb) == 1
    assert ra.column("ts_start_ns")[0] == rb.column("ts_start_ns")[0] == 1_700_000_000 * NS
    assert next(iter(ra)).name == sni.decode()


def test_feed_dpkt_objects_of_every_link_type():
    frames, sni = _tls_frames()
    variants = {
        "ether": lambda f: dpkt.ethernet.Ethernet(f),
        "ip": lambda f: dpkt.ethernet.Ethernet(f).data,
        "sll": lambda f: dpkt.sll.SLL(type=0x0800, data=dpkt.ethernet.Ethernet(f).data),
        "sll2": lambda f: dpkt.sll2.SLL2(protocol=0x0800, data=dpkt.ethernet.Ethernet(f).data),
    }
    for label, make in variants.items():
        tr = FlowTracker()
        for ts, f in frames:
            tr.feed_dpkt(ts, make(f))
        recs = list(tr.close())
        assert [(r.name, r.packets_c2s, r.packets_s2c) for r in recs] == [
            (sni.decode(), 3, 1)], label


def test_feed_dpkt_ip6_and_rejects_others():
    seg = dpkt.udp.UDP(sport=1, dport=53, data=b"x" * 12)
    seg.ulen = 20
    ip6 = dpkt.ip6.IP6(src=ip_bytes("2001:db8::1"), dst=ip_bytes("2001:db8::2"), nxt=17,
                       hlim=1, data=seg, plen=20)
    tr = FlowTracker()
    tr.feed_dpkt(0.0, ip6)
    (r,) = list(tr.close())
    assert r.client_ip == "2001:db8::1" and r.ip_version == 6 and r.transport == "udp"
    with pytest.raises(TypeError):
        tr.feed_dpkt(0.0, dpkt.tcp.TCP())


def test_feed_many_from_dpkt_reader_and_records_once():
    path = shared_path("pcaps", "ndpi", "chrome.pcap")
    tr = FlowTracker(idle_timeout=1)
    with open(path, "rb") as f:
        n = tr.feed_many(dpkt.pcap.Reader(f))
    assert n == 127
    early = tr.records()
    rest = tr.close()
    assert len(tr.records()) == 0
    assert len(early) + len(rest) == tr.counters["flows"] == 6
    all_ = RecordBatch.concat([early, rest])
    assert sum(all_.column("packets_c2s")) + sum(all_.column("packets_s2c")) == 127


def test_wirelen_counts_wire_bytes():
    tr = FlowTracker()
    tr.feed(0, udp(C4, 1, S4, 2, b"abc"), wirelen=1500)
    (r,) = list(tr.close())
    assert r.bytes_c2s == 1500


# -- RecordBatch ------------------------------------------------------------------------------

def _batch():
    frames, sni = _tls_frames()
    frames = frames + [(4000, udp(C4, 7, S4, 8080, b"hi")),
                       (5000, tcp(C4, 40001, S4, 80, ACK, 1, 1, http_request(b"h.example")))]
    tr = FlowTracker(capture_name="x.pcap")
    for ts, f in frames:
        tr.feed(ts, f)
    return tr.close(), sni


def test_schema_is_complete():
    names = [f[0] for f in RECORD_FIELDS]
    for required in ("flow_id", "capture", "ts_start", "ts_end", "duration", "transport",
                     "ip_version", "client_ip", "client_port", "server_ip", "server_port", "vlan",
                     "packets_c2s", "bytes_c2s", "packets_s2c", "bytes_s2c", "rate_c2s_bps",
                     "rate_s2c_bps", "tcp_flags", "end_reason", "name", "name_source",
                     "no_name_reason", "alpn", "ech", "action", "category", "rule", "lists",
                     "matched_on"):
        assert required in names
    assert len(set(names)) == len(names) and all(doc for _, _, doc in RECORD_FIELDS)


def test_batch_columns_iteration_and_exports():
    b, sni = _batch()
    assert len(b) == 3
    recs = list(b)
    assert [r.name for r in recs] == [sni.decode(), None, "h.example"]
    assert [r.name_source for r in recs] == ["sni", None, "http"]
    assert recs[1].no_name_reason == "unknown-protocol"
    assert b.column("transport") == ["tcp", "udp", "tcp"]
    assert b.column("capture") == ["x.pcap"] * 3
    assert isinstance(b.column("bytes_c2s"), np.ndarray)
    d = recs[0].as_dict()
    assert list(d) == list(FIELD_NAMES) and d["action"] is None and d["lists"] == []
    assert b[-1].name == "h.example"
    buf, off = b.names_packed()
    assert [buf[off[i]:off[i + 1]] for i in range(3)] == [sni, b"", b"h.example"]
    df = b.to_pandas()
    assert list(df.columns) == list(FIELD_NAMES) and df["name"].iloc[2] == "h.example"
    tbl = b.to_arrow()
    assert tbl.column_names == list(FIELD_NAMES) and tbl.num_rows == 3
    assert tbl.column("server_port").to_pylist() == [443, 8080, 80]


def test_set_verdicts():
    b, _ = _batch()
    b.set_verdicts(np.array(["block", "allow", "allow"]), ["ads", None, None],
                   rule=["||x^", None, None], lists=[["easylist"], [], []],
                   matched_on=["name", None, None])
    r = next(iter(b))
    assert (r.action, r.category, r.rule, r.lists, r.matched_on) == (
        "block", "ads", "||x^", ["easylist"], "name")
    assert b.to_arrow().column("lists").to_pylist()[0] == ["easylist"]
    with pytest.raises(ValueError):
        b.set_verdicts(["block"])


def test_concat_rebases_names_and_captures():
    b1, sni = _batch()
    tr = FlowTracker(capture_name="y.pcap")
    tr.feed(0, tcp(C4, 5, S4, 80, ACK, 1, 1, http_request(b"other.example")))
    b2 = tr.close()
    c = RecordBatch.concat([b1, b2])
    assert [r.name for r in c] == [sni.decode(), None, "h.example", "other.example"]
    assert c.column("capture") == ["x.pcap"] * 3 + ["y.pcap"]
    buf, off = c.names_packed()
    assert buf[off[3]:off[4]] == b"other.example"


def test_tcp_flags_text_and_record_repr():
    assert tcp_flags_text(0x12) == "SA" and tcp_flags_text(0x1F) == "SAFPR"
    assert tcp_flags_text(0) == ""
    assert "flow_id=1" in repr(FlowRecord(flow_id=1))
    assert RecordBatch().column("name") == [] and len(RecordBatch()) == 0
    with pytest.raises(TypeError):
        RecordBatch(np.zeros(1, dtype=np.int64))
    assert RECORD_DTYPE.names[0] == "flow_id"
