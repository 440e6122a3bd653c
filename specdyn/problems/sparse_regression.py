"""Sparse regression with a ReLU² network (Davis & Drusvyatskiy 2025, PAPERS.md §3).

y = x₁x₂x₃ with x ~ N(0, I_d), fitted by a bias-free ReLU² network d → 4d → 4d → 4d → 1
(weights [W1, W2, W3, W4]), loss (1/2n)‖f(X) − y‖². The paper's per-layer rule
(:func:`per_layer_rule`) steps layer ℓ by n/‖A_{ℓ−1}‖²_op (GD) or n/‖A_{ℓ−1}‖²_F (spectral,
‖G‖_*·polar(G)), with A_{ℓ−1} the layer's incoming activations at the *current* weights.

Sizes do not pad (:mod:`specdyn.buckets`): the paper's steps come from
:func:`per_layer_rule`, not a registry optimizer (so the engine would run them one
program per size anyway), and its rates n/‖A‖² read n from the arrays' shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from specdyn.diagnostics import frobenius_norm, nuclear_rank, stable_rank
from specdyn.problem import problem, require, static
from specdyn.transforms import scale_by_polar

__all__ = ["LAYERS", "SparseRegression", "network_loss", "per_layer_rule", "relu2_forward"]

LAYERS = ("W1", "W2", "W3", "W4")


def relu2_forward(weights, x):
    """Outputs (1 × n) and the incoming activations A_0 = X, A_1, ... of each layer."""
    acts = [x]
    h = x
    for w in weights[:-1]:
        h = jnp.square(jax.nn.relu(w @ h))
        acts.append(h)
    return weights[-1] @ h, acts


def network_loss(weights, x, y):
    """(1/2n)‖f(X) − y‖² for the ReLU² network with weights [W1, ..., W4]."""
    return 0.5 * jnp.mean(jnp.square(relu2_forward(weights, x)[0][0] - y))


@problem
class SparseRegression:
    """y = x₁x₂x₃ by a ReLU² net d → 4d → 4d → 4d → 1; see the module docstring.

    ``diagnostics`` adds nr(G_ℓ) and st(A_{ℓ−1}) per layer to the metrics (four SVDs a
    record: off when only losses are recorded every step).
    """

    dim: int = static(128)  # d (>= 3)
    samples: int = static(512)  # n
    test_samples: int = static(1024)
    diagnostics: bool = static(True)

    metric_dims = {"nuclear_rank": ("layer",), "stable_rank": ("layer",)}  # noqa: RUF012

    def __check_init__(self):
        for name in ("dim", "samples", "test_samples"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
                    "be a positive integer")
        require(self.dim >= 3, "dim", self.dim, "be >= 3 (the target uses x1 x2 x3)")

    def init(self, key):
        """Variance-preserving init: E relu(g)⁴ = 3/2 for g ~ N(0, 1), so layers after the first
        get variance 2/(3 fan_in) and every pre-activation (and the output) has variance ≈ 1."""
        h = 4 * self.dim
        shapes = [(h, self.dim), (h, h), (h, h), (1, h)]
        gains = [1.0, 2 / 3, 2 / 3, 2 / 3]
        return [jax.random.normal(k, s) * jnp.sqrt(g / s[1])
                for k, s, g in zip(jax.random.split(key, 4), shapes, gains, strict=True)]

    def inputs(self, key_train, key_test):
        """Training and test sets: {"x": (d, n), "y": (n,), "x_test", "y_test"}."""
        x = jax.random.normal(key_train, (self.dim, self.samples))
        xt = jax.random.normal(key_test, (self.dim, self.test_samples))
        return {"x": x, "y": x[0] * x[1] * x[2], "x_test": xt, "y_test": xt[0] * xt[1] * xt[2]}

    def sample(self, key):
        return self.inputs(*jax.random.split(key))

    def loss(self, params, data):
        return network_loss(params, data["x"], data["y"])

    def metrics(self, params, data):
        out = {"loss": self.loss(params, data), "test_loss": network_loss(params, data["x_test"], data["y_test"])}
        if self.diagnostics:
            grads = jax.grad(self.loss)(params, data)
            acts = relu2_forward(params, data["x"])[1]
            out["nuclear_rank"] = jnp.stack([nuclear_rank(g) for g in grads])
            out["stable_rank"] = jnp.stack([stable_rank(a) for a in acts])
        return out


def per_layer_rule(learning_rate, inputs, spectral_layers=()) -> optax.GradientTransformation:
    """The paper's per-layer steps on a :class:`SparseRegression` net with inputs X = ``inputs``.

    Layer ℓ: W ← W − lr·(n/‖A_{ℓ−1}‖²_op)·G (GD), or, for ℓ in ``spectral_layers`` (0-based),
    W ← W − lr·(n/‖A_{ℓ−1}‖²_F)·‖G‖_*·polar(G) (``scale_by_polar(nuclear_scaling=True)``),
    A_{ℓ−1} recomputed from the current weights each step. ``inputs`` may be traced (build the
    rule inside ``jax.jit`` with the data as an argument, so it is not a baked-in constant).
    """
    spectral = frozenset(int(i) for i in spectral_layers)
    bad = sorted(i for i in spectral if not 0 <= i < len(LAYERS))
    if bad:
        raise ValueError(f"spectral_layers must be layer indices 0..{len(LAYERS) - 1}, got {spectral_layers=!r}")
    polar_step = scale_by_polar(nuclear_scaling=True)

    def init(params):
        del params
        return optax.EmptyState()

    def update(grads, state, params):
        if params is None:
            raise ValueError("per_layer_rule needs params (its steps depend on the current activations)")
        n = inputs.shape[-1]
        acts = relu2_forward(params, inputs)[1]
        updates = []
        for i, (g, a) in enumerate(zip(grads, acts, strict=True)):
            if i in spectral:
                (step,), _ = polar_step.update([g], polar_step.init([g]))
                scale = n / jnp.square(frobenius_norm(a))
            else:
                step, scale = g, n / jnp.square(jnp.linalg.norm(a, ord=2))
            updates.append(-learning_rate * scale * step)
        return updates, state

    return optax.GradientTransformation(init, update)
