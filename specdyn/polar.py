"""The polar factor ``U Vᵀ`` of a matrix, exactly (SVD) or by matrix polynomials.

``polar(g)`` acts on the last two axes, so it takes one matrix or a stack of them
(any leading batch axes). Three methods:

* ``"svd"`` — exact ``U Vᵀ`` from the thin SVD. Singular values at or below
  ``rank_tol * s_max`` are dropped, so a rank-r input gives a rank-r factor and a
  zero matrix gives zeros (never NaN).
* ``"newton_schulz"`` — the quintic iteration ``X ← aX + (bA + cA²)X`` with
  ``A = XXᵀ``, on ``X₀ = G/‖G‖_F``. Presets ``"jordan"`` (Muon's constant
  coefficients) and ``"dion"`` (five per-step tuples), or explicit coefficients
  of shape (3,) or (steps, 3).
* ``"polar_express"`` — the per-step minimax coefficients of Polar Express
  (Amsel, Persson, Musco, Gower 2025, arXiv 2505.16932) with its safety factor;
  :func:`polar_express_coefficients` generates the table for any step count.

Every method is scale invariant with no absolute epsilon: the input is first
divided by its largest entry, so ``polar(c * g) == polar(g)`` down to tiny and up
to huge norms.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from specdyn._compile import jit

__all__ = [
    "METHODS",
    "NEWTON_SCHULZ_PRESETS",
    "PolarConfig",
    "default_rank_tol",
    "polar",
    "polar_config",
    "polar_express_coefficients",
]

METHODS = ("svd", "newton_schulz", "polar_express")

# Muon's quintic (K. Jordan 2024): maximal slope at zero, singular values land
# in roughly [0.7, 1.2] rather than converging to one.
JORDAN = (3.4445, -4.7750, 2.0315)
# Dion's per-step quintics (Ahn et al. 2025), one tuple per step, five steps.
DION = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NEWTON_SCHULZ_PRESETS = {"jordan": JORDAN, "dion": DION}

# Polar Express defaults (from the paper): the lower end of the assumed spectrum
# of G/‖G‖_F, the cushion that keeps each polynomial's interval away from zero,
# and the safety factor that guards against round-off pushing values past one.
POLAR_EXPRESS_LOWER = 1e-3
POLAR_EXPRESS_CUSHION = 0.02407327424182761
POLAR_EXPRESS_SAFETY = 1.01


def _optimal_quintic(lo: float, hi: float) -> tuple[float, float, float]:
    """Odd quintic p(t) = a t + b t³ + c t⁵ minimising max |1 - p| on [lo, hi].

    Remez exchange on the four equioscillation points lo < q < r < hi.
    """
    if lo / hi >= 1 - 5e-6:  # interval collapsed: the limiting polynomial
        return 15 / 8 / hi, -10 / 8 / hi**3, 3 / 8 / hi**5
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    err, old_err = math.inf, None
    for _ in range(100):
        if old_err is not None and abs(old_err - err) <= 1e-15:
            break
        old_err = err
        lhs = np.array(
            [
                [lo, lo**3, lo**5, 1.0],
                [q, q**3, q**5, -1.0],
                [r, r**3, r**5, 1.0],
                [hi, hi**3, hi**5, -1.0],
            ]
        )
        a, b, c, err = np.linalg.solve(lhs, np.ones(4))
        disc = math.sqrt(9 * b**2 - 20 * a * c)
        q, r = (math.sqrt((-3 * b + s * disc) / (10 * c)) for s in (-1.0, 1.0))
    return float(a), float(b), float(c)


@functools.lru_cache(maxsize=64)
def polar_express_coefficients(
    steps: int = 5,
    *,
    lower: float = POLAR_EXPRESS_LOWER,
    cushion: float = POLAR_EXPRESS_CUSHION,
    safety: float = POLAR_EXPRESS_SAFETY,
) -> tuple[tuple[float, float, float], ...]:
    """The Polar Express coefficient table, one (a, b, c) per step.

    Each step's quintic is the minimax approximation of ``sign`` on the interval
    the previous steps leave the spectrum in (starting from ``[lower, 1]``),
    cushioned away from zero and re-centred around one. The safety factor divides
    every step but the last (``a/s, b/s³, c/s⁵``); :func:`polar` divides the input
    by ``safety * ‖G‖_F`` to match.
    """
    _check_steps(steps)
    if not 0 < lower < 1:
        raise ValueError(f"lower must lie in (0, 1), got {lower=}")
    if safety < 1:
        raise ValueError(f"safety must be >= 1, got {safety=}")
    lo, hi = float(lower), 1.0
    table = []
    for _ in range(steps):
        a, b, c = _optimal_quintic(max(lo, cushion * hi), hi)
        p_lo = a * lo + b * lo**3 + c * lo**5
        p_hi = a * hi + b * hi**3 + c * hi**5
        k = 2 / (p_lo + p_hi)
        a, b, c = a * k, b * k, c * k
        table.append((a, b, c))
        lo = a * lo + b * lo**3 + c * lo**5
        hi = 2 - lo
    safe = [(a / safety, b / safety**3, c / safety**5) for a, b, c in table[:-1]]
    return tuple(safe + [table[-1]])


@dataclass(frozen=True)
class PolarConfig:
    """A validated polar-factor configuration (hashable: safe to close over under jit)."""

    method: str
    coeffs: tuple[tuple[float, float, float], ...] | None  # one row per step
    rank_tol: float | None
    input_scale: float  # X₀ = G / (input_scale * ‖G‖_F) for polynomial methods
    # a dtype *name*: np.dtype("float64") == None is True in numpy, which would make
    # a float64 config equal to the default one (and share its jit cache entry)
    compute_dtype: str | None

    @property
    def steps(self) -> int | None:
        return None if self.coeffs is None else len(self.coeffs)


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps=!r}")


def _coefficient_table(coeffs, steps) -> tuple[tuple[float, float, float], ...]:
    if coeffs is None:
        coeffs = "jordan"
    if isinstance(coeffs, str):
        if coeffs not in NEWTON_SCHULZ_PRESETS:
            raise ValueError(
                f"unknown Newton-Schulz preset coeffs={coeffs!r}; "
                f"choose one of {sorted(NEWTON_SCHULZ_PRESETS)} or pass a (3,) or (steps, 3) array"
            )
        coeffs = NEWTON_SCHULZ_PRESETS[coeffs]
    try:
        table = np.asarray(coeffs, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"coeffs must be numbers of shape (3,) or (n, 3), got {coeffs=!r}") from err
    if table.shape == (3,):
        if steps is None:
            steps = 5
        _check_steps(steps)
        table = np.tile(table, (steps, 1))
    elif table.ndim == 2 and table.shape[1] == 3 and table.shape[0] >= 1:
        if steps is not None:
            _check_steps(steps)
            if steps != table.shape[0]:
                raise ValueError(
                    f"coeffs has {table.shape[0]} rows (one per step) but steps={steps}; "
                    "pass steps=None or a table with one row per step"
                )
    else:
        raise ValueError(f"coeffs must have shape (3,) or (n, 3), got shape {table.shape}")
    if not np.all(np.isfinite(table)):
        raise ValueError(f"coeffs must be finite, got {coeffs=!r}")
    return tuple(tuple(float(v) for v in row) for row in table)


def polar_config(
    *, method="svd", steps=None, coeffs=None, rank_tol=None, compute_dtype=None
) -> PolarConfig:
    """Validate polar-factor options once, at construction time."""
    if method not in METHODS:
        raise ValueError(f"unknown polar method method={method!r}; choose one of {METHODS}")
    if rank_tol is not None:
        if method != "svd":
            raise ValueError(f"rank_tol applies to method='svd' only, got {rank_tol=} with {method=}")
        if not (isinstance(rank_tol, int | float) and math.isfinite(rank_tol) and rank_tol >= 0):
            raise ValueError(f"rank_tol must be a finite number >= 0, got {rank_tol=!r}")
    if compute_dtype is not None:
        try:
            compute_dtype = jnp.dtype(compute_dtype)
        except TypeError as err:
            raise ValueError(f"compute_dtype is not a dtype: {compute_dtype=!r}") from err
        if not jnp.issubdtype(compute_dtype, jnp.floating):
            raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype=}")
        compute_dtype = compute_dtype.name
    if method == "svd":
        if steps is not None or coeffs is not None:
            given = ", ".join(f"{k}={v!r}" for k, v in (("steps", steps), ("coeffs", coeffs)) if v is not None)
            raise ValueError(
                f"method 'svd' is exact and takes no steps or coeffs, got {given}; "
                "remove them, or choose method 'newton_schulz' or 'polar_express'"
            )
        if compute_dtype is not None and jnp.finfo(compute_dtype).bits < 32:
            raise ValueError(
                f"method='svd' cannot run in {compute_dtype=} (LAPACK and cuSOLVER have no "
                "half-precision SVD); leave compute_dtype=None (half inputs are promoted to "
                "float32) or use a polynomial method"
            )
        return PolarConfig("svd", None, rank_tol, 1.0, compute_dtype)
    if method == "newton_schulz":
        table = _coefficient_table(coeffs, steps)
        return PolarConfig(method, table, None, 1.0, compute_dtype)
    # polar_express
    if coeffs is not None:
        raise ValueError(
            f"method='polar_express' computes its own coefficients, got {coeffs=!r}; "
            "use method='newton_schulz' for an explicit table"
        )
    steps = 5 if steps is None else steps
    _check_steps(steps)
    table = polar_express_coefficients(int(steps))
    return PolarConfig(method, table, None, POLAR_EXPRESS_SAFETY, compute_dtype)


def _default_compute_dtype(method: str, dtype) -> jnp.dtype:
    # LAPACK has no half-precision SVD: promote. Polynomial methods run in the
    # input's dtype (bf16 Newton-Schulz is what Muon does on accelerators).
    if method == "svd" and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def _divide_by_max_abs(x: jax.Array) -> jax.Array:
    """x / max|x| over the last two axes (zeros stay zeros): removes the scale."""
    m = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
    return x / jnp.where(m > 0, m, jnp.ones_like(m))


def default_rank_tol(x: jax.Array) -> jax.Array:
    """The default relative rank tolerance of (..., m, n) matrices, shape (..., 1):
    ``max(m', n') * eps`` with m', n' the numbers of rows and columns that are not all
    zero (= ``max(m, n) * eps`` for a matrix without zero rows or columns). Zero rows
    and columns add nothing to the SVD's round-off, and counting only the others makes
    the tolerance, hence the factor, the same for a matrix and its zero-padded copy
    (what runs of several sizes in one program rely on, see :mod:`specdyn.buckets`)."""
    nonzero = x != 0
    rows = jnp.sum(jnp.any(nonzero, axis=-1), axis=-1)
    cols = jnp.sum(jnp.any(nonzero, axis=-2), axis=-1)
    return (jnp.maximum(rows, cols).astype(x.dtype) * jnp.finfo(x.dtype).eps)[..., None]


def _svd_polar(x: jax.Array, rank_tol: float | None) -> jax.Array:
    tol = default_rank_tol(x) if rank_tol is None else rank_tol
    u, s, vh = jnp.linalg.svd(x, full_matrices=False)
    keep = s > tol * s[..., :1]  # s is sorted descending; zero matrix keeps nothing
    return jnp.matmul(u * keep[..., None, :].astype(u.dtype), vh)


def _polynomial_polar(x: jax.Array, table, input_scale: float) -> jax.Array:
    transpose = x.shape[-2] > x.shape[-1]  # iterate on the smaller Gram matrix
    if transpose:
        x = jnp.swapaxes(x, -1, -2)
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    x = x / jnp.where(norm > 0, input_scale * norm, jnp.ones_like(norm))
    for a, b, c in table:  # static, unrolled: one polynomial per step
        gram = jnp.matmul(x, jnp.swapaxes(x, -1, -2))
        x = a * x + jnp.matmul(b * gram + c * jnp.matmul(gram, gram), x)
    return jnp.swapaxes(x, -1, -2) if transpose else x


def polar_with_config(g: jax.Array, config: PolarConfig) -> jax.Array:
    """:func:`polar` with options already validated by :func:`polar_config`."""
    g = jnp.asarray(g)
    if g.ndim < 2:
        raise ValueError(f"polar needs a matrix or a stack of matrices, got shape {g.shape}")
    if not jnp.issubdtype(g.dtype, jnp.floating):
        raise ValueError(f"polar needs a floating-point array, got dtype {g.dtype}")
    return _polar_jit(g, config)


@functools.partial(jit, static_argnums=1)
def _polar_jit(g: jax.Array, config: PolarConfig) -> jax.Array:
    # One compiled program per (shape, dtype, config): an eager call costs one
    # dispatch instead of one per operation; under an outer jit it is inlined.
    if config.compute_dtype is None:
        dtype = _default_compute_dtype(config.method, g.dtype)
    else:
        dtype = jnp.dtype(config.compute_dtype)
    x = _divide_by_max_abs(g.astype(dtype))
    if config.method == "svd":
        out = _svd_polar(x, config.rank_tol)
    else:
        out = _polynomial_polar(x, config.coeffs, config.input_scale)
    return out.astype(g.dtype)


def polar(g, *, method="svd", steps=None, coeffs=None, rank_tol=None, compute_dtype=None):
    """Polar factor ``U Vᵀ`` of ``g`` (last two axes), same shape and dtype as ``g``.

    Args:
      g: an (..., m, n) floating array.
      method: ``"svd"`` (exact), ``"newton_schulz"`` or ``"polar_express"``.
      steps: iterations of the polynomial methods (default 5).
      coeffs: Newton-Schulz coefficients: ``"jordan"`` (default), ``"dion"``, a
        (3,) tuple used at every step, or a (steps, 3) table.
      rank_tol: ``"svd"`` only; singular values ``<= rank_tol * s_max`` are
        dropped. Default ``max(m, n) * eps`` of the compute dtype, m and n counting
        only rows and columns that are not all zero (:func:`default_rank_tol`).
      compute_dtype: dtype of the computation (default: the input's, promoted to
        float32 for a half-precision SVD). The result is cast back.
    """
    config = polar_config(
        method=method, steps=steps, coeffs=coeffs, rank_tol=rank_tol, compute_dtype=compute_dtype
    )
    return polar_with_config(g, config)
