"""Random-feature regression (Davis & Drusvyatskiy 2025, PAPERS.md §3).

L(W) = (1/2n)‖W A − Y‖²_F with W ∈ R^{m×p} (zero init), features A = act(V X) ∈ R^{p×n}
from Gaussian inputs X ∈ R^{d×n}, V ~ N(0, 1)/sqrt(d), and targets Y = W♯ A from a
teacher W♯ ~ target_scale·N(0, 1)/sqrt(p). SwiGLU features are A = SiLU(V₁X) ⊙ (V₂X).

``spike`` θ > 0 gives spiked inputs x_i = z_i + θ ξ_i u (z_i ~ N(0, I_d), ξ_i ~ N(0, 1),
u a random unit vector): covariance I + θ² u uᵀ.

The loss is a quadratic with gradient G = (W A − Y) Aᵀ/n and smoothness constants
L_F = ‖A‖²_op/n (for the Frobenius norm) and L_op = ‖A‖²_F/n (for the operator norm).
The paper's two step rules, and their guaranteed one-step decreases:

* GD, W ← W − G/L_F (``sd.gd(gd_learning_rate(data))``): decrease ≥ ‖G‖²_F/(2 L_F);
* SpecGD, W ← W − (‖G‖_*/L_op)·polar(G)
  (``sd.spectral_gd(spectral_learning_rate(data), nuclear_scaling=True)``):
  decrease ≥ ‖G‖²_*/(2 L_op).

Their ratio is nr(G)/st(A) with nr(G) = ‖G‖²_*/‖G‖²_F and st(A) = ‖A‖²_F/‖A‖²_op, so the
spectral guarantee is the larger one exactly when nr(G) ≥ st(A).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdyn.diagnostics import frobenius_norm, nuclear_norm, nuclear_rank, stable_rank
from specdyn.polar import polar
from specdyn.problem import problem, require, static, true_size
from specdyn.problems.activations import ACTIVATIONS as _TABLE
from specdyn.problems.activations import activate

__all__ = [
    "ACTIVATIONS",
    "RandomFeatures",
    "gd_learning_rate",
    "one_step_decrease",
    "smoothness_constants",
    "spectral_learning_rate",
]

ACTIVATIONS = tuple(_TABLE)  # names; the functions are in specdyn.problems.activations


def smoothness_constants(data, n=None) -> tuple[jax.Array, jax.Array]:
    """(L_F, L_op) = (‖A‖²_op/n, ‖A‖²_F/n) of the loss on ``data`` (n: columns of A by default)."""
    a = jnp.asarray(data["A"])
    n = a.shape[-1] if n is None else n
    s = jnp.linalg.svd(a, compute_uv=False)
    return jnp.square(s[0]) / n, jnp.sum(jnp.square(s)) / n


def gd_learning_rate(data) -> jax.Array:
    """The paper's GD rate 1/L_F = n/‖A‖²_op."""
    return 1.0 / smoothness_constants(data)[0]


def spectral_learning_rate(data) -> jax.Array:
    """The paper's SpecGD rate 1/L_op = n/‖A‖²_F (for ``spectral_gd(.., nuclear_scaling=True)``)."""
    return 1.0 / smoothness_constants(data)[1]


def one_step_decrease(grad, step, a, n=None) -> jax.Array:
    """L(W) − L(W − step) for L(W) = (1/2n)‖WA − Y‖²_F with gradient ``grad`` at W.

    Exact for the quadratic: ⟨G, Δ⟩ − ‖ΔA‖²_F/(2n), with no cancellation between two losses
    (n: columns of A by default).
    """
    n = a.shape[-1] if n is None else n
    return jnp.sum(grad * step) - 0.5 * jnp.sum(jnp.square(step @ a)) / n


@problem
class RandomFeatures:
    """(1/2n)‖WA − Y‖²_F over random features A = act(VX), Y = W♯A; see the module docstring."""

    # Every size may be zero-padded (sd.static(..., pad=True)): padded features (rows of
    # A), outputs (rows of W, Y) and samples (columns of A, Y) add zero residual, and the
    # loss divides by the true n. dim shapes no array (it lives inside sample()).
    dim: int = static(50, pad=True)  # d: input dimension
    feature_dim: int = static(100, pad=True)  # p: number of features (columns of W)
    outputs: int | None = static(None, pad=True)  # m: rows of W (None: m = p)
    samples: int = static(400, pad=True)  # n
    activation: str = static("relu")
    target_scale: float = 1.0  # teacher W♯ = target_scale · N(0, 1)/sqrt(p)
    spike: float = 0.0  # θ: input spike strength (0: isotropic inputs)

    def __check_init__(self):
        for name in ("dim", "feature_dim", "samples"):
            value = getattr(self, name)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            require(ok, name, value, "be a positive integer")
        require(
            self.outputs is None
            or (isinstance(self.outputs, int) and not isinstance(self.outputs, bool) and self.outputs >= 1),
            "outputs", self.outputs, "be None (outputs = feature_dim) or a positive integer",
        )
        require(self.activation in ACTIVATIONS, "activation", self.activation, f"be one of {ACTIVATIONS}")
        require(self.target_scale >= 0, "target_scale", self.target_scale, "be >= 0")
        require(self.spike >= 0, "spike", self.spike, "be >= 0")

    @property
    def m(self) -> int:
        return self.feature_dim if self.outputs is None else self.outputs

    def init(self, key):
        del key  # zero initialization, as in the paper
        return {"W": jnp.zeros((self.m, self.feature_dim))}

    def inputs(self, key):
        """X ∈ R^{d×n}: Gaussian columns, plus θ ξ_i u when ``spike`` > 0."""
        kz, ku, kxi = jax.random.split(key, 3)
        d, n = self.dim, self.samples
        u = jax.random.normal(ku, (d,))
        u = u / jnp.linalg.norm(u)
        xi = jax.random.normal(kxi, (n,))
        return jax.random.normal(kz, (d, n)) + self.spike * u[:, None] * xi[None, :]

    def features(self, key, x):
        """A = act(V X) (SwiGLU: SiLU(V₁X) ⊙ V₂X), V ~ N(0, 1)/sqrt(d)."""
        k1, k2 = jax.random.split(key)
        shape = (self.feature_dim, self.dim)
        arity = _TABLE[self.activation][1]
        pre = [jax.random.normal(k, shape) / jnp.sqrt(self.dim) @ x for k in (k1, k2)[:arity]]
        return activate(self.activation, *pre)

    def sample(self, key):
        kx, kv, kw = jax.random.split(key, 3)
        a = self.features(kv, self.inputs(kx))
        w_star = self.target_scale * jax.random.normal(kw, (self.m, self.feature_dim))
        w_star = w_star / jnp.sqrt(self.feature_dim)
        return {"A": a, "Y": w_star @ a}

    def loss(self, params, data):
        a = data["A"]
        r = params["W"] @ a - data["Y"]
        return 0.5 * jnp.sum(r * r) / true_size(self, "samples")

    def gradient(self, params, data):
        """G = (W A − Y) Aᵀ / n."""
        a = data["A"]
        return (params["W"] @ a - data["Y"]) @ a.T / true_size(self, "samples")

    def metrics(self, params, data):
        a = data["A"]
        n = true_size(self, "samples")
        g = self.gradient(params, data)
        l_f, l_op = smoothness_constants(data, n)
        g_fro2 = jnp.square(frobenius_norm(g))
        g_nuc = nuclear_norm(g)
        spectral_step = (g_nuc / l_op) * polar(g, method="svd")
        return {
            "loss": self.loss(params, data),
            "nuclear_rank": nuclear_rank(g),
            "stable_rank_A": stable_rank(a),
            "gd_decrease_bound": g_fro2 / (2 * l_f),
            "spectral_decrease_bound": jnp.square(g_nuc) / (2 * l_op),
            "gd_decrease": one_step_decrease(g, g / l_f, a, n),
            "spectral_decrease": one_step_decrease(g, spectral_step, a, n),
        }
