"""The flow table against the nDPI oracle: how many of nDPI's names do we reproduce, and why not?

For every capture of nDPI's test corpus (``shared/data/pcaps/ndpi``) the flow table
(:class:`kzfilter.flow._table.FlowTable` over :class:`kzfilter.packet._capture.CaptureReader`)
runs, and its records are matched to the oracle's flows by transport and *unordered* endpoint pair
(ndpiReader prints the first sender first, not the client; see the oracle README).  Only the
oracle's named TCP/UDP flows of the protocols whose name is a host name are compared: masters
TLS, QUIC, HTTP, DNS and the STARTTLS ones SMTPS, IMAPS, POPS.  Rows whose IPv6 text nDPI printed
invalid (its ``:0:`` -> ``::`` rewrite) cannot be matched to a flow and are left out.

Comparing like with like: ndpiReader does not print the raw name, it prints a normalised one
(oracle README, "What the hostname is").  So :func:`ndpi_output_name` applies nDPI's documented
output transformation to OUR raw name before comparing, never the reverse:

* DNS: each question byte that is printable but outside ``[A-Za-z0-9_-]`` (and not the ``.``
  joining labels) becomes ``_`` (``*.teams.microsoft.com`` -> ``_.teams.microsoft.com``), each
  non-printable byte ``?``;
* the others (SNI, Host): nDPI keeps the name as a C string, so a NUL byte ends it; non-printable
  bytes become ``?`` (a tab a space);
* all: lower-cased, trailing spaces cut, at most 79 characters keeping the END.

Every flow where the two names still differ must be listed, with its reason, in
``tests/flow/oracle_disagreements.tsv`` (explained in ``docs/oracle.md``): the test fails on a
new disagreement and on a fixed one alike, so the file is always the exact list.  Run
``python -m tests.flow.test_oracle`` to print the figures and the rows of a fresh list.
"""
from __future__ import annotations

import csv
import ipaddress
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from kzfilter.flow._table import FlowTable
from kzfilter.packet._capture import CaptureReader
from tests.conftest import shared_path

NAMED_MASTERS = ("TLS", "QUIC", "HTTP", "DNS", "SMTPS", "IMAPS", "POPS")
# Measured 1810/1822 = 0.9934 overall and 1684/1687 = 0.9982 on the captures that are not fuzzed or
# truncated (pcap_families.tsv family "malformed"); docs/oracle.md.  The issue asks for 0.99.
FLOOR = 0.99
FLOOR_UNFUZZED = 0.995
DISAGREEMENTS = Path(__file__).with_name("oracle_disagreements.tsv")
TSV_FIELDS = ("pcap", "l4", "endpoints", "oracle_name", "our_name", "reason")
NDPI_NAME_MAX = 79          # ndpiReader keeps the last 79 characters of a longer name

_DNS_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def ndpi_output_name(raw: bytes, master: str) -> str:
    """Our raw name as ndpiReader would print it (see the module docstring)."""
    out = []
    if master == "DNS":
        for b in raw:
            if b in _DNS_KEEP:
                out.append(chr(b))
            elif 0x20 <= b < 0x7F:
                out.append("_")
            else:
                out.append("?")
    else:
        nul = raw.find(b"\x00")
        if nul >= 0:
            raw = raw[:nul]
        for b in raw:
            if b == 0x09:
                out.append(" ")
            elif 0x20 <= b < 0x7F:
                out.append(chr(b))
            else:
                out.append("?")
    text = "".join(out).lower().rstrip(" ")
    return text[-NDPI_NAME_MAX:]


def escape_name(raw: bytes | None) -> str:
    """Our raw name as TSV-safe text: printable ASCII kept, other bytes (and backslash) as \\xNN;
    ``-`` when there is no name."""
    if raw is None:
        return "-"
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


def _endpoint(ip: str, port: int) -> tuple[bytes, int]:
    return ipaddress.ip_address(ip).packed, port


def _key(l4: str, a: str, pa: int, b: str, pb: int) -> tuple:
    return (l4.lower(),) + tuple(sorted((_endpoint(a, pa), _endpoint(b, pb))))


def _endpoints_text(rec: dict) -> str:
    def one(ip: str, port: int) -> str:
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return f"{one(rec['src_ip'], rec['src_port'])} {rec['arrow']} {one(rec['dst_ip'], rec['dst_port'])}"


def _oracle(ndpi_dir: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    for line in (ndpi_dir / "oracle.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if (rec["l4"] in ("TCP", "UDP") and rec["hostname"]
                and rec["proto_master"] in NAMED_MASTERS
                and rec.get("src_ip_valid", True) and rec.get("dst_ip_valid", True)):
            rows[rec["pcap"]].append(rec)
    return rows


def _our_names(path: Path) -> dict[tuple, list[bytes | None]]:
    table = FlowTable()
    with CaptureReader(str(path)) as reader:
        table.process_reader(reader)
    table.flush()
    batch = table.take_records()
    names: dict[tuple, list[bytes | None]] = defaultdict(list)
    for i, rec in enumerate(batch):
        if rec.transport in ("tcp", "udp"):
            k = _key(rec.transport, rec.client_ip, rec.client_port, rec.server_ip,
                     rec.server_port)
            names[k].append(batch.name_bytes(i))
    return names


def measure(ndpi_dir: Path) -> tuple[dict[str, list[int]], list[dict[str, str]]]:
    """Return ({master: [agree, total]}, disagreement rows with the TSV fields but ``reason``)."""
    per: dict[str, list[int]] = {m: [0, 0] for m in NAMED_MASTERS}
    bad: list[dict[str, str]] = []
    for pcap, expected in sorted(_oracle(ndpi_dir).items()):
        ours = _our_names(ndpi_dir / pcap)
        for exp in expected:
            master = exp["proto_master"]
            per[master][1] += 1
            cands = ours.get(_key(exp["l4"], exp["src_ip"], exp["src_port"], exp["dst_ip"],
                                  exp["dst_port"]), [])
            theirs = exp["hostname"]
            if any(raw is not None and ndpi_output_name(raw, master) == theirs for raw in cands):
                per[master][0] += 1
                continue
            named = [raw for raw in cands if raw is not None]
            bad.append({"pcap": pcap, "l4": exp["l4"], "endpoints": _endpoints_text(exp),
                        "oracle_name": theirs,
                        "our_name": escape_name(named[0] if named else None)})
    return per, bad


def _row_key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[f] for f in TSV_FIELDS[:-1])


def load_disagreements() -> list[dict[str, str]]:
    with DISAGREEMENTS.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def measured() -> tuple[dict[str, list[int]], list[dict[str, str]]]:
    ndpi = shared_path("pcaps", "ndpi")
    shared_path("pcaps", "ndpi", "oracle.jsonl")
    return measure(ndpi)


def test_output_name_transformation():
    # nDPI's documented output rules, checked on the examples the oracle README gives.
    assert ndpi_output_name(b"*.teams.microsoft.com", "DNS") == "_.teams.microsoft.com"
    assert ndpi_output_name(b"a\x01b=c", "DNS") == "a?b_c"
    assert ndpi_output_name(b"WWW.Example.COM \t ", "TLS") == "www.example.com"
    assert ndpi_output_name(b"a\tb\xffc", "HTTP") == "a b?c"
    assert ndpi_output_name(b"%s\x002.20.3.5", "HTTP") == "%s"
    long = b"x" * 30 + b"." + b"y" * 60 + b".example"
    assert ndpi_output_name(long, "DNS") == long.decode()[-79:]
    assert escape_name(b"a\\b\x00") == "a\\x5cb\\x00" and escape_name(None) == "-"


@pytest.mark.shared_data
def test_oracle_name_ratio(measured):
    per, bad = measured
    agree = sum(a for a, _ in per.values())
    total = sum(t for _, t in per.values())
    assert total > 1800
    assert agree / total >= FLOOR, (agree, total, per)


def _fuzzed_pcaps(ndpi_dir: Path) -> set[str]:
    """Captures the data README tags "malformed" (fuzzed, truncated, or giving nDPI no output)."""
    out = set()
    for line in (ndpi_dir / "pcap_families.tsv").read_text().splitlines():
        if line.startswith("#") or line.startswith("name\t"):
            continue
        name, _has, families = line.split("\t")[:3]
        if "malformed" in families.split(","):
            out.add(name)
    return out


@pytest.mark.shared_data
def test_oracle_name_ratio_on_captures_not_fuzzed(measured):
    _, bad = measured
    ndpi = shared_path("pcaps", "ndpi")
    fuzzed = _fuzzed_pcaps(ndpi)
    assert "fuzz-2006-06-26-2594.pcap" in fuzzed
    total = sum(len(rows) for pcap, rows in _oracle(ndpi).items() if pcap not in fuzzed)
    misses = sum(1 for row in bad if row["pcap"] not in fuzzed)
    assert total > 1600
    assert (total - misses) / total >= FLOOR_UNFUZZED, (total, misses)


@pytest.mark.shared_data
def test_oracle_disagreements_listed(measured):
    _, bad = measured
    listed = load_disagreements()
    assert all(row["reason"].strip() for row in listed), "every disagreement needs a reason"
    found = {_row_key(r) for r in bad}
    known = {_row_key(r) for r in listed}
    assert len(known) == len(listed), "duplicate rows in oracle_disagreements.tsv"
    assert found - known == set(), "new disagreements: add them (with a reason) to the TSV"
    assert known - found == set(), "fixed disagreements: remove them from the TSV"


def main(argv: list[str]) -> None:
    ndpi = Path(argv[1]) if len(argv) > 1 else (
        Path(__file__).resolve().parents[3] / "shared" / "data" / "pcaps" / "ndpi")
    per, bad = measure(ndpi)
    reasons = {_row_key(r): r["reason"] for r in load_disagreements()} \
        if DISAGREEMENTS.exists() else {}
    print("\t".join(TSV_FIELDS))
    for row in bad:
        row["reason"] = reasons.get(_row_key(row), "TODO")
        print("\t".join(row[f] for f in TSV_FIELDS))
    agree = sum(a for a, _ in per.values())
    total = sum(t for _, t in per.values())
    for m, (a, t) in per.items():
        if t:
            print(f"# {m}: {a}/{t} = {a / t:.4f}", file=sys.stderr)
    print(f"# all: {agree}/{total} = {agree / total:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
