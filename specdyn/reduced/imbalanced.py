"""Closed forms for the imbalanced Gaussian mixture in the class basis (PAPERS.md §2).

With s^yx_c = μ p_c, s^xx_c = μ² p_c + σ² and α*_c = s^yx_c / s^xx_c, the population
loss ½E‖Wx − e_y‖² has ∂L/∂α_c = s^xx_c α_c − s^yx_c on the diagonal and the dynamics
from zero init stay diagonal (off-diagonals have zero gradient). Hence:

* GD (discrete, step η): α_c(t) = α*_c (1 − (1 − η s^xx_c)^t)  (exact);
* gradient flow:        α_c(t) = α*_c (1 − exp(−η s^xx_c t));
* SpecGD (polar factor of a diagonal = diag(sign)): α_c(t) = η t for t ≤ T_c with
  T_c = ⌈α*_c/η⌉; after that α_c alternates between η T_c and η(T_c − 1)
  (it overshoots at T_c, steps down, steps up, ...), unless η T_c = α*_c exactly.
* depth L, balanced diagonal init a_0 (α = a^L), SpecGD: a_c(t) = a_0 + η t until
  a_c^L ≥ α*_c, so T_c = ⌈(α*_c^(1/L) − a_0)/η⌉ ∝ α*_c^(1/L) for a_0 ≪ α*^(1/L).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["components", "gd_alpha", "flow_alpha", "specgd_alpha", "specgd_saturation_time",
           "depth_saturation_time"]


def components(priors, mean_norm, noise):
    """(s^yx, s^xx, α*) per class."""
    p = jnp.asarray(priors)
    syx = mean_norm * p
    sxx = mean_norm**2 * p + noise**2
    return syx, sxx, syx / sxx


def gd_alpha(t, lr, priors, mean_norm, noise):
    """Exact discrete GD from zero init; t broadcasts against the class axis (t[:, None])."""
    _, sxx, star = components(priors, mean_norm, noise)
    return star * (1.0 - (1.0 - lr * sxx) ** t)


def flow_alpha(t, lr, priors, mean_norm, noise):
    """Gradient flow at time η t from zero init."""
    _, sxx, star = components(priors, mean_norm, noise)
    return star * (1.0 - jnp.exp(-lr * sxx * t))


def specgd_saturation_time(lr, priors, mean_norm, noise):
    """T_c = ⌈α*_c/η⌉, the first step with α_c ≥ α*_c."""
    return jnp.ceil(components(priors, mean_norm, noise)[2] / lr)


def specgd_alpha(t, lr, priors, mean_norm, noise):
    """Exact discrete SpecGD from zero init (sign dynamics, see module docstring)."""
    T = specgd_saturation_time(lr, priors, mean_norm, noise)
    t = jnp.asarray(t, dtype=T.dtype)
    after = T - ((t - T) % 2)  # T, T-1, T, T-1, ...
    return lr * jnp.where(t <= T, t, after)


def depth_saturation_time(lr, depth, init_scale, priors, mean_norm, noise):
    """SpecGD saturation step with depth L: ⌈(α*^(1/L) − a_0)/η⌉."""
    star = components(priors, mean_norm, noise)[2]
    return jnp.ceil((star ** (1.0 / depth) - init_scale) / lr)
