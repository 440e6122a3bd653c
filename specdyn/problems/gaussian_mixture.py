"""Imbalanced Gaussian mixture (Vasudeva et al., arXiv 2510.22980; PAPERS.md §2).

k classes with priors p_c; x | y=c ~ N(μ e_c, σ² I_d) (orthogonal means of norm μ,
d ≥ k); one-hot targets e_y ∈ R^k. Model f(x) = W_end x with the end-to-end matrix
W_end = W_L ⋯ W_1 (L = ``depth``; L = 1 linear, L = 2 bilinear).

Population squared loss (``samples=None``), exact:
    L(W) = ½ E‖W_end x − e_y‖² = ½ Σ_c p_c ‖μ W_end e_c − e_c‖² + ½ σ² ‖W_end‖²_F.
In the class basis the diagonal entry α_c = e_cᵀ W_end μ_c / μ = (W_end)_cc has
gradient s^xx_c α_c − s^yx_c with s^yx_c = μ p_c and s^xx_c = μ² p_c + σ², so it
saturates at α*_c = s^yx_c / s^xx_c (see :mod:`specdyn.reduced.imbalanced`).

With ``samples = n`` the loss is the empirical mean over n drawn points (squared or
cross-entropy; cross-entropy needs samples). Accuracies are measured on a fixed,
class-stratified test set of ``test_per_class`` points per class drawn by ``sample``.

Initialisation: depth 1 starts at W = 0; depth L ≥ 2 starts every layer at
``init_scale`` times the rectangular identity (balanced, diagonal in the class
basis), so each α_c = a_c^L with a_c the common layer diagonal.

Padding (``sd.static(..., pad=True)``, :mod:`specdyn.buckets`): ``dim``, ``width`` and
``samples`` may be zero-padded. Padded input coordinates and hidden units are zero in
x and in every layer, so they add nothing to W_end and get zero gradient (the σ²‖W_end‖²
term included); padded samples (x = 0, label 0) are masked out of the mean, which
divides by the true n. ``classes`` does not pad (the priors, one-hot targets and the
softmax run over every class), nor ``test_per_class``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdyn.problem import problem, require, size_mask, static, true_size

__all__ = ["GaussianMixture", "class_priors"]


def class_priors(classes: int, priors, imbalance):
    """Priors p ∈ R^k (sum 1).

    ``priors`` = "power": p_c ∝ c^(−imbalance) (c = 1..k; 1 = balanced at imbalance 0);
    "step": the first ⌈k/2⌉ (majority) classes have weight ``imbalance``, the rest 1;
    a tuple of k positive floats: those weights (``imbalance`` unused).
    ``imbalance`` may be traced (a swept data field).
    """
    if priors == "power":
        w = jnp.arange(1, classes + 1, dtype=jnp.result_type(float)) ** (-imbalance)
    elif priors == "step":
        major = (classes + 1) // 2
        w = jnp.where(jnp.arange(classes) < major, imbalance, 1.0)
    else:
        w = jnp.asarray(priors, dtype=jnp.result_type(float))
    return w / jnp.sum(w)


@problem
class GaussianMixture:
    """Imbalanced k-class Gaussian mixture, linear/bilinear/deep-linear model."""

    classes: int = static(3)  # k
    dim: int = static(3, pad=True)  # d ≥ k
    priors: object = static("power")  # "power" | "step" | tuple of k weights
    samples: object = static(None, pad=True)  # None: population squared loss; n: empirical loss
    loss_type: str = static("squared")  # "squared" | "cross_entropy"
    depth: int = static(1)  # L
    width: object = static(None, pad=True)  # hidden width for L ≥ 2 (None: dim)
    test_per_class: int = static(200)  # stratified test set for accuracies
    imbalance: float = 1.0  # prior exponent ("power") or majority weight ("step")
    mean_norm: float = 1.0  # μ
    noise: float = 0.5  # σ
    init_scale: float = 0.0  # layer scale for depth ≥ 2 (depth 1 starts at 0)

    metric_dims = {  # noqa: RUF012
        "alpha": ("class",),
        "class_loss": ("class",),
        "class_accuracy": ("class",),
        "priors": ("class",),
    }

    def __check_init__(self):
        for name in ("classes", "dim", "depth", "test_per_class"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, value, "be a positive integer")
        require(self.dim >= self.classes, "dim", self.dim, f"be >= classes={self.classes}")
        if isinstance(self.priors, tuple):
            require(
                len(self.priors) == self.classes and all(float(p) > 0 for p in self.priors),
                "priors", self.priors, f"be a tuple of {self.classes} positive weights",
            )
        else:
            require(self.priors in ("power", "step"), "priors", self.priors,
                    'be "power", "step" or a tuple of weights')
        require(self.samples is None or (isinstance(self.samples, int) and self.samples >= 1),
                "samples", self.samples, "be None or a positive integer")
        require(self.loss_type in ("squared", "cross_entropy"), "loss_type", self.loss_type,
                'be "squared" or "cross_entropy"')
        require(self.loss_type == "squared" or self.samples is not None, "samples", self.samples,
                "be set for loss_type='cross_entropy' (no closed-form population cross-entropy)")
        require(self.width is None or (isinstance(self.width, int) and self.width >= self.classes),
                "width", self.width, f"be None or an integer >= classes={self.classes}")
        require(self.mean_norm > 0, "mean_norm", self.mean_norm, "be > 0")
        require(self.noise >= 0, "noise", self.noise, "be >= 0")
        require(self.init_scale >= 0, "init_scale", self.init_scale, "be >= 0")
        if self.depth >= 2:
            require(self.init_scale > 0, "init_scale", self.init_scale,
                    "be > 0 for depth >= 2 (zero is a saddle)")

    # ----------------------------------------------------------------- helpers
    @property
    def hidden(self) -> int:
        return self.dim if self.width is None else self.width

    def class_priors(self):
        return class_priors(self.classes, self.priors, self.imbalance)

    def end_to_end(self, params):
        """W_end = W_L ⋯ W_1 ∈ R^{k×d}."""
        w = params["W1"]
        for i in range(2, self.depth + 1):
            w = params[f"W{i}"] @ w
        return w

    # --------------------------------------------------------------- protocol
    def init(self, key):
        del key
        k, d, h = self.classes, self.dim, self.hidden
        if self.depth == 1:
            return {"W1": jnp.zeros((k, d))}
        shapes = [(h, d)] + [(h, h)] * (self.depth - 2) + [(k, h)]
        return {f"W{i + 1}": self.init_scale * jnp.eye(*s) for i, s in enumerate(shapes)}

    def _draw(self, key, labels):
        x = self.noise * jax.random.normal(key, (labels.shape[0], self.dim))
        return x + self.mean_norm * jax.nn.one_hot(labels, self.dim)

    def sample(self, key):
        k_y, k_x, k_t = jax.random.split(key, 3)
        y_test = jnp.repeat(jnp.arange(self.classes), self.test_per_class)
        data = {"x_test": self._draw(k_t, y_test), "y_test": y_test}
        if self.samples is not None:
            logp = jnp.log(self.class_priors())
            y = jax.random.categorical(k_y, logp, shape=(self.samples,))
            data |= {"x": self._draw(k_x, y), "y": y}
        return data

    def _pointwise(self, w, x, y):
        """Per-point loss of the end-to-end matrix w on rows x with labels y."""
        z = x @ w.T
        if self.loss_type == "squared":
            return 0.5 * jnp.sum((z - jax.nn.one_hot(y, self.classes)) ** 2, axis=-1)
        return -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=-1)[:, 0]

    def _population_class_loss(self, w):
        """½(‖μ W e_c − e_c‖² + σ²‖W‖²_F), c = 1..k (exact)."""
        k = self.classes
        cols = self.mean_norm * w[:, :k] - jnp.eye(k)
        return 0.5 * (jnp.sum(cols * cols, axis=0) + self.noise**2 * jnp.sum(w * w))

    def loss(self, params, data):
        w = self.end_to_end(params)
        if self.samples is None:
            return jnp.sum(self.class_priors() * self._population_class_loss(w))
        per = jnp.where(size_mask(self, "samples"), self._pointwise(w, data["x"], data["y"]), 0.0)
        return jnp.sum(per) / true_size(self, "samples")  # padded samples masked out

    def metrics(self, params, data):
        w = self.end_to_end(params)
        k = self.classes
        if self.samples is None:
            class_loss = self._population_class_loss(w)
        else:
            per = self._pointwise(w, data["x_test"], data["y_test"])
            class_loss = jnp.mean(per.reshape(k, self.test_per_class), axis=1)
        pred = jnp.argmax(data["x_test"] @ w.T, axis=-1)
        correct = (pred == data["y_test"]).astype(w.dtype).reshape(k, self.test_per_class)
        class_acc = jnp.mean(correct, axis=1)
        p = self.class_priors()
        return {
            "alpha": jnp.diagonal(w[:, :k]),
            "class_loss": class_loss,
            "balanced_loss": jnp.mean(class_loss),
            "class_accuracy": class_acc,
            "accuracy": jnp.sum(p * class_acc),
            "balanced_accuracy": jnp.mean(class_acc),
            "worst_accuracy": jnp.min(class_acc),
            "priors": p,
        }
