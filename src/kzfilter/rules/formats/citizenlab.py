"""Citizen Lab test lists: CSV ``url,category_code,category_description,date_added,source,notes``.

Each row gives one rule for the URL's host:
  * category: the row's ``category_code``, retired codes mapped to current ones
    (:func:`kzfilter.rules.categories.canonical_category`); an unknown code is a bad line;
  * ``date_added`` is kept; the URL path (and query) is kept on ``Rule.path`` for reference only:
    TLS SNI, DNS and QUIC carry only the host, so a rule can never match a path;
  * a host that is an IP address (``https://1.1.1.1/dns-query``) gives an "ip" rule; otherwise a
    "domain" rule (the host and names under it); an IDN host becomes punycode, a port is dropped;
  * ``www.`` stands for the site: with ``www_covers_bare=True`` (the default)
    ``https://www.example.com/`` gives a domain rule for ``example.com``, which covers both
    ``www.example.com`` and the bare name, as the test lists mean it; with False the rule is for
    ``www.example.com``.  ``www.`` is only dropped when at least two labels remain (never
    ``www.kz`` -> ``kz``; a public-suffix-aware check would need the PSL).
The columns are found by name in the header row, so their order does not matter; ``url`` and
``category_code`` are required (missing: the whole file is an error).  The CSV ``source`` column
(who proposed the URL) is not the rule's source: the list name is.
"""
from __future__ import annotations

import csv
import ipaddress
from typing import Iterator
from urllib.parse import urlsplit

from ..categories import canonical_category
from ._common import ListReader

__all__ = ["parse_citizenlab", "HEADER"]

HEADER = ("url", "category_code", "category_description", "date_added", "source", "notes")


def parse_citizenlab(reader: ListReader) -> None:
    """Read a Citizen Lab test-list CSV into ``reader``."""
    fetched: list[tuple[int, str]] = []     # physical lines consumed for the row being read

    def feed() -> Iterator[str]:
        for number, line in reader.lines():
            fetched.append((number, line))
            yield line + "\n"

    rows = csv.reader(feed())
    header: list[str] | None = None
    while True:
        fetched.clear()
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            number, line = fetched[0] if fetched else (0, "")
            reader.bad(number, line, "malformed CSV", str(exc))
            if not fetched:
                return
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        number, line = fetched[0]
        if header is None:
            header = [cell.strip().lower().lstrip("\ufeff") for cell in row]
            for required in ("url", "category_code"):
                if required not in header:
                    reader.fail(f"not a Citizen Lab test list: the header has no {required!r} column", number)
            i_url, i_code = header.index("url"), header.index("category_code")
            i_date = header.index("date_added") if "date_added" in header else -1
            continue
        if len(row) != len(header):
            reader.bad(number, line, "wrong column count", f"expected {len(header)} fields, got {len(row)}")
            continue
        _row(reader, number, line, row[i_url].strip(), row[i_code], row[i_date].strip() if i_date >= 0 else "")


def _row(reader: ListReader, number: int, line: str, url: str, code: str, date_added: str) -> None:
    try:
        category = canonical_category(code)
    except ValueError:
        reader.bad(number, line, "unknown category code", repr(code.strip()))
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port                               # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        reader.bad(number, line, "bad URL", str(exc))
        return
    if parts.scheme.lower() not in ("http", "https"):
        reader.bad(number, line, "not an http(s) URL", repr(url))
        return
    if not host:
        reader.bad(number, line, "empty host", repr(url))
        return
    path = parts.path + ("?" + parts.query if parts.query else "")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        kind = "domain"
        if reader.www_covers_bare and host.startswith("www.") and "." in host[4:].strip("."):
            host = host[4:]
    else:
        kind = "ip"
    reader.add(number, line, host, kind, category=category, path=path, date_added=date_added)
