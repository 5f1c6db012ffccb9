"""Normalisation of host names, identical for rules and for traffic.

Steps, in order: decode bytes as UTF-8, strip surrounding white space, strip a ``:port``, lower-case,
strip one trailing dot, map internationalised names to punycode (IDNA 2008 with UTS 46, so the
Kazakh ``.қаз`` becomes ``.xn--80ao21a``), then check the result is a host name: labels of 1-63
characters from ``[a-z0-9_-]``, at most 253 characters in all.  Underscores are accepted because
real traffic and real lists carry them (``_dmarc``, ``my_host.example``); nothing is silently cut.

The compiled matcher applies the same steps to ASCII input in C (see ``match/_automaton.pyx``);
names with non-ASCII bytes are sent back here for the IDNA step.
"""
from __future__ import annotations

import re

import idna

from ..errors import InvalidNameError

__all__ = ["normalize_name", "MAX_NAME_LENGTH", "MAX_LABEL_LENGTH"]

MAX_NAME_LENGTH = 253   # RFC 1035 section 2.3.4 (255 octets on the wire, 253 in text form)
MAX_LABEL_LENGTH = 63

_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
_PORT = re.compile(r":[0-9]{1,5}\Z")


def _strip_port(name: str) -> str:
    # Host headers and some list entries carry "host:port"; an IPv6 literal has several colons and
    # is not a host name, so only a single trailing ":digits" is removed.
    if name.count(":") == 1:
        m = _PORT.search(name)
        if m:
            return name[: m.start()]
    return name


def _to_ascii(name: str) -> str:
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidNameError(name, f"not a valid internationalised name ({exc})") from None
    except UnicodeError as exc:
        raise InvalidNameError(name, f"not a valid internationalised name ({exc})") from None


def normalize_name(name: str | bytes) -> str:
    """Return the canonical form of a host name.

    Parameters:
        name: a host name as text or bytes (UTF-8), e.g. ``"News.Example.COM."`` or ``b"x.kz:443"``.

    Returns:
        The lower-case ASCII (punycode) name without trailing dot or port: ``"news.example.com"``.

    Raises:
        InvalidNameError: the name is empty, too long, has an empty label, a character outside
        ``[a-z0-9_-]`` after IDNA mapping, or is not valid IDNA.

    Example:
        >>> normalize_name("Пример.қаз")
        'xn--e1afmkfd.xn--80ao21a'
    """
    original = name
    if isinstance(name, (bytes, bytearray, memoryview)):
        try:
            name = bytes(name).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNameError(original, "not UTF-8") from None
    name = _strip_port(name.strip())
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidNameError(original, "empty name")
    name = _to_ascii(name.lower()).lower()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(original, f"longer than {MAX_NAME_LENGTH} characters ({len(name)})")
    for label in name.split("."):
        if not label:
            raise InvalidNameError(original, "empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidNameError(original, f"label longer than {MAX_LABEL_LENGTH} characters")
        if not _LABEL.match(label):
            bad = next(c for c in label if not (c.isascii() and (c.isalnum() or c in "-_")))
            raise InvalidNameError(original, f"character {bad!r} is not allowed in a host name")
    return name
