"""Build the Cython extensions of kzfilter.

Every ``.pyx`` under ``src/kzfilter`` becomes an extension module of the same dotted name, so a new
compiled module needs no edit here.  ``KZFILTER_DEBUG=1`` builds with Cython bounds checks and
``-fsanitize=address,undefined`` for the sanitizer job in CI (``KZFILTER_DEBUG=fuzz``: also clang's
``-fsanitize=fuzzer-no-link``, for tests/fuzz/).  ``KZFILTER_ONLY=a.pyx,b.pyx`` builds only those
modules (development: ``KZFILTER_ONLY=src/kzfilter/match/_automaton.pyx python setup.py build_ext
--inplace``), so a half-written neighbour cannot break your build.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("KZFILTER_DEBUG", "") not in ("", "0")
SRC = Path("src")

compile_args = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unreachable-code"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # POPCNT (every x86-64 CPU since 2008, x86-64-v2): the name automaton counts child bits per step.
    compile_args.append("-mpopcnt")
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
    # Sanitizer build (tests/robustness/test_sanitizer_build.py): load it with the ASan runtime
    # preloaded (LD_PRELOAD=$(gcc -print-file-name=libasan.so)).  -fno-sanitize-recover makes the
    # first UBSan report fatal whatever UBSAN_OPTIONS says, so a test cannot pass over one.
    sanitizers = "address,undefined"
    if os.environ["KZFILTER_DEBUG"] == "fuzz":
        # Coverage-guided fuzzing (tests/fuzz/README.md): clang's libFuzzer edge counters in the
        # compiled modules, so atheris sees the C branches too; load with atheris's
        # asan_with_fuzzer.so preloaded.  Needs clang (CC=clang-14 if "clang" is not on PATH).
        sanitizers = "fuzzer-no-link," + sanitizers
        os.environ.setdefault("CC", "clang")
        os.environ.setdefault("LDSHARED", os.environ["CC"] + " -shared")
    # -O0: gcc compiles a 2 MB Cython module with ASan+UBSan ~5x faster than at -O1 (10 s against
    # 55 s for _hostnames.c), which keeps the CI sanitizer job short; fuzzing wants speed: -O1.
    opt = "-O1" if os.environ["KZFILTER_DEBUG"] == "fuzz" else "-O0"
    compile_args = [opt, "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitizers}",
                    "-fno-sanitize-recover=undefined", "-Wno-unused-function"]
    link_args = [f"-fsanitize={sanitizers}"]


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
    # Compile the extensions' C files in parallel: the generated files are large and -O3 is slow.
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
    ext_modules=cythonize(
        extensions(),
        compiler_directives=directives,
        include_path=[str(SRC)],
        nthreads=os.cpu_count() or 1,
    ),
)
