"""The package's type hints hold: mypy over src/kzfilter (configured in pyproject.toml) finds nothing.

The compiled modules are checked through their .pyi stubs, so a stub that falls out of step with
the code that calls it fails here too.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_error() -> None:
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", "/dev/null"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout
