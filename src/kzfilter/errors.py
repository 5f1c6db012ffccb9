"""Exception tree of kzfilter.

Input errors are also ``ValueError`` so callers that only know the standard library can catch them.
"""
from __future__ import annotations

__all__ = ["KzfilterError", "RuleSyntaxError", "InvalidNameError", "InvalidAddressError", "CaptureError"]


class KzfilterError(Exception):
    """Base class of every error kzfilter raises on purpose."""


class InvalidNameError(KzfilterError, ValueError):
    """A host name that cannot be normalised (bad character, empty label, too long, bad IDN)."""

    def __init__(self, name: object, reason: str) -> None:
        super().__init__(f"invalid host name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class InvalidAddressError(KzfilterError, ValueError):
    """A query that is not an IPv4 or IPv6 address."""


class RuleSyntaxError(KzfilterError, ValueError):
    """A rule, or a line of a rule file, that cannot be read.

    ``path`` and ``line`` name the place when the rule came from a file; ``reason`` says why.
    """

    def __init__(self, reason: str, path: str | None = None, line: int | None = None,
                 text: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        detail = f" (line: {text!r})" if text is not None else ""
        super().__init__(f"{where}{reason}{detail}")
        self.reason = reason
        self.path = path
        self.line = line
        self.text = text


class CaptureError(KzfilterError, ValueError):
    """A capture file that cannot be read at all (not a capture, unknown format, unreadable header)."""
