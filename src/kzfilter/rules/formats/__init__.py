"""One parser per rule-list format; each fills a :class:`ListReader` (see ``_common``)."""
from __future__ import annotations

from typing import Callable

from ._common import ListReader
from .adblock import parse_adblock
from .citizenlab import parse_citizenlab
from .detect import sniff_format
from .domains import parse_domains
from .hosts import parse_hosts
from .netset import parse_netset
from .zeek import parse_zeek_intel

__all__ = ["PARSERS", "ListReader", "sniff_format"]

PARSERS: dict[str, Callable[[ListReader], None]] = {
    "citizenlab": parse_citizenlab,
    "hosts": parse_hosts,
    "domains": parse_domains,
    "adblock": parse_adblock,
    "netset": parse_netset,
    "zeek-intel": parse_zeek_intel,
}
