"""Citizen Lab category tables, checked against the legend files and the real test lists."""
from __future__ import annotations

import csv
import glob

import pytest

from kzfilter.rules.categories import (
    CATEGORY_DESCRIPTIONS, CATEGORY_DETAILS, OLD_CATEGORY_CODES, OLD_CATEGORY_DESCRIPTIONS,
    canonical_category, is_category_code,
)
from tests.conftest import shared_path


def _legend(name: str) -> list[dict[str, str]]:
    with open(shared_path("lists", "citizenlab", name), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_current_codes_match_the_new_legend() -> None:
    rows = _legend("00-LEGEND-new_category_codes.csv")
    assert {r["New Code"]: r["Category Description"] for r in rows} == dict(CATEGORY_DESCRIPTIONS)
    assert {r["New Code"]: r["Description"].strip() for r in rows} == dict(CATEGORY_DETAILS)


def test_every_replaced_code_maps_to_its_new_code() -> None:
    expected = {}
    for r in _legend("00-LEGEND-new_category_codes.csv"):
        for old in r["Replaces old code(s)"].split():
            if old != "N/A":
                expected[old] = r["New Code"]
    assert len(expected) > len(CATEGORY_DESCRIPTIONS)          # the table is not trivially empty
    for old, new in expected.items():
        assert canonical_category(old) == new, old
    assert all(OLD_CATEGORY_CODES[o] == expected[o] for o in OLD_CATEGORY_CODES)


def test_every_old_legend_code_is_known() -> None:
    rows = _legend("00-LEGEND-category_codes.csv")
    assert {r["CategoryCode"]: r["CategoryName"] for r in rows} == dict(OLD_CATEGORY_DESCRIPTIONS)
    for r in rows:
        assert canonical_category(r["CategoryCode"]) in CATEGORY_DESCRIPTIONS


def test_real_lists_use_the_same_names_as_the_legend() -> None:
    files = [f for f in glob.glob(str(shared_path("lists", "citizenlab") / "*.csv")) if "00-LEGEND" not in f]
    assert len(files) == 12
    seen = set()
    for f in files:
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                assert CATEGORY_DESCRIPTIONS[canonical_category(row["category_code"])] == row["category_description"]
                seen.add(row["category_code"])
    assert {"NEWS", "POLR", "HUMR", "PORN", "LGBT", "ANON"} <= seen


@pytest.mark.parametrize("code, expected", [
    ("NEWS", "NEWS"), ("news", "NEWS"), (" Porn ", "PORN"), ("FEXP", "NEWS"), ("polt", "POLR"),
    ("P2P", "FILE"), ("VOIP", "COMT"), ("HAL", "CULTR"), ("GAYL", "LGBT"), ("MINF", "HUMR"), ("IGO", "IGO"),
])
def test_canonical_category(code: str, expected: str) -> None:
    assert canonical_category(code) == expected
    assert is_category_code(code)


@pytest.mark.parametrize("code", ["", "XYZ", "N/A", "NEWS MEDIA", "malware"])
def test_unknown_codes_raise(code: str) -> None:
    assert not is_category_code(code)
    with pytest.raises(ValueError, match=r"unknown Citizen Lab category code"):
        canonical_category(code)
