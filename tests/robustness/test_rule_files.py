"""Rule files with one damaged line among many good ones, in every format.

tests/rules/test_loaders.py checks each malformed-line kind's exact message; here the point is the
whole-file contract: strict mode raises on exactly the damaged line (``file:line: reason``) and
returns nothing (no half-loaded set); lenient mode keeps every good line and counts the bad one, and
``len(rules) + sum(skipped) == data lines`` holds; the damaged line may be anywhere (first, middle,
last, without a final newline).
"""
from __future__ import annotations

import random

import pytest

from kzfilter import RuleSyntaxError, load_rules

HEADER = "url,category_code,category_description,date_added,source,notes"
FORMATS = {
    # format: (file name, header lines, good line maker, bad lines)
    "domains": ("l.txt", [], lambda i: f"h{i}.example.com",
                ["a..b", "bad!x.example", "\u0300x.example", "x" * 9000, "\x00\x01\x02", "a b"]),
    "hosts": ("l.hosts", [], lambda i: f"0.0.0.0 h{i}.example.com",
              ["0.0.0.0", "300.1.1.1 x.example", "0.0.0.0 a..b"]),
    "netset": ("l.netset", [], lambda i: f"10.{i // 256 % 256}.{i % 256}.0/24",
               ["10.0.0.0/33", "10.1.2.3/8", "1.2.3", "::g/64", "\x7f\x00junk"]),
    "adblock": ("l.txt", ["[Adblock Plus 2.0]"], lambda i: f"||h{i}.example.com^", ["||^", "||a..b^"]),
    "citizenlab": ("l.csv", [HEADER], lambda i: f"http://h{i}.example.com/,NEWS,News Media,2020-01-01,x,",
                   ["http://x.example/,XYZ,What,2020-01-01,x,", "http://x.example/,NEWS", "ftp://x/,NEWS,N,,,"]),
    "zeek-intel": ("l.intel", ["#fields\tindicator\tindicator_type"], lambda i: f"h{i}.example.com\tIntel::DOMAIN",
                   ["x.example\tIntel::DOMAIN\textra", "-\tIntel::ADDR", "x\tDOMAIN"]),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_one_bad_line_anywhere(tmp_path, fmt):
    name, header, good, bads = FORMATS[fmt]
    rng = random.Random(fmt)
    n = 300
    for bad in bads:
        for pos in (0, rng.randrange(1, n - 1), n - 1):
            lines = [good(i) for i in range(n)]
            lines[pos] = bad
            text = "\n".join(header + lines)
            if pos != n - 1:
                text += "\n"
            path = tmp_path / name
            path.write_bytes(text.encode("utf-8", "surrogateescape"))
            line_no = len(header) + pos + 1
            with pytest.raises(RuleSyntaxError) as info:
                load_rules(path, format=fmt)
            assert str(info.value).startswith(f"{path}:{line_no}: "), (str(info.value)[:200], line_no)
            lenient = load_rules(path, format=fmt, strict=False)
            errors = {k: v for k, v in lenient.skipped.items() if k != "adblock header"}
            assert sum(errors.values()) == 1, (bad, lenient.skipped)
            assert len(lenient) == n - 1
            assert line_no not in {r.line for r in lenient}


def test_binary_junk_file_is_refused_with_its_first_line(tmp_path):
    rng = random.Random(9)
    junk = bytes(rng.randrange(256) for _ in range(20000))
    path = tmp_path / "junk.txt"
    path.write_bytes(junk)
    with pytest.raises(RuleSyntaxError) as info:
        load_rules(path, format="domains")
    assert str(info.value).startswith(f"{path}:")
    lenient = load_rules(path, format="domains", strict=False)
    total_lines = junk.count(b"\n") + 1
    assert 1 <= len(lenient) + sum(lenient.skipped.values()) <= total_lines
    assert all(1 <= r.line <= total_lines for r in lenient)
