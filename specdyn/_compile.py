"""How specdyn compiles its programs: on CPU, with LLVM at -O1.

XLA's CPU backend runs LLVM at its default optimisation level, and for the small,
many-op programs of a simulation (random draws, optimizer updates, records) LLVM's
passes are most of the compile time, while the time spent running is in the matrix
products and factorizations (library kernels that LLVM does not generate). At -O1
(XLA's graph optimisations unchanged) compiling is several times faster and running
is as fast. Measured on a 2-core CPU, jax 0.12 (bench/RESULTS.md, "Compiling at -O1"):
the transformer-block stable ranks of ``init_stable_ranks`` at width 16 compile in
1.7 s instead of 9.5 s; the draw program in 1.1 s instead of 2.6 s; warm sweeps of
matrix least squares, phase retrieval and a depth-3 network took the same time at
both levels, within run-to-run noise.

:func:`compiler_options` is what specdyn passes to ``jax.jit``: ``None`` (XLA's
defaults) off CPU, or where ``XLA_FLAGS`` sets ``--xla_backend_optimization_level``
itself (the user's choice wins), or with ``SPECDYN_CPU_OPT_LEVEL=default``; else
``{"xla_backend_optimization_level": 1}`` (``SPECDYN_CPU_OPT_LEVEL=0..3`` picks
another level). :func:`jit` is ``jax.jit`` with those options, decided at the first
call (never at import: asking for the backend starts it); called under another
transformation (an outer ``jax.jit``, ``vmap``, ``grad``), where JAX accepts no compiler
options and the call is traced into the outer program, it is a plain ``jax.jit``.
"""

from __future__ import annotations

import functools
import os

import jax

__all__ = ["compiler_options", "jit"]

_LEVEL = 1


def compiler_options() -> dict | None:
    """Compiler options for specdyn's programs on the default backend (see the module doc)."""
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    level = os.environ.get("SPECDYN_CPU_OPT_LEVEL", str(_LEVEL))
    if level == "default" or jax.default_backend() != "cpu":
        return None
    if level not in ("0", "1", "2", "3"):
        raise ValueError(f"SPECDYN_CPU_OPT_LEVEL={level!r}: expected 0, 1, 2, 3 or 'default'")
    return {"xla_backend_optimization_level": int(level)}


def _top_level() -> bool:
    """True outside every JAX transformation (where ``jax.jit`` takes compiler options)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # unknown JAX internals: never pass options (always valid)
        return False
    return trace_state_clean()


class jit:  # noqa: N801  (used like jax.jit)
    """``jax.jit(fun, compiler_options=compiler_options(), **kwargs)``, built at the first
    call or ``lower``; as a decorator: ``@jit`` or ``@functools.partial(jit, static_argnames=...)``."""

    def __init__(self, fun, **kwargs):
        self._fun, self._kwargs = fun, kwargs
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def _jitted(self):
        return jax.jit(self._fun, compiler_options=compiler_options(), **self._kwargs)

    @functools.cached_property
    def _nested(self):
        return jax.jit(self._fun, **self._kwargs)

    def __call__(self, *args, **kwargs):
        return (self._jitted if _top_level() else self._nested)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._jitted.lower(*args, **kwargs)
