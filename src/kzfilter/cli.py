"""The ``kzfilter`` command line: ``match``, ``compile`` and ``classify``.

Exit status: 0 success, 1 some queries were invalid (``match``), 2 bad usage or unreadable input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence, TextIO

from .errors import CaptureError, InvalidAddressError, InvalidNameError, KzfilterError

__all__ = ["main"]


def _load_classifier(paths: Sequence[str], strict: bool):
    """Rules from rule files (format detected per file) or from one compiled ``.kzr`` file."""
    from .match.classifier import _MAGIC, Classifier
    from .rules.loaders import load_rules

    if len(paths) == 1:
        with open(paths[0], "rb") as fh:
            if fh.read(len(_MAGIC)) == _MAGIC:
                return Classifier.load(paths[0])
    ruleset = load_rules(*paths, strict=strict)
    if ruleset.skipped:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(ruleset.skipped.items()))
        print(f"kzfilter: skipped rule lines ({skipped})", file=sys.stderr)
    return ruleset.compile()


def _looks_like_address(query: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(query.strip("[]"))
    except ValueError:
        return False
    return True


def _cmd_match(args: argparse.Namespace, out: TextIO) -> int:
    clf = _load_classifier(args.rules, strict=not args.lenient)
    status = 0
    for query in args.query:
        try:
            m = clf.match_ip(query) if _looks_like_address(query) else clf.match_name(query)
        except (InvalidNameError, InvalidAddressError) as exc:
            status = 1
            row = {"query": query, "error": str(exc)}
        else:
            row = m.as_dict() if m is not None else {
                "query": query, "action": None, "category": None, "rule": None, "kind": None,
                "lists": [], "categories": []}
        if args.format == "jsonl":
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif "error" in row:
            out.write(f"{query}\terror\t{row['error']}\n")
        elif row["action"] is None:
            out.write(f"{query}\tno match\n")
        else:
            extra = f"\talso: {', '.join(row['lists'][1:])}" if len(row["lists"]) > 1 else ""
            out.write(f"{query}\t{row['action']}\t{row['category'] or '-'}\t{row['rule']}{extra}\n")
    return status


def _cmd_compile(args: argparse.Namespace, out: TextIO) -> int:
    import time

    t0 = time.perf_counter()
    clf = _load_classifier(args.rules, strict=not args.lenient)
    clf.save(args.output)
    size = Path(args.output).stat().st_size
    print(f"kzfilter: compiled {len(clf)} rules into {args.output} ({size / 1e6:.1f} MB) "
          f"in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


def _partition_keys(text: str) -> tuple[str, ...]:
    from .output import PARTITION_KEYS

    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in PARTITION_KEYS]
    if not keys or bad or len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(PARTITION_KEYS)}, got {text!r}")
    return keys


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes, got {text!r}")
    return n


def _cmd_classify(args: argparse.Namespace, out: TextIO) -> int:
    from .classify import run_classify_cli
    from .output import BINARY_FORMATS

    if (args.format in BINARY_FORMATS or args.partition_by) and not args.output:
        raise KzfilterError(f"the {args.format} format and --partition-by need --output PATH")
    if args.partition_by and args.format not in BINARY_FORMATS:
        raise KzfilterError("--partition-by needs --format parquet or arrow")
    clf = _load_classifier(args.rules, strict=not args.lenient)
    return run_classify_cli(clf, args, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kzfilter", description="Classify names, addresses and captured flows against blocklists.")
    sub = parser.add_subparsers(dest="command", required=True)

    def rules_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rules", "-r", nargs="+", required=True, metavar="FILE",
                       help="rule files (Citizen Lab CSV, hosts, domain list, Adblock, CIDR netset, Zeek "
                            "Intel; format detected per file) or one compiled .kzr file")
        p.add_argument("--lenient", action="store_true",
                       help="skip and count malformed rule lines instead of stopping at the first one")

    p = sub.add_parser("match", help="print the verdict for each host name or IP address")
    p.add_argument("query", nargs="+", help="host names and/or IPv4/IPv6 addresses")
    rules_args(p)
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    p.set_defaults(func=_cmd_match)

    p = sub.add_parser("compile", help="compile rule files into a .kzr file that loads fast")
    rules_args(p)
    p.add_argument("--output", "-o", required=True, metavar="PATH")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("classify", help="one record per flow of the captures, with name and verdict")
    p.add_argument("capture", nargs="+", help="pcap / pcapng files, optionally gzip- or zstd-compressed")
    rules_args(p)
    p.add_argument("--format", "-f", choices=["jsonl", "csv", "table", "parquet", "arrow"], default="table",
                   help="table (for people), jsonl, csv, parquet or arrow (Arrow IPC file / Feather v2; "
                        "parquet and arrow need --output)")
    p.add_argument("--output", "-o", metavar="PATH", help="write records here instead of standard output")
    p.add_argument("--partition-by", type=_partition_keys, default=None, metavar="KEYS",
                   help="capture, date or capture,date: write a Hive-style directory dataset at "
                        "--output (parquet or arrow), one directory per capture file and/or UTC day")
    p.add_argument("--workers", "-j", type=_workers, default=1, metavar="N",
                   help="cores to use (default 1): one capture per process, or, with fewer captures "
                        "than N, each capture read once and its flows split over N threads "
                        "(compressed captures: N processes); same records")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.add_argument("--match-client-ip", action="store_true",
                   help="also match the client address against address rules (rules meant for users)")
    p.set_defaults(func=_cmd_classify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kzfilter`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, sys.stdout))
    except (KzfilterError, CaptureError, OSError) as exc:
        print(f"kzfilter: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kzfilter classify ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
