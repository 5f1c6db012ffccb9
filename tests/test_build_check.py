"""A missing compiled module is an ImportError that says how to build, never a slow fallback."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kzfilter._build_check import import_compiled


def test_missing_module_says_how_to_build() -> None:
    with pytest.raises(ImportError, match=r"pip install \.") as info:
        import_compiled("kzfilter.match._no_such_module")
    assert "kzfilter.match._no_such_module" in str(info.value)


def test_classifier_import_fails_loudly_without_the_core() -> None:
    # Hide the compiled automaton from the import system in a fresh interpreter: importing the
    # public API must fail with the build instructions, not fall back to pure Python.
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "kzfilter.match._automaton":
                    raise ImportError("blocked for the test")
                return None
        sys.meta_path.insert(0, Block())
        import kzfilter
        try:
            kzfilter.Classifier
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "IMPORT-ERROR:" in out.stdout and "compiled core is not built" in out.stdout, out.stderr
