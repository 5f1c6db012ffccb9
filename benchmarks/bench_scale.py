#!/usr/bin/env python3
"""Scaling of ``clf.classify(paths, workers=N)`` on one machine: throughput, efficiency, memory.

Synthetic captures are built by ``tools/gen_captures.py synthetic`` into ``bench-data/scale/``
(git-ignored; ``--generate`` writes them), real ones by ``benchmarks/make_workloads.py``:

* **many files**: ``many-*.pcap`` (24 x 125k packets, 3.6 GB): one file per task.
* **one large file**: ``large-2400k.pcap`` (2.4M packets, 2.9 GB): the capture is split by flow,
  both ways: ``threads`` (the default: read once, N threads share reading and the N flow-table
  shards) and ``processes`` (``KZFILTER_SPLIT=processes``: N processes each read the whole capture
  and keep their shard).
* **real capture**: ``bench-data/real-8m/real.pcap`` (8M frames of the nDPI captures' traffic,
  3.3 GB: ``make_workloads.py --only real --real-packets 8000000 --out bench-data/real-8m``), split
  the same two ways, when it exists.
* shorter captures, where the fixed costs of a split (starting the threads, the memory of the
  batches in flight, the last chunk's merge) weigh more: ``large-600k.pcap`` (735 MB),
  ``large-300k.pcap`` (364 MB) and the 2M-frame ``bench-data/real.pcap`` of the classify
  benchmark (820 MB).  The three synthetic sizes also show that memory is flat in capture size.

Each configuration runs in a fresh Python process, so peak RSS is clean: the parent's
``ru_maxrss`` (RUSAGE_SELF) and the largest worker's (RUSAGE_CHILDREN).  Those include the pages of
the memory-mapped capture the reader has touched (file-backed, shared with the page cache and
reclaimable, so they grow with the capture); the memory the process itself allocates is
``RssAnon``, sampled every 10 ms from /proc for the parent and each worker (peak reported).
CPU time (parent + workers, user + system) is reported too: on a shared machine wall-clock
efficiency depends on the other load, the CPU ratio ``cpu(N) / cpu(1)`` does not.  Wall time covers the whole
``classify`` call: process start, loading the rules in each worker, reading, flow tracking,
verdicts, and handing the records to the parent (which counts them).  Efficiency of N workers is
``t(1) / (N * t(N))``.  The machine's load average is recorded before and after each run, since
the machine may be shared.

Usage::

    python benchmarks/bench_scale.py --generate            # once: write bench-data/scale/
    python benchmarks/bench_scale.py --rules bench-data/rules.kzr --plot docs/scaling.png
    python -m pytest benchmarks/bench_scale.py --benchmark-only   # the same runs, pytest-benchmark

``--rules`` is a compiled ``.kzr`` (``kzfilter compile``) or rule files; default: the demo rules.
The plot needs matplotlib (the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pagecache import as_read_from_disk  # noqa: E402
DATA = REPO / "bench-data" / "scale"
DEMO_RULES = [str(REPO / "pcaps" / n) for n in ("demo-blocklist.csv", "demo-vpn.netset", "demo-exceptions.txt")]

MANY_FILES = 24   # 3.6 GB: a run long enough (~2 s) that starting the workers (~0.1 s) is not the story
WORKLOADS = {
    "many files": lambda d: [str(d / f"many-{i}.pcap") for i in range(MANY_FILES)],
    "one large file": lambda d: [str(d / "large-2400k.pcap")],
    "real capture": lambda d: [str(d.parent / "real-8m" / "real.pcap")],
    "600k packets": lambda d: [str(d / "large-600k.pcap")],
    "real, 2M frames": lambda d: [str(d.parent / "real.pcap")],
    "300k packets": lambda d: [str(d / "large-300k.pcap")],
}
SPLITS = ("threads", "processes")   # how a capture is split when workers outnumber captures
# Workloads that only feed the memory comparison (one capture at growing sizes).
MEMORY_SIZES = (("300k packets", "300k packets"), ("600k packets", "600k packets"),
                ("one large file", "2.4M packets"))

_CHILD = r"""
import json, multiprocessing, os, resource, sys, threading, time
sys.path.insert(0, {src!r})
from kzfilter.cli import _load_classifier

def anon_kb(pid):
    try:
        with open(f"/proc/{{pid}}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

peak = {{"parent": 0, "worker": 0}}
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak["parent"] = max(peak["parent"], anon_kb(os.getpid()))
        for child in multiprocessing.active_children():
            peak["worker"] = max(peak["worker"], anon_kb(child.pid))
        time.sleep(0.01)

rules, paths, workers = {rules!r}, {paths!r}, {workers!r}
t0 = time.perf_counter()
clf = _load_classifier(rules, strict=False)
t_load = time.perf_counter() - t0
threading.Thread(target=sample, daemon=True).start()
res = clf.classify(paths, workers=workers)
c0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
records = 0
for batch in res.batches():
    records += len(batch)
secs = time.perf_counter() - t0
stop.set()
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (me.ru_utime + me.ru_stime - c0.ru_utime - c0.ru_stime) + kids.ru_utime + kids.ru_stime
print(json.dumps(dict(seconds=secs, cpu_s=cpu, load_rules_s=t_load, records=records,
                      packets=res.counters.get("flows", {{}}).get("packets", 0),
                      bytes=sum(os.path.getsize(p) for p in paths),
                      rss_parent_mb=me.ru_maxrss / 1024, rss_worker_mb=kids.ru_maxrss / 1024,
                      anon_parent_mb=peak["parent"] / 1024, anon_worker_mb=peak["worker"] / 1024)))
"""


def generate(data: Path) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import gen_captures as gc

    data.mkdir(parents=True, exist_ok=True)
    jobs = [("large-300k.pcap", 300_000, 2000, gc.SEED), ("large-600k.pcap", 600_000, 2000, gc.SEED),
            ("large-2400k.pcap", 2_400_000, 2000, gc.SEED)]
    jobs += [(f"many-{i}.pcap", 125_000, 1000, 1000 + i) for i in range(MANY_FILES)]
    for name, packets, concurrent, seed in jobs:
        if not (data / name).exists():
            gc.write_synthetic(str(data / name), packets, concurrent=concurrent, seed=seed)


def run_one(rules: list[str], paths: list[str], workers: int, split: str | None = None) -> dict:
    """One classification in a fresh interpreter; returns its measurements.

    ``split`` ("threads" or "processes") is how a capture is split when workers outnumber the
    captures.  BLAS is held to one thread: numpy's idle BLAS threads spin on the measured cores.
    """
    code = _CHILD.format(src=str(REPO / "src"), rules=rules, paths=paths, workers=workers)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # Modules imported on first use (kzfilter.parallel, kzfilter.threaded) load from cached
    # bytecode, as in an installed package: without it, compiling them (~20 ms) lands in the
    # timed run of N workers only.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if split:
        env["KZFILTER_SPLIT"] = split
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(workers=workers, split=split, config=f"{workers} {split}" if split else str(workers),
               load_before=load_before, load_after=os.getloadavg()[0])
    row["mpackets_s"] = row["packets"] / row["seconds"] / 1e6
    row["mb_s"] = row["bytes"] / row["seconds"] / 1e6
    return row


_BURN = "import time; t = time.perf_counter(); s = 0\nfor i in range(15_000_000): s += i\n"


_READ_CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, {src!r})
from kzfilter import threaded
from kzfilter.flow._table import FlowTable, FrameDispatch
from kzfilter.packet._capture import CaptureReader
path, workers = {path!r}, {workers}
reader = CaptureReader(path)
dispatch = FrameDispatch([FlowTable(shard_count=2, shard_index=k) for k in range(2)], workers)
dispatch.fill(reader, 0, threaded.HEAD_FRAMES)
with CaptureReader(path) as counting:            # batches of the mean record length, as the
    mean = reader.size / max(1, counting.drain())   # threads size them once they have read some
origin, span = reader.position, threaded.batch_bytes(mean)
nb = max(1, -(-(reader.size - origin) // span))
lock, state = threading.Lock(), dict(next=0, frames=0)

def work(slot):
    while True:
        with lock:
            b = state["next"]
            state["next"] += 1
        if b >= nb:
            return
        at = origin + b * span
        n = dispatch.read_span(reader, slot, at, at + span if b < nb - 1 else 1 << 62)
        with lock:
            state["frames"] += n

t = time.perf_counter()
threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
for th in threads:
    th.start()
for th in threads:
    th.join()
print(json.dumps(dict(seconds=time.perf_counter() - t, frames=state["frames"], batches=nb)))
"""


def reading_alone(path: str, workers: list[int], repeat: int) -> list[dict]:
    """Reading one capture alone (record chain, dissection, events for 2 shards; no flow table):
    N threads each reading whole batches (FrameDispatch.read_span), in a fresh interpreter,
    interleaved, fastest kept.  The part of a split capture that one thread did alone before
    batches were read as byte ranges."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runs: dict[int, list[dict]] = {n: [] for n in workers}
    for _ in range(repeat):
        for n in workers:
            code = _READ_CHILD.format(src=str(REPO / "src"), path=path, workers=n)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True, env=env)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for n in workers:
        best = min(runs[n], key=lambda r: r["seconds"])
        best.update(workload="reading alone", workers=n, config=f"{n} reading",
                    mpackets_s=best["frames"] / best["seconds"] / 1e6)
        rows.append(best)
    for r in rows:
        r["efficiency"] = rows[0]["seconds"] / (r["workers"] * r["seconds"])
        print(f"reading alone      threads={r['workers']:<3} {r['seconds']:7.3f} s  "
              f"{r['mpackets_s']:.2f} Mframes/s  efficiency {r['efficiency']:.0%}", file=sys.stderr)
    return rows


def _wall(cmds: list[list[str]]) -> float:
    t0 = time.perf_counter()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, env=env) for c in cmds]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def calibrate(rules: list[str], paths: list[str], workers: int) -> dict[str, float]:
    """The machine's own parallel efficiency right now, two ways (1.0 = N cores fully available):

    * ``cpu_loop``: a pure-Python loop run alone, then in N processes at once: t(1) / t(N).
    * ``independent``: N *independent* one-worker kzfilter processes, each on 1/N of the files
      (no kzfilter.parallel at all), against one such process alone: t(alone) / t(all at once).
      This is the ceiling for kzfilter's own efficiency on this workload: it includes memory
      bandwidth and page-cache traffic that the processes share, and the other load.
    """
    burn = [sys.executable, "-c", _BURN]
    cpu_loop = min(_wall([burn]) for _ in range(2)) / min(_wall([burn] * workers) for _ in range(2))
    parts = [paths[k::workers] for k in range(workers)]
    cmds = [[sys.executable, "-c", _CHILD.format(src=str(REPO / "src"), rules=rules, paths=part, workers=1)]
            for part in parts]
    alone = min(_wall([cmds[0]]) for _ in range(2))
    together = min(_wall(cmds) for _ in range(2))
    return {"cpu_loop": cpu_loop, "independent": alone / together}


def measure(rules: list[str], data: Path, workers: list[int], repeat: int) -> list[dict]:
    rows = []
    many = WORKLOADS["many files"](data)
    calib = {n: calibrate(rules, many, n) for n in workers if n > 1 and len(many) >= n}
    ceiling = {n: c["independent"] for n, c in calib.items()}
    for n, c in calib.items():
        print(f"machine ceiling with {n} processes: pure-CPU loop {c['cpu_loop']:.0%}, independent "
              f"kzfilter processes on 1/{n} of the files each {c['independent']:.0%} "
              f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", file=sys.stderr)
    for name, pick in WORKLOADS.items():
        paths = pick(data)
        if not paths or not all(Path(p).exists() for p in paths):
            print(f"skip {name}: no captures in {data} (run with --generate)", file=sys.stderr)
            continue
        # Interleaved (1, 2, 1, 2, ...) so a burst of other load hits all alike; fastest kept.
        configs = [(n, None) if n == 1 or n <= len(paths) else (n, sp) for n in workers
                   for sp in ((None,) if n == 1 or n <= len(paths) else SPLITS)]
        runs: dict[tuple, list[dict]] = {c: [] for c in configs}
        as_read_from_disk(paths)
        for _ in range(repeat):
            for n, sp in configs:
                runs[(n, sp)].append(run_one(rules, paths, n, sp))
        for n, sp in configs:
            best = min(runs[(n, sp)], key=lambda r: r["seconds"])
            best["cpu_s"] = min(r["cpu_s"] for r in runs[(n, sp)])
            best["workload"] = name
            rows.append(best)
            print(f"{name:<18} workers={best['config']:<12} {best['seconds']:7.2f} s  cpu {best['cpu_s']:6.2f} s  "
                  f"{best['mpackets_s']:.3f} Mpkt/s  {best['mb_s']:6.1f} MB/s  peak RSS parent "
                  f"{best['rss_parent_mb']:.0f} MB (anon {best['anon_parent_mb']:.0f}), worker "
                  f"{best['rss_worker_mb']:.0f} MB (anon {best['anon_worker_mb']:.0f})  (load "
                  f"{best['load_before']:.1f}->{best['load_after']:.1f})", file=sys.stderr)
    for name in WORKLOADS:
        one = [r for r in rows if r["workload"] == name and r["workers"] == 1]
        for r in rows:
            if r["workload"] == name and one:
                r["efficiency"] = one[0]["seconds"] / (r["workers"] * r["seconds"])
                # CPU spent relative to one worker: 1.0 means no parallel overhead at all, so
                # on idle cores the efficiency would be close to 1 / this ratio.
                r["cpu_ratio"] = r["cpu_s"] / one[0]["cpu_s"]
                if r["workers"] in ceiling:
                    r["machine_ceiling"] = ceiling[r["workers"]]
                    r["efficiency_vs_ceiling"] = r["efficiency"] / ceiling[r["workers"]]
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Throughput and efficiency per workload; anonymous RSS per worker at two capture sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["workload"] in WORKLOADS]     # not "reading alone"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    names = [n for n in ("many files", "one large file", "real capture")
             if any(r["workload"] == n for r in rows)]
    configs = sorted({r.get("config", str(r["workers"])) for r in rows},
                     key=lambda c: (int(c.split()[0]), c))
    width = 0.8 / max(1, len(configs))
    colors = {c: f"C{i}" for i, c in enumerate(configs)}       # one colour per configuration

    def label(c: str) -> str:
        n = int(c.split()[0])
        if " " in c:
            return f"{n} worker(s), {c.split()[1]}"
        return f"{n} worker(s)" + (", one file per task" if n > 1 else "")

    def row(w: str, c: str) -> dict:
        return next((r for r in rows if r["workload"] == w and r.get("config", str(r["workers"])) == c), {})

    for j, c in enumerate(configs):
        n = int(c.split()[0])
        vals = [row(w, c).get("mpackets_s", 0) for w in names]
        bars = ax1.bar([i + j * width for i in range(len(names))], vals, width, label=label(c),
                       color=colors[c])
        for b, w in zip(bars, names):
            r = row(w, c)
            if r.get("efficiency") is not None and n > 1:
                text = f"{r['efficiency']:.0%}"
                ax1.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()),
                             ha="center", va="bottom", fontsize=8)
    ax1.set_xticks([i + width * (len(configs) - 1) / 2 for i in range(len(names))], names)
    ax1.set_ylabel("million packets / s")
    ax1.set_title("Throughput (label: efficiency per worker)", fontsize=10)
    ax1.legend(loc="lower left", fontsize=7)
    ax1.margins(y=0.2)
    sizes = list(MEMORY_SIZES)
    mem_configs = [c for c in configs if c == "1" or c.endswith("threads") or c.endswith("processes")]
    width2 = 0.8 / max(1, len(mem_configs))
    for j, c in enumerate(mem_configs):
        vals = []
        for w, _ in sizes:
            r = row(w, c)
            # processes: the largest worker's own memory; threads and one worker: the process
            vals.append(r.get("anon_worker_mb", 0) if c.endswith("processes") else r.get("anon_parent_mb", 0))
        ax2.bar([i + j * width2 for i in range(len(sizes))], vals, width2, label=label(c),
                color=colors[c])
    ax2.set_xticks([i + width2 * (len(mem_configs) - 1) / 2 for i in range(len(sizes))], [s for _, s in sizes])
    ax2.set_ylabel("peak anonymous RSS per process, MB")
    ax2.set_title("Memory per process vs capture size", fontsize=10)
    ax2.legend(loc="lower left", fontsize=7)
    load = max(r["load_after"] for r in rows)
    fig.suptitle(f"kzfilter classify on {os.cpu_count()} cores (machine load up to {load:.1f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", nargs="+", default=DEMO_RULES, help="rule files or one .kzr")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the fastest is kept)")
    ap.add_argument("--generate", action="store_true", help="write the captures into --data first")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    ap.add_argument("--replot", metavar="JSON", help="only plot the measurements of an earlier --json")
    args = ap.parse_args(argv)
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), Path(args.plot or "scaling.png"))
        return 0
    data = Path(args.data)
    if args.generate:
        generate(data)
    workers = [int(w) for w in args.workers.split(",")]
    rows = measure(args.rules, data, workers, args.repeat)
    large = WORKLOADS["one large file"](data)[0]
    if Path(large).exists():
        as_read_from_disk([large])
        rows += reading_alone(large, workers, args.repeat)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot and rows:
        plot(rows, Path(args.plot))
    print(json.dumps(rows, indent=1))
    return 0


# -- pytest-benchmark: the same runs, one group per workload (1 and 2 workers side by side) --------
try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("workers, split", [(1, None), (2, "threads"), (2, "processes")])
    @pytest.mark.parametrize("workload", ["many files", "one large file", "real capture"])
    def test_scale(benchmark, workload, workers, split):
        paths = WORKLOADS[workload](DATA)
        if not paths or not all(Path(p).exists() for p in paths):
            pytest.skip(f"no captures in {DATA}: python benchmarks/bench_scale.py --generate "
                        f"(real capture: python benchmarks/make_workloads.py)")
        if split == "processes" and len(paths) >= workers:
            pytest.skip("one file per task: nothing is split")
        benchmark.group = f"scale: {workload}"
        as_read_from_disk(paths, once=True)
        holder = {}

        def once():
            holder["row"] = run_one(DEMO_RULES, paths, workers, split)

        benchmark.pedantic(once, rounds=1, iterations=1)
        benchmark.extra_info.update(holder["row"])


    @pytest.mark.parametrize("workers", [1, 2])
    def test_reading_alone(benchmark, workers):
        path = WORKLOADS["one large file"](DATA)[0]
        if not Path(path).exists():
            pytest.skip(f"no captures in {DATA}: python benchmarks/bench_scale.py --generate")
        benchmark.group = "scale: reading one capture alone"
        as_read_from_disk([path], once=True)
        holder = {}

        def once():
            holder["row"] = reading_alone(path, [workers], 1)[0]

        benchmark.pedantic(once, rounds=1, iterations=1)
        benchmark.extra_info.update(holder["row"])


if __name__ == "__main__":
    sys.exit(main())
