"""The Cython backend's generator: formulas copied from ``_math.py``, kernels from the registry.

These tests need no compiler except the last group, which checks the built extension
(``pip install -e .``) against the checkout.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap

import pytest

from fastact import _registry
from fastact.kernels import _cython_codegen as codegen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYX = os.path.join(ROOT, codegen.OUTPUT)
MATH_PATH = os.path.join(ROOT, codegen.MATH)


def _math_functions():
    with open(MATH_PATH, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return [n for n in tree.body if isinstance(n, ast.FunctionDef)]


@pytest.fixture(scope="module")
def rendered():
    return codegen.render(ROOT)


def test_every_formula_is_emitted(rendered):
    functions = _math_functions()
    assert functions
    names = {fn.name for fn in functions}
    for fn in functions:
        if fn.name in codegen.TEMPLATE_PROVIDED:  # e.g. pow2: the template's own C version
            assert re.search(rf"\bf_{fn.name}\b", rendered), f"primitive {fn.name} missing"
            continue
        arity = {len(r.value.elts) if isinstance(r.value, ast.Tuple)
                 else 2 if fn.name.endswith("_and_derivative") else 1
                 for r in ast.walk(fn) if isinstance(r, ast.Return)}.pop()
        ret = "double" if arity == 1 else r"\(" + ", ".join(["double"] * arity) + r"\)"
        args = ", ".join(f"double {a.arg}" for a in fn.args.args)
        pattern = rf"^cdef inline {ret} f_{fn.name}\({re.escape(args)}\) noexcept nogil:$"
        assert re.search(pattern, rendered, re.M), f"formula {fn.name} missing: {pattern}"
        if fn.name in codegen.LIBM_EQUIVALENTS:  # the libm function of the same meaning
            libm = codegen.LIBM_EQUIVALENTS[fn.name]
            call = f"    return {libm}({', '.join(a.arg for a in fn.args.args)})"
            assert f"f_{fn.name}(" in rendered and call in rendered, fn.name
            continue
        # the body is copied verbatim, except that calls of formulas get the f_ prefix
        body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) else fn.body
        with open(MATH_PATH, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for line in lines[body[0].lineno - 1:body[-1].end_lineno]:
            line = re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\(", r"f_\1(",
                          line.strip())
            assert line in rendered, f"{fn.name}: line {line!r} not copied"


def test_every_elementwise_kernel_is_generated(rendered):
    defined = set(re.findall(r"^def (\w+)\(", rendered, re.M))
    missing = set(_registry.kernel_names()) - defined
    assert not missing


def test_unsupported_formula_is_rejected():
    source = textwrap.dedent("""
        from math import exp
        def bad(x):
            for i in range(3):
                x = x + 1.0
            return x
    """)
    with pytest.raises(codegen.FormulaError, match="For"):
        codegen.parse_math(source, "<test>")
    with pytest.raises(codegen.FormulaError, match="unknown name 'SCALE'"):
        codegen.parse_math("def f(x):\n    return SCALE * x\n", "<test>")
    with pytest.raises(codegen.FormulaError, match="only positional calls of plain names"):
        codegen.parse_math("def f(x):\n    return np.exp(x)\n", "<test>")
    with pytest.raises(codegen.FormulaError, match="pair"):
        codegen.parse_math("def f(x):\n    return x, x\n", "<test>")


def test_translation_renames_only_formula_calls():
    source = textwrap.dedent("""
        from math import exp
        from math import tanh as libm_tanh
        HALF = 1.0 / 2.0
        def g(x, k):
            '''doc'''
            # keep me
            g_x = x * k  # g_x is not a call of g
            return HALF * exp(g_x) + libm_tanh(x)
        def g_and_derivative(x, k):
            v = g(x, k)
            return v, g(v, k)
    """)
    formulas, libm, consts = codegen.parse_math(source, "<test>")
    assert libm == {"exp": "exp", "libm_tanh": "tanh"}
    assert consts == {"HALF": 0.5}
    g, gd = formulas
    assert g.signature == "cdef inline double f_g(double x, double k) noexcept nogil"
    assert g.locals == ("g_x",)
    assert g.body.splitlines() == [
        "    # keep me",
        "    g_x = x * k  # g_x is not a call of g",
        "    return HALF * exp(g_x) + libm_tanh(x)",
    ]
    assert gd.returns == 2 and "v = f_g(x, k)" in gd.body and "return v, f_g(v, k)" in gd.body


# ------------------------------------------------------------------------------------------------
# the generated file and the built extension
# ------------------------------------------------------------------------------------------------

def test_generated_pyx_is_up_to_date():
    if not os.path.exists(PYX):
        pytest.skip(f"{codegen.OUTPUT} not generated (run: pip install -e .)")
    facts = codegen.read_build_facts(PYX)
    assert facts is not None, "the generated .pyx has no build-facts line"
    with open(PYX, encoding="utf-8") as f:
        current = f.read()
    assert codegen.render(ROOT, facts) == current, (
        f"{codegen.OUTPUT} is stale: the template, _math.py or _registry.py changed; "
        f"rebuild with: pip install -e .")


@pytest.fixture(scope="module")
def built():
    return pytest.importorskip("fastact.kernels._cython_kernels")


def test_built_module_defines_every_kernel(built):
    missing = [n for n in _registry.kernel_names() if not callable(getattr(built, n, None))]
    assert not missing
    for name in ("set_num_threads", "get_num_threads", "info"):
        assert callable(getattr(built, name))


def test_built_module_matches_checkout(built):
    assert built.SOURCES_SHA == codegen.sources_hash(ROOT), (
        "the compiled Cython extension was built from other sources than this checkout; "
        "rebuild with: pip install -e .")


def test_built_module_info(built):
    info = built.info()
    for key in ("version", "openmp", "threads", "max_threads", "compile_args", "march"):
        assert key in info
    assert isinstance(info["openmp"], bool)
    assert info["openmp"] == built.OPENMP_REQUESTED
    assert not any(flag in ("-ffast-math", "-Ofast") for flag in info["compile_args"])
    previous = built.get_num_threads()
    try:
        built.set_num_threads(1)
        assert built.get_num_threads() == 1
    finally:
        built.set_num_threads(previous)
