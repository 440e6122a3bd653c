"""Spectral diagnostics of matrices: stable rank, nuclear rank, subspace angles.

Every function acts on the last two axes, so it takes one matrix or a stack,
and is jitted (one compiled program per shape and dtype). Each divides by the
largest entry first, so tiny or huge matrices neither underflow nor overflow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdyn._compile import jit

__all__ = [
    "frobenius_norm",
    "nuclear_norm",
    "nuclear_rank",
    "principal_angles",
    "safe_divide",
    "stable_rank",
]


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, and 0 where den == 0 (no NaN, no gradient through the guard)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


def _scaled(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    a = jnp.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"expected a matrix or a stack of matrices, got shape {a.shape}")
    scale = jnp.max(jnp.abs(a), axis=(-2, -1))
    return safe_divide(a, scale[..., None, None]), scale


@jit
def frobenius_norm(a: jax.Array) -> jax.Array:
    """‖A‖_F over the last two axes, without overflow or underflow."""
    x, scale = _scaled(a)
    return scale * jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1)))


def _singular_values(a):
    x, scale = _scaled(a)
    return jnp.linalg.svd(x, compute_uv=False), scale


@jit
def nuclear_norm(a: jax.Array) -> jax.Array:
    """‖A‖_* = sum of singular values."""
    s, scale = _singular_values(a)
    return scale * jnp.sum(s, axis=-1)


@jit
def stable_rank(a: jax.Array) -> jax.Array:
    """st(A) = ‖A‖_F² / ‖A‖_2², in [1, rank A]; 0 for a zero matrix."""
    s, _ = _singular_values(a)
    return safe_divide(jnp.sum(jnp.square(s), axis=-1), jnp.square(s[..., 0]))


@jit
def nuclear_rank(g: jax.Array) -> jax.Array:
    """nr(G) = ‖G‖_*² / ‖G‖_F², in [1, rank G]; 0 for a zero matrix."""
    s, _ = _singular_values(g)
    return safe_divide(jnp.square(jnp.sum(s, axis=-1)), jnp.sum(jnp.square(s), axis=-1))


@jit
def principal_angles(a: jax.Array, b: jax.Array) -> jax.Array:
    """Principal angles (radians, ascending) between the column spaces of a and b.

    Both must have full column rank; the angles are arccos of the singular values
    of Q_aᵀ Q_b with Q from thin QR factorisations (as scipy.linalg.subspace_angles).
    """
    qa, _ = jnp.linalg.qr(a)
    qb, _ = jnp.linalg.qr(b)
    cos = jnp.linalg.svd(jnp.matmul(jnp.swapaxes(qa, -1, -2), qb), compute_uv=False)
    # singular values come in descending order, so the angles ascend
    return jnp.arccos(jnp.clip(cos, -1.0, 1.0))
