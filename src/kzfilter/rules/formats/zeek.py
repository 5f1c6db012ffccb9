"""Zeek Intel framework files: a ``#fields`` header, then tab-separated indicator lines.

Example::

    #fields	indicator	indicator_type	meta.source	meta.desc
    evil.example	Intel::DOMAIN	feed-a	phishing
    192.0.2.7	Intel::ADDR	feed-b	-

``Intel::DOMAIN`` gives a "domain" rule (the name and names under it; Zeek itself matches the exact
name, kzfilter's domain kind is the usual blocklist reading), ``Intel::ADDR`` and ``Intel::SUBNET``
give "ip" rules.  Other indicator types (``Intel::URL``, ``Intel::FILE_HASH``, ``Intel::EMAIL``, ...)
are skipped and counted per type ("unsupported Zeek indicator Intel::URL"), in both modes.
``meta.source`` becomes the rule's source unless ``load_rules(source=...)`` names one; ``-`` and
``(empty)`` are Zeek's unset and empty markers.  ``#separator \\x09`` may set another separator;
other ``#`` lines are ignored.  A line whose column count differs from ``#fields`` is bad, and so
is a data line before any ``#fields``.  A ``#fields`` line without ``indicator`` or
``indicator_type`` makes the whole file unreadable (an error in both modes).
"""
from __future__ import annotations

import re

from ._common import ListReader

__all__ = ["parse_zeek_intel", "ZEEK_KINDS"]

ZEEK_KINDS = {"Intel::DOMAIN": "domain", "Intel::ADDR": "ip", "Intel::SUBNET": "ip"}
_UNSET = ("-", "(empty)", "")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def parse_zeek_intel(reader: ListReader, *, explicit_source: bool = False) -> None:
    """Read a Zeek Intel file into ``reader``; ``explicit_source`` keeps the caller's source name."""
    separator = "\t"
    fields: list[str] | None = None
    i_indicator = i_type = i_source = -1
    for number, line in reader.lines():
        if line.startswith("#"):
            if line.startswith("#separator"):
                value = line[len("#separator"):].strip()
                value = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
                if len(value) != 1:
                    reader.fail(f"#separator must be one character, got {value!r}", number)
                separator = value
            elif line.startswith("#fields"):
                fields = line.split(separator)[1:]
                for required in ("indicator", "indicator_type"):
                    if required not in fields:
                        reader.fail(f"#fields has no {required!r} column", number)
                i_indicator, i_type = fields.index("indicator"), fields.index("indicator_type")
                i_source = fields.index("meta.source") if "meta.source" in fields else -1
            continue
        if not line.strip():
            continue
        if fields is None:
            reader.bad(number, line, "data line before the #fields header")
            continue
        columns = line.split(separator)
        if len(columns) != len(fields):
            reader.bad(number, line, "wrong column count",
                       f"expected {len(fields)} fields, got {len(columns)}")
            continue
        indicator, itype = columns[i_indicator].strip(), columns[i_type].strip()
        if indicator in _UNSET:
            reader.bad(number, line, "empty indicator")
            continue
        kind = ZEEK_KINDS.get(itype)
        if kind is None:
            if itype.startswith("Intel::"):
                reader.skip(f"unsupported Zeek indicator {itype}")
            else:
                reader.bad(number, line, "unknown indicator type", repr(itype))
            continue
        source = None
        if i_source >= 0 and not explicit_source and columns[i_source].strip() not in _UNSET:
            source = columns[i_source].strip()
            reader.sources.setdefault(source, reader.revision)
        reader.add(number, line, indicator, kind, source=source)
