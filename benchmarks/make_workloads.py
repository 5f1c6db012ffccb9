#!/usr/bin/env python3
"""Build the benchmark inputs of kzfilter into bench-data/ (git-ignored).

Three workloads, each a classic Ethernet pcap:

``real.pcap``
    The nDPI test captures of ``shared/data/pcaps/ndpi/`` (real traffic of many protocols),
    concatenated and repeated until about ``--real-packets`` packets.  Only captures whose every
    packet is Ethernet are used (capinfos reports their encapsulation as ``ether``): mergecap
    cannot write a pcap with mixed link types, and tcprewrite needs one link type.  This leaves 129
    of the 149 captures (~33.6 k packets); the few Linux-SLL, raw-IP, PPP, HDLC, PPI and null
    captures are skipped and counted.  Steps, with Debian's wireshark-common and tcpreplay tools:

    1. ``editcap -F pcap`` converts each capture (pcapng or nanosecond pcap) to microsecond pcap;
       captures that ``tcprewrite`` cannot edit (two malformed nDPI fuzz captures) are dropped;
    2. ``mergecap -a -F pcap`` concatenates them; nDPI's captures are collages of traces taken
       years apart, so the base is then retimed on one monotonic clock (gaps kept up to 1 s) by
       a small Python pass (:func:`retime_pcap`);
    3. copy 0 is the base itself (so DNS answers still match the addresses they name); copy k > 0
       is ``tcprewrite --seed=k`` (every IPv4/IPv6 address rewritten, distinct per copy,
       checksums updated with them) shifted by ``editcap -t`` past the previous copy, so each is a new
       set of flows later in time;
    4. ``mergecap -a`` concatenates the copies and ``editcap -r ... 1-N`` keeps the first N packets.

    Rewritten copies keep payloads, so names (SNI, Host, DNS questions) repeat, but their DNS
    answers name addresses of copy 0: the DNS-answer path only hits in copy 0.
``synthetic.pcap``
    ``tools/gen_captures.py synthetic``: interleaved TLS/QUIC/HTTP/DNS/bulk flows, ~1.2 KB per
    packet.  When the shared lists exist, blocklisted names (citizenlab kz, a sample of ut1
    gambling) are mixed into its name pool so that matching has hits.
``oneflow.pcap``
    ``tools/gen_captures.py scan``: one TCP SYN per flow (the flow table's worst case).

Each step's time, size and packet count are printed and written to ``bench-data/workloads.json``.

Usage::

    python benchmarks/make_workloads.py                      # all three, default sizes
    python benchmarks/make_workloads.py --only real --real-packets 500000
    python benchmarks/make_workloads.py --synthetic-packets 3000000 --oneflow-flows 2000000

Tools: ``apt-get install -y wireshark-common tcpreplay`` (mergecap, editcap, capinfos,
tcprewrite).  Times are printed and kept in ``bench-data/workloads.json``; a reference run with the
defaults on the 2-core development machine (load ~6-8 from other jobs, so wall times are high):

=============  =========  ========  ======================================  =========
workload       packets    size      contents                                wall time
=============  =========  ========  ======================================  =========
real           2,000,000  820 MB    129 nDPI captures x 60 copies           60 s
synthetic      2,000,000  2.47 GB   26,342 flows, mean frame 1,217 bytes    164-256 s
                                                                            (~50 s CPU)
oneflow        1,000,000  84 MB     1,000,000 one-SYN flows                 43 s
=============  =========  ========  ======================================  =========
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GEN = REPO / "tools" / "gen_captures.py"
SHARED = Path(os.environ.get("KZFILTER_SHARED_DATA", REPO.parent / "shared" / "data"))
TOOLS = {"mergecap": "wireshark-common", "editcap": "wireshark-common",
         "capinfos": "wireshark-common", "tcprewrite": "tcpreplay"}


class WorkloadError(RuntimeError):
    """A tool or an input is missing, or a tool failed."""


def need_tools(names) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pkgs = sorted({TOOLS[n] for n in missing})
        raise WorkloadError(f"missing {', '.join(missing)}: install with "
                            f"'apt-get install -y {' '.join(pkgs)}'")


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkloadError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def capinfos(paths: list[Path]) -> list[dict]:
    """File, encapsulation, packet count, first and last time (epoch seconds) of each capture."""
    out = run(["capinfos", "-T", "-S", "-E", "-c", "-a", "-e", *map(str, paths)])
    rows = list(csv.DictReader(io.StringIO(out), delimiter="\t"))
    return [{"path": Path(r["File name"]), "encap": r["File encapsulation"],
             "packets": int(_number(r["Number of packets"]) or 0),
             "start": _number(r["Start time"]), "end": _number(r["End time"])}
            for r in rows]


def _number(text: str | None) -> float | None:
    """capinfos prints 'n/a' for empty captures and odd text for broken timestamps: None then."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def build_real(src: Path, out: Path, packets: int, work: Path) -> dict:
    """Concatenate the Ethernet nDPI captures, then repeat them with rewritten addresses."""
    need_tools(TOOLS)
    captures = sorted(p for p in src.iterdir() if p.suffix in (".pcap", ".pcapng"))
    if not captures:
        raise WorkloadError(f"no captures in {src}")
    infos = capinfos(captures)
    ether = [i for i in infos if i["encap"] == "ether" and i["packets"]
             and i["start"] is not None and i["end"] is not None]
    bad_time = [i["path"].name for i in infos if i["encap"] == "ether" and i not in ether]
    if bad_time:
        print(f"real: skipped (unreadable timestamps or empty): {bad_time}", file=sys.stderr)
    skipped = sorted({i["encap"] for i in infos} - {"ether"})
    print(f"real: {len(ether)} Ethernet captures of {len(infos)} "
          f"({sum(i['packets'] for i in ether)} packets); skipped link types: {skipped}",
          file=sys.stderr)
    # 1. each capture to microsecond pcap
    parts = []
    for n, info in enumerate(ether):
        part = work / f"part{n:04d}.pcap"
        run(["editcap", "-F", "pcap", str(info["path"]), str(part)])
        parts.append(part)
    # tcprewrite stops at the first packet it cannot edit (e.g. an IPv4 ethertype carrying a
    # version-5 header in nDPI's fuzz captures): try each part once, keep those it accepts.
    rejected = []
    origin = {part: info["path"].name for part, info in zip(parts, ether)}
    for part in list(parts):
        probe = work / "probe.pcap"
        try:
            run(["tcprewrite", "--seed=1", f"--infile={part}", f"--outfile={probe}"])
        except WorkloadError:
            rejected.append(origin[part])
            parts.remove(part)
            part.unlink()
        probe.unlink(missing_ok=True)
    if rejected:
        print(f"real: skipped (tcprewrite cannot edit them): {rejected}", file=sys.stderr)
    joined0 = work / "joined0.pcap"
    run(["mergecap", "-a", "-F", "pcap", "-w", str(joined0), *map(str, parts)])
    for p in parts:
        p.unlink()
    # nDPI's captures are collages of traces taken years apart (spans up to 1.7e9 s) and some are
    # not in time order: retime the base on one monotonic clock, keeping each gap up to 1 s.
    base = work / "base.pcap"
    span = retime_pcap(joined0, base, START_TS_US, max_gap_us=1_000_000) + 1.0
    joined0.unlink()
    base_packets = capinfos([base])[0]["packets"]
    copies = max(1, -(-packets // base_packets))
    # 2. copies with rewritten addresses, each later in time
    shifted = [base]
    for k in range(1, copies):
        rew = work / f"rew{k:04d}.pcap"
        run(["tcprewrite", f"--seed={k}", f"--infile={base}", f"--outfile={rew}"])
        sh = work / f"copy{k:04d}.pcap"
        run(["editcap", "-t", f"{k * span:.6f}", str(rew), str(sh)])
        rew.unlink()
        shifted.append(sh)
    joined = work / "joined.pcap"
    run(["mergecap", "-a", "-F", "pcap", "-w", str(joined), *map(str, shifted)])
    for p in shifted[1:]:
        p.unlink()
    run(["editcap", "-r", str(joined), str(out), f"1-{packets}"])
    joined.unlink()
    base.unlink()
    return {"captures_used": len(parts), "captures_skipped": len(infos) - len(parts),
            "skipped_bad_time": bad_time, "skipped_tcprewrite": rejected,
            "skipped_link_types": skipped, "base_packets": base_packets, "copies": copies}


START_TS_US = 1_768_000_000 * 1_000_000  # 2026-01-09 23:06:40 UTC: any fixed origin


def retime_pcap(src: Path, dst: Path, start_us: int, max_gap_us: int) -> float:
    """Copy a microsecond pcap, giving packets increasing times from ``start_us``.

    Each packet keeps its gap to the previous one when that gap is between 0 and ``max_gap_us``;
    a negative or larger gap becomes 0 or ``max_gap_us``.  Returns the span in seconds.
    """
    import struct
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        head = fi.read(24)
        if len(head) < 24 or head[:4] != b"\xd4\xc3\xb2\xa1":
            raise WorkloadError(f"{src}: not a little-endian microsecond pcap")
        fo.write(head)
        rec = struct.Struct("<IIII")
        prev = None
        now = start_us
        while True:
            h = fi.read(16)
            if len(h) < 16:
                break
            sec, usec, incl, orig = rec.unpack(h)
            data = fi.read(incl)
            t = sec * 1_000_000 + usec
            if prev is not None:
                now += min(max(t - prev, 0), max_gap_us)
            prev = t
            fo.write(rec.pack(now // 1_000_000, now % 1_000_000, incl, orig) + data)
    return (now - start_us) / 1e6


def names_for_synthetic(path: Path) -> Path | None:
    """A name file of blocklisted names to mix into the synthetic capture (None without the lists)."""
    cl = SHARED / "lists" / "citizenlab" / "kz.csv"
    gambling = SHARED / "lists" / "domains" / "ut1" / "gambling.domains"
    names: list[str] = []
    if cl.exists():
        with open(cl, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                host = row["url"].split("//", 1)[-1].split("/", 1)[0].split(":", 1)[0]
                if host:
                    names.append(host.lower())
    if gambling.exists():
        lines = [ln.strip() for ln in gambling.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and not ln.startswith("#")]
        names += random.Random(7).sample(lines, min(2000, len(lines)))
    if not names:
        return None
    path.write_text("\n".join(sorted(set(names))) + "\n", encoding="utf-8")
    return path


def generate(args: list[str]) -> dict:
    """Run tools/gen_captures.py; return the statistics it prints last (one JSON line on stderr)."""
    cmd = [sys.executable, str(GEN), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkloadError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    try:
        stats = json.loads(proc.stderr.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}
    stats.pop("out", None), stats.pop("packets", None), stats.pop("seconds", None)
    if "bytes" in stats:
        stats["frame_bytes"] = stats.pop("bytes")
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench-data"), help="output folder")
    ap.add_argument("--only", default="real,synthetic,oneflow",
                    help="comma-separated subset of real,synthetic,oneflow")
    ap.add_argument("--real-packets", type=int, default=2_000_000)
    ap.add_argument("--synthetic-packets", type=int, default=2_000_000)
    ap.add_argument("--oneflow-flows", type=int, default=1_000_000)
    ap.add_argument("--source", default=str(SHARED / "pcaps" / "ndpi"),
                    help="folder of real captures (default: shared nDPI captures)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [w.strip() for w in a.only.split(",") if w.strip()]
    unknown = set(wanted) - {"real", "synthetic", "oneflow"}
    if unknown:
        ap.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    report_path = out / "workloads.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    try:
        for w in wanted:
            t0 = time.perf_counter()
            target = out / f"{w}.pcap"
            extra: dict = {}
            if w == "real":
                src = Path(a.source)
                if not src.is_dir():
                    raise WorkloadError(f"real captures not found at {src} "
                                        "(set KZFILTER_SHARED_DATA or --source)")
                with tempfile.TemporaryDirectory(dir=out) as tmp:
                    extra = build_real(src, target, a.real_packets, Path(tmp))
            elif w == "synthetic":
                cmd = ["synthetic", "--packets", str(a.synthetic_packets), "--out", str(target)]
                names = names_for_synthetic(out / "synthetic-names.txt")
                if names is not None:
                    cmd += ["--names", str(names)]
                extra = generate(cmd)
            else:
                extra = generate(["scan", "--flows", str(a.oneflow_flows), "--out", str(target)])
            seconds = time.perf_counter() - t0
            need_tools(["capinfos"])
            packets = capinfos([target])[0]["packets"]
            report[w] = {"path": str(target), "packets": packets, "bytes": target.stat().st_size,
                         "seconds": round(seconds, 1), **extra}
            print(f"{w}: {packets} packets, {target.stat().st_size / 1e6:.0f} MB in "
                  f"{seconds:.0f} s -> {target}", file=sys.stderr)
            report_path.write_text(json.dumps(report, indent=1) + "\n")
    except WorkloadError as exc:
        print(f"make_workloads: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
