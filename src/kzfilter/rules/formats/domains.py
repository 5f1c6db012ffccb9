"""Plain domain lists: one name per line (blocklistproject ``*-nl.txt``, UT1 ``domains``, squid).

Line forms:
    ``example.com``     kind "domain": the name and every name under it.
    ``.example.com``    kind "domain" too: the leading dot is squid's / UT1's way to say the same.
    ``*.example.com``   kind "wildcard": names under ``example.com`` only, not the name itself.
    ``1.2.3.4``         kind "ip": some domain lists (UT1 ``doh``, ``gambling``) carry bare addresses;
                        a name rule for "1.2.3.4" would only match an SNI of that text, so an address
                        becomes an address rule.  Any all-numeric dotted entry is read as an address
                        (RFC 1123 section 2.1: a host name's top label is never all-numeric), so
                        ``1.2.3.999`` is a bad line, not a host name.
Comments start with ``#`` or ``!`` (a ``#`` may also end a line); blank lines are ignored.
A line with two fields (``0.0.0.0 example.com``) is not a domain line: it is reported as bad.
"""
from __future__ import annotations

from ._common import ListReader, looks_like_address

__all__ = ["parse_domains"]


def parse_domains(reader: ListReader) -> None:
    """Read a plain domain list into ``reader``."""
    add = reader.adder()
    for number, line in reader.lines():
        text = line.strip()
        if not text or text[0] in "#!":
            continue
        if "#" in text:
            text = text.split("#", 1)[0].rstrip()
        if len(text.split()) > 1:
            reader.bad(number, line, "more than one field", "a domain list has one name per line")
        elif text.startswith("*."):
            add(number, line, text, "wildcard")
        elif text.startswith(".") and not text.startswith(".."):
            add(number, line, text[1:], "domain")
        elif looks_like_address(text):
            add(number, line, text, "ip")
        else:
            add(number, line, text, "domain")
