"""Guess a list's format from its first data lines, with the file name's extension as a hint.

Content decides; the extension only breaks ties and names the format of a file that has no data
lines at all.  Signals, in order of strength:
  * a ``#fields`` or ``#separator`` line: "zeek-intel";
  * a first row starting ``url,`` and naming ``category_code``: "citizenlab";
  * ``||``, ``@@``, ``[Adblock ...]`` or a cosmetic ``##`` rule: "adblock";
  * otherwise a vote over up to 50 data lines: an address followed by a host name is "hosts", an
    address alone (or followed by a count or a ``;`` comment) is "netset", a lone name is
    "domains"; the majority wins, the extension breaks ties.  Lone addresses inside a name list
    (UT1 ``doh``) are fine as long as names are the majority of the first lines.
"""
from __future__ import annotations

import re
from collections import Counter

from ._common import looks_like_address

__all__ = ["sniff_format", "EXTENSION_HINTS"]

EXTENSION_HINTS = {
    ".csv": "citizenlab", ".hosts": "hosts", ".netset": "netset", ".ipset": "netset", ".cidr": "netset",
    ".ip": "netset", ".intel": "zeek-intel", ".domains": "domains",
}
_SNIFF_LINES = 50
_NAME = re.compile(r"[*.]?[\w.-]+\.?\Z")        # \w: IDN names are names too
_COSMETIC = re.compile(r"#@?[?$%]?\??#")


def sniff_format(head: str, suffix: str) -> str | None:
    """Return the format of a file whose beginning is ``head``, or None when nothing fits."""
    hint = EXTENSION_HINTS.get(suffix.lower())
    votes: Counter[str] = Counter()
    seen = 0
    for raw in head.lstrip("\ufeff").split("\n")[:2000]:
        line = raw.strip()
        if line.startswith(("#fields", "#separator")):
            return "zeek-intel"
        if not line:
            continue
        if seen == 0 and line.lower().startswith("url,") and "category_code" in line.lower():
            return "citizenlab"
        if line.startswith(("||", "@@", "[Adblock")) or _COSMETIC.search(line):
            return "adblock"
        if line[0] in "#!;":
            continue
        seen += 1
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if looks_like_address(fields[0]):
            second = fields[1] if len(fields) > 1 else ""
            if second and second[0] not in ";-" and not second.isdigit() and _NAME.match(second):
                votes["hosts"] += 1
            else:
                votes["netset"] += 1
        elif len(fields) == 1 and _NAME.match(fields[0]):
            votes["domains"] += 1
        else:
            votes["unknown"] += 1
        if seen >= _SNIFF_LINES:
            break
    if seen == 0:
        return hint or "domains"
    best = max(votes.values())
    winners = [fmt for fmt, n in votes.items() if n == best]
    if "unknown" in winners and len(winners) == 1:
        return None
    if hint in winners:
        return hint
    return next(fmt for fmt in ("hosts", "netset", "domains") if fmt in winners)
