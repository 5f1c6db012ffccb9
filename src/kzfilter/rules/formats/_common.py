"""What every list parser shares: reading lines safely, building rules, and strict/lenient errors.

A parser gets a :class:`ListReader` and calls ``add`` for each rule, ``skip`` for a line it leaves
out on purpose (a localhost entry, a cosmetic adblock rule: counted in both modes) and ``bad`` for a
malformed line (raises in strict mode, counted under its reason in lenient mode).  Comment and blank
lines are not data and are not counted.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Iterator, NoReturn

from ...errors import RuleSyntaxError
from ..model import Rule

__all__ = ["ListReader", "MAX_LINE_LENGTH", "looks_like_address"]

# No list format has lines this long; a longer "line" is binary junk or a file without newlines.
MAX_LINE_LENGTH = 8192
# Shown in error messages: enough to recognise the line, not a megabyte of junk.
_SHOWN_TEXT = 200

# C0 controls other than tab/CR/LF, DEL, and lone surrogates (the loader decodes undecodable bytes
# with errors="surrogateescape"): never in a text list, typical of binary junk.
_JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# Candidate IP literal (IPv4, IPv6, optional /prefix or -range); ipaddress gives the verdict.
_ADDRESS_LIKE = re.compile(r"[0-9.]+(?:/[0-9]+)?(?:-[0-9.]+)?\Z|[0-9a-fA-F]*:[0-9a-fA-F:.%]*(?:/[0-9]+)?\Z")


def looks_like_address(token: str) -> bool:
    """True when ``token`` is shaped like an IP address, prefix or range (not a host name)."""
    return bool(_ADDRESS_LIKE.match(token)) and ("." in token or ":" in token)


def _reason_of(exc: RuleSyntaxError) -> str:
    """Map the model's RuleSyntaxError text to a short, stable reason (the ``skipped`` key)."""
    text = exc.reason
    if text.startswith("not an IP address"):
        return "host bits set" if "host bits set" in text else "bad IP address, prefix or range"
    for prefix, key in (
        ("empty name", "empty host name"),
        ("empty label", "empty label in host name"),
        ("label longer", "overlong label in host name"),
        ("longer than", "overlong host name"),
        ("character", "bad character in host name"),
        ("not a valid internationalised name", "bad IDN host name"),
        ("keyword", "bad keyword"),
    ):
        if text.startswith(prefix):
            return key
    return "invalid rule"


def _iter_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` cut at "\n" (as ``text.split("\n")`` would), one at a time."""
    start, end = 0, text.find("\n")
    while end >= 0:
        yield text[start:end]
        start, end = end + 1, text.find("\n", end + 1)
    yield text[start:]


class ListReader:
    """One file being read: its lines, the defaults for its rules, and what was kept or skipped."""

    def __init__(self, text: str, display: str, *, source: str, revision: str, action: str,
                 category: str, strict: bool, www_covers_bare: bool) -> None:
        self.text = text
        self.display = display          # the file name used in error messages
        self.source = source
        self.revision = revision
        self.action = action
        self.category = category
        self.strict = strict
        self.www_covers_bare = www_covers_bare
        self.rules: list[Rule] = []
        self.skipped: Counter[str] = Counter()
        self.sources: dict[str, str] = {source: revision}

    def lines(self) -> Iterator[tuple[int, str]]:
        """Yield ``(line number, text)`` with CR removed; junk lines are reported, not yielded."""
        check_junk = _JUNK.search(self.text) is not None
        # Lines at "\n" only, not str.splitlines(): that also breaks at U+2028, \x0c, \x1c...,
        # which would make our line numbers disagree with every editor and with grep -n.  Cut one
        # at a time (not split() into a list): a ten-million-line file would hold ten million
        # line objects at once, ~60 bytes each, even when every line is skipped.
        for number, line in enumerate(_iter_lines(self.text), 1):
            if line.endswith("\r"):
                line = line[:-1]
            if check_junk and _JUNK.search(line):
                self.bad(number, line, "binary data (not UTF-8 text)")
                continue
            if len(line) > MAX_LINE_LENGTH:
                self.bad(number, line, "line too long", f"{len(line)} characters, at most {MAX_LINE_LENGTH}")
                continue
            yield number, line

    def add(self, number: int, line: str, pattern: str, kind: str, *, action: str | None = None,
            category: str | None = None, source: str | None = None, path: str = "",
            date_added: str = "") -> None:
        """Build one rule; a pattern the model rejects is a bad line with the model's reason."""
        try:
            rule = Rule(pattern, kind=kind, action=action or self.action,
                        category=self.category if category is None else category,
                        source=source or self.source, line=number, revision=self.revision,
                        path=path, date_added=date_added)
        except RuleSyntaxError as exc:
            self.bad_rule(number, line, exc)
            return
        self.rules.append(rule)

    def adder(self) -> Callable[[int, str, str, str], None]:
        """Return a fast ``add(number, line, pattern, kind)`` with this file's defaults bound.

        The big lists (100k+ lines) spend most of their time here; positional arguments and
        bound locals cut the per-line overhead of :meth:`add` by about a third.
        """
        append, bad_rule = self.rules.append, self.bad_rule
        action, category, source, revision = self.action, self.category, self.source, self.revision

        def add(number: int, line: str, pattern: str, kind: str) -> None:
            try:
                append(Rule(pattern, kind, action, category, source, number, revision))
            except RuleSyntaxError as exc:
                bad_rule(number, line, exc)
        return add

    def skip(self, reason: str, count: int = 1) -> None:
        """Count a data line left out on purpose (both modes; never an error)."""
        self.skipped[reason] += count

    def bad(self, number: int, line: str, reason: str, detail: str | None = None) -> None:
        """A malformed line: raise ``REASON[: DETAIL]`` in strict mode, count under REASON otherwise."""
        if self.strict:
            self._raise(number, line, f"{reason}: {detail}" if detail else reason)
        self.skipped[reason] += 1

    def bad_rule(self, number: int, line: str, exc: RuleSyntaxError) -> None:
        """A pattern the rule model rejected: raise with the model's own reason (strict mode),
        or count it under a short class of that reason (lenient mode)."""
        if self.strict:
            self._raise(number, line, exc.reason)
        self.skipped[_reason_of(exc)] += 1

    def _raise(self, number: int, line: str, reason: str) -> NoReturn:
        shown = line if len(line) <= _SHOWN_TEXT else line[:_SHOWN_TEXT] + "..."
        raise RuleSyntaxError(reason, self.display, number, shown) from None

    def fail(self, reason: str, number: int | None = None) -> NoReturn:
        """A problem with the file as a whole (e.g. a header without a required column): always raises."""
        raise RuleSyntaxError(reason, self.display, number)

