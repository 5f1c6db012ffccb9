"""hosts files: ``ADDRESS NAME [NAME...]`` lines (StevenBlack/hosts, /etc/hosts style).

A hosts entry makes the resolver answer for that exact name only; it does not cover names under it.
The rules are therefore kind "exact", so ``0.0.0.0 ads.example.com`` does not block
``x.ads.example.com`` (load the same names as a domain list to get the wider meaning).

The address is checked but not kept (0.0.0.0, 127.0.0.1 or a redirect target all mean "block").
The machine's own entries (``localhost``, ``broadcasthost``, ``ip6-*``, ``0.0.0.0 0.0.0.0``) are
skipped and counted under "hosts localhost entry", one per name; ``#`` starts a comment anywhere.
"""
from __future__ import annotations

import ipaddress

from ._common import ListReader, looks_like_address

__all__ = ["parse_hosts", "LOCAL_NAMES"]

# Names that every stock hosts file maps to the machine itself (Debian, macOS, StevenBlack header).
LOCAL_NAMES = frozenset({
    "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback",
    "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters", "ip6-allhosts",
})


def parse_hosts(reader: ListReader) -> None:
    """Read a hosts file into ``reader``."""
    for number, line in reader.lines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        try:
            ipaddress.ip_address(fields[0])
        except ValueError:
            reader.bad(number, line, "bad IP address, prefix or range",
                       f"a hosts line starts with an address, not {fields[0]!r}")
            continue
        if len(fields) == 1:
            reader.bad(number, line, "missing host name", "a hosts line names at least one host")
            continue
        for name in fields[1:]:
            if name.lower() in LOCAL_NAMES or looks_like_address(name):
                reader.skip("hosts localhost entry")
            else:
                reader.add(number, line, name, "exact")
