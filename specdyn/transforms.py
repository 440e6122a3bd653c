"""optax GradientTransformations: the spectral building blocks.

Each factory returns ``optax.GradientTransformation(init, update)`` of pure
functions with the hyper-parameters closed over, like ``optax.scale_by_adam``.
The aliases in :mod:`specdyn.optimizers` chain them with a learning rate.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdyn.diagnostics import safe_divide
from specdyn.polar import default_rank_tol, polar_config, polar_with_config

__all__ = [
    "BiasCorrectedMomentumState",
    "ScaleByPolarState",
    "ScaleByShampooState",
    "bias_corrected_momentum",
    "normalize_frobenius",
    "polar_tap",
    "scale_by_polar",
    "scale_by_shampoo",
    "scale_by_shape",
    "scale_by_spectral_power",
]


class ScaleByPolarState(NamedTuple):
    """State of :func:`scale_by_polar` with ``diagnostics=True``."""

    nuclear_rank: Any  # per leaf: shape=leaf.shape[:-2], dtype of the leaf


def _require_matrices(tree, who: str) -> None:
    def check(path, leaf):
        if jnp.ndim(leaf) < 2:
            raise ValueError(
                f"{who} acts on matrices (ndim >= 2), but leaf {jax.tree_util.keystr(path) or '<root>'} "
                f"has shape {jnp.shape(leaf)}. Route non-matrix leaves elsewhere with "
                "optax.partition, or use sd.muon, which sends them to Adam."
            )

    jax.tree_util.tree_map_with_path(check, tree)


def unzip_tree(like, tree_of_tuples, n: int) -> tuple:
    """Split a tree of n-tuples (with ``like``'s structure) into n trees."""
    treedef = jax.tree.structure(like)
    parts = treedef.flatten_up_to(tree_of_tuples)
    return tuple(jax.tree.unflatten(treedef, [t[i] for t in parts]) for i in range(n))


# What scale_by_polar sees while a polar_tap() block traces an update (None outside one).
_POLAR_TAP: contextvars.ContextVar[list | None] = contextvars.ContextVar("specdyn_polar_tap", default=None)


@contextlib.contextmanager
def polar_tap():
    """Collect the polar steps of the updates traced inside the block.

    Yields a list; every :func:`scale_by_polar` update evaluated inside appends
    ``(inputs, factors, config)``: the tree it received (the polar input: the
    gradient for SpecGD, the momentum for Muon; leaves routed elsewhere are
    ``optax.MaskedNode``), the polar factors it computed (before any nuclear
    scaling) and its :class:`specdyn.polar.PolarConfig`. Used by the training
    engine's telemetry on an update it evaluates and discards; it changes no
    computation, and outside a block costs nothing. The arrays belong to the
    trace they were made in: use them inside it.
    """
    found: list = []
    token = _POLAR_TAP.set(found)
    try:
        yield found
    finally:
        _POLAR_TAP.reset(token)


def _inner(a: jax.Array, b: jax.Array) -> jax.Array:
    """<a, b> over the last two axes."""
    return jnp.sum(a * b, axis=(-2, -1))


def scale_by_polar(
    *,
    method: str = "svd",
    steps: int | None = None,
    coeffs=None,
    rank_tol: float | None = None,
    compute_dtype=None,
    nuclear_scaling: bool = False,
    diagnostics: bool = False,
) -> optax.GradientTransformation:
    """Replace each matrix leaf G by its polar factor U Vᵀ (see :func:`specdyn.polar`).

    Acts on the last two axes of every leaf (ndim >= 2); a leaf with ndim < 2
    raises ValueError naming it. With ``nuclear_scaling`` the update is
    ‖G‖_* U Vᵀ, where ‖G‖_* = <U Vᵀ, G> (exact for ``method="svd"``). With
    ``diagnostics`` the state keeps each leaf's nuclear rank ‖G‖_*²/‖G‖_F² of the
    last incoming gradient, so a training loop can log it without another SVD.
    """
    config = polar_config(
        method=method, steps=steps, coeffs=coeffs, rank_tol=rank_tol, compute_dtype=compute_dtype
    )

    def init_fn(params):
        _require_matrices(params, "scale_by_polar")
        if not diagnostics:
            return optax.EmptyState()
        return ScaleByPolarState(
            nuclear_rank=jax.tree.map(lambda p: jnp.zeros(p.shape[:-2], p.dtype), params)
        )

    def update_fn(updates, state, params=None):
        del params
        _require_matrices(updates, "scale_by_polar")

        def one(g):
            p = polar_with_config(g, config)
            # ‖G‖_* = <UVᵀ, G>, taken on G/max|G| so it stays finite at any scale.
            scale = jnp.max(jnp.abs(g), axis=(-2, -1))
            x = safe_divide(g, scale[..., None, None])
            nuclear = _inner(p, x)
            out = p * (nuclear * scale)[..., None, None] if nuclear_scaling else p
            rank = safe_divide(jnp.square(nuclear), jnp.sum(jnp.square(x), axis=(-2, -1)))
            return out, rank, p

        factors, ranks, raw = unzip_tree(updates, jax.tree.map(one, updates), 3)
        tap = _POLAR_TAP.get()
        if tap is not None:
            tap.append((updates, raw, config))
        if diagnostics:
            state = ScaleByPolarState(nuclear_rank=ranks)
        return factors, state

    return optax.GradientTransformation(init_fn, update_fn)


def check_power(p) -> None:
    """Refuse a spectral power that is negative, not finite, or not a scalar.

    Tracers pass (a sweep vmaps over p); concrete numbers and arrays are checked.
    """
    if isinstance(p, jax.core.Tracer):
        return
    if isinstance(p, bool) or not isinstance(p, numbers.Real | np.ndarray | jax.Array | np.generic):
        raise ValueError(f"p must be a finite number >= 0, got p={p!r}")
    value = np.asarray(p)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
        raise ValueError(f"p must be a real scalar (vmap to sweep several), got p={p!r}")
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"p must be a finite number >= 0, got p={float(value)!r}")


def _spectral_power(g: jax.Array, p, rank_tol: float | None) -> jax.Array:
    """U Σᵖ Vᵀ of g over the last two axes, from the thin SVD of g / max|g|.

    Singular values at or below ``rank_tol * s_max`` are dropped, as in
    :func:`specdyn.polar`'s SVD method (default :func:`specdyn.polar.default_rank_tol`), so p = 0 is
    exactly that method's U Vᵀ and a zero matrix gives zeros.
    """
    dtype = jnp.float32 if jnp.finfo(g.dtype).bits < 32 else g.dtype  # no half-precision SVD
    x = g.astype(dtype)
    scale = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    tol = default_rank_tol(x) if rank_tol is None else rank_tol
    u, s, vh = jnp.linalg.svd(x / scale, full_matrices=False)
    keep = s > tol * s[..., :1]
    p = jnp.asarray(p, dtype)
    # (s·scale)ᵖ on the kept values only: 0ᵖ never enters, so p = 0 gives U Vᵀ
    power = jnp.where(keep, jnp.where(keep, s, 1) ** p, 0) * scale[..., 0] ** p
    return jnp.matmul(u * power[..., None, :], vh).astype(g.dtype)


def scale_by_spectral_power(p: float = 0.5, *, rank_tol: float | None = None) -> optax.GradientTransformation:
    """Replace each matrix leaf G = U Σ Vᵀ by U Σᵖ Vᵀ, exactly via the SVD.

    p = 0 is SpecGD's polar factor U Vᵀ (rank-aware like :func:`specdyn.polar`'s
    SVD method: singular values ``<= rank_tol * s_max`` are dropped; default
    ``rank_tol = max(m, n) * eps``); p = 1 gives G back (to rounding); values in
    between interpolate the spectrum. ``p`` is data: a float, or a traced scalar,
    so ``jax.vmap`` over p compiles once. Acts on the last two axes of every leaf
    (ndim >= 2); a leaf with ndim < 2 raises ValueError naming it. Half-precision
    leaves are decomposed in float32 and cast back.
    """
    check_power(p)
    polar_config(method="svd", rank_tol=rank_tol)  # validates rank_tol

    def init_fn(params):
        _require_matrices(params, "scale_by_spectral_power")
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        _require_matrices(updates, "scale_by_spectral_power")
        return jax.tree.map(lambda g: _spectral_power(g, p, rank_tol), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def normalize_frobenius() -> optax.GradientTransformation:
    """G / ‖G‖_F per leaf (a zero leaf stays zero)."""

    def update_fn(updates, state, params=None):
        del params

        def normalize(g):
            x = safe_divide(g, jnp.max(jnp.abs(g)))
            return safe_divide(x, jnp.sqrt(jnp.sum(jnp.square(x))))

        return jax.tree.map(normalize, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


SHAPE_SCALINGS = ("none", "keller", "moonlight")
LAYOUTS = ("out_in", "in_out")


def scale_by_shape(kind: str = "none", *, layout: str = "out_in") -> optax.GradientTransformation:
    """Scale each matrix update by a factor of its shape, the last two axes.

    ``layout`` says which axis is which: ``"out_in"``, shape (..., fan_out, fan_in),
    a weight used as W @ x (PyTorch's layout, Jordan's code, this package's
    problems); ``"in_out"``, shape (..., fan_in, fan_out), used as x @ W (optax's
    and flax's layout). ``"keller"``: sqrt(max(1, fan_out/fan_in)) (Muon's
    reference code; ``optax.contrib.muon``'s default width scaling);
    ``"moonlight"``: 0.2 * sqrt(max(fan_in, fan_out)), which matches AdamW's update
    RMS (Liu et al. 2025; ``optax.contrib.muon(consistent_rms=0.2)``); ``"none"``: 1.
    """
    if kind not in SHAPE_SCALINGS:
        raise ValueError(f"unknown shape scaling kind={kind!r}; choose one of {SHAPE_SCALINGS}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown weight layout={layout!r}; choose one of {LAYOUTS}")

    def factor(shape):
        rows, cols = shape[-2:]
        fan_out, fan_in = (rows, cols) if layout == "out_in" else (cols, rows)
        if kind == "keller":
            return math.sqrt(max(1.0, fan_out / fan_in))
        if kind == "moonlight":
            return 0.2 * math.sqrt(max(fan_in, fan_out))
        return 1.0

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: g * factor(g.shape), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class BiasCorrectedMomentumState(NamedTuple):
    """State of :func:`bias_corrected_momentum`."""

    count: jax.Array  # shape=(), int32: updates so far
    mu: Any  # per leaf: the exponential moving average of the gradients


def bias_corrected_momentum(decay=0.95, *, nesterov: bool = True) -> optax.GradientTransformation:
    """Momentum as ``optax.contrib.muon`` forms it: a bias-corrected average.

    m_t = β m_{t-1} + (1 - β) G_t; the output is m_t / (1 - β^t), or with
    ``nesterov`` (NAdam's form) β m_t / (1 - β^(t+1)) + (1 - β) G_t / (1 - β^t).
    Without ``nesterov`` it is ``optax.trace``'s sum up to a factor; with it, the
    gradient's weight against the sum's differs from ``optax.trace``'s G + β m by
    (1 - β^(t+1)) / (1 - β^t) (1 at t = 1, 1.46 at t = 2 for β = 0.95, → 1).
    ``decay`` may be traced.
    """

    def init_fn(params):
        return BiasCorrectedMomentumState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, decay, 1)
        count = optax.safe_increment(state.count)
        if nesterov:
            out = jax.tree.map(
                lambda m, g: decay * m + (1 - decay) * g,
                optax.tree.bias_correction(mu, decay, optax.safe_increment(count)),
                optax.tree.bias_correction(updates, decay, count),
            )
        else:
            out = optax.tree.bias_correction(mu, decay, count)
        return out, BiasCorrectedMomentumState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByShampooState(NamedTuple):
    """Full-matrix Shampoo statistics."""

    count: jax.Array  # shape=(), int32
    left: Any  # per leaf: (..., m, m) Σ decay^(T-t) G Gᵀ; vectors: (n,) Σ decay^(T-t) g²
    right: Any  # per leaf: (..., n, n) Σ decay^(T-t) Gᵀ G; vectors: () unused


def _inverse_root(s: jax.Array, power: float, eps: float) -> jax.Array:
    """(S + eps I)^(-power) for symmetric PSD S via eigh.

    Round-off can leave eigenvalues of S slightly negative: they are clipped at 0
    first. (LAPACK has no half-precision eigh: callers pass float32 or wider.)
    """
    w, q = jnp.linalg.eigh(s)
    w = (jnp.maximum(w, 0) + eps) ** (-power)
    return jnp.matmul(q * w[..., None, :], jnp.swapaxes(q, -1, -2))


def scale_by_shampoo(
    *, exponent: float = 0.25, eps: float = 1e-6, decay: float = 1.0
) -> optax.GradientTransformation:
    """Full-matrix Shampoo: G ↦ L^(-exponent) G R^(-exponent).

    L = eps·I + Σ_t decay^(T-t) G_t G_tᵀ and R likewise with G_tᵀ G_t (``decay=1``:
    plain sums, as in Gupta et al. 2018). Inverse roots via ``eigh`` at every
    step; the state keeps the sums alone and ``eps·I`` is added when taking the
    root; half-precision leaves keep it in their dtype and do the algebra in
    float32. Leaves with ndim < 2 use the diagonal version g / (eps + Σ g²)^(2·exponent).
    With ``exponent=1/4`` and one step from zero state, the update of G = U S Vᵀ
    is U S (S² + eps)^(-1/2) Vᵀ ≈ U Vᵀ: Shampoo without memory is SpecGD.
    """
    if not (isinstance(exponent, int | float) and exponent > 0):
        raise ValueError(f"exponent must be > 0, got {exponent=!r}")
    if not (isinstance(eps, int | float) and eps > 0):
        raise ValueError(f"eps must be > 0, got {eps=!r}")
    if not (isinstance(decay, int | float) and 0 < decay <= 1):
        raise ValueError(f"decay must lie in (0, 1], got {decay=!r}")

    def init_fn(params):
        def left(p):
            if p.ndim < 2:
                return jnp.zeros(p.shape, p.dtype)
            return jnp.zeros((*p.shape[:-1], p.shape[-2]), p.dtype)

        def right(p):
            if p.ndim < 2:
                return jnp.zeros((), p.dtype)  # unused for vectors
            return jnp.zeros((*p.shape[:-2], p.shape[-1], p.shape[-1]), p.dtype)

        return ScaleByShampooState(
            count=jnp.zeros((), jnp.int32),
            left=jax.tree.map(left, params),
            right=jax.tree.map(right, params),
        )

    def update_fn(updates, state, params=None):
        del params

        def one(g, lft, rgt):
            if g.ndim < 2:
                lft = decay * lft + jnp.square(g)
                return g * (lft + eps) ** (-2 * exponent), lft, rgt
            # half precision: statistics stored in the leaf's dtype, algebra in float32
            dtype = g.dtype
            work = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype
            x = g.astype(work)
            xt = jnp.swapaxes(x, -1, -2)
            lft = decay * lft.astype(work) + jnp.matmul(x, xt)
            rgt = decay * rgt.astype(work) + jnp.matmul(xt, x)
            out = jnp.matmul(_inverse_root(lft, exponent, eps), jnp.matmul(x, _inverse_root(rgt, exponent, eps)))
            return out.astype(dtype), lft.astype(dtype), rgt.astype(dtype)

        triples = jax.tree.map(one, updates, state.left, state.right)
        out, left, right = unzip_tree(updates, triples, 3)
        return out, ScaleByShampooState(count=state.count + 1, left=left, right=right)

    return optax.GradientTransformation(init_fn, update_fn)
