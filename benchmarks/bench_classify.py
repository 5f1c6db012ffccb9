"""Capture classification: kzfilter's pipeline against a dpkt loop, ndpiReader and NFStream.

Run (about 6-10 minutes on 2 cores; the workloads first, once)::

    python benchmarks/make_workloads.py            # bench-data/{real,synthetic,oneflow}.pcap
    PYTHONPATH=src pytest benchmarks/bench_classify.py --benchmark-only \\
        --benchmark-columns=min,median,max,rounds --benchmark-sort=name

One group per workload (``classify-real``, ``classify-synthetic``, ``classify-oneflow``), the
implementations side by side:

================================  ====================================================  =======
name                              what runs                                              frames
================================  ====================================================  =======
``floor-read-bytes``              read the file's bytes in 1 MiB chunks                  all
``floor-drain``                   ``CaptureReader.drain()``: frame headers, no dissection all
``dpkt-loop``                     :func:`_peers.dpkt_flows` (dict flow table, SNI/Host/   prefix
                                  DNS name via dpkt on the first client payload)
``ndpiReader``                    ``ndpiReader -i FILE -q`` (full nDPI DPI), subprocess   all [1]
``nfstream``                      NFStream, one meter, statistics off                     prefix
``kzfilter-flowtable``            ``FlowTable.process_reader`` + ``flush`` +              all
                                  ``take_records`` (no verdicts)
``kzfilter-classify-prefix``      the whole pipeline on the prefix (like-for-like with    prefix
                                  the dpkt loop and NFStream)
``kzfilter-classify``             the whole pipeline: ``clf.classify(path).batches()``    all
                                  (CaptureReader -> FlowTable -> apply_verdicts)
================================  ====================================================  =======

[1] on ``oneflow`` ndpiReader reads the prefix (a million one-packet flows take it minutes).

The prefix is the first ``KZ_BENCH_PREFIX`` (200,000) frames, cut with editcap and cached in
bench-data.  Rates are frames per second; every benchmark's extra_info carries ``packets``,
``bytes`` (capture file bytes), ``cpu_s`` (user+sys of this process and its children: on a shared
machine the wall time includes waiting for a core) and the rates by wall and by CPU.  The
``kzfilter-classify`` benchmark's extra_info["ratios"] compares it with every peer measured before
it in the same run (kzfilter rate / peer rate, by wall and by CPU time).  The memory group runs
classify in a subprocess on two sizes of the synthetic capture and reports its peak RSS from
/proc/self/status: ``VmHWM`` (all resident pages, including the mmap'ed capture's page-cache pages,
which the kernel drops at will), and the peaks of ``RssFile`` and ``RssAnon`` (heap: what the
pipeline itself allocates), sampled every 5 ms.  (``ru_maxrss`` is not used: Linux carries it over
from the forked pytest process through exec.)
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # noqa: E402
from conftest import BENCH_DATA, PREFIX, prefix_path, workload_packets, workload_path  # noqa: E402

from kzfilter.classify import apply_verdicts  # noqa: E402
from kzfilter.flow._table import FlowTable  # noqa: E402
from kzfilter.packet._capture import CaptureReader  # noqa: E402

WORKLOADS = [w for w in os.environ.get("KZ_BENCH_WORKLOADS", "real,synthetic,oneflow").split(",") if w]
IMPLS = ["floor-read-bytes", "floor-drain", "dpkt-loop", "ndpiReader", "nfstream",
         "kzfilter-flowtable", "kzfilter-classify-prefix", "kzfilter-classify"]
PEERS = ["dpkt-loop", "ndpiReader", "nfstream"]
FLOORS = ["floor-drain", "floor-read-bytes"]
# Rounds for whole-file runs of kzfilter and the floors (peers: 1 round; they are the slow part).
KZ_ROUNDS = int(os.environ.get("KZ_BENCH_ROUNDS", "3"))
TARGETS = {"real": 1_000_000, "synthetic": 1_000_000, "oneflow": 300_000}
# workload -> impl -> measured figures (filled as the benchmarks run; printed at the end).
RESULTS: dict[str, dict[str, dict[str, Any]]] = {}
PIPELINE: dict[str, str] = {}


# ---- kzfilter ---------------------------------------------------------------------------------------

def _classify_loop(clf: Any, path: Path) -> int:
    """The pipeline by hand (CaptureReader -> FlowTable -> apply_verdicts), for a classify() that fails."""
    reader = CaptureReader(str(path))
    try:
        table = FlowTable(capture_name=str(path))
        table.process_reader(reader)
        table.flush()
        return len(apply_verdicts(clf, table.take_records()))
    finally:
        reader.close()


def kz_classify(clf: Any, path: Path) -> int:
    """Records of ``clf.classify(path)``, streamed batch by batch (nothing kept)."""
    if PIPELINE.get("mode") == "loop":
        return _classify_loop(clf, path)
    return sum(len(b) for b in clf.classify(path).batches())


def pick_pipeline(clf: Any, sample: Path) -> str:
    """Use ``clf.classify()`` when it runs here; else the equivalent loop (and say why)."""
    if "mode" not in PIPELINE:
        try:
            sum(len(b) for b in clf.classify(sample).batches())
            PIPELINE.update(mode="classify", note="clf.classify(path).batches()")
        except TypeError as exc:
            PIPELINE.update(mode="loop", note=f"equivalent loop (classify() failed: {exc})")
    return PIPELINE["note"]


def kz_flowtable(path: Path) -> int:
    reader = CaptureReader(str(path))
    try:
        table = FlowTable(capture_name=str(path))
        table.process_reader(reader)
        table.flush()
        return len(table.take_records())
    finally:
        reader.close()


def drain(path: Path) -> int:
    with CaptureReader(str(path)) as reader:
        return int(reader.drain())


def read_bytes(path: Path) -> int:
    total = 0
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                return total
            total += n


# ---- measuring --------------------------------------------------------------------------------------

def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(benchmark: Any, workload: str, impl: str, fn: Callable[[], Any], packets: int,
            nbytes: int, rounds: int, **info: Any) -> Any:
    """Run ``fn`` under pedantic mode; record wall/CPU rates in extra_info and RESULTS."""
    cpus: list[float] = []
    outs: list[Any] = []

    def timed() -> Any:
        c0 = _cpu()
        out = fn()
        cpus.append(_cpu() - c0)
        outs.append(out)
        return out

    benchmark.group = f"classify-{workload}"
    benchmark.name = impl
    result = benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
    wall = benchmark.stats.stats.min
    cpu = min(cpus)
    row = {"packets": packets, "bytes": nbytes, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
           "pps_wall": round(packets / wall), "pps_cpu": round(packets / cpu) if cpu > 0 else None,
           "MBps_wall": round(nbytes / wall / 1e6, 1),
           "MBps_cpu": round(nbytes / cpu / 1e6, 1) if cpu > 0 else None, **info}
    benchmark.extra_info.update(row)
    RESULTS.setdefault(workload, {})[impl] = row
    return result


def ratios(workload: str, impl: str) -> dict[str, dict[str, float]]:
    """kzfilter rate / peer rate for every peer measured so far on this workload."""
    mine = RESULTS[workload][impl]
    out = {}
    for peer in PEERS:
        other = RESULTS[workload].get(peer)
        if other is None:
            continue
        # dpkt and NFStream read the prefix: compare with kzfilter on the same prefix.
        base = RESULTS[workload].get("kzfilter-classify-prefix", mine) if other.get("prefix") else mine
        out[peer] = {k: round(base[k] / other[k], 2) for k in ("pps_wall", "pps_cpu")
                     if base.get(k) and other.get(k)}
    for floor in FLOORS:  # the share of classify's time a bare read of the file takes
        other = RESULTS[workload].get(floor)
        if other is not None:
            out[f"{floor} share"] = {k: round(other[k] / mine[k], 2) for k in ("wall_s", "cpu_s")
                                     if mine.get(k)}
    return out


# ---- the benchmark ----------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_classify(benchmark: Any, classifier: Any, workload: str, impl: str) -> None:
    path = workload_path(workload)
    packets = workload_packets(workload, path)
    size = path.stat().st_size
    big = size > 200_000_000
    full_rounds = max(1, KZ_ROUNDS - (1 if big else 0))

    if impl == "floor-read-bytes":
        got = measure(benchmark, workload, impl, lambda: read_bytes(path), packets, size, full_rounds)
        assert got == size
    elif impl == "floor-drain":
        got = measure(benchmark, workload, impl, lambda: drain(path), packets, size, full_rounds)
        assert got == packets
    elif impl == "kzfilter-flowtable":
        got = measure(benchmark, workload, impl, lambda: kz_flowtable(path), packets, size, full_rounds)
        benchmark.extra_info["records"] = got
        assert got > 0
    elif impl in ("kzfilter-classify", "kzfilter-classify-prefix"):
        target, frames = (path, packets) if impl == "kzfilter-classify" else prefix_path(workload, path, PREFIX)
        note = pick_pipeline(classifier, target)
        got = measure(benchmark, workload, impl, lambda: kz_classify(classifier, target), frames,
                      target.stat().st_size, full_rounds if impl == "kzfilter-classify" else KZ_ROUNDS,
                      pipeline=note, rules=len(classifier), prefix=target != path)
        benchmark.extra_info["records"] = got
        if impl == "kzfilter-classify":
            benchmark.extra_info["ratios"] = ratios(workload, impl)
            benchmark.extra_info["target_pps"] = TARGETS.get(workload)
        assert got > 0
    elif impl == "dpkt-loop":
        if _peers.dpkt_missing():
            pytest.skip(_peers.dpkt_missing())
        out = measure(benchmark, workload, impl, lambda: _peers.dpkt_flows(path, PREFIX),
                      min(PREFIX, packets), prefix_path(workload, path, PREFIX)[0].stat().st_size, 1,
                      prefix=True)
        benchmark.extra_info.update(flows=out["flows"], names=out["names"])
        assert out["packets"] == min(PREFIX, packets)
    elif impl == "ndpiReader":
        if _peers.ndpireader_missing():
            pytest.skip(_peers.ndpireader_missing())
        target, frames = (path, packets)
        if workload == "oneflow":
            target, frames = prefix_path(workload, path, PREFIX)
        measure(benchmark, workload, impl, lambda: _peers.run_ndpireader(target), frames,
                target.stat().st_size, 1, prefix=target != path)
    elif impl == "nfstream":
        if _peers.nfstream_missing():
            pytest.skip(_peers.nfstream_missing())
        target, frames = prefix_path(workload, path, PREFIX)
        try:
            out = measure(benchmark, workload, impl, lambda: _peers.run_nfstream(target), frames,
                          target.stat().st_size, 1, prefix=True)
        except Exception as exc:  # NFStream needs libpcap and fork: say why it cannot run here
            pytest.skip(f"nfstream failed to run here: {type(exc).__name__}: {exc}")
        benchmark.extra_info.update(flows=out["flows"], names=out["names"])
    else:  # pragma: no cover
        raise AssertionError(impl)


# ---- memory: peak RSS of classify on two sizes ------------------------------------------------------

_MEMORY_SCRIPT = r"""
import json, sys, threading, time
sys.path[:0] = [sys.argv[4], sys.argv[5]]
import bench_classify as bc
from kzfilter.match.classifier import Classifier

def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0])
    return out

clf = Classifier.load(sys.argv[2])
bc.PIPELINE.update(mode=sys.argv[3], note="")
base = status()
peak = dict(base)
stop = threading.Event()
def sample():
    while not stop.is_set():
        for k, v in status().items():
            peak[k] = max(peak[k], v)
        time.sleep(0.005)
t = threading.Thread(target=sample, daemon=True)
t.start()
t0 = time.perf_counter()
records = bc.kz_classify(clf, sys.argv[1])
wall = time.perf_counter() - t0
stop.set(); t.join()
for k, v in status().items():
    peak[k] = max(peak[k], v)
print(json.dumps({"records": records, "vmhwm_kb": peak["VmHWM"], "anon_base_kb": base["RssAnon"],
                  "anon_peak_kb": peak["RssAnon"], "file_peak_kb": peak["RssFile"], "wall_s": wall}))
"""


def classify_memory(path: Path) -> dict[str, Any]:
    here = Path(__file__).resolve().parent
    cmd = [sys.executable, "-c", _MEMORY_SCRIPT, str(path), str(BENCH_DATA / "rules.kzr"),
           PIPELINE.get("mode", "classify"), str(here), str(here.parent / "src")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("size", ["prefix", "full"])
def test_classify_memory(benchmark: Any, classifier: Any, size: str) -> None:
    path = workload_path("synthetic")
    packets = workload_packets("synthetic", path)
    if size == "prefix":
        path, packets = prefix_path("synthetic", path, PREFIX)
    pick_pipeline(classifier, path)
    benchmark.group = "memory-synthetic"
    benchmark.name = f"classify-rss-{size}"
    out = benchmark.pedantic(lambda: classify_memory(path), rounds=1, iterations=1)
    out.update(packets=packets, bytes=path.stat().st_size, pipeline=PIPELINE.get("note"))
    benchmark.extra_info.update(out)
    RESULTS.setdefault("memory", {})[size] = out
    assert out["records"] > 0


# ---- the printed table ------------------------------------------------------------------------------

def _rate(v: float | None) -> str:
    if not v:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def render_table() -> str:
    lines = []
    for workload, rows in RESULTS.items():
        if workload == "memory":
            continue
        lines.append(f"\n{workload} (target {_rate(TARGETS.get(workload))} pkt/s)")
        lines.append(f"  {'impl':<26} {'frames':>9} {'wall s':>8} {'cpu s':>8} {'pkt/s wall':>11} "
                     f"{'pkt/s cpu':>10} {'MB/s cpu':>9}")
        for impl in IMPLS:
            r = rows.get(impl)
            if r is None:
                continue
            lines.append(f"  {impl:<26} {r['packets']:>9} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
                         f"{_rate(r['pps_wall']):>11} {_rate(r['pps_cpu']):>10} {r['MBps_cpu'] or 0:>9.0f}")
        if "kzfilter-classify" in rows:
            rat = ratios(workload, "kzfilter-classify")
            lines.append("  ratios kzfilter-classify / peer (wall, cpu): " + ", ".join(
                f"{p} {v.get('pps_wall', '-')}x/{v.get('pps_cpu', '-')}x" for p, v in rat.items() if "share" not in p))
            lines.append("  time of a bare read / classify (wall, cpu): " + ", ".join(
                f"{p.split()[0]} {v.get('wall_s', '-')}/{v.get('cpu_s', '-')}" for p, v in rat.items() if "share" in p))
    mem = RESULTS.get("memory")
    if mem:
        lines.append("\nmemory (classify, synthetic): " + "; ".join(
            f"{k}: {v['packets']} frames, VmHWM {v['vmhwm_kb'] / 1024:.0f} MiB, "
            f"RssFile peak {v['file_peak_kb'] / 1024:.0f} MiB, RssAnon peak {v['anon_peak_kb'] / 1024:.0f} MiB (after rules {v['anon_base_kb'] / 1024:.0f})"
            for k, v in mem.items()))
    text = "\n".join(lines)
    out = BENCH_DATA / "classify-results.json"
    try:  # merge: a partial run (-k ...) keeps the other workloads' figures
        saved = json.loads(out.read_text()) if out.exists() else {}
        for workload, rows in RESULTS.items():
            saved.setdefault(workload, {}).update(rows)
        out.write_text(json.dumps(saved, indent=1) + "\n")
    except (OSError, ValueError):
        pass
    return text
