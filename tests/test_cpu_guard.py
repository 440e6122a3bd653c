"""One OpenBLAS thread on few-core CPUs while specdyn computes; nothing at import.

Every check runs in a fresh interpreter, so that what it measures is not
already set by this test process (tests/conftest.py limits OpenBLAS for the suite).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from specdyn._cpu import few_cpu_cores

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")


def run_python(program: str, timeout=240, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECDYN_", "XLA_FLAGS", "OPENBLAS_", "OMP_"))}
    env.update(env_overrides)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return proc


CONCURRENT_LAPACK_PROGRAM = """
    import specdyn
    specdyn.guard_cpu()  # before any JAX work, as the command line and the test suite do
    import jax, jax.numpy as jnp

    @jax.jit
    def factorizations(a, b):  # independent batched factorizations: XLA runs them side by side
        return (jnp.linalg.qr(a)[0].sum() + jnp.linalg.svd(b, compute_uv=False).sum()
                + jnp.linalg.eigh(a + jnp.swapaxes(a, -1, -2))[0].sum() + jnp.linalg.qr(2 * b)[1].sum())

    for i in range(20):
        a = jax.random.normal(jax.random.PRNGKey(i), (8, 128, 128))
        factorizations(a, 3 * a).block_until_ready()
    print("ok")
"""


@linux_only
def test_concurrent_batched_linear_algebra_finishes():
    """Regression: with OpenBLAS's default threads this program did not finish within
    45 s on a loaded 2-core machine on any jaxlib tried (0.7.2 to 0.12.0.1); on jaxlib
    0.10.2 it also hangs now and then in XLA's two-thread pool with OpenBLAS limited.
    With the guard (one OpenBLAS thread; one XLA thread on jaxlib < 0.11) it takes seconds."""
    assert run_python(CONCURRENT_LAPACK_PROGRAM, timeout=120).stdout.strip() == "ok"


STATE_PROGRAM = """
    import json, os, pkgutil, importlib, sys
    def state():
        import matplotlib
        from threadpoolctl import threadpool_info
        from jax._src import xla_bridge
        import jax
        return {
            "affinity": sorted(os.sched_getaffinity(0)),
            "blas": sorted((i["internal_api"], i["num_threads"]) for i in threadpool_info()),
            "backend_started": xla_bridge.backends_are_initialized(),
            "mpl_backend": matplotlib.rcParams._get_backend_or_none(),
            "x64": bool(jax.config.jax_enable_x64),
        }
    import scipy.linalg  # load OpenBLAS first, so both states see it
    before = state()
    import specdyn
    for m in pkgutil.walk_packages(specdyn.__path__, "specdyn."):
        if m.name != "specdyn.cli":
            importlib.import_module(m.name)
    import specdyn.cli
    print(json.dumps({"before": before, "after": state()}))
"""


@linux_only
def test_importing_specdyn_changes_no_process_state():
    """Importing specdyn and every module in it leaves CPU affinity, BLAS threads,
    the JAX backend, the matplotlib backend and jax's config as they were."""
    out = json.loads(run_python(STATE_PROGRAM).stdout)
    assert out["after"] == out["before"]
    assert out["after"]["backend_started"] is False


LIMIT_PROGRAM = """
    import json
    import scipy.linalg
    from threadpoolctl import threadpool_info
    from specdyn._cpu import blas_threads_limited, few_cpu_cores

    def blas():
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    before = blas()
    with blas_threads_limited():
        inside = blas()
    print(json.dumps({"few": few_cpu_cores(), "before": before, "inside": inside, "after": blas()}))
"""


@linux_only
def test_blas_limited_inside_specdyn_computations_only():
    out = json.loads(run_python(LIMIT_PROGRAM, OPENBLAS_NUM_THREADS="2").stdout)
    assert out["before"] == out["after"] == 2  # the user's setting comes back
    assert out["few"] is (len(os.sched_getaffinity(0)) <= 4)
    assert out["inside"] == (1 if out["few"] else 2)
    off = json.loads(run_python(LIMIT_PROGRAM, OPENBLAS_NUM_THREADS="2", SPECDYN_LIMIT_BLAS="0").stdout)
    assert off == {"few": False, "before": 2, "inside": 2, "after": 2}


def test_the_suite_runs_with_one_blas_thread_on_few_cores():
    from threadpoolctl import threadpool_info

    if few_cpu_cores():
        assert max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") == 1


POOL_PROGRAM = """
    import json, os
    import specdyn
    from specdyn._cpu import _jaxlib_version, needs_pool_guard
    applied = specdyn.guard_cpu()
    again = specdyn.guard_cpu()  # the backend runs now: nothing more to do
    threads = [len(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")]
    print(json.dumps({"needed": needs_pool_guard(), "applied": applied, "again": again,
                      "jaxlib": list(_jaxlib_version()), "affinity": len(os.sched_getaffinity(0)),
                      "threads": threads}))
"""


@linux_only
def test_one_thread_pool_only_where_jaxlib_hangs():
    """The pool guard acts on jaxlib < 0.11 with few cores (bench/sweep.py's sweep hung there
    at 0 % CPU in XLA's pool), never on newer jaxlib; the CPU affinity of every thread comes back."""
    out = json.loads(run_python(POOL_PROGRAM).stdout)
    affected = tuple(out["jaxlib"]) < (0, 11) and len(os.sched_getaffinity(0)) <= 4
    assert out["needed"] is affected and out["applied"] is affected and out["again"] is False
    assert out["affinity"] == len(os.sched_getaffinity(0))
    # every thread, also those JAX started while the process was pinned, may use every core
    assert len(out["threads"]) > 1 and set(out["threads"]) == {len(os.sched_getaffinity(0))}, out["threads"]
    off = json.loads(run_python(POOL_PROGRAM, SPECDYN_LIMIT_BLAS="0").stdout)
    assert off["needed"] is False and off["applied"] is False


LATE_PROGRAM = """
    import warnings, jax
    import specdyn as sd
    key = jax.random.PRNGKey(0)  # starts the backend before any guard could act
    problem = sd.problems.MatrixLeastSquares(rows=4, cols=4, samples=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd.simulate(problem, sd.gd(0.1), key=key, steps=2)
        sd.simulate(problem, sd.gd(0.1), key=key, steps=2)
    print(sum("guard_cpu" in str(w.message) for w in caught))
"""


@linux_only
def test_a_late_guard_warns_once_where_the_pool_can_hang():
    from specdyn._cpu import needs_pool_guard

    assert run_python(LATE_PROGRAM).stdout.strip() == ("1" if needs_pool_guard() else "0")
