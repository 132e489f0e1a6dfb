"""Generate ``fastact/kernels/_cython_kernels.pyx`` from its Tempita template.

Inputs, all read as source text by path (never by importing the ``fastact`` package: ``setup.py``
runs this in an isolated build environment where NumPy/Numba may be absent):

* ``fastact/kernels/_cython_kernels.pyx.in``  the Tempita template (loops, prelu, softmax);
* ``fastact/_registry.py``                    the op table (executed by path: it is pure Python);
* ``fastact/_math.py``                        the scalar formulas, parsed with :mod:`ast`.

Every function of ``_math.py`` becomes ``cdef inline double f_NAME(double a, ...) noexcept nogil``
(``(double, double)`` for ``*_and_derivative``) whose body is the Python body copied verbatim,
with two mechanical rewrites: calls to other formulas get the ``f_`` prefix, and the body's
local variables are declared ``cdef double``.  The body must stay in the subset documented in
``_math.py``; anything else raises :class:`FormulaError` naming the file and line, so an
unsupported construct fails the build generator, not the C compiler.

Standard library only (plus ``Cython.Tempita`` for rendering).  API: :func:`render` and
:func:`write`; ``python fastact/kernels/_cython_codegen.py [ROOT]`` writes the ``.pyx``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import textwrap
import types
from dataclasses import dataclass

TEMPLATE = os.path.join("fastact", "kernels", "_cython_kernels.pyx.in")
OUTPUT = os.path.join("fastact", "kernels", "_cython_kernels.pyx")
REGISTRY = os.path.join("fastact", "_registry.py")
MATH = os.path.join("fastact", "_math.py")

#: Prefix of the Cython name of every formula (``sigmoid`` -> ``f_sigmoid``), so formulas never
#: clash with kernel names or with libm functions (``_math.tanh`` vs ``libc.math.tanh``).
PREFIX = "f_"

#: libm functions a formula may call: the names ``_math.py`` imports from ``math`` (possibly
#: under an alias) must be among these ``libc.math`` names.
LIBM = frozenset({
    "exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "fabs", "sqrt", "cbrt", "pow",
    "tanh", "sinh", "cosh", "atanh", "asinh", "acosh", "sin", "cos", "tan", "atan", "atan2",
    "erf", "erfc", "floor", "ceil", "trunc", "copysign", "fmod", "hypot", "ldexp",
})

#: Functions of ``_math.py`` whose Python body is only a reference meaning: the template
#: defines their Cython version (``f_pow2``: 2**k from exponent bits; ``f_fma``: C's fma;
#: ``f_mul_add``: C's fma where the compiler targets FMA, else a * b + c; ``f_exponent`` and
#: ``f_significand``: a positive normal double's exponent and mantissa bits) and they are not
#: copied.
TEMPLATE_PROVIDED = frozenset({"pow2", "fma", "mul_add", "exponent", "significand"})

#: Always cimported by the template (its hand-written kernels use them).
BASE_CIMPORTS = {"exp": "exp", "expm1": "expm1", "fabs": "fabs", "log": "log",
                 "log1p": "log1p", "libm_tanh": "tanh", "erfc": "erfc"}

#: Branch-free helpers of ``_math.py`` that the Cython backend replaces by the libm function of
#: the same meaning, where gcc leaves the loops around them scalar and the branchy libm version
#: is then faster.  erfc_poly: no kernel calls it since the exact gelu takes erfc's pieces
#: (``gelu_erfc_parts``) and its Cython loops vectorise (see ``_op_context``); when the gelu
#: loop still called erfc_poly and stayed scalar, libm's erfc was faster there (benchmark group
#: elementwise gelu, float32 1e7, cython, 2 threads: 154 ms with libm erfc, 316 ms with
#: erfc_poly).
LIBM_EQUIVALENTS = {"erfc_poly": "erfc"}

#: Line of the generated file that records the build facts (see :func:`read_build_facts`).
FACTS_MARKER = "# fastact-build-facts: "

#: Build facts used when none are given (e.g. generating outside setup.py).
DEFAULT_FACTS = {
    "compile_args": [],
    "link_args": [],
    "march": "unknown",
    "openmp_requested": False,
}


#: Helpers of ``_math.py`` whose names end so may return a tuple of any length (a ctuple of
#: doubles in C): pieces that several formulas combine.
TUPLE_HELPER_SUFFIXES = ("_factors", "_parts")


class FormulaError(ValueError):
    """A function of ``_math.py`` uses something the Cython translation cannot express."""


@dataclass(frozen=True)
class Formula:
    name: str          # Python name in _math.py
    cname: str         # Cython name in the generated module
    args: tuple        # argument names (all C doubles)
    returns: int       # 1 (double) or n (ctuple of n doubles)
    locals: tuple      # local variables, declared cdef double
    body: str          # Cython body, indented by four spaces

    @property
    def signature(self) -> str:
        ret = "double" if self.returns == 1 else "(" + ", ".join(["double"] * self.returns) + ")"
        args = ", ".join(f"double {a}" for a in self.args)
        return f"cdef inline {ret} {self.cname}({args}) noexcept nogil"

    def source(self) -> str:
        lines = [self.signature + ":"]
        if self.locals:
            lines.append("    cdef double " + ", ".join(self.locals))
        lines.append(self.body)
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# _math.py -> formulas
# ------------------------------------------------------------------------------------------------

_ALLOWED_NODES = (
    ast.Assign, ast.AugAssign, ast.Return, ast.If, ast.Pass,
    ast.Expr,  # only a docstring, checked below
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Name,
    ast.Constant, ast.Tuple, ast.Load, ast.Store,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)


def _is_docstring(stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _libm_imports(tree, path) -> dict:
    """alias -> libc.math name, from ``from math import NAME [as ALIAS]`` statements."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "math":
            for a in node.names:
                if a.name not in LIBM:
                    raise FormulaError(f"{path}:{node.lineno}: math.{a.name} has no libc.math "
                                       f"equivalent known to the Cython generator")
                names[a.asname or a.name] = a.name
    return names


def _numeric_constant(node):
    """Value of a numeric constant expression (literals and + - * / ** between them), or None."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _numeric_constant(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult,
                                                             ast.Div, ast.Pow)):
        a, b = _numeric_constant(node.left), _numeric_constant(node.right)
        if a is None or b is None:
            return None
        ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
               ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}
        return float(ops[type(node.op)]())
    return None


def _module_constants(tree) -> dict:
    """``NAME = <numeric constant expression>`` at module level -> float value."""
    consts = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            value = _numeric_constant(node.value)
            if value is not None:
                consts[node.targets[0].id] = float(value)
    return consts


def _assigned_names(fn) -> list:
    names = []

    def add(target):
        if isinstance(target, ast.Name):
            if target.id not in names:
                names.append(target.id)
        elif isinstance(target, ast.Tuple):
            for elt in target.elts:
                add(elt)
        else:
            raise FormulaError(f"line {target.lineno}: only plain names can be assigned")

    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                add(t)
        elif isinstance(node, ast.AugAssign):
            add(node.target)
    return names


def _return_arity(fn, path) -> int:
    arities = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Return):
            if node.value is None:
                raise FormulaError(f"{path}:{node.lineno}: {fn.name} returns nothing")
            if isinstance(node.value, ast.Tuple):
                arities.add(len(node.value.elts))
            elif fn.name.endswith("_and_derivative"):
                # another formula's pair (a call, or a choice between calls): the C compiler
                # checks the types
                arities.add(2)
            else:
                arities.add(1)
    if len(arities) != 1:
        raise FormulaError(f"{path}:{fn.lineno}: {fn.name} must return values of one arity, "
                           f"found {sorted(arities) or 'no return'}")
    arity = arities.pop()
    if fn.name.endswith(TUPLE_HELPER_SUFFIXES):
        return arity  # a helper's pieces (exp_factors, gelu_erfc_parts): any number
    if (arity == 2) != fn.name.endswith("_and_derivative") or arity > 2:
        raise FormulaError(f"{path}:{fn.lineno}: {fn.name} returns {arity} value(s); only "
                           f"*_and_derivative functions return a pair (and helpers named "
                           f"*{'/*'.join(TUPLE_HELPER_SUFFIXES)} a tuple)")
    return arity


def _check_function(fn, path, functions, libm, consts):
    a = fn.args
    if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.kw_defaults or a.posonlyargs:
        raise FormulaError(f"{path}:{fn.lineno}: {fn.name}: only plain positional parameters "
                           f"(no defaults, *args, keywords) can be translated")
    if fn.decorator_list:
        raise FormulaError(f"{path}:{fn.lineno}: {fn.name}: decorators are not supported")
    args = [p.arg for p in a.args]
    local_names = set(args) | set(_assigned_names(fn))
    clash = local_names & (set(functions) | set(libm))
    if clash:
        raise FormulaError(f"{path}:{fn.lineno}: {fn.name}: local name(s) {sorted(clash)} "
                           f"shadow a formula or libm function")
    callees = {id(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
    for i, stmt in enumerate(fn.body):
        for node in ast.walk(stmt):
            where = f"{path}:{getattr(node, 'lineno', fn.lineno)}: {fn.name}"
            if not isinstance(node, _ALLOWED_NODES):
                raise FormulaError(f"{where}: {type(node).__name__} is outside the subset the "
                                   f"Cython generator translates")
            if isinstance(node, ast.Expr) and not (i == 0 and _is_docstring(node)):
                raise FormulaError(f"{where}: expression statements are not supported")
            if isinstance(node, ast.Constant) and not (
                    type(node.value) in (int, float) or (i == 0 and _is_docstring(stmt))):
                raise FormulaError(f"{where}: constant {node.value!r} is not a number")
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.keywords:
                    raise FormulaError(f"{where}: only positional calls of plain names")
                if node.func.id not in functions and node.func.id not in libm:
                    raise FormulaError(f"{where}: call of {node.func.id!r}, which is neither a "
                                       f"function of _math.py nor an imported libm function")
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id not in local_names | set(functions) | set(libm) | set(consts):
                    raise FormulaError(f"{where}: unknown name {node.id!r}")
                if (node.id in functions or node.id in libm) and id(node) not in callees:
                    raise FormulaError(f"{where}: {node.id} used as a value, not called")


def _body_text(fn, lines, functions) -> str:
    """The function body copied verbatim, with calls of formulas renamed; dedented."""
    body = fn.body[1:] if _is_docstring(fn.body[0]) else fn.body
    if not body:
        raise FormulaError(f"{fn.name}: empty body")
    first = body[0].lineno - 1
    # keep comment lines directly above the first statement
    floor = fn.body[0].end_lineno if body is not fn.body else fn.lineno
    while first - 1 >= floor and lines[first - 1].strip().startswith("#"):
        first -= 1
    last = body[-1].end_lineno
    # renames: (line index, byte column start, byte column end, new text)
    edits = []
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and node.id in functions:
                if node.lineno != node.end_lineno:
                    raise FormulaError(f"{fn.name}: name spans lines")
                edits.append((node.lineno - 1, node.col_offset, node.end_col_offset,
                               PREFIX + node.id))
    chunk = [line.encode("utf-8") for line in lines[first:last]]
    for line, start, end, new in sorted(edits, reverse=True):
        b = chunk[line - first]
        chunk[line - first] = b[:start] + new.encode("utf-8") + b[end:]
    text = "".join(b.decode("utf-8") for b in chunk)
    text = textwrap.dedent(text).rstrip() + "\n"
    return textwrap.indent(text, "    ").rstrip("\n")


def parse_math(source: str, path: str = MATH):
    """(formulas in source order, libm imports alias -> name, module constants name -> float)."""
    tree = ast.parse(source, filename=path)
    lines = source.splitlines(keepends=True)
    libm = _libm_imports(tree, path)
    consts = _module_constants(tree)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    functions = {fn.name: PREFIX + fn.name for fn in defs}
    formulas = []
    for fn in defs:
        if fn.name in TEMPLATE_PROVIDED:
            continue
        _check_function(fn, path, functions, libm, consts)
        if fn.name in LIBM_EQUIVALENTS:
            args = tuple(p.arg for p in fn.args.args)
            formulas.append(Formula(
                name=fn.name, cname=functions[fn.name], args=args, returns=1, locals=(),
                body=f"    return {LIBM_EQUIVALENTS[fn.name]}({', '.join(args)})\n"))
            continue
        formulas.append(Formula(
            name=fn.name,
            cname=functions[fn.name],
            args=tuple(p.arg for p in fn.args.args),
            returns=_return_arity(fn, path),
            locals=tuple(n for n in _assigned_names(fn)
                         if n not in {p.arg for p in fn.args.args}),
            body=_body_text(fn, lines, functions),
        ))
    return formulas, libm, consts


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------

def load_registry(root: str):
    """Execute ``fastact/_registry.py`` by path, as a private module (pure Python)."""
    path = os.path.join(root, REGISTRY)
    name = "_fastact_registry_for_codegen"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def _op_context(op, formulas: dict) -> dict:
    params = list(op.param_names)
    needed = [op.name, f"{op.name}_derivative"]
    if op.y_backward is not None:
        needed.append(f"{op.name}_derivative_from_y")
    missing = [n for n in needed if n not in formulas]
    if missing:
        raise FormulaError(f"{MATH}: op {op.name!r} needs formula(s) {missing}")
    for n in needed + [f"{op.name}_and_derivative"]:
        f = formulas.get(n)
        if f is not None and len(f.args) != 1 + len(params):
            raise FormulaError(f"{MATH}: {n} takes {len(f.args)} arguments; the registry gives "
                               f"{op.name} the parameters {params}")
    # a choice parameter (gelu's approximate, passed as the choice's index 0.0, 1.0, ...) gets a
    # loop of its own per choice, with the constant index passed: gcc then drops the select
    # between the forms inside the loop body, and with the formulas inlined (setup.py's
    # max-inline-insns-single) vectorises it.  gelu 1e6, 1 thread, cython: exact form float64
    # 36.0 -> 6.6 ms, float32 36.2 -> 5.7 ms (derivative 39.5 -> 9.0 and 8.2 ms), tanh form
    # 16.3 -> 2.4 ms and 17.0 -> 2.3 ms (derivative 22.4 -> 3.5 and 3.4 ms); neither change
    # alone vectorised the exact form.
    choice = next((p for p in op.params if p.choices), None)
    return types.SimpleNamespace(**{
        "name": op.name,
        "params": params,
        "pdecl": "".join(f"double {p}, " for p in params),  # in a def signature
        "pargs": "".join(f", {p}" for p in params),           # appended to a formula call
        # the kernel loops to emit, as (condition, formula call's extra arguments): one per
        # choice (the index as a C double literal) and the general loop last
        "variants": ([(f"{choice.name} == {k}.0",
                       "".join(f", {f'{k}.0' if p == choice.name else p}" for p in params))
                      for k in range(len(choice.choices))] if choice else [])
        + [("True", "".join(f", {p}" for p in params))],
        "fused": f"{op.name}_and_derivative" in formulas,
        "y_backward": op.y_backward is not None,
        "kernels": list(op.kernel_names()),
    })


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

def _read(root: str, rel: str) -> str:
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        return f.read()


def _cython_version() -> str:
    try:
        import Cython
    except ImportError:  # pragma: no cover - rendering needs Cython.Tempita anyway
        return "unknown"
    return Cython.__version__


def normalise_facts(build: dict | None) -> dict:
    facts = dict(DEFAULT_FACTS)
    if build:
        facts.update(build)
    facts.setdefault("cython_version", _cython_version())
    if not facts.get("cython_version"):
        facts["cython_version"] = _cython_version()
    return facts


def sources_hash(root: str) -> str:
    """SHA-256 (16 hex digits) of everything the generated module is made from; the built
    module records it as ``SOURCES_SHA`` so a stale build can be detected."""
    import hashlib

    h = hashlib.sha256()
    for rel in (TEMPLATE, REGISTRY, MATH, os.path.join("fastact", "kernels",
                                                       "_cython_codegen.py")):
        h.update(rel.encode())
        with open(os.path.join(root, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def context(root: str, build: dict | None = None) -> dict:
    """Everything the template sees."""
    registry = load_registry(root)
    formulas, libm, consts = parse_math(_read(root, MATH), MATH)
    by_name = {f.name: f for f in formulas}
    cimports = dict(BASE_CIMPORTS)
    for alias, name in libm.items():
        if cimports.get(alias, name) != name:
            raise FormulaError(f"{MATH}: {alias} is imported as math.{name}, but the template "
                               f"binds {alias} to libc.math.{cimports[alias]}")
        cimports[alias] = name
    ops = [_op_context(op, by_name) for op in registry.OPS if op.kind == "elementwise"]
    facts = normalise_facts(build)

    def F(name: str) -> str:
        """Cython name of formula ``name`` (a KeyError here is a template bug)."""
        return by_name[name].cname

    gated_ops = []
    for op in registry.OPS:
        if op.kind == "gated":
            gate = _op_context(registry.OPS_BY_NAME[op.extra["gate"]], by_name)
            gated_ops.append(types.SimpleNamespace(name=op.name, gate=gate.name,
                                                   pdecl=gate.pdecl, pargs=gate.pargs,
                                                   fused=gate.fused, variants=gate.variants))
    loss_ops = [types.SimpleNamespace(name=op.name, layout=op.extra.get("layout"))
                for op in registry.OPS if op.kind == "loss"]
    return {
        "ops": ops,
        "gated_ops": gated_ops,
        "loss_ops": loss_ops,
        "formulas": formulas,
        "F": F,
        "cimports": ", ".join(n if a == n else f"{n} as {a}" for a, n in sorted(cimports.items())),
        "constants": [(name, _c_double(value)) for name, value in consts.items()],
        "kernel_names": list(registry.kernel_names()),
        "facts": facts,
        "sources_sha": sources_hash(root),
        "facts_line": FACTS_MARKER + json.dumps(facts, sort_keys=True),
        "repr": repr,
    }


def _c_double(value: float) -> str:
    """An exact C literal for a double."""
    if value != value:
        return "NAN"
    if value in (float("inf"), float("-inf")):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return value.hex()


def render(root: str, build: dict | None = None) -> str:
    """The text of ``_cython_kernels.pyx`` for the checkout at ``root``.

    ``build`` holds the build facts recorded as module constants (``compile_args``,
    ``link_args``, ``march``, ``openmp_requested``, ``cython_version``); see ``setup.py``.
    """
    from Cython import Tempita

    template = Tempita.Template(_read(root, TEMPLATE), name=TEMPLATE)
    return template.substitute(context(root, build))


def read_build_facts(path: str) -> dict | None:
    """The build facts recorded in a generated ``.pyx`` (None if absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(FACTS_MARKER):
                    return json.loads(line[len(FACTS_MARKER):])
    except OSError:
        return None
    return None


def write(root: str, build: dict | None = None) -> str:
    """Render and write the ``.pyx`` if its content changed (keeps its mtime otherwise, so the
    extension is not recompiled needlessly).  Returns the path."""
    path = os.path.join(root, OUTPUT)
    text = render(root, build)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":  # pragma: no cover
    _root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(write(_root, read_build_facts(os.path.join(_root, OUTPUT))))
