"""Regression: ``Classifier.match_ips`` on a signed or wider integer array wraps values modulo 2**32.

Found by probing the batch APIs with hostile arrays (robustness work, issue 4).
``match_ips`` accepts any 1-d integer numpy array as IPv4 and converts it with
``np.ascontiguousarray(addrs, dtype=np.uint32)`` (src/kzfilter/match/classifier.py, the
``addrs.dtype.kind in "ui"`` branch): -1 becomes 255.255.255.255 and 2**32 + 0x0A000001 becomes
10.0.0.1, so an invalid address gets the verdict of a real one (the list path refuses -1 and
reads larger integers as IPv6, as ``ipaddress`` does; it never wraps).  Expected: in an integer
array, which the API documents as IPv4, a value outside 0..2**32-1 raises a ValueError
(``InvalidAddressError``).
"""
from __future__ import annotations

import numpy as np
import pytest

from kzfilter import Rule, RuleSet


@pytest.fixture(scope="module")
def clf():
    return RuleSet([Rule("10.0.0.0/8"), Rule("255.255.255.255/32")]).compile()


@pytest.mark.parametrize("value", [2**32 + 0x0A000001, -1, 2**40])
def test_out_of_range_integer_is_refused_not_wrapped(clf, value):
    if value < 0:
        with pytest.raises(ValueError):
            clf.match_ips([value])                   # the list path refuses it too
    with pytest.raises(ValueError):
        clf.match_ips(np.array([value], dtype=np.int64))


def test_in_range_int64_array_still_matches(clf):
    res = clf.match_ips(np.array([0x0A000001, 0x0B000001], dtype=np.int64))
    assert list(res.rule_id >= 0) == [True, False]
