"""The activation functions of the random-feature and network problems, in one table.

``ACTIVATIONS[name] = (fn, arity)``: ``fn`` takes ``arity`` pre-activations (arrays of one
shape) and returns the post-activation; SwiGLU takes two, SiLU(z₁) ⊙ z₂.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "activate"]

ACTIVATIONS = {
    "relu": (jax.nn.relu, 1),
    "relu2": (lambda z: jnp.square(jax.nn.relu(z)), 1),
    "tanh": (jnp.tanh, 1),
    "gelu": (lambda z: jax.nn.gelu(z, approximate=False), 1),
    "swiglu": (lambda z1, z2: jax.nn.silu(z1) * z2, 2),
}


def activate(name: str, *pre):
    """``name``'s activation of the pre-activations ``pre`` (as many as its arity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got activation={name!r}")
    fn, arity = ACTIVATIONS[name]
    if len(pre) != arity:
        raise ValueError(f"activation {name!r} takes {arity} pre-activation(s), got {len(pre)}")
    return fn(*pre)
