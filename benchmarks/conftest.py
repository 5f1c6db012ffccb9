"""Shared fixtures for the benchmarks: workload paths, prefixes of them, the compiled rule set.

Workloads live in ``bench-data/`` (git-ignored), built by ``python benchmarks/make_workloads.py``;
``KZ_BENCH_DATA`` points elsewhere (e.g. a folder of small captures with the same names, to debug).
A missing workload, tool or peer is a skip whose reason says how to build or install it.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# One core: no BLAS worker threads next to the measured code (numpy is imported below).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pagecache import as_read_from_disk  # noqa: E402

BENCH_DATA = Path(os.environ.get("KZ_BENCH_DATA", REPO / "bench-data"))
SHARED = Path(os.environ.get("KZFILTER_SHARED_DATA", REPO.parent / "shared" / "data"))
LISTS = SHARED / "lists"
# Frames in the prefix captures the slow peers (dpkt, NFStream) read.
PREFIX = int(os.environ.get("KZ_BENCH_PREFIX", "200000"))


def rule_sources() -> list[Path]:
    """The benchmark rule set: Citizen Lab kz + global, blocklistproject, x4bnet VPN IPv4."""
    return [LISTS / "citizenlab" / "kz.csv", LISTS / "citizenlab" / "global.csv",
            *sorted(Path(p) for p in glob.glob(str(LISTS / "domains" / "blocklistproject" / "*.txt"))),
            LISTS / "ip" / "x4bnet-vpn" / "vpn-ipv4.txt"]


def workload_path(name: str) -> Path:
    """``bench-data/<name>.pcap``, or a skip naming the command that builds it."""
    path = BENCH_DATA / f"{name}.pcap"
    if not path.exists():
        pytest.skip(f"workload {path} missing: run 'python benchmarks/make_workloads.py --only {name}'")
    as_read_from_disk([str(path)], once=True)      # cached as a capture read from disk is
    return path


def workload_packets(name: str, path: Path) -> int:
    """Frames in the workload: from bench-data/workloads.json when it describes this file, else counted."""
    info = BENCH_DATA / "workloads.json"
    if info.exists():
        entry = json.loads(info.read_text()).get(name, {})
        if entry.get("bytes") == path.stat().st_size and entry.get("packets"):
            return int(entry["packets"])
    from kzfilter.packet._capture import CaptureReader

    with CaptureReader(str(path)) as reader:
        return int(reader.drain())


def prefix_path(name: str, path: Path, frames: int) -> tuple[Path, int]:
    """The first ``frames`` frames of a workload as ``bench-data/<name>-prefix<frames>.pcap`` (cached)."""
    from kzfilter.packet._capture import CaptureReader

    out = path.with_name(f"{name}-prefix{frames}.pcap")
    if not out.exists() or out.stat().st_mtime < path.stat().st_mtime:
        if shutil.which("editcap") is None:
            pytest.skip("editcap missing (to cut prefix captures): apt-get install -y wireshark-common")
        tmp = out.with_suffix(".tmp")
        subprocess.run(["editcap", "-r", str(path), str(tmp), f"1-{frames}"], check=True,
                       capture_output=True)
        tmp.replace(out)
    as_read_from_disk([str(out)], once=True)
    with CaptureReader(str(out)) as reader:
        return out, int(reader.drain())


@pytest.fixture(scope="session")
def classifier():
    """The compiled benchmark rule set, cached as bench-data/rules.kzr (rebuilt when a list is newer)."""
    import kzfilter
    from kzfilter.match.classifier import Classifier

    sources = rule_sources()
    missing = [str(p) for p in sources if not p.exists()]
    if missing or len(sources) < 5:
        pytest.skip(f"rule lists missing under {LISTS}: {missing or 'blocklistproject/*.txt'} "
                    "(set KZFILTER_SHARED_DATA)")
    cache = BENCH_DATA / "rules.kzr"
    newest = max(p.stat().st_mtime for p in sources)
    if cache.exists() and cache.stat().st_mtime >= newest:
        try:
            return Classifier.load(cache)
        except Exception:  # an old format: rebuild below
            pass
    clf = kzfilter.load_rules(*sources, strict=False).compile()
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    clf.save(cache)
    return clf


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # pragma: no cover - output only
    """Print the side-by-side table of bench_classify (if it ran)."""
    mod = sys.modules.get("bench_classify")
    if mod is not None and getattr(mod, "RESULTS", None):
        terminalreporter.write_sep("=", "capture classification: rates and ratios")
        terminalreporter.write_line(mod.render_table())
