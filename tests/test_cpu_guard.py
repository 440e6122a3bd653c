"""Regression: concurrent batched LAPACK calls must not deadlock jaxlib on a few-core CPU."""

import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import specdyn  # starts the CPU backend with the guard
    import jax, jax.numpy as jnp

    @jax.jit
    def two_qrs(a, b):  # two independent batched QRs: XLA runs them concurrently
        return jnp.linalg.qr(a)[0].sum() + jnp.linalg.svd(b, compute_uv=False).sum()

    for i in range(30):
        a = jax.random.normal(jax.random.PRNGKey(i), (32, 64, 64))
        two_qrs(a, 2 * a).block_until_ready()
    print("ok")
    """
)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_concurrent_batched_linear_algebra_finishes():
    env = {k: v for k, v in os.environ.items() if k not in ("SPECDYN_POOL_GUARD", "XLA_FLAGS")}
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


BLAS_PROGRAM = textwrap.dedent(
    """
    import specdyn, jax.numpy as jnp
    jnp.linalg.svd(jnp.ones((8, 8)))  # jaxlib's LAPACK kernels run on scipy's OpenBLAS
    from threadpoolctl import threadpool_info
    print(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
    """
)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) > 4, reason="the guard acts on <= 4 cores"
)
def test_guard_limits_blas_threads():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECDYN_", "OPENBLAS_", "OMP_"))}
    proc = subprocess.run([sys.executable, "-c", BLAS_PROGRAM], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
