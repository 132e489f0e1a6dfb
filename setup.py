"""Build script: the optional Cython/OpenMP extension ``fastact.kernels._cython_kernels`` and
the small-array fast path's helper ``fastact._fastcall``.

Metadata lives in ``pyproject.toml``; this file only adds the extension.

1. ``fastact/kernels/_cython_codegen.py`` (loaded by path: the build environment may lack NumPy
   or Numba) renders ``_cython_kernels.pyx`` from ``_cython_kernels.pyx.in``, the registry and
   the scalar formulas of ``fastact/_math.py``, recording the build flags chosen here.
2. Flags: ``-O3 -fno-trapping-math -g0 --param max-inline-insns-single=1000`` (the last
   where the compiler takes it, see ``build_flags``; never ``-ffast-math``/``-Ofast``: DESIGN.md section 4;
   no debug information unless ``FASTACT_DEBUG_SYMBOLS=1``: it made the build 4x slower),
   an instruction-set flag (``-march=native``; ``FASTACT_MARCH=<value>`` picks another,
   ``FASTACT_PORTABLE=1`` none), and ``-fopenmp`` when a probe compile with it succeeds
   (otherwise the kernels build serial).  Link ``-fopenmp -lm``.
3. If the extension cannot be built (no compiler, Cython error, ...), the install still
   succeeds with a warning and the ``cython`` backend is simply unavailable -- unless
   ``FASTACT_REQUIRE_BACKENDS`` names ``cython`` (CI), which makes the failure fatal.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
EXT_NAME = "fastact.kernels._cython_kernels"
#: gcc's max-inline-insns-single for the kernels (its -O3 default is 200)
INLINE_LIMIT = 1000
#: gcc's inline-unit-growth (percent; default 40): the generated module is large, and at the
#: default gcc stopped inlining the gelu formulas into some kernels once the unit had grown
INLINE_UNIT_GROWTH = 400
PYX = "fastact/kernels/_cython_kernels.pyx"
FASTCALL_NAME = "fastact._fastcall"
FASTCALL_PYX = "fastact/_fastcall.pyx"

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "cpow": True,
}


def _warn(message: str) -> None:
    print(f"\n*** fastact setup.py: WARNING: {message}\n", file=sys.stderr)


def _cython_required() -> bool:
    wanted = os.environ.get("FASTACT_REQUIRE_BACKENDS", "")
    return "cython" in [b.strip().lower() for b in wanted.split(",")]


def _load_codegen():
    path = os.path.join(ROOT, "fastact", "kernels", "_cython_codegen.py")
    spec = importlib.util.spec_from_file_location("_fastact_cython_codegen", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------
# compiler probes
# ------------------------------------------------------------------------------------------------

_OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel for reduction(+:n)
    for (int i = 0; i < 4; i++) n += 1;
    return (n == 4 && omp_get_max_threads() > 0) ? 0 : 1;
}
"""

_PLAIN_PROBE = "int main(void) { return 0; }\n"


def _new_compiler():
    from distutils.ccompiler import new_compiler  # setuptools provides distutils
    from distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    return cc


def _compiles(source: str, compile_args: list[str], link_args: list[str]) -> bool:
    """Whether ``source`` compiles and links with these flags (output hidden)."""
    try:
        cc = _new_compiler()
    except Exception:
        return False
    with tempfile.TemporaryDirectory(prefix="fastact-probe-") as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        # silence the probe's compiler output (a failing probe is expected, not an error)
        saved = os.dup(2), os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            objects = cc.compile([src], output_dir=tmp, extra_postargs=compile_args)
            cc.link_executable(objects, os.path.join(tmp, "probe"), extra_postargs=link_args)
        except Exception:
            return False
        finally:
            os.dup2(saved[0], 2), os.dup2(saved[1], 1)
            for fd in (*saved, devnull):
                os.close(fd)
    return True


def build_flags() -> dict:
    """Compiler/linker flags and the facts recorded in the module (``info()``)."""
    try:
        msvc = _new_compiler().compiler_type == "msvc"
    except Exception:
        msvc = False
    if msvc:  # pragma: no cover - not the dev platform
        base, omp, link_omp, march = ["/O2", "/fp:precise"], ["/openmp"], [], "portable"
        march_flags: list[str] = []
    else:
        # -g0: Python's own CFLAGS carry -g; debug information for the ~120k lines of
        # generated C quadrupled the compile (gcc 12, 2 cores: 304 s with -g, 75 s with -g0).
        # FASTACT_DEBUG_SYMBOLS=1 keeps it.
        debug = os.environ.get("FASTACT_DEBUG_SYMBOLS", "").strip() not in ("", "0")
        base = ["-O3", "-fno-trapping-math"] + ([] if debug else ["-g0"])
        omp, link_omp = ["-fopenmp"], ["-fopenmp"]
        if os.environ.get("FASTACT_PORTABLE", "").strip() not in ("", "0"):
            march, march_flags = "portable", []
        else:
            value = os.environ.get("FASTACT_MARCH", "").strip() or "native"
            march, march_flags = f"-march={value}", [f"-march={value}"]
            if not _compiles(_PLAIN_PROBE, march_flags, []):
                _warn(f"the compiler rejects {march}; building portable code")
                march, march_flags = "portable", []
        # gcc's inliner leaves the large formulas (the exact gelu: erfc expansion, exp and
        # series) as calls in their loops, which then stay scalar; a higher limit inlines them
        # and the loops vectorise like the rest (with the per-choice loops of
        # _cython_codegen._op_context: gelu float64 1e6, 1 thread, 36.0 -> 6.6 ms; the other
        # ops' Cython kernels measured unchanged, 0.95-1.03x).  Only where the compiler
        # accepts the parameter (gcc).
        inline = ["--param", f"max-inline-insns-single={INLINE_LIMIT}",
                  "--param", f"inline-unit-growth={INLINE_UNIT_GROWTH}"]
        if _compiles(_PLAIN_PROBE, base + inline, []):
            base += inline
    openmp = _compiles(_OPENMP_PROBE, base + omp, link_omp)
    if not openmp:
        _warn("the C compiler does not support OpenMP (-fopenmp); the Cython kernels will "
              "run single-threaded")
    compile_args = base + march_flags + (omp if openmp else [])
    link_args = (link_omp if openmp else []) + ([] if msvc else ["-lm"])
    return {
        "compile_args": compile_args,
        "link_args": link_args,
        "march": march,
        "openmp_requested": openmp,
    }


# ------------------------------------------------------------------------------------------------
# optional build
# ------------------------------------------------------------------------------------------------

class OptionalBuildExt(build_ext):
    """build_ext whose failure leaves fastact installed without the Cython backend."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # e.g. DistutilsPlatformError: no compiler at all
            self._failed(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # CCompilerError, CompileError, LinkError, Cython errors...
            self._failed(exc, ext)

    def _failed(self, exc, ext=None):
        if _cython_required():
            raise exc
        name = ext.name if ext is not None else "the C extensions"
        _warn(f"could not build {name} ({type(exc).__name__}: {exc}). fastact is installed "
              f"without the 'cython' backend; install a C compiler and Cython, then reinstall.")


def _extensions() -> list[Extension]:
    try:
        flags = build_flags()
        codegen = _load_codegen()
        codegen.write(ROOT, flags)
    except Exception as exc:
        if _cython_required():
            raise
        _warn(f"could not generate {PYX} ({type(exc).__name__}: {exc}); "
              f"the 'cython' backend will be unavailable")
        return []
    ext = Extension(
        EXT_NAME,
        [PYX],
        extra_compile_args=flags["compile_args"],
        extra_link_args=flags["link_args"],
    )
    ext.cython_directives = dict(CYTHON_DIRECTIVES)  # read by Cython's build_ext
    return [ext] + _fastcall_extension(flags)


def _fastcall_extension(flags: dict) -> list[Extension]:
    """``fastact._fastcall``: the small-array fast path's guard in C (hand-written, no
    generated code; optional like the kernels: without it ``fastact.api`` uses its Python
    twin).  Needs NumPy's headers (NumPy is a build requirement)."""
    try:
        import numpy
    except ImportError as exc:
        if _cython_required():
            raise
        _warn(f"NumPy is not importable at build time ({exc}); fastact._fastcall is skipped")
        return []
    ext = Extension(
        FASTCALL_NAME,
        [FASTCALL_PYX],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=[a for a in flags["compile_args"] if a != "-fopenmp"],
    )
    ext.cython_directives = dict(CYTHON_DIRECTIVES)
    return [ext]


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
