"""A short, deterministic run of every atheris harness (the CI part of the fuzzing).

Each harness runs in its own process from its seed corpus for a fixed number of inputs with a
fixed seed, a per-input timeout (a hang fails) and libFuzzer's RSS limit (a memory blow-up fails).
A crash, an uncaught exception, a broken contract assertion, a hang or a leak past the limit makes
the process exit non-zero and this test fail with the fuzzer's report (the input is in it, in
base64, and written under $TMPDIR/kzfuzz-artifacts/).

Budget: all harnesses together about 2 minutes of CI on 2 cores.  The long runs are described in
docs/robustness.md; run one with ``python tests/fuzz/fuzz_dns.py -max_total_time=600``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.regressions.known_open import KNOWN_OPEN

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# harness -> inputs run (seeds included), sized so that each takes ~5-15 s here.
RUNS = {
    "fuzz_capture": 1500,
    "fuzz_dissect": 4000,
    "fuzz_tls": 30000,
    "fuzz_http": 30000,
    "fuzz_dns": 30000,
    "fuzz_quic": 600,
    "fuzz_reassembly": 1500,
    "fuzz_rules": 2000,
    "fuzz_names": 20000,
}



def test_every_harness_is_in_the_smoke_run():
    on_disk = {p.stem for p in HERE.glob("fuzz_*.py")}
    assert on_disk == set(RUNS), on_disk ^ set(RUNS)


@pytest.mark.parametrize("harness", sorted(RUNS))
def test_fuzz_harness_smoke(harness, tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is not installed: pip install 'atheris>=2.3' (it is in the test extras)")
    env = dict(os.environ, KZFILTER_FUZZ_ARTIFACTS=str(tmp_path), KZFILTER_FUZZ_KNOWN=",".join(KNOWN_OPEN))
    cmd = [sys.executable, str(HERE / f"{harness}.py"), f"-atheris_runs={RUNS[harness]}", "-seed=1",
           "-timeout=30", "-rss_limit_mb=2048", "-print_final_stats=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stderr + proc.stdout
    assert proc.returncode == 0, f"{harness} failed (rc {proc.returncode}):\n{log[-8000:]}"
    assert f"Done {RUNS[harness]} " in log, log[-3000:]
    assert not list(tmp_path.glob("*crash-*")), log[-3000:]
