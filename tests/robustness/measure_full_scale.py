"""Full-scale resource figures for docs/robustness.md (run by hand, not by pytest: minutes, GBs).

    python tests/robustness/measure_full_scale.py scan bench-data/oneflow.pcap [max_flows]
    python tests/robustness/measure_full_scale.py endless 2000000
    python tests/robustness/measure_full_scale.py rules 2000000 [junk]

Each prints one JSON line: wall and CPU seconds, peak RSS growth, and the relevant counters.
The CI-scale versions of the same scenarios are tests/robustness/test_resource_bounds.py.
"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "src")]


def rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def scan(path: str, max_flows: int = 1_000_000) -> dict:
    from kzfilter import Rule, RuleSet

    clf = RuleSet([Rule("example.com"), Rule("192.0.2.0/24")]).compile()
    base, t, c = rss(), time.time(), time.process_time()
    result = clf.classify(path, max_flows=max_flows)
    n = sum(len(b) for b in result.batches())
    return dict(records=n, wall=time.time() - t, cpu=time.process_time() - c,
                rss_growth_mb=(rss() - base) / 2**20, max_flows=max_flows, counters=result.counters["flows"])


def endless(n: int) -> dict:
    from kzfilter.flow._table import FlowTable
    from tests.flow.frames import ACK, SYN, tcp

    syn = tcp("100.64.0.1", 40000, "192.0.2.1", 443, SYN, 0)
    ack = tcp("100.64.0.1", 40000, "192.0.2.1", 443, ACK, 1, 0, b"x" * 1000)
    t0 = 1_768_471_200 * 10**9
    table = FlowTable()
    base, t, c = rss(), time.time(), time.process_time()
    table.process_frame(t0, syn)
    records = 0
    for i in range(0, n, 100_000):
        table.process_frames(((t0 + (i + k + 1) * 10**8, ack) for k in range(100_000)))  # 10 pkt/s
        records += len(table.take_records())
    table.flush()
    records += len(table.take_records())
    return dict(packets=n, records=records, wall=time.time() - t, cpu=time.process_time() - c,
                rss_growth_mb=(rss() - base) / 2**20, counters=table.counters)


def rules(n: int, junk: bool = False) -> dict:
    from kzfilter.rules.loaders import load_rules

    with tempfile.NamedTemporaryFile("wb", suffix=".domains", delete=False) as f:
        for i in range(n):
            f.write(b"\xff\xfejunk %d\n" % i if junk else b"host%d.example%d.com\n" % (i, i % 997))
        name = f.name
    size = Path(name).stat().st_size
    base, t, c = rss(), time.time(), time.process_time()
    rs = load_rules(name, format="domains", strict=not junk)
    t_load = time.time() - t
    rss_load = (rss() - base) / 2**20
    compiled = len(rs.compile()) if len(rs) else 0
    out = dict(lines=n, file_mb=size / 2**20, rules=len(rs), compiled=compiled, skipped=rs.skipped,
               load_wall=t_load, wall=time.time() - t, cpu=time.process_time() - c,
               rss_after_load_mb=rss_load, rss_growth_mb=(rss() - base) / 2**20)
    Path(name).unlink()
    return out


if __name__ == "__main__":
    what, *rest = sys.argv[1:]
    if what == "scan":
        res = scan(rest[0], *(int(x) for x in rest[1:]))
    elif what == "endless":
        res = endless(int(rest[0]))
    else:
        res = rules(int(rest[0]), junk=bool(rest[1:]))
    print(json.dumps(res))
