"""A guard against a deadlock of jaxlib's batched LAPACK kernels on CPUs with few cores.

jaxlib (0.10) runs a batched SVD/QR/eigh by scheduling chunks of the batch on
XLA's intra-op thread pool and blocking until they finish. XLA also runs
independent operations of one program concurrently on that pool. When as many
batched LAPACK calls run at once as the pool has threads (two QRs, or the SVDs
of two layers, on a 2-core machine), every worker blocks waiting for chunks
that no free worker will run: the program never finishes.

With a one-thread pool the kernels run their batch inline and cannot deadlock.
The pool's size is read from the process's CPU affinity when the CPU backend
starts, so on machines with at most ``SPECDYN_POOL_GUARD_MAX_CPUS`` (default 4)
cores, importing specdyn starts the backend while the process is pinned to one
core, then restores the affinity. On those machines it also limits the BLAS
thread pool (OpenBLAS, loaded through scipy, which runs jaxlib's CPU SVD/eigh)
to one thread: its spinning threads oversubscribe a few busy cores (a 100 × 100
float64 SVD measured 30 ms instead of 5 ms on a loaded 2-core machine).
Set ``SPECDYN_POOL_GUARD=0`` to skip both.
It does nothing once a JAX backend is running, under ``JAX_PLATFORMS`` other
than cpu, or when a CUDA/ROCm plugin is installed.
"""

from __future__ import annotations

import importlib.util
import os


def guard_cpu_pool() -> bool:
    """Start JAX's CPU backend with a one-thread intra-op pool; True if it did."""
    if os.environ.get("SPECDYN_POOL_GUARD", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "cpu").lower()
    if platforms and platforms != "cpu":
        return False
    if any(importlib.util.find_spec(p) for p in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm_plugin")):
        return False
    cpus = os.sched_getaffinity(0)
    if len(cpus) > int(os.environ.get("SPECDYN_POOL_GUARD_MAX_CPUS", "4")):
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    import jax

    os.sched_setaffinity(0, {min(cpus)})
    try:
        jax.devices()
    finally:
        os.sched_setaffinity(0, cpus)
    import scipy.linalg  # noqa: F401  (loads the OpenBLAS that jaxlib's LAPACK kernels call)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    return True
