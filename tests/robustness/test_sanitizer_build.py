"""The sanitizer job: build kzfilter with ASan + UBSan + Cython bounds checks, run the parser,
reassembly, regression and malformed-capture tests against that build.

CI runs a single command (``python3 -m pytest tests -q``), so the job is this test: it copies
``src/`` and ``setup.py`` into a build directory, runs ``KZFILTER_DEBUG=1 python setup.py
build_ext --inplace`` there (``KZFILTER_ONLY`` unset: every module), then runs pytest on a subset
of the suite in a subprocess with the ASan runtime preloaded (``gcc -print-file-name=libasan.so``)
and ``PYTHONPATH`` pointing at the debug copy.  A heap overflow, use after free or undefined
behaviour aborts that subprocess, which fails this test with the sanitizer report.

A missing compiler or libasan FAILS the test (it is a CI requirement, not an optional extra).
The debug build is cached under ``build/sanitizer-<hash of src and setup.py>``, so a second run
on an unchanged tree only runs the tests.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.regressions.known_open import KNOWN_OPEN

REPO = Path(__file__).resolve().parents[2]
# The subset that reads hostile bytes: captures, and the host names taken from them, which the
# name automaton walks byte by byte (its property tests feed it arbitrary names on every batch
# path), and a capture dispatched to flow-table shards (FrameDispatch, kzfilter.threaded).  Left out: the nDPI oracle (slow, a correctness figure, no new code path), the
# resource-bound tests (they assert RSS, which ASan's shadow memory inflates), the fuzz smoke test
# (atheris cannot run over gcc's libasan) and this file.
SUBSET = ["tests/packet", "tests/flow", "tests/regressions", "tests/robustness",
          "tests/match/test_automaton.py",
          # one read of a capture for N shards: the events, and the threads that share them
          "tests/test_parallel.py::test_dispatched_shards_are_the_whole_table",
          "tests/test_parallel.py::test_threads_any_batch_and_slot_count"]
DESELECT = [
    "--ignore=tests/flow/test_oracle.py",
    "--ignore=tests/robustness/test_resource_bounds.py",
    "--ignore=tests/robustness/test_sanitizer_build.py",
]
BUILD_TIMEOUT = 420
TEST_TIMEOUT = 420


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*")):
        if path.suffix in (".pyx", ".pxd", ".pxi", ".py", ".h") or (
                path.suffix == ".c" and "include" in path.parts):
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    h.update((REPO / "setup.py").read_bytes() + (REPO / "pyproject.toml").read_bytes())
    return h.hexdigest()[:16]


def _libasan() -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("the sanitizer job needs gcc (apt-get install gcc): not found on PATH")
    out = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not os.path.isabs(out) or not os.path.exists(out):
        pytest.fail(f"the sanitizer job needs libasan (apt-get install libasan8 / gcc): {gcc} "
                    f"-print-file-name=libasan.so gave {out!r}")
    return out


def _debug_build() -> Path:
    """Return the src/ of an up-to-date debug build, building it if needed."""
    root = REPO / "build" / f"sanitizer-{_source_hash()}"
    marker = root / "BUILD-OK"
    if marker.exists():
        return root / "src"
    for stale in root.parent.glob("sanitizer-*"):     # builds of older sources: ~100 MB each
        shutil.rmtree(stale, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(REPO / "src", root / "src",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__", "*.html"))
    # pyproject.toml too: it maps the packages to src/, without it --inplace copies to ./kzfilter
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    env = dict(os.environ, KZFILTER_DEBUG="1")
    env.pop("KZFILTER_ONLY", None)
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", jobs],
                          cwd=root, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, f"debug build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    built = sorted(p.relative_to(root / "src") for p in (root / "src").rglob("*.so"))
    expected = sorted((REPO / "src").rglob("*.pyx"))
    assert len(built) == len(expected), f"built {built}, expected one per {expected}"
    marker.write_text("ok\n")
    return root / "src"


def test_sanitizer_build_runs_parser_and_reassembly_tests():
    libasan = _libasan()
    src = _debug_build()
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=libasan,
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        PYTHONPATH=os.pathsep.join([str(src), str(REPO)]),
        KZFILTER_SANITIZER_BUILD="1",
    )
    env.pop("KZFILTER_ONLY", None)
    # The subprocess must import the debug copy, and that copy must carry ASan.
    probe = subprocess.run(
        [sys.executable, "-c", "import kzfilter.packet._hostnames as m; print(m.__file__)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-3000:]
    so = Path(probe.stdout.strip())
    assert src in so.parents, f"imported {so}, not the debug build under {src}"
    assert b"__asan_init" in so.read_bytes(), f"{so} was not built with -fsanitize=address"

    # open findings fail their own regression test already (tests/regressions/known_open.py)
    known = [f"--ignore={path}" for path in KNOWN_OPEN.values()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           *SUBSET, *DESELECT, *known]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TEST_TIMEOUT)
    tail = proc.stdout[-6000:] + "\n" + proc.stderr[-12000:]
    assert proc.returncode == 0, f"tests under ASan/UBSan failed (rc {proc.returncode}):\n{tail}"
    assert " passed" in proc.stdout, tail
