"""Regression: bad options and wrong file modes give the documented error types.

Found by hand probes (docs/robustness.md, "observations"): ``FlowTable(idle_timeout=inf)`` raised
OverflowError from the seconds-to-nanoseconds conversion, and a text-mode file object passed to
``CaptureReader`` raised UnicodeDecodeError from its own read().  Input errors are ValueError
(CaptureError is one), so callers can catch them as such.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from kzfilter.errors import CaptureError
from kzfilter.flow._table import FlowTable
from kzfilter.packet._capture import CaptureReader

DEMO = Path(__file__).resolve().parents[2] / "pcaps" / "demo.pcapng"


@pytest.mark.parametrize("option", ["idle_timeout", "active_timeout", "udp_idle_timeout",
                                    "close_grace", "sweep_interval"])
@pytest.mark.parametrize("value", [math.inf, 1e300, math.nan, 0.0, -5.0])
def test_bad_timeouts_are_value_errors(option, value):
    with pytest.raises(ValueError, match=option):
        FlowTable(**{option: value})


def test_text_mode_file_is_a_capture_error():
    with open(DEMO) as fh, pytest.raises(CaptureError, match="binary mode"):
        CaptureReader(fh)
    with open(DEMO, "rb") as fh:           # the same file in binary mode reads
        assert CaptureReader(fh).drain() > 0
