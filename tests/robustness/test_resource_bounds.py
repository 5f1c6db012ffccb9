"""Resource bounds: hostile volumes stay bounded in memory and are visible in counters.

Each scenario runs in a fresh Python process (``run_measured``) so that its peak RSS growth
(``ru_maxrss`` after the run minus after the imports and the input are built) is its own, not the
suite's high-water mark.  The scale here runs in seconds; the full-scale figures (millions of flows,
ten million rule lines) were measured once with the same code and are in docs/robustness.md.

Bounds asserted (from the documented limits of each module):
* flow table: ``flows_active <= max_flows`` at every chunk; evictions counted; memory
  ~ ``max_flows * FLOW_STRUCT_SIZE`` + the records of one chunk, not the number of flows;
* TCP reassembly: at most ``reasm_limit`` bytes per flow, a 16 MB ClientHello claim is
  rejected at once (``TLS_MAX_HELLO_BYTES``);
* QUIC: at most ``MAX_FRAMES_PER_PACKET`` frames per Initial, ``MAX_CRYPTO_BYTES`` per stream;
* DNS: at most 32 answers kept per message, the rest counted in ``dns_answers_dropped``;
* rule files: memory linear in the file with a small constant, every skipped line counted;
* a 10 KB name: never a crash, never a verdict on a truncated name.
"""
from __future__ import annotations

import json
import os
import subprocess
import struct
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20

PRELUDE = """
import json, resource, struct, sys, time
sys.path[:0] = [{repo!r}]
from tests.robustness.captures import tls_client_hello, pcap_bytes
from tests.flow.frames import tcp, udp, ACK, SYN, PSH, FIN
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""


def run_measured(body: str, timeout: int = 240) -> dict:
    """Run ``body`` (which sets ``base = rss()`` after building its input, and a dict ``out``) in
    a fresh interpreter; return ``out`` with ``rss_growth`` (bytes) and ``seconds`` added."""
    code = PRELUDE.format(repo=str(REPO)) + textwrap.dedent(body) + textwrap.dedent("""
        out["rss_growth"] = rss() - base
        print("RESULT" + json.dumps(out))
    """)
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[6:])


SYN_TEMPLATE = """
def syn_frames(n):
    base_frame = tcp("100.64.0.1", 1024, "192.0.2.1", 80, SYN, 1)
    out = []
    for i in range(n):
        f = bytearray(base_frame)
        f[26:30] = struct.pack("!I", 0x64400000 + (i >> 16))    # source address
        f[34:36] = struct.pack("!H", 1024 + (i & 0xFFFF) % 60000)  # source port
        out.append((1_768_471_200_000_000_000 + i * 1000, bytes(f)))
    return out
"""


def test_port_scan_of_one_packet_flows_is_bounded_by_max_flows():
    n, cap, chunk = 150_000, 2_000, 10_000
    out = run_measured(SYN_TEMPLATE + f"""
from kzfilter.flow._table import FlowTable, FLOW_STRUCT_SIZE, RECORD_SIZE
frames = syn_frames({n})
table = FlowTable(max_flows={cap})
base = rss()
records, peak_active = 0, 0
for i in range(0, len(frames), {chunk}):
    table.process_frames(frames[i:i + {chunk}])
    peak_active = max(peak_active, table.flows_active)
    records += len(table.take_records())
table.flush()
records += len(table.take_records())
out = dict(table.counters, records_taken=records, peak_active=peak_active,
           flow_size=FLOW_STRUCT_SIZE, rec_size=RECORD_SIZE)
""")
    assert out["peak_active"] <= cap
    assert out["flows"] == n and out["records_taken"] == n
    assert out["flows_evicted"] == n - cap, out
    # table slab + one chunk of records, with slack for the allocator: far below n flows' worth
    bound = cap * out["flow_size"] * 4 + 10_000 * out["rec_size"] * 4 + 24 * MB
    assert out["rss_growth"] < bound, out
    assert out["rss_growth"] < n * out["flow_size"], out


def test_flow_that_never_ends_is_cut_by_active_timeout():
    n = 60_000
    out = run_measured(f"""
from kzfilter.flow._table import FlowTable
hello = tls_client_hello(b"long.example.com")
frames = [tcp("100.64.0.1", 40000, "192.0.2.1", 443, SYN, 0)]
frames.append(tcp("100.64.0.1", 40000, "192.0.2.1", 443, ACK | PSH, 1, 0, hello))
seq = 1 + len(hello)
ack = tcp("100.64.0.1", 40000, "192.0.2.1", 443, ACK, seq, 0, b"x" * 100)
t0 = 1_768_471_200 * 10**9
table = FlowTable(active_timeout=600.0, idle_timeout=300.0)
base = rss()
table.process_frame(t0, frames[0]); table.process_frame(t0 + 1, frames[1])
names, records, peak = 0, 0, 0
for i in range({n}):
    table.process_frame(t0 + (i + 1) * 10**9, ack)        # one packet a second, {n} s in all
    if i % 5000 == 0:
        b = table.take_records(); records += len(b); peak = max(peak, table.flows_active)
table.flush()
b = table.take_records(); records += len(b)
out = dict(table.counters, records_taken=records, peak_active=peak)
""")
    assert out["peak_active"] <= 1
    assert out["flows_active_timeout"] >= 60_000 // 600 - 1, out
    assert out["records_taken"] == out["flows"], out
    assert out["rss_growth"] < 16 * MB, out


def test_client_hello_claiming_16_mb():
    out = run_measured("""
from kzfilter.flow._table import FlowTable
from kzfilter.packet import _hostnames as H
# a record header and a handshake header that claim 16 MB, then megabytes of data
claim = b"\\x16\\x03\\x01\\xff\\xff" + b"\\x01\\xff\\xff\\xff" + b"\\x03\\x03" + bytes(200)
st, _ = H.parse_client_hello(claim, True)
st2, _ = H.parse_client_hello(claim[5:], False)
segs = [tcp("100.64.0.1", 40000, "192.0.2.1", 443, SYN, 0)]
seq = 1
for i in range(3000):                        # 4.2 MB of client bytes
    data = claim if i == 0 else bytes(1400)
    segs.append(tcp("100.64.0.1", 40000, "192.0.2.1", 443, ACK, seq, 0, data))
    seq += len(data)
table = FlowTable(reasm_limit=16384)
base = rss()
for i, f in enumerate(segs):
    table.process_frame(1_768_471_200 * 10**9 + i, f)
table.flush()
b = table.take_records()
out = dict(table.counters, status=st, status_bare=st2, malformed=H.NS_MALFORMED,
           reason=b[0].no_name_reason, n=len(b))
""")
    assert out["status"] == out["malformed"] and out["status_bare"] == out["malformed"], out
    assert out["n"] == 1 and out["reason"] == "malformed", out
    assert out["rss_growth"] < 8 * MB, out


def test_client_hello_longer_than_reasm_limit_stops_at_the_limit():
    out = run_measured("""
from kzfilter.flow._table import FlowTable
# 12 KB: one TLS record (RFC 8446 5.1: at most 2**14 bytes), larger than reasm_limit
hello = tls_client_hello(b"big.example.com", extra=b"\\x00\\x15" + struct.pack("!H", 12000) + bytes(12000))
segs = [tcp("100.64.0.1", 40000, "192.0.2.1", 443, SYN, 0)]
for off in range(0, len(hello), 1400):
    segs.append(tcp("100.64.0.1", 40000, "192.0.2.1", 443, ACK, 1 + off, 0, hello[off:off + 1400]))
table = FlowTable(reasm_limit=4096)
base = rss()
for i, f in enumerate(segs):
    table.process_frame(1_768_471_200 * 10**9 + i, f)
table.flush()
b = table.take_records()
out = dict(table.counters, reason=b[0].no_name_reason, name=b[0].name)
""")
    # the SNI is at the start, but a name is only taken from a complete ClientHello
    assert out["reason"] == "reassembly-limit", out
    assert out["reasm_dropped"] >= 1, out


def test_quic_initial_with_thousands_of_crypto_frames():
    out = run_measured("""
sys.path.insert(0, "tools")
import gen_captures as G
from kzfilter.packet import quic
from kzfilter.flow._table import FlowTable
hello = tls_client_hello(b"quic.example.com")[5:]
L = len(hello)
plain = b"".join(G.crypto_frame(i % L, hello[i % L:i % L + 1]) for i in range(3000))  # 1 byte each (a 2-byte Length: < 16 KB)
dcid = bytes(range(8))
dg = G.protect_initial(G.initial_keys(dcid, client=True), dcid, b"\\x01" * 8, 0, plain, pad_to=None)
t = time.process_time()
ini = quic.initial_crypto_frames(dg)
table = FlowTable()
base = rss()
for i in range(8):
    table.process_frame(1_768_471_200 * 10**9 + i, udp("100.64.0.1", 5555, "192.0.2.1", 443, dg))
table.flush()
b = table.take_records()
out = dict(table.counters, frames_in=3000, frames_kept=len(ini.frames),
           truncated=ini.truncated, limit=quic.MAX_FRAMES_PER_PACKET, n=len(b),
           reason=b[0].no_name_reason, name=b[0].name, cpu=time.process_time() - t)
""")
    assert out["frames_in"] > 2000
    assert out["frames_kept"] <= out["limit"] and out["truncated"], out
    assert out["n"] == 1 and out["quic_initials"] >= 1, out
    assert out["rss_growth"] < 16 * MB, out


def test_dns_answer_with_thousands_of_records():
    out = run_measured("""
from kzfilter.packet import _hostnames as H
from kzfilter.flow._table import FlowTable
q = b"\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01"
n = 4000
ans = b"".join(b"\\xc0\\x0c\\x00\\x01\\x00\\x01" + struct.pack("!IH", 300, 4) + struct.pack("!I", 0xC6336400 + i)
               for i in range(n))
msg = struct.pack("!HHHHHH", 7, 0x8180, 1, n, 0, 0) + q + ans
st, info = H.parse_dns(msg)
table = FlowTable(dns_assoc_max=1000)
base = rss()
for i in range(50):
    table.process_frame(1_768_471_200 * 10**9 + i, udp("192.0.2.53", 53, "100.64.0.1", 40000 + i, msg))
table.flush()
table.take_records()
out = dict(table.counters, status=st, kept=len(info["answers"]), dropped=info["dropped"], n=n)
""")
    assert out["kept"] <= 32 and out["kept"] + out["dropped"] == out["n"], out
    assert out["dns_answers_dropped"] >= 50 * (out["n"] - 32), out
    assert out["dns_assoc_entries"] <= 1000, out
    assert out["rss_growth"] < 16 * MB, out


def test_rule_file_of_many_lines(tmp_path):
    n = 200_000
    good = tmp_path / "big.domains"
    with open(good, "w") as f:
        for i in range(n):
            f.write(f"host{i}.example{i % 997}.com\n")
    junk = tmp_path / "junk.domains"
    with open(junk, "wb") as f:
        for i in range(n):
            f.write(b"\xff\xfe bad line %d\n" % i)
    out = run_measured(f"""
from kzfilter.rules.loaders import load_rules
base = rss()
t = time.process_time()
rs = load_rules({str(good)!r}, format="domains")
clf = rs.compile()
secs = time.process_time() - t
lenient = load_rules({str(junk)!r}, format="domains", strict=False)
try:
    load_rules({str(junk)!r}, format="domains")
    strict_error = None
except Exception as e:
    strict_error = f"{{type(e).__name__}}: {{e}}"
out = dict(rules=len(rs), compiled=len(clf), secs=secs, lenient_rules=len(lenient),
           skipped=lenient.skipped, strict_error=strict_error)
""")
    assert out["rules"] == n and out["compiled"] == n
    assert out["lenient_rules"] == 0 and sum(out["skipped"].values()) == n, out
    assert out["strict_error"].startswith("RuleSyntaxError") and "junk.domains:1:" in out["strict_error"]
    assert out["rss_growth"] < n * 2048, out                 # < 2 KB per rule, all included


def test_name_of_10_kb(tmp_path):
    from kzfilter import InvalidNameError, RuleSyntaxError, load_rules
    from kzfilter.flow.tracker import FlowTracker
    from kzfilter.packet import _hostnames as H
    from kzfilter.rules.model import Rule, RuleSet
    from tests.flow.frames import ACK, PSH, SYN, tcp
    from tests.robustness.captures import tls_client_hello

    long_name = (b"a" * 60 + b".") * 170 + b"example.com"        # ~10.4 KB
    hello = tls_client_hello(long_name)
    st, info = H.parse_client_hello(hello, True)
    assert st in (H.NS_FOUND, H.NS_MALFORMED)
    st, name = H.parse_http_host(b"GET / HTTP/1.1\r\nHost: " + long_name + b"\r\n\r\n")
    assert st in (H.NS_FOUND, H.NS_MALFORMED)

    clf = RuleSet([Rule("example.com")]).compile()
    tracker = clf.flow_tracker()
    tracker.feed(0, tcp("100.64.0.1", 4000, "192.0.2.1", 443, SYN, 0))
    for off in range(0, len(hello), 1400):
        tracker.feed(1 + off, tcp("100.64.0.1", 4000, "192.0.2.1", 443, ACK | PSH, 1 + off, 0,
                                  hello[off:off + 1400]))
    (rec,) = list(tracker.close())
    # a name longer than DNS allows (RFC 1035 2.3.4: 255) is either kept whole or refused; it
    # must not be truncated into a different, matchable name.
    assert rec.name in (None, long_name.decode()), rec.name[:80]
    if rec.name is None:
        assert rec.no_name_reason == "malformed"
    assert rec.action is None         # not a valid host name: no verdict
    try:
        assert clf.match_name(long_name) is None
    except InvalidNameError as exc:
        assert "long" in str(exc) or "label" in str(exc), exc
    bad = tmp_path / "long.domains"
    bad.write_bytes(b"ok.example.com\n" + long_name + b"\n")
    with pytest.raises(RuleSyntaxError, match=r"long\.domains:2: "):
        load_rules(bad, format="domains")


def test_decompression_bomb_streams_in_a_bounded_buffer(tmp_path):
    # 2 KB of zstd that expand to 64 MB: a pcap header, then 4 Mi zero-length records
    import zstandard

    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    bomb = tmp_path / "bomb.pcap.zst"
    bomb.write_bytes(zstandard.ZstdCompressor(level=19).compress(hdr + bytes(64 << 20)))
    assert bomb.stat().st_size < 8192
    out = run_measured(f"""
from kzfilter import Rule, RuleSet
from kzfilter.packet._capture import CaptureReader, BUFFER_HARD_CAP
clf = RuleSet([Rule("example.com")]).compile()
base = rss()
result = clf.classify({str(bomb)!r})
n = sum(len(b) for b in result.batches())
with CaptureReader({str(bomb)!r}) as r:
    r.drain()
    peak = r.buffer_peak
out = dict(records=n, peak=peak, cap=BUFFER_HARD_CAP, **{{"cap_" + k: v for k, v in result.counters["capture"].items()}},
           **{{"flow_" + k: v for k, v in result.counters["flows"].items()}})
""")
    assert out["cap_frames"] == 4 << 20, out
    assert out["records"] == 0 and out["flow_packets"] == 4 << 20, out
    assert out["flow_packets_attributed"] == 0, out
    assert out["peak"] <= out["cap"], out
    assert out["rss_growth"] < 64 * MB, out
