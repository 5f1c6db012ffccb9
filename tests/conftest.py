"""Shared fixtures: where the shared test data lives, and how its absence is reported."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared/data next to the clone (CI and developer machines); KZFILTER_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("KZFILTER_SHARED_DATA", REPO.parent / "shared" / "data"))
# .ci/run sets KZFILTER_REQUIRE_SHARED_DATA=1: there a missing data set is a failure, not a skip.
REQUIRE_SHARED = os.environ.get("KZFILTER_REQUIRE_SHARED_DATA", "") not in ("", "0")


def shared_path(*parts: str) -> Path:
    """Return a path under the shared test data, skipping (or failing in CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"shared test data not found at {path} (set KZFILTER_SHARED_DATA)"
        if REQUIRE_SHARED:
            pytest.fail(message + "; .ci/run requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


# The demo capture shipped in pcaps/ and the three demo rule files beside it (README's first command).
DEMO = REPO / "pcaps" / "demo.pcapng"
DEMO_RULES = [str(REPO / "pcaps" / n) for n in ("demo-blocklist.csv", "demo-vpn.netset", "demo-exceptions.txt")]


@pytest.fixture(scope="session")
def demo_clf():
    """The demo rules compiled once per test session (the classifier is immutable)."""
    from kzfilter import load_rules

    return load_rules(*DEMO_RULES).compile()


def write_synthetic_capture(directory: Path, packets: int, concurrent: int) -> Path:
    """A small synthetic capture from tools/gen_captures.py (deterministic seed) in ``directory``."""
    import sys

    if str(REPO / "tools") not in sys.path:
        sys.path.insert(0, str(REPO / "tools"))
    import gen_captures

    path = directory / "synthetic.pcap"
    gen_captures.write_synthetic(str(path), packets, concurrent=concurrent)
    return path
