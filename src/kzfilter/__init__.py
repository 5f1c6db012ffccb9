"""kzfilter: classify network flows against domain and IP blocklists at line rate.

The rule model and loaders are plain Python; matching, capture reading and flow tracking run in a
compiled Cython core.  Names that need the compiled core are imported on first use, so a missing
build is reported by ``kzfilter._build_check`` with the command that fixes it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CaptureError, InvalidAddressError, InvalidNameError, KzfilterError, RuleSyntaxError
from .rules.model import Rule, RuleSet
from .rules.normalize import normalize_name

__version__ = "0.1.0"

__all__ = [
    "Rule", "RuleSet", "load_rules", "Classifier", "Match", "BatchResult", "normalize_name",
    "KzfilterError", "RuleSyntaxError", "InvalidNameError", "InvalidAddressError", "CaptureError", "__version__",
]

_LAZY = {
    "load_rules": ("kzfilter.rules.loaders", "load_rules"),
    "Classifier": ("kzfilter.match.classifier", "Classifier"),
    "Match": ("kzfilter.match.classifier", "Match"),
    "BatchResult": ("kzfilter.match.classifier", "BatchResult"),
}

if TYPE_CHECKING:
    from .match.classifier import BatchResult, Classifier, Match
    from .rules.loaders import load_rules


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'kzfilter' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
