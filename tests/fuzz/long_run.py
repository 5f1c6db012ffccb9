"""Long fuzzing runs of every harness, with a summary table for docs/robustness.md.

Usage (see tests/fuzz/README.md for the instrumented build)::

    KZFILTER_DEBUG=fuzz CC=clang-14 python setup.py build_ext --inplace   # in a copy of the tree
    python tests/fuzz/long_run.py --seconds 600 --jobs 2 --pythonpath /tmp/kzfuzz/src \
        --corpus /tmp/kzfuzz-corpus --out /tmp/kzfuzz-results.json

With ``--pythonpath`` pointing at a ``KZFILTER_DEBUG=fuzz`` build, atheris's ``asan_with_fuzzer.so``
is preloaded, so the C code gives edge coverage and ASan/UBSan reports.  A harness that crashes
is restarted (up to ``--max-crashes`` times) until its time is used; every crash input is kept
under ``<corpus>/../artifacts``.  The corpus directories persist between runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STAT = re.compile(r"stat::(\w+):\s+(\d+)")
COV = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")


def seed_corpus(harness: str, directory: Path, env: dict) -> None:
    if directory.exists() and any(directory.iterdir()):
        return
    directory.mkdir(parents=True, exist_ok=True)
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import _common, {harness} as h; "
            f"from pathlib import Path; print(_common.write_corpus(h.seeds(), Path({str(directory)!r})))")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True)


def run_one(harness: str, seconds: int, corpus: Path, artifacts: Path, env: dict, max_crashes: int) -> dict:
    seed_corpus(harness, corpus / harness, env)
    result = {"harness": harness, "seconds": 0.0, "execs": 0, "crashes": [], "cov": 0, "ft": 0,
              "corpus": 0, "peak_rss_mb": 0, "runs": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline - 5 and len(result["crashes"]) < max_crashes:
        left = int(deadline - time.monotonic())
        t0 = time.monotonic()
        cmd = [sys.executable, str(HERE / f"{harness}.py"), f"-max_total_time={left}", "-timeout=60",
               "-rss_limit_mb=3072", "-print_final_stats=1", f"-artifact_prefix={artifacts}/{harness}-",
               str(corpus / harness)]
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        result["seconds"] += time.monotonic() - t0
        result["runs"] += 1
        log = proc.stderr + proc.stdout
        stats = {k: int(v) for k, v in STAT.findall(log)}
        result["execs"] += stats.get("number_of_executed_units", 0)
        result["peak_rss_mb"] = max(result["peak_rss_mb"], stats.get("peak_rss_mb", 0))
        covs = COV.findall(log)
        if covs:
            result["cov"], result["ft"], result["corpus"] = map(int, covs[-1])
        if proc.returncode != 0:
            arts = re.findall(r"Test unit written to (\S+)", log)
            head = next((ln for ln in log.splitlines() if "Error" in ln or "ERROR" in ln), "")
            result["crashes"].append({"artifact": arts[-1] if arts else None, "summary": head[:300],
                                      "log_tail": log[-4000:]})
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pythonpath", default="")
    ap.add_argument("--corpus", default="/tmp/kzfuzz-corpus")
    ap.add_argument("--out", default="/tmp/kzfuzz-results.json")
    ap.add_argument("--max-crashes", type=int, default=3)
    ap.add_argument("harness", nargs="*")
    args = ap.parse_args()
    harnesses = args.harness or sorted(p.stem for p in HERE.glob("fuzz_*.py"))
    corpus = Path(args.corpus)
    artifacts = corpus.parent / (corpus.name + "-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.pythonpath:
        import atheris

        env["PYTHONPATH"] = args.pythonpath
        env["LD_PRELOAD"] = str(Path(atheris.path()) / "asan_with_fuzzer.so")
        env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1"
        env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda h: run_one(h, args.seconds, corpus, artifacts, env,
                                                   args.max_crashes), harnesses))
    Path(args.out).write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"{r['harness']:18} {r['seconds']:7.0f}s {r['execs']:9d} execs  cov {r['cov']:5d} "
              f"corpus {r['corpus']:5d}  rss {r['peak_rss_mb']} MB  crashes {len(r['crashes'])}")
        for c in r["crashes"]:
            print("    ", c["artifact"], c["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
