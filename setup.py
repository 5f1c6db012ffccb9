"""Build the Cython extensions of kzfilter.

Every ``.pyx`` under ``src/kzfilter`` becomes an extension module of the same dotted name, so a new
compiled module needs no edit here.  ``KZFILTER_DEBUG=1`` builds with Cython bounds checks and
``-fsanitize=address,undefined`` for the sanitizer job in CI.  ``KZFILTER_ONLY=a.pyx,b.pyx`` builds
only those modules (development: ``KZFILTER_ONLY=src/kzfilter/match/_automaton.pyx python setup.py
build_ext --inplace``), so a half-written neighbour cannot break your build.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("KZFILTER_DEBUG", "") not in ("", "0")
SRC = Path("src")

compile_args = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unreachable-code"]
link_args: list[str] = []
directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}
if DEBUG:
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
    link_args = ["-fsanitize=address,undefined"]


def extensions() -> list[Extension]:
    only = {str(Path(p)) for p in os.environ.get("KZFILTER_ONLY", "").split(",") if p}
    exts = []
    for pyx in sorted(SRC.glob("kzfilter/**/*.pyx")):
        if only and str(pyx) not in only:
            continue
        module = ".".join(pyx.relative_to(SRC).with_suffix("").parts)
        exts.append(
            Extension(
                module,
                [str(pyx)],
                include_dirs=[numpy.get_include(), str(pyx.parent)],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                libraries=["dl"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives=directives,
        include_path=[str(SRC)],
        nthreads=os.cpu_count() or 1,
    ),
)
