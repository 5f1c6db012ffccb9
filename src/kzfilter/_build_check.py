"""Turn a missing compiled module into an ImportError that says how to build it.

There is no pure-Python fallback: a silently slow kzfilter would be a wrong kzfilter.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_compiled"]

_HOW = (
    "kzfilter's compiled core is not built. Install the package with `pip install .` "
    "(or `pip install -e .`) from a source checkout, or run `python setup.py build_ext --inplace`; "
    "a C compiler, Python headers, Cython and numpy are needed."
)


def import_compiled(name: str) -> ModuleType:
    """Import a compiled submodule such as ``kzfilter.match._automaton`` or explain how to build it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{_HOW} (missing: {name}: {exc})") from exc
