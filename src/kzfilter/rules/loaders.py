"""Load rule lists from files: format detection, then one parser per format (``rules/formats/``).

Formats: "citizenlab" (Citizen Lab test-list CSV), "hosts", "domains" (one name per line),
"adblock" (``||host^`` rules), "netset" (addresses, prefixes, ranges), "zeek-intel".  Each parser
module's docstring says exactly which lines give which rule kind and which are skipped.

Errors.  In strict mode (the default) the first malformed line raises :class:`RuleSyntaxError`
whose message is ``FILE:LINE: REASON (line: 'TEXT')``; REASON is the rule model's own text when
the model rejected the pattern (``empty label in 'a..kz'``, ``not an IP address, CIDR prefix or
range: 10.1.2.3/8 has host bits set``), else one of the keys below with a detail.  In lenient mode
the line is skipped and counted in ``RuleSet.skipped`` under a short key, so nothing is dropped
silently.  Keys: "binary data (not UTF-8 text)", "line too long",
"bad IP address, prefix or range", "host bits set", "empty host name", "empty label in host name",
"overlong label in host name", "overlong host name", "bad character in host name",
"bad IDN host name", "more than one field", "missing host name", "wrong column count",
"unknown category code", "bad URL", "not an http(s) URL", "empty host", "malformed CSV",
"empty indicator", "unknown indicator type", "data line before the #fields header".
Lines left out on purpose are counted in both modes and never raise: "hosts localhost entry",
"adblock header", "adblock cosmetic rule", "adblock options not supported",
"adblock rule is not a host rule", "unsupported Zeek indicator Intel::<TYPE>".
Comment and blank lines are not data and are not counted.  So for every file:
``len(rules) == data lines (names, for hosts lines) - sum(skipped.values())``.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Union

from ..errors import RuleSyntaxError
from .categories import canonical_category, is_category_code
from .formats import PARSERS, ListReader, sniff_format
from .formats.zeek import parse_zeek_intel
from .model import ACTIONS, Rule, RuleSet

__all__ = ["load_rules", "detect_format", "FORMATS"]

FORMATS = tuple(PARSERS)
_SNIFF_BYTES = 1 << 16

PathArg = Union[str, "os.PathLike[str]", IO[str], IO[bytes]]


def _name_of(item: PathArg) -> tuple[str, str, str]:
    """Return (display name, stem, suffix) of a path, ``-`` or a stream."""
    if isinstance(item, (str, os.PathLike)) and os.fspath(item) != "-":
        path = Path(os.fspath(item))
        return str(path), path.stem, path.suffix
    name = "<stdin>" if item == "-" else str(getattr(item, "name", "<stream>"))
    path = Path(name)
    return name, (path.stem if not name.startswith("<") else name.strip("<>")), path.suffix


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):        # UTF-8 byte order mark (Windows editors)
        data = data[3:]
    # surrogateescape keeps undecodable bytes as lone surrogates: the reader then reports the
    # exact line as binary data instead of failing the whole file or guessing an encoding.
    return data.decode("utf-8", errors="surrogateescape")


def _read(item: PathArg, limit: int = -1) -> str:
    if isinstance(item, (str, os.PathLike)) and os.fspath(item) != "-":
        with open(item, "rb") as fh:
            return _decode(fh.read(limit))
    stream = sys.stdin if item == "-" else item
    data = stream.read(limit) if limit >= 0 else stream.read()   # type: ignore[union-attr]
    return _decode(data) if isinstance(data, bytes) else data


def detect_format(path: PathArg) -> str:
    """Return the format name of a rule list, judged by its content and then its extension.

    Parameters:
        path: a file path (``str`` or ``pathlib.Path``); only the first 64 KiB are read.

    Returns:
        One of :data:`FORMATS`. A file without data lines gets its extension's format, or "domains".

    Raises:
        RuleSyntaxError: no format fits the first lines (the message names the file).
        OSError: the file cannot be read.

    Example:
        >>> detect_format("lists/citizenlab/kz.csv")   # doctest: +SKIP
        'citizenlab'
    """
    return _detect(_read(path, _SNIFF_BYTES), *_name_of(path))


def _detect(head: str, display: str, stem: str, suffix: str) -> str:
    fmt = sniff_format(head, suffix)
    if fmt is None:
        raise RuleSyntaxError(f"cannot tell the format of this list (pass format=, one of {', '.join(FORMATS)})",
                              display)
    return fmt


def load_rules(*paths: PathArg, format: str | None = None, action: str | None = None,
               category: str | None = None, source: str | None = None, revision: str | None = None,
               strict: bool = True, www_covers_bare: bool = True) -> RuleSet:
    """Read one or more rule lists into a RuleSet, in order.

    Parameters:
        paths: files (``str`` or ``pathlib.Path``), ``"-"`` for standard input, or open text or
            binary streams.
        format: one of :data:`FORMATS`; None detects it per file (:func:`detect_format`).
        action: "block" (default), "allow" or "monitor" for rules whose format does not say
            (an adblock ``@@`` exception is always "allow").
        category: category of rules whose format carries none (Citizen Lab rows keep their own);
            a Citizen Lab code in any case is canonicalised (``"fexp"`` -> ``"NEWS"``), other text
            is kept as given.
        source: name of the list on every rule; default: the file name without extension
            (``kz`` for ``kz.csv``), or Zeek's ``meta.source`` column when present.
        revision: version of the list (a commit, a date), kept on every rule and in ``sources``.
        strict: True raises on the first malformed line; False skips it and counts it by reason
            in ``RuleSet.skipped``.
        www_covers_bare: Citizen Lab only: ``www.example.com`` URLs give a rule for
            ``example.com`` (covering ``www.`` and the bare name); False keeps ``www.example.com``.

    Returns:
        A RuleSet; each rule's ``line`` is its line number in its file.  An empty file gives
        an empty RuleSet.

    Raises:
        RuleSyntaxError: a malformed line (strict mode), a file-level problem (a Citizen Lab
            header without ``url``, a Zeek ``#fields`` without ``indicator``), an undetectable or
            unknown format; the message names the file (and line).
        OSError: a file cannot be read.

    Example:
        >>> rs = load_rules("lists/citizenlab/kz.csv", revision="7f01e43")   # doctest: +SKIP
        >>> rs[0].pattern, rs[0].category, rs[0].source                      # doctest: +SKIP
        ('akorda.kz', 'CULTR', 'kz')
    """
    if action is not None and action not in ACTIONS:
        raise RuleSyntaxError(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    if category is not None and is_category_code(category):
        category = canonical_category(category)
    rules: list[Rule] = []
    skipped: Counter[str] = Counter()
    sources: dict[str, str] = {}
    for item in paths:
        display, stem, suffix = _name_of(item)
        if format is not None and format not in PARSERS:
            raise RuleSyntaxError(f"unknown format {format!r} (expected one of {', '.join(FORMATS)})", display)
        text = _read(item)
        fmt = format or _detect(text[:_SNIFF_BYTES], display, stem, suffix)
        reader = ListReader(text, display, source=source or stem, revision=revision or "",
                            action=action or "block", category=category or "", strict=strict,
                            www_covers_bare=www_covers_bare)
        if fmt == "zeek-intel":
            parse_zeek_intel(reader, explicit_source=source is not None)
        else:
            PARSERS[fmt](reader)
        rules += reader.rules
        skipped.update(reader.skipped)
        sources.update(reader.sources)
    return RuleSet(rules, skipped=dict(skipped), sources=sources)
