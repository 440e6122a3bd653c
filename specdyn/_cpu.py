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
linear algebra on such a machine may too.

A second hang is XLA's own, on jaxlib 0.10 only: the sweep of bench/sweep.py
(least squares, GD and Newton–Schulz SpecGD) stops for good at 0 % CPU, its
threads waiting in XLA's intra-op pool, with OpenBLAS already at one thread
(4 of 5 tries on jaxlib 0.10.2; it runs on 0.12.0.1). With a one-thread pool it
runs. The pool's size is read from the process's CPU affinity when the CPU
backend starts, so :func:`guard_cpu` starts the backend while the process is
pinned to one core, then restores the affinity of every thread — only on an affected jaxlib
(:func:`needs_pool_guard`), only before any JAX backend has started. The command
line, the test suite and the benchmarks call it first thing; ``sd.simulate`` and
``sd.sweep`` call it too (it acts if nothing has started JAX yet) and warn once
where the hang is possible and it came too late: call ``specdyn.guard_cpu()``
before any other JAX work there. Nothing here runs at import.
``SPECDYN_LIMIT_BLAS=0`` turns all of it off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import warnings

__all__ = ["blas_threads_limited", "few_cpu_cores", "guard_cpu", "limit_blas_threads", "needs_pool_guard"]

_MAX_CPUS = 4
# jaxlib below this version hangs in XLA's intra-op pool (measured on 0.10.2; 0.12.0.1 runs;
# older versions are treated as affected, untested with that program).
_POOL_FIXED_IN = (0, 11)
_guarded = False
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


def _jaxlib_version() -> tuple[int, int]:
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)


@functools.cache
def needs_pool_guard() -> bool:
    """True on a few-core CPU (:func:`few_cpu_cores`) with a jaxlib whose intra-op pool can hang."""
    return few_cpu_cores() and _jaxlib_version() < _POOL_FIXED_IN


def _backend_started() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def _start_one_thread_pool() -> None:
    global _guarded
    import jax

    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        jax.devices()
    finally:
        _set_every_threads_affinity(cpus)
    _guarded = True


def _set_every_threads_affinity(cpus) -> None:
    """Give every thread of the process the CPU set ``cpus``. Threads started while the
    process was pinned (XLA's pool and its other threads) inherited the one core and keep
    it unless set one by one: left so, every JAX computation of the process, and of every
    other process guarded the same way, ran on that one core."""
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: the calling thread at least
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that ended meanwhile
            pass


def guard_cpu() -> bool:
    """One OpenBLAS thread for the rest of the process on a few-core CPU and, on an
    affected jaxlib (:func:`needs_pool_guard`), start JAX's CPU backend with a
    one-thread intra-op pool; True if it did the latter. Call it before any other
    JAX work (creating a PRNG key starts the backend); afterwards the pool is left
    as it is, so it is safe to call anywhere."""
    limit_blas_threads()
    if _guarded or not needs_pool_guard() or _backend_started():
        return False
    _start_one_thread_pool()
    return True


class PoolHangWarning(RuntimeWarning):
    """XLA's intra-op pool of this jaxlib can hang on this CPU, and the guard came too late."""


@functools.cache
def warn_if_unguarded() -> None:
    """Called by ``sd.simulate`` and ``sd.sweep``: start the one-thread pool if nothing
    has started JAX yet; else warn once where the pool can hang."""
    if not needs_pool_guard() or _guarded:
        return
    if not _backend_started():
        _start_one_thread_pool()
        return
    warnings.warn(
        f"jaxlib {'.'.join(map(str, _jaxlib_version()))} can hang on this {len(os.sched_getaffinity(0))}-core "
        "CPU (XLA's thread pool); call specdyn.guard_cpu() before any other JAX work, or use a newer jaxlib "
        "(Python >= 3.12), or set SPECDYN_LIMIT_BLAS=0 to silence this",
        PoolHangWarning,
        stacklevel=3,
    )
