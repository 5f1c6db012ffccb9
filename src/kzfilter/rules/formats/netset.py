"""Address lists: one IPv4/IPv6 address, CIDR prefix or ``first-last`` range per line.

Covers FireHOL ``.netset``/``.ipset``, blocklistproject ``.ip``, country ``.cidr`` files,
X4BNet prefix lists, ipsum (``ADDRESS<TAB>count``: columns after the first are ignored) and
Spamhaus DROP (``1.2.3.0/24 ; SBL123``: ``;`` and ``#`` start comments, also at the end of a line).
A range may be written ``a-b`` or ``a - b``.  A prefix with host bits set (``10.1.2.3/8``) is an
error rather than silently widened: such lines are usually typos.
"""
from __future__ import annotations

from ._common import ListReader

__all__ = ["parse_netset"]


def parse_netset(reader: ListReader) -> None:
    """Read an address list into ``reader``."""
    add = reader.adder()
    for number, line in reader.lines():
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        for mark in "#;":
            if mark in text:
                text = text.split(mark, 1)[0]
        fields = text.split()
        if not fields:
            continue
        if len(fields) >= 3 and fields[1] == "-":
            add(number, line, fields[0] + "-" + fields[2], "ip")
        else:
            add(number, line, fields[0], "ip")
