"""Adblock-style filter lists (Adblock Plus, uBlock Origin, AdGuard DNS), host rules only.

Only rules that name a whole host can be enforced on SNI / Host / DNS names:
    ``||example.com^``        kind "domain" (the host and every name under it), the default action;
    ``@@||example.com^``      the same with action "allow" (an exception rule);
    ``||example.com^$opts``   still a host rule when every option only narrows the request type or
                              party (``script``, ``image``, ``third-party``, ``important``, ...): a
                              flow classifier cannot see those, so the rule is widened to the host.
Valid lines that cannot become host rules are skipped and counted (in both modes; they are not
syntax errors): ``[Adblock Plus 2.0]`` headers ("adblock header"), cosmetic and scriptlet rules
``##`` ``#@#`` ``#?#`` ``#$#`` ``#%#`` ``$$`` ("adblock cosmetic rule"), rules with any other
option such as ``domain=``, ``denyallow=``, ``redirect=``, ``badfilter`` ("adblock options not
supported"), and URL patterns with a path, a wildcard or a regular expression ("adblock rule is
not a host rule").  ``!`` lines and ``#`` lines that are not cosmetic rules are comments.
A malformed host (``||bad_char!^``, ``||^``) is a bad line like in every other format.
"""
from __future__ import annotations

import re

from ._common import ListReader

__all__ = ["parse_adblock", "IGNORED_OPTIONS"]

# Options that only narrow which requests to a host match: dropping them widens the rule to the
# whole host, which is what SNI-level filtering can do.  "~" negations narrow too.
IGNORED_OPTIONS = frozenset({
    "script", "image", "stylesheet", "css", "object", "xmlhttprequest", "xhr", "subdocument", "frame",
    "ping", "websocket", "webrtc", "media", "font", "other", "document", "doc", "all", "popup",
    "third-party", "3p", "first-party", "1p", "strict1p", "strict3p", "match-case", "important",
})

_HOST_RULE = re.compile(r"\|\|([^/^$|*]*)\^?\|?(?:\$(.*))?\Z")
_COSMETIC = re.compile(r"#@?[?$%]?\??#|\$@?\$")


def parse_adblock(reader: ListReader) -> None:
    """Read an adblock-style list into ``reader``."""
    for number, line in reader.lines():
        text = line.strip()
        if not text or text[0] == "!":
            continue
        if text[0] == "[" and text[-1] == "]":
            reader.skip("adblock header")
            continue
        if _COSMETIC.search(text):
            reader.skip("adblock cosmetic rule")
            continue
        if text[0] == "#":
            continue
        action = None
        if text.startswith("@@"):
            action, text = "allow", text[2:]
        m = _HOST_RULE.match(text)
        if m is None:
            reader.skip("adblock rule is not a host rule")
            continue
        host, options = m.group(1), m.group(2)
        if options is not None:
            names = (o.strip().lstrip("~").split("=", 1)[0].lower() for o in options.split(","))
            if not all(n in IGNORED_OPTIONS for n in names):
                reader.skip("adblock options not supported")
                continue
        reader.add(number, line, host, "domain", action=action)
