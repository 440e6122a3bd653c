"""Matrix least squares: the small built-in problem that exercises the engine.

L(W) = (1/2n) ‖W A − Y‖²_F with W ∈ R^{m×p}, features A ∈ R^{p×n} whose singular
values fall geometrically from 1 to 1/condition (times sqrt(n)), and targets
Y = W♯ A + noise·E with a Gaussian ground truth W♯.

Sizes do not pad (no ``pad=True``, see :mod:`specdyn.buckets`): the math would (zero
rows and columns add nothing; the one normalisation is 1/n), but this is the engine's
reference problem for one program per size, whose tests sweep ``samples`` and count
programs and cells.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdyn.diagnostics import nuclear_rank, stable_rank
from specdyn.problem import problem, require, static


@problem
class MatrixLeastSquares:
    """(1/2n)‖WA − Y‖²_F from W₀ = init_scale·Gaussian/sqrt(p)."""

    rows: int = static(8)  # m: outputs
    cols: int = static(8)  # p: features
    samples: int = static(32)  # n
    condition: float = 10.0  # ratio of the largest to the smallest singular value of A
    noise: float = 0.0  # label noise standard deviation
    init_scale: float = 0.0

    def __check_init__(self):
        for name in ("rows", "cols", "samples"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, value, "be a positive integer")
        require(self.condition >= 1, "condition", self.condition, "be >= 1")
        require(self.noise >= 0, "noise", self.noise, "be >= 0")
        require(self.init_scale >= 0, "init_scale", self.init_scale, "be >= 0")

    def init(self, key):
        w = jax.random.normal(key, (self.rows, self.cols)) / jnp.sqrt(self.cols)
        return {"W": self.init_scale * w}

    def sample(self, key):
        k_u, k_v, k_w, k_e = jax.random.split(key, 4)
        p, n = self.cols, self.samples
        r = min(p, n)
        u, _ = jnp.linalg.qr(jax.random.normal(k_u, (p, r)))
        v, _ = jnp.linalg.qr(jax.random.normal(k_v, (n, r)))
        s = jnp.sqrt(n) * self.condition ** (-jnp.linspace(0.0, 1.0, r))
        a = (u * s) @ v.T
        w_star = jax.random.normal(k_w, (self.rows, p)) / jnp.sqrt(p)
        y = w_star @ a + self.noise * jax.random.normal(k_e, (self.rows, n))
        return {"A": a, "Y": y, "W_star": w_star}

    def loss(self, params, data):
        r = params["W"] @ data["A"] - data["Y"]
        return 0.5 * jnp.sum(r * r) / self.samples

    def metrics(self, params, data):
        grad = jax.grad(self.loss)(params, data)["W"]
        err = params["W"] - data["W_star"]
        return {
            "loss": self.loss(params, data),
            "distance": jnp.linalg.norm(err) / jnp.linalg.norm(data["W_star"]),
            "nuclear_rank": nuclear_rank(grad),
            "stable_rank_A": stable_rank(data["A"]),
        }
