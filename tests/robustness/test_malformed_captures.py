"""Odd and malformed captures end to end: ``classify(path)`` on every file of the malformed set
(tcpdump's fuzzer finds, 32 link types) and on nDPI's fuzzer-made and cut-short captures.

For each file: no exception but ``CaptureError`` (only for a file that is not a capture); every
frame the reader yields reaches the flow table (``flows.packets == capture.frames``) and is either
attributed to a flow or counted in one skip counter; the records' packet counts add up to the
attributed packets; two runs give the same records (no state leaks between runs).  Where dpkt (an
independent reader) reads a whole file without error, kzfilter reads the same number of frames.
"""
from __future__ import annotations

import io

import dpkt
import numpy as np
import pytest

from kzfilter import CaptureError, Rule, RuleSet
from tests.conftest import shared_path

NDPI_ODD = ["fuzz-2006-06-26-2594.pcap", "fuzz-2006-09-29-28586.pcap", "fuzz-2021-06-07-c6c72a0a56.pcap",
            "fuzz-2021-10-13.pcap", "h323-overflow.pcap", "kerberos_fuzz.pcapng", "malformed_dns.pcap",
            "tls_invalid_reads.pcap", "ossfuzz_seed_fake_traces_1.pcapng", "ossfuzz_seed_fake_traces_4.pcapng",
            "http-crash-content-disposition.pcap", "tls_certificate_too_long.pcap"]
SKIPS = ("skipped_truncated", "skipped_malformed", "skipped_unsupported_link", "skipped_fragment",
         "skipped_not_ip", "skipped_other")


def _files():
    mal = shared_path("pcaps", "malformed")
    ndpi = shared_path("pcaps", "ndpi")
    files = sorted(p for p in mal.iterdir() if p.suffix in (".pcap", ".pcapng"))
    files += [ndpi / n for n in NDPI_ODD if (ndpi / n).exists()]
    return files


def _dpkt_count(path) -> int | None:
    """Frames dpkt reads, or None when dpkt stops on an error (then it is no reference)."""
    data = path.read_bytes()
    try:
        reader = (dpkt.pcapng.Reader if data[:4] == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader)(io.BytesIO(data))
        return sum(1 for _ in reader)
    except Exception:   # noqa: BLE001 - any dpkt failure: not a reference for this file
        return None


@pytest.fixture(scope="module")
def clf():
    return RuleSet([Rule("example.com"), Rule("google.com"), Rule("10.0.0.0/8")]).compile()


def test_every_malformed_capture_end_to_end(clf):
    files = _files()
    assert len(files) >= 100
    summary = {"files": 0, "not_a_capture": 0, "frames": 0, "records": 0, "named": 0,
               "with_error": 0, "dpkt_agree": 0, "dpkt_ref": 0}
    for path in files:
        try:
            result = clf.classify(path)
            batch = result.to_record_batch()
        except CaptureError as exc:
            assert str(path.name) in str(exc) or "capture" in str(exc), exc
            summary["not_a_capture"] += 1
            continue
        summary["files"] += 1
        cap, flows = result.counters["capture"], result.counters["flows"]
        assert flows["packets"] == cap["frames"], (path.name, cap, flows)
        assert flows["packets_attributed"] + sum(flows[k] for k in SKIPS) == flows["packets"], (path.name, flows)
        arr = batch.array
        assert int(arr["packets_c2s"].sum() + arr["packets_s2c"].sum()) == flows["packets_attributed"], path.name
        assert len(batch) == flows["records"] == flows["flows"], (path.name, flows)
        again = clf.classify(path).to_record_batch()
        assert np.array_equal(again.array, batch.array), path.name
        assert list(again.column("name")) == list(batch.column("name"))
        for rec in batch:
            assert (rec.name is None) != (rec.no_name_reason is None), rec.as_dict()
        ref = _dpkt_count(path)
        if ref is not None and not cap.get("error") and not cap["truncated_records"]:
            summary["dpkt_ref"] += 1
            summary["dpkt_agree"] += ref == cap["frames"]
        summary["frames"] += cap["frames"]
        summary["records"] += len(batch)
        summary["named"] += sum(1 for n in batch.column("name") if n)
        summary["with_error"] += bool(cap.get("error") or cap["truncated_records"] or cap["bad_records"])
    print("\nmalformed end to end:", summary)
    assert summary["files"] >= 95
    assert summary["dpkt_agree"] == summary["dpkt_ref"], summary
