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
