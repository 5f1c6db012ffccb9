"""Truncated and corrupt captures, end to end: ``RuleSet(...).compile().classify(path)``.

Every damaged file must give the records of everything before the damage (each flow whose
ClientHello record is complete has its record, its name and its verdict), a clear error
(``counters["capture"].get("error")``) or a counted skip for the rest, and never an exception other
than ``CaptureError`` for a file whose header is not a capture, never a hang.

Captures are written by tests/robustness/captures.py (plain ``struct``), so each record's offset is
known and the expected survivors are computed, not hard-coded.
"""
from __future__ import annotations

import gzip
import random
import zlib
from pathlib import Path

import pytest

from kzfilter import CaptureError, Rule, RuleSet
from kzfilter.packet._capture import BUFFER_HARD_CAP, CaptureReader
from tests.robustness.captures import Flow, pcap_bytes, pcapng_bytes, tls_flows

FRAMES, FLOWS = tls_flows(6)
HELLO = 3          # index of the ClientHello frame inside a flow


@pytest.fixture(scope="module")
def clf():
    return RuleSet([Rule("example.com", category="TEST")]).compile()


def classify(clf, data: bytes, path: Path) -> tuple[list[dict], dict]:
    path.write_bytes(data)
    result = clf.classify(path)
    records = [r.as_dict() for r in result]
    return records, result.counters


def expect_survivors(clf, records: list[dict], flows: list[Flow]) -> None:
    """Each listed flow has exactly one record with its name and the block verdict."""
    by_port: dict[int, list[dict]] = {}
    for r in records:
        by_port.setdefault(r["client_port"], []).append(r)
    for f in flows:
        recs = by_port.get(f.port, [])
        assert len(recs) == 1, f"flow {f.port}: {len(recs)} records ({recs})"
        assert recs[0]["name"] == f.name, recs[0]
        assert recs[0]["action"] == "block", recs[0]
    known = {f.name for f in FLOWS}
    for r in records:
        assert r["name"] in known or r["name"] is None, r


def complete_flows(offsets: list[int], cut: int) -> list[Flow]:
    """Flows whose ClientHello record ends at or before ``cut``."""
    return [f for f in FLOWS if offsets[f.first + HELLO + 1] <= cut]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_cut_at_every_byte_of_the_last_records(clf, tmp_path, fmt):
    data, offsets = (pcap_bytes if fmt == "pcap" else pcapng_bytes)(FRAMES)
    header_end = 24 if fmt == "pcap" else 28     # the file header / the section header block
    # every byte offset of the last 3 records and of the last flow's ClientHello record
    last = FLOWS[-1]
    cuts = set(range(offsets[-4], len(data) + 1))
    cuts |= set(range(offsets[last.first + HELLO], offsets[last.first + HELLO + 1] + 1))
    cuts |= {offsets[f.first] for f in FLOWS} | {offsets[f.first] + 7 for f in FLOWS}
    for cut in sorted(cuts):
        records, counters = classify(clf, data[:cut], tmp_path / f"cut.{fmt}")
        expect_survivors(clf, records, complete_flows(offsets, cut))
        cap = counters["capture"]
        frames_before = sum(1 for o in offsets[1:] if o <= cut)
        assert cap["frames"] == frames_before, (cut, cap)
        assert counters["flows"]["packets"] == frames_before
        if cut in offsets:
            assert cap["truncated_records"] == 0 and not cap.get("error"), (cut, cap)
        else:
            assert cap["truncated_records"] >= 1 or cap.get("error"), (cut, cap)
    # inside the file header: not a capture at all -> CaptureError, never a partial result
    for cut in (1, 4, header_end - 1):
        with pytest.raises(CaptureError):
            classify(clf, data[:cut], tmp_path / f"head.{fmt}")


def test_truncated_gzip_keeps_the_decompressible_prefix(clf, tmp_path):
    data, offsets = pcap_bytes(FRAMES)
    gz = gzip.compress(data, mtime=0)
    for cut in range(len(gz) - 200, len(gz), 7):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        avail = len(d.decompress(gz[:cut]))
        records, counters = classify(clf, gz[:cut], tmp_path / "cut.pcap.gz")
        expect_survivors(clf, records, complete_flows(offsets, avail))
        cap = counters["capture"]
        assert cap["truncated_records"] >= 1 or cap.get("error"), (cut, cap)


@pytest.mark.parametrize("bad_len", [0, 7, 13, 0xFFFFFFFC, "trailer-mismatch", "one-less"])
def test_pcapng_bad_block_length(clf, tmp_path, bad_len):
    k = FLOWS[3].first + HELLO + 2            # an EPB after flow 3's ClientHello
    _, offsets = pcapng_bytes(FRAMES)
    good = offsets[k + 1] - offsets[k]
    lead = {"trailer-mismatch": good + 4, "one-less": good - 1}.get(bad_len, bad_len)
    data, offsets = pcapng_bytes(FRAMES, block_lens={k: lead})
    records, counters = classify(clf, data, tmp_path / "bad.pcapng")
    expect_survivors(clf, records, FLOWS[:4])
    cap = counters["capture"]
    assert cap.get("error") or cap["bad_records"] or cap["skipped_blocks"] or cap["truncated_records"], cap
    assert cap["frames"] >= k


def test_pcap_zero_snaplen_reads_every_record(clf, tmp_path):
    # Some writers put 0 in the snaplen field; libpcap then assumes its maximum, records are valid.
    data, _ = pcap_bytes(FRAMES, snaplen=0)
    records, counters = classify(clf, data, tmp_path / "zero-snaplen.pcap")
    expect_survivors(clf, records, FLOWS)
    assert counters["capture"]["frames"] == len(FRAMES)


def test_packet_longer_than_snaplen_is_counted(clf, tmp_path):
    snap = 96                                 # every ClientHello frame is longer than that
    data, _ = pcap_bytes(FRAMES, snaplen=snap)
    records, counters = classify(clf, data, tmp_path / "over-snap.pcap")
    cap = counters["capture"]
    over = sum(1 for _, f in FRAMES if len(f) > snap)
    assert over > 0
    assert cap["over_snaplen"] == over, cap
    # the records are still read whole (the file holds them), so every flow keeps its name
    expect_survivors(clf, records, FLOWS)


def test_wire_length_below_captured_length(clf, tmp_path):
    data, _ = pcap_bytes(FRAMES, wirelens={i: 10 for i in range(0, len(FRAMES), 5)})
    records, counters = classify(clf, data, tmp_path / "short-wire.pcap")
    assert counters["capture"]["frames"] == len(FRAMES)
    assert len(records) == len(FLOWS)


@pytest.mark.parametrize("caplen", [0xFFFFFFFF, 0x7FFFFFFF, 1 << 24, 262145])
def test_huge_declared_length(clf, tmp_path, caplen):
    k = FLOWS[2].first + HELLO + 1
    data, offsets = pcap_bytes(FRAMES, caplens={k: caplen})
    records, counters = classify(clf, data, tmp_path / "huge.pcap")
    expect_survivors(clf, records, FLOWS[:3])
    cap = counters["capture"]
    assert cap.get("error") or cap["bad_records"], cap
    assert cap["frames"] == k, cap              # nothing read past the damaged record
    with CaptureReader(str(tmp_path / "huge.pcap")) as r:
        r.drain()
        assert r.buffer_peak <= BUFFER_HARD_CAP   # no allocation of the declared size


def test_garbage_after_the_header(clf, tmp_path):
    rng = random.Random(4)
    data, offsets = pcap_bytes(FRAMES)
    garbage = bytes(rng.randrange(256) for _ in range(5000))
    # garbage right after the file header: no record, an error, no hang
    records, counters = classify(clf, data[:offsets[0]] + garbage, tmp_path / "g0.pcap")
    assert counters["capture"].get("error") or counters["capture"]["bad_records"] or \
        counters["capture"]["truncated_records"], counters["capture"]
    assert all(r["name"] is None for r in records)
    # garbage after four whole flows: those flows survive
    cut = offsets[FLOWS[4].first]
    records, counters = classify(clf, data[:cut] + garbage, tmp_path / "g4.pcap")
    expect_survivors(clf, records, FLOWS[:4])
    cap = counters["capture"]
    assert cap.get("error") or cap["bad_records"] or cap["truncated_records"], cap


def test_pcapng_garbage_after_the_header(clf, tmp_path):
    rng = random.Random(5)
    data, offsets = pcapng_bytes(FRAMES)
    cut = offsets[FLOWS[3].first]
    garbage = bytes(rng.randrange(256) for _ in range(5000))
    records, counters = classify(clf, data[:cut] + garbage, tmp_path / "g.pcapng")
    expect_survivors(clf, records, FLOWS[:3])


def test_tracker_takes_every_truncated_frame():
    """FlowTracker: every frame of a flow cut at every byte length, fed as a (caplen < wirelen)
    frame: no error, each frame counted once, the flow with the whole ClientHello keeps its name."""
    from kzfilter.flow.tracker import FlowTracker

    flow = FLOWS[0]
    frames = FRAMES[flow.first:flow.last + 1]
    hello_ts, hello = frames[HELLO]
    tracker = FlowTracker()
    for ts, frame in frames:
        tracker.feed(ts, frame)
    counted = len(frames)
    for cut in range(len(hello)):
        tracker.feed(hello_ts + 1, hello[:cut], wirelen=len(hello))
        counted += 1
    batch = tracker.close()
    c = tracker.counters
    assert c["packets"] == counted
    skips = sum(v for k, v in c.items() if k.startswith("skipped_"))
    assert c["packets_attributed"] + skips == counted, c
    names = [r.name for r in batch if r.name]
    assert names == [flow.name], [r.as_dict() for r in batch]
