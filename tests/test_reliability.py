"""Reliability (issue 8): threads, fork/spawn/forkserver, disk caches, the floating-point
environment, determinism and 64-bit indices.

Everything that could crash, abort or hang the interpreter runs in a fresh subprocess with a
timeout (``_subprocess.run_python``), so a failure fails one test, not the run.  The op lists
come from the registry (``fastact._registry.OPS`` via ``fastact._tools.example_call``), so ops
added later are covered without editing this file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastact as fa
from fastact import _config, _registry
from fastact._tools import example_call

from _subprocess import PACKAGE_ROOT, run_python, subprocess_environment

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
HOST = [b for b in ("numba", "cython") if b in fa.backends()]
LAYERS = ("workqueue", "omp", "tbb")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return subprocess_environment(tmp_path_factory)


def _unavailable(reason: str):
    """Skip, except under CI=true, where every piece this file tests must be present."""
    if IN_CI:
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


# ------------------------------------------------------------------------------------------------
# the calls every test below makes: every op and form of the registry (+ losses when present)
# ------------------------------------------------------------------------------------------------

#: Builds ``CASES``: a list of (label, function, args, kwargs) on arrays of N elements.  Shared by
#: the subprocess scripts (as source text) and by this process.
CASES_SOURCE = r'''
import numpy as np
import fastact as fa
from fastact import _registry
from fastact._tools import example_call

def make_cases(rows, cols, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
    x.flat[::97] = 0.0  # kinks
    cases, not_covered = [], []
    for spec in _registry.OPS:
        for form in spec.forms:
            uses = [False, True] if (form == "backward" and spec.y_backward is not None
                                     and spec.kind != "rowwise"
                                     and spec.y_backward(spec.defaults)) else [False]
            for use_y in uses:
                label = spec.public_name(form) + ("[y]" if use_y else "")
                try:
                    fn, args, kwargs = example_call(spec, form, x, use_y=use_y)
                except Exception as exc:  # a kind example_call does not know (yet)
                    not_covered.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                cases.append((label, fn, list(args), dict(kwargs)))
    names = {c[0] for c in cases}
    if hasattr(fa, "cross_entropy_and_grad") and "cross_entropy_and_grad" not in names:
        target = rng.integers(0, cols, rows)
        cases.append(("cross_entropy_and_grad", fa.cross_entropy_and_grad, [x, target], {}))
    return cases, not_covered

def run_case(case, backend=None):
    label, fn, args, kwargs = case
    if backend is not None:
        kwargs = dict(kwargs, backend=backend)
    r = fn(*args, **kwargs)
    return [np.array(v, copy=True) for v in (r if isinstance(r, tuple) else (r,))]

def same_bits(a, b):
    return all(u.dtype == v.dtype and u.shape == v.shape and u.tobytes() == v.tobytes()
               for u, v in zip(a, b)) and len(a) == len(b)
'''

_ns: dict = {}
exec(compile(CASES_SOURCE, "<cases>", "exec"), _ns)
make_cases, run_case, same_bits = _ns["make_cases"], _ns["run_case"], _ns["same_bits"]


def test_cases_cover_the_registry():
    cases, not_covered = make_cases(3, 4)
    labels = {c[0] for c in cases}
    for spec in _registry.OPS:
        if spec.kind in ("elementwise", "channel", "rowwise", "gated"):
            for form in spec.forms:
                assert spec.public_name(form) in labels
    assert not [n for n in not_covered if n.split(":")[0].split("[")[0].split("_")[0]
                in {s.name for s in _registry.OPS if s.kind in ("elementwise", "channel",
                                                               "rowwise", "gated")}], not_covered


# ------------------------------------------------------------------------------------------------
# 1. concurrent calls from 8 Python threads, on every installed Numba threading layer
# ------------------------------------------------------------------------------------------------

CONCURRENT = CASES_SOURCE + r'''
import json, os, threading
import numba
from fastact.kernels import numba_cpu

res = {}
try:
    res["layer"] = fa.backend_info()["numba"]["threading_layer"]
except Exception as exc:  # the requested layer cannot be loaded here
    print(json.dumps({"unavailable": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
backends = [b for b in ("numba", "cython") if b in fa.backends()]
cases, res["not_covered"] = make_cases(1000, 1000)  # 1e6 elements: parallel kernels
# the serial results: one call at a time, one thread
previous = fa.set_num_threads(1)
expected = {(b, c[0]): run_case(c, b) for b in backends for c in cases}
fa.set_num_threads(previous)
errors = []
barrier = threading.Barrier(8)

def worker(k):
    backend = backends[k % len(backends)]
    order = cases[k % len(cases):] + cases[:k % len(cases)]
    barrier.wait()
    try:
        with fa.use_backend(backend):  # a contextvar: other threads keep their own choice
            for rep in range(REPEATS):
                for c in order:
                    if not same_bits(run_case(c), expected[backend, c[0]]):
                        errors.append(f"thread {k} {backend} {c[0]} repeat {rep}")
    except Exception as exc:
        errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
res.update(errors=errors[:20], n_errors=len(errors), cases=len(cases), backends=backends,
           layer_after=numba.threading_layer(), serial_fallbacks=numba_cpu.SERIAL_FALLBACKS,
           policy=fa.backend_info()["numba"]["threading_policy"])
print(json.dumps(res))
'''


# Every installed layer explicitly; the default one is one of them (tbb where the wheel is
# installed, else omp or workqueue: test_default_layer_is_thread_safe_where_tbb_is_installed
# checks which), so it is not run a second time (it was the slowest test of the suite).
@pytest.mark.skipif("numba" not in fa.backends(), reason="numba backend unavailable")
@pytest.mark.parametrize("layer", LAYERS)
def test_concurrent_calls_give_serial_results(env, layer):
    child = dict(env)
    child["NUMBA_THREADING_LAYER"] = layer
    out = run_python("REPEATS = 2\n" + CONCURRENT, child, timeout=600)
    if "unavailable" in out:
        _unavailable(f"Numba threading layer {layer} is not installed: {out['unavailable']}")
    assert out["layer"] == layer
    assert out["n_errors"] == 0, out["errors"]
    assert out["cases"] >= len(_registry.OPS)
    if out["layer"] == "workqueue":
        assert "one thread at a time" in out["policy"]
    else:
        assert out["serial_fallbacks"] == 0  # thread-safe layers run every call in parallel


def test_default_layer_is_thread_safe_where_tbb_is_installed(env):
    """The tbb dependency (pyproject.toml) is what makes the default layer thread-safe on
    Linux x86-64; with CI=true it must be installed and used."""
    if "numba" not in fa.backends():
        pytest.skip("numba backend unavailable")
    child = dict(env)
    child.pop("NUMBA_THREADING_LAYER", None)
    out = run_python("""
        import json, fastact as fa
        info = fa.backend_info()["numba"]
        print(json.dumps({k: info[k] for k in ("threading_layer", "tbb", "threading_policy",
                                               "threading_layer_requested")}))
        """, child)
    assert out["threading_layer"] in ("tbb", "omp"), out
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        try:
            import importlib.metadata as md
            md.version("tbb")
        except Exception:
            _unavailable("the tbb wheel (a dependency on Linux x86-64) is not installed")
        assert out["threading_layer"] == "tbb", out


# ------------------------------------------------------------------------------------------------
# 2. fork / spawn / forkserver
# ------------------------------------------------------------------------------------------------

FORK = CASES_SOURCE + r'''
import json, os, pickle
backends = fa.backends()
cases, _ = make_cases(300, 1000)  # 3e5 elements: above the parallel threshold
# the parent uses every backend's parallel kernels (threads started, OpenMP teams created)
parent = {(b, c[0]): run_case(c, b) for b in backends for c in cases}
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    bad = [f"{b} {c[0]}" for b in backends for c in cases
           if not same_bits(run_case(c, b), parent[b, c[0]])]
    info = fa.backend_info()
    msg = {"bad": bad, "numba_serial": info.get("numba", {}).get("forked_child_serial"),
           "cython_serial": info.get("cython", {}).get("forked_child_serial")}
    os.write(w, json.dumps(msg).encode())
    os._exit(0)
os.close(w)
data = b""
while chunk := os.read(r, 65536):
    data += chunk
_, status = os.waitpid(pid, 0)
res = {"status": status, "child": json.loads(data) if data else None, "backends": backends}
print(json.dumps(res))
'''


def test_forked_child_after_parent_used_every_backend(env):
    out = run_python(FORK, env, timeout=300)
    assert out["status"] == 0, out
    assert out["child"]["bad"] == [], out["child"]["bad"]
    if "numba" in out["backends"]:
        assert out["child"]["numba_serial"] is True
    if "cython" in out["backends"]:
        assert out["child"]["cython_serial"] is True


POOL = CASES_SOURCE + r'''
import json, multiprocessing as mp, os

def work(arg):
    import fastact as fa
    method, backend = arg
    cases, _ = make_cases(200, 1000)
    got = {c[0]: [a.tolist() for a in run_case(c, backend)] for c in cases[:6]}
    info = fa.backend_info()
    return {"pid": os.getpid(), "threads": info[backend].get("threads"),
            "tasks": len(os.listdir("/proc/self/task")), "got": got}

if __name__ == "__main__":
    if SET_AFFINITY:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    backends = [b for b in ("numba", "cython") if b in fa.backends()]
    cases, _ = make_cases(200, 1000)
    want = {b: {c[0]: [a.tolist() for a in run_case(c, b)] for c in cases[:6]} for b in backends}
    res = {}
    for method in METHODS:
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            outs = pool.map(work, [(method, b) for b in backends for _ in range(2)], chunksize=1)
        res[method] = [{"backend": b, "threads": o["threads"], "tasks": o["tasks"],
                        "same": o["got"] == want[b]}
                       for (_, b), o in zip([(method, b) for b in backends for _ in range(2)], outs)]
    print(json.dumps(res))
'''


def _pool_script(methods, set_affinity=False) -> str:
    return f"METHODS = {list(methods)!r}\nSET_AFFINITY = {set_affinity!r}\n" + POOL


def _pool_run(env, script, tmp_path):
    path = tmp_path / "pool_script.py"  # spawn/forkserver children re-import __main__: a file
    path.write_text(script)
    try:
        proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                              text=True, timeout=400, cwd=str(PACKAGE_ROOT))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"pool did not finish in 400 s: {exc.stderr}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pools_compute_correctly(env, tmp_path, method):
    out = _pool_run(env, _pool_script([method]), tmp_path)
    assert out[method], out
    for o in out[method]:
        assert o["same"], o
        assert 1 <= o["threads"] <= _config.default_threads()


@pytest.mark.parametrize("limit", ["OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "affinity"])
def test_pool_workers_do_not_oversubscribe(env, tmp_path, limit):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: a thread cap of 1 cannot be told from the default")
    child = dict(env)
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        child.pop(name, None)
    if limit != "affinity":
        child[limit] = "1"
    out = _pool_run(child, _pool_script(["spawn", "forkserver"], limit == "affinity"), tmp_path)
    for method in ("spawn", "forkserver"):
        for o in out[method]:
            assert o["same"], o
            assert o["threads"] == 1, (limit, o)
            # the process has no pool of idle compute threads beyond the cap (the main thread,
            # the pool's result/handler threads are Python threads: at most a few)
            assert o["tasks"] <= 4, (limit, o)


# ------------------------------------------------------------------------------------------------
# 3. disk caches
# ------------------------------------------------------------------------------------------------

COMPUTE = r'''
import json, warnings, numpy as np
import fastact as fa
x = np.linspace(-6, 6, 64).astype(np.float32).reshape(4, 16)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    s = fa.sigmoid(x, backend="numba")
    m = fa.softmax(x, backend="numba")
info = fa.backend_info()["numba"]
print(json.dumps({"sigmoid": s.astype(float).tolist(), "softmax": m.astype(float).tolist(),
                  "cache": info["cache"], "warnings": [str(w.message) for w in caught]}))
'''


def _check_compute(out):
    x = np.linspace(-6, 6, 64).astype(np.float32).astype(np.float64).reshape(4, 16)
    np.testing.assert_allclose(out["sigmoid"], 1 / (1 + np.exp(-x)), rtol=1e-6)
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(out["softmax"], e / e.sum(-1, keepdims=True), rtol=1e-5)


def _cache_env(env, cache_dir):
    child = dict(env)
    for name in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        child.pop(name, None)
    child["FASTACT_CACHE_DIR"] = str(cache_dir)
    return child


def _copy_package(dest):
    shutil.copytree(PACKAGE_ROOT / "fastact", dest / "fastact",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.pyx"))
    return dest


requires_numba = pytest.mark.skipif("numba" not in fa.backends(),
                                    reason="numba backend unavailable")


@requires_numba
def test_read_only_install_and_unwritable_home(env, tmp_path):
    """Installed read-only, HOME unwritable, no NUMBA_CACHE_DIR: works, no disk cache, at most
    one warning.  The install and HOME are read-only bind mounts (the tests may run as root, for
    whom file permissions do not stop writes), or chmod'ed when not root."""
    install = _copy_package(tmp_path / "install")
    home = tmp_path / "home"
    home.mkdir()
    child = dict(env)
    for name in ("NUMBA_CACHE_DIR", "FASTACT_CACHE_DIR", "XDG_CACHE_HOME"):
        child.pop(name, None)
    child["HOME"] = str(home)
    child["PYTHONPATH"] = str(install)
    child["PYTHONDONTWRITEBYTECODE"] = "1"
    code = COMPUTE.replace("print(json.dumps({", "print(json.dumps({'file': fa.__file__, ")
    if os.geteuid() != 0:
        for root, dirs, files in os.walk(tmp_path):
            for n in dirs + files:
                os.chmod(os.path.join(root, n), 0o555)
        cmd = [sys.executable, "-c", code]
    else:
        unshare = shutil.which("unshare")
        probe = subprocess.run([unshare, "-m", "true"], capture_output=True) if unshare else None
        if probe is None or probe.returncode != 0:
            _unavailable("running as root without `unshare -m`: cannot make a read-only "
                         "install location")
        script = (f"mount --bind -o ro {install} {install} && mount --bind -o ro {home} {home} "
                  f"&& touch {home}/probe 2>/dev/null && exit 99; exec \"$0\" -c \"$1\"")
        cmd = [unshare, "-m", "sh", "-c", script, sys.executable, code]
    proc = subprocess.run(cmd, env=child, capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
    assert proc.returncode != 99, "the read-only mount is writable"
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(install))
    _check_compute(out)
    assert "not writable" in out["cache"], out["cache"]
    warn_lines = [ln for ln in proc.stderr.splitlines() if "warn" in ln.lower()]
    assert len(out["warnings"]) + len(warn_lines) <= 1, (out["warnings"], proc.stderr)
    assert not any(p.name != "probe" for p in home.iterdir())


@requires_numba
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_cache_files_are_recompiled(env, tmp_path, damage):
    child = _cache_env(env, tmp_path / "cache")
    _check_compute(run_python(COMPUTE, child))
    files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "cache") for f in fs
             if f.endswith((".nbi", ".nbc"))]
    assert any(f.endswith(".nbc") for f in files) and any(f.endswith(".nbi") for f in files)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            if damage == "truncate":
                f.write(data[: len(data) // 2])
            elif damage == "garbage":
                f.write(bytes(range(256)) * 4)
    out = run_python(COMPUTE, child)
    _check_compute(out)


@requires_numba
def test_concurrent_cold_starts_share_a_cache_dir(env, tmp_path):
    child = _cache_env(env, tmp_path / "cache")
    procs = [subprocess.Popen([sys.executable, "-c", COMPUTE], env=child, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=str(PACKAGE_ROOT))
             for _ in range(4)]
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a cold start did not finish in 400 s")
        assert p.returncode == 0, stderr
        _check_compute(json.loads(stdout.strip().splitlines()[-1]))
    # and a fifth process loads what they stored
    _check_compute(run_python(COMPUTE, child))


@requires_numba
def test_cache_never_reuses_kernels_from_older_sources(env, tmp_path):
    """A kernel's cache entry must not survive a change to a helper in another file: the kernel
    (generated in numba_cpu.py) inlines formulas from _math.py, whose change Numba cannot see."""
    tree = _copy_package(tmp_path / "tree")
    child = _cache_env(env, tmp_path / "cache")
    child["PYTHONPATH"] = str(tree)
    probe = COMPUTE.replace("print(json.dumps({", "print(json.dumps({'file': fa.__file__, ")
    first = run_python(probe, child, cwd=tmp_path)
    assert first["file"].startswith(str(tree))
    _check_compute(first)
    # the helper now returns 1 - sigmoid(x): same names, same kernel source, other results
    # (in _math.py and in its float32 twins, _math32.py, which float32 kernels use)
    for name in ("_math.py", "_math32.py"):
        math_py = tree / "fastact" / name
        src = math_py.read_text()
        old = "def sigmoid(x):\n"
        assert old in src
        math_py.write_text(src.replace(old, "def sigmoid(x):\n    return _sigmoid_old(-x)\n\n\n"
                                            "def _sigmoid_old(x):\n", 1))
    second = run_python(probe, child, cwd=tmp_path)
    x = np.linspace(-6, 6, 64).astype(np.float32).astype(np.float64).reshape(4, 16)
    np.testing.assert_allclose(second["sigmoid"], 1 / (1 + np.exp(x)), rtol=1e-6)
    assert first["cache"] != second["cache"]  # a new salted directory
    assert os.path.isdir(first["cache"]) and os.path.isdir(second["cache"])


#: Serial and parallel twins of an elementwise op, a row op and a fused loss, then a user's own
#: Numba function compiled afterwards in the same process.
CACHED_LOAD = r'''
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import fastact as fa
from fastact import _config
small = np.linspace(-6, 6, 1000).astype(np.float32)
big = np.linspace(-6, 6, 4 * _config.PARALLEL_THRESHOLD).astype(np.float64)
logits = np.linspace(-3, 3, 64 * 1024).astype(np.float32).reshape(64, 1024)
target = np.arange(64) % 1024
s = fa.tanh(small)
first = time.perf_counter() - t0
b = fa.sigmoid(big, backend="numba")
m = fa.softmax(logits, backend="numba")
loss, grad = fa.cross_entropy_and_grad(logits, target, backend="numba")
arraymath = "numba.np.arraymath" in sys.modules
import numba
@numba.njit
def user_code(a):
    return np.sum(np.exp(a))
u = user_code(big)
print(json.dumps({"first": first, "arraymath": arraymath,
                  "tanh": float(abs(s.astype(float) - np.tanh(small.astype(float))).max()),
                  "sigmoid": float(abs(b - 1 / (1 + np.exp(-big))).max()),
                  "softmax": float(abs(m.sum(-1) - 1).max()),
                  "loss": float(loss), "grad": float(abs(grad.sum(-1)).max()),
                  "user": float(u), "user_expected": float(np.exp(big).sum())}))
'''


@requires_numba
def test_cached_kernels_load_without_the_compilers_set_up(env):
    """Kernels on disk load without Numba's lowering registries (whose set-up imports
    ``scipy.linalg`` where SciPy is installed: 0.2 s of the first call), compute correctly in
    both twins, and Numba code compiled afterwards in the same process still works."""
    run_python(CACHED_LOAD, env)  # compiles whatever the shared cache lacks
    out = run_python(CACHED_LOAD, env)
    assert out["arraymath"] is False, "a cached kernel's load set up Numba's compiler"
    assert out["tanh"] <= 1e-6 and out["sigmoid"] <= 1e-15 and out["softmax"] <= 1e-5
    z = np.linspace(-3, 3, 64 * 1024).astype(np.float32).astype(np.float64).reshape(64, 1024)
    expected = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(64), np.arange(64)])
    assert abs(out["loss"] - expected) <= 1e-5 * abs(expected)
    assert out["grad"] <= 1e-6
    assert abs(out["user"] - out["user_expected"]) <= 1e-12 * out["user_expected"]


# ------------------------------------------------------------------------------------------------
# 6. floating-point environment: nothing leaks flush-to-zero / denormals-are-zero
# ------------------------------------------------------------------------------------------------

def test_subnormals_survive_every_backend(env):
    out = run_python(CASES_SOURCE + r'''
import json, sys
tiny64 = sys.float_info.min
tiny32 = np.finfo(np.float32).tiny
def check():
    a64 = np.array([tiny64]) / 2.0
    a32 = np.array([tiny32], np.float32) / np.float32(2)
    return [float(tiny64 / 2) != 0.0, float(a64[0]) != 0.0, float(a32[0]) != 0.0,
            float(np.float32(tiny32) * np.float32(0.5)) != 0.0,
            float(np.nextafter(0.0, 1.0)) > 0.0]
res = {"before": check()}
cases, _ = make_cases(64, 1000)
for b in fa.backends():
    for c in cases:
        run_case(c, b)
    res[b] = check()
# and a subnormal in, subnormal out: relu keeps it exactly
for b in fa.backends():
    x = np.array([tiny64 / 4, -tiny64 / 4])
    res[b + "_relu"] = fa.relu(x, backend=b).tolist()
print(json.dumps(res))
''', env)
    for key, flags in out.items():
        if key.endswith("_relu"):
            assert flags == [sys.float_info.min / 4, 0.0], key
        else:
            assert all(flags), (key, flags)


# ------------------------------------------------------------------------------------------------
# 8. determinism
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def det_cases():
    return make_cases(200, 700, np.float64, seed=3)[0] + make_cases(130, 257, np.float32, 4)[0]


@pytest.fixture
def threads_restored():
    previous = fa.set_num_threads(1)
    fa.set_num_threads(previous)
    yield previous
    fa.set_num_threads(previous)


@pytest.mark.parametrize("backend", HOST + ["numpy"])
def test_same_call_twice_is_bitwise_identical(backend, det_cases, threads_restored):
    for c in det_cases:
        assert same_bits(run_case(c, backend), run_case(c, backend)), c[0]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU")
@pytest.mark.parametrize("backend", HOST)
def test_one_and_two_threads_bitwise_equal(backend, det_cases, threads_restored):
    """Documented: every kernel (elementwise, row-wise sums, prelu's weight gradient, losses)
    gives bitwise-identical results for any thread count: sums are per row or in fixed-size
    blocks combined in a fixed order, never per thread."""
    fa.set_num_threads(1)
    one = [run_case(c, backend) for c in det_cases]
    fa.set_num_threads(2)
    two = [run_case(c, backend) for c in det_cases]
    bad = [c[0] for c, a, b in zip(det_cases, one, two) if not same_bits(a, b)]
    assert not bad, f"results differ between 1 and 2 threads: {bad}"


@pytest.mark.parametrize("backend", HOST)
def test_serial_and_parallel_kernels_bitwise_equal(backend, det_cases, threads_restored):
    """Small inputs run serial kernels, large ones parallel: the same values either way."""
    from fastact import _dispatch

    module = _dispatch._load(backend)
    if backend == "numba":
        saved = module.PARALLEL_THRESHOLD
        try:
            module.PARALLEL_THRESHOLD = 1 << 62
            serial = [run_case(c, backend) for c in det_cases]
            module.PARALLEL_THRESHOLD = 0
            parallel = [run_case(c, backend) for c in det_cases]
        finally:
            module.PARALLEL_THRESHOLD = saved
    else:
        saved = module.set_parallel_threshold(1 << 62)
        try:
            serial = [run_case(c, backend) for c in det_cases]
            module.set_parallel_threshold(0)
            parallel = [run_case(c, backend) for c in det_cases]
        finally:
            module.set_parallel_threshold(saved)
    bad = [c[0] for c, a, b in zip(det_cases, serial, parallel) if not same_bits(a, b)]
    assert not bad, bad


# ------------------------------------------------------------------------------------------------
# 7. arrays above 2**31 elements (slow; run by .ci/run's huge step with FASTACT_RUN_HUGE=1)
# ------------------------------------------------------------------------------------------------

HUGE_SOFTMAX = r'''
import json, numpy as np, fastact as fa
B = BACKEND
rows, cols = 8, 2**28 + 1          # 2**31 + 8 float32 elements, rows longer than 2**28
n = rows * cols
x = np.zeros((rows, cols), np.float32)
probes = [(r, c, float(v)) for r, (c, v) in enumerate(
    [(0, 3.0), (1, -2.0), (cols - 1, 5.0), (cols // 2, 1.5), (7, -7.0), (cols - 2, 2.5),
     (cols - 1, -1.0), (cols - 1, 4.0)])]
for r, c, v in probes:
    x[r, c] = v
res = {}
y = fa.softmax(x, out=x, backend=B)
res["same_object"] = y is x
# expected: row r has cols - 1 zeros and one probe value v
def expect(r, v):
    m = max(v, 0.0)
    s = (cols - 1) * np.exp(-m) + np.exp(v - m)
    return np.exp(-m) / s, np.exp(v - m) / s
errs = []
for r, c, v in probes:
    zero_val, probe_val = expect(r, v)
    errs.append(abs(float(x[r, c]) - probe_val) / probe_val)
    sample = x[r, ::4099].astype(np.float64)
    sample = np.delete(sample, np.where(np.arange(0, cols, 4099) == c)[0])
    errs.append(float(np.max(np.abs(sample - zero_val)) / zero_val))
    tail = x[r, -3:].astype(np.float64)
    want_tail = [probe_val if cols - 3 + k == c else zero_val for k in range(3)]
    errs.append(float(np.max(np.abs(tail - want_tail) / np.array(want_tail))))
res["max_rel_err"] = max(errs)
res["last"] = float(x[-1, -1])
print(json.dumps(res))
'''

HUGE_ELEMENTWISE = r'''
import json, numpy as np, fastact as fa
B = BACKEND
n = 2**31 + 8
x = np.empty(n, np.float32)
x[: n // 2] = -1.5
x[n // 2:] = 2.0
idx = np.array([0, 1, 2**31 - 1, 2**31, 2**31 + 1, n - 2, n - 1], np.int64)
vals = np.array([3.0, -3.0, 4.0, -4.0, 0.5, -6.0, 6.0], np.float32)
x[idx] = vals
y = fa.leaky_relu(x, negative_slope=0.25, out=x, backend=B)
res = {"same_object": y is x}
want = np.where(vals > 0, vals, vals * np.float32(0.25))
res["probes_ok"] = bool(np.array_equal(x[idx], want))
sample = x[2:: 65537]
pos = np.arange(2, n, 65537)
want_s = np.where(pos < n // 2, np.float32(-0.375), np.float32(2.0))
mask = ~np.isin(pos, idx)
res["sample_ok"] = bool(np.array_equal(sample[mask], want_s[mask]))
res["end"] = x[-3:].tolist()
print(json.dumps(res))
'''

HUGE_BYTES = (2**31 + 8) * 4


def _require_huge_memory():
    from test_contract import _mem_available

    if os.environ.get("FASTACT_RUN_HUGE", "") != "1":
        pytest.skip("arrays above 2**31 elements (8 GiB): run by .ci/run's huge step "
                    "(FASTACT_RUN_HUGE=1)")
    need = HUGE_BYTES + (2 << 30)
    if _mem_available() < need:
        _unavailable(f"needs {need / 2**30:.1f} GiB available, MemAvailable is "
                     f"{_mem_available() / 2**30:.1f} GiB")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_huge_elementwise_in_place(env, backend):
    _require_huge_memory()
    if backend not in fa.backends():
        _unavailable(f"backend {backend} unavailable")
    out = run_python(f"BACKEND = {backend!r}\n" + HUGE_ELEMENTWISE, env, timeout=600)
    assert out["same_object"] and out["probes_ok"] and out["sample_ok"], out
    assert out["end"] == [2.0, -1.5, 6.0]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_huge_softmax_in_place(env, backend):
    _require_huge_memory()
    if backend not in fa.backends():
        _unavailable(f"backend {backend} unavailable")
    out = run_python(f"BACKEND = {backend!r}\n" + HUGE_SOFTMAX, env, timeout=600)
    assert out["same_object"], out
    eps = np.finfo(np.float32).eps
    assert out["max_rel_err"] <= 4 * eps * (2 + 29) + 2 * eps * 16, out


@pytest.mark.skipif("numba" not in fa.backends(), reason="numba backend unavailable")
def test_thread_cap_applies_in_every_python_thread(threads_restored):
    """Numba's set_num_threads is thread-local; fastact's cap must hold in threads started
    later as well (no oversubscription from a thread pool of callers)."""
    import threading

    import numba

    seen = []
    fa.set_num_threads(1)
    x = np.linspace(-1, 1, 1 << 16)

    def worker():
        fa.sigmoid(x, backend="numba")
        seen.append(numba.get_num_threads())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [1]
