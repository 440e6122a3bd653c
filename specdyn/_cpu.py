"""One OpenBLAS thread on CPUs with few cores, while specdyn computes.

jaxlib's CPU SVD, eigh and QR run LAPACK in the OpenBLAS that scipy ships. XLA
runs independent operations of one program side by side on its own threads
(one per core), and each LAPACK call then wakes OpenBLAS's threads too (one per
core again): on a 2-core machine four or more busy threads spin against each
other. Measured on a loaded 2-core machine (README, "A note on CPUs with few
cores"): a 100 × 100 float64 SVD took 117 ms with OpenBLAS's default threads
against 4.8 ms with one (jaxlib 0.12), and a program running four batched
factorizations side by side (tests/test_cpu_guard.py) did not finish in 45 s on
any jaxlib version tried, 0.7 to 0.12 — on 0.10.2 it sometimes hangs for good, at
0 % CPU — while with one OpenBLAS thread it finishes in seconds on all of them,
with XLA keeping every core.

:func:`blas_threads_limited` is a context in which OpenBLAS runs one thread on
a CPU with at most 4 cores (elsewhere it does nothing); ``sd.simulate`` and
``sd.sweep`` compute inside it and restore the user's setting after.
:func:`limit_blas_threads` sets the same for the rest of the process: the
command line and the test suite call it, and a script that runs its own JAX
linear algebra on such a machine may too. Nothing here runs at import.
``SPECDYN_LIMIT_BLAS=0`` turns both off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os

__all__ = ["blas_threads_limited", "few_cpu_cores", "limit_blas_threads"]

_MAX_CPUS = 4
_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm_plugin")


@functools.cache
def few_cpu_cores() -> bool:
    """True when JAX computes on a CPU with at most 4 cores and ``SPECDYN_LIMIT_BLAS``
    is not 0 (a GPU plugin, or ``JAX_PLATFORMS`` naming another platform, means False)."""
    if os.environ.get("SPECDYN_LIMIT_BLAS", "1") == "0" or not hasattr(os, "sched_getaffinity"):
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "cpu").lower()
    if platforms and platforms != "cpu":
        return False
    if any(importlib.util.find_spec(p) for p in _GPU_PLUGINS):
        return False
    return len(os.sched_getaffinity(0)) <= _MAX_CPUS


def _one_blas_thread():
    import scipy.linalg  # noqa: F401  (loads the OpenBLAS that jaxlib's LAPACK kernels call)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def blas_threads_limited():
    """A context in which OpenBLAS runs one thread on a few-core CPU (else does nothing);
    the previous setting comes back on exit."""
    return _one_blas_thread() if few_cpu_cores() else contextlib.nullcontext()


def limit_blas_threads() -> bool:
    """One OpenBLAS thread for the rest of the process on a few-core CPU; True if set."""
    if not few_cpu_cores():
        return False
    _one_blas_thread()
    return True
