"""Long-tailed digits (PAPERS.md §2 on real data): scikit-learn's 8×8 digits, shipped.

:func:`long_tailed_digits` builds one seed's data set (which examples are kept); the model
:class:`DigitsMLP` takes it as given data, one data set per seed:
``sd.sweep(DigitsMLP(), ..., data=lambda seed: long_tailed_digits(10.0, seed=seed))``.

``width`` does not pad (:mod:`specdyn.buckets`): the data is given (``data=``), and
runs with given data run one program per size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from specdyn.problem import problem, static
from specdyn.problems.datasets import long_tailed_counts

__all__ = ["DigitsMLP", "long_tailed_digits"]


def long_tailed_digits(imbalance_ratio: float = 10.0, seed: int = 0, test_fraction: float = 0.3):
    """scikit-learn's 8×8 digits (shipped, no download), scaled to [0, 1] and standardised.

    Split per class (stratified, so every seed gives arrays of the same shapes): a
    fraction ``test_fraction`` of each class goes to a balanced test set; of the rest,
    class c keeps round(n_0 · ρ^(−c/9)) examples (:func:`specdyn.problems.datasets.long_tailed_counts`,
    ρ = ``imbalance_ratio`` = n_max / n_min: class 0 the head, class 9 the tail).
    ``seed`` picks which examples. Returns a data dict for :class:`DigitsMLP`.
    """
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction=!r}")
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    pools, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        pools.append(idx[n_test:])
    counts = long_tailed_counts([len(p) for p in pools], imbalance_ratio)
    train = np.concatenate([p[:n] for p, n in zip(pools, counts, strict=True)])
    test = np.concatenate(test)
    x = x / 16.0
    m, s = x[train].mean(0), x[train].std(0) + 1e-3
    f = lambda a: jnp.asarray((a - m) / s, dtype=jnp.float32)  # noqa: E731
    return {"x": f(x[train]), "y": jnp.asarray(y[train]), "x_test": f(x[test]), "y_test": jnp.asarray(y[test])}


@problem
class DigitsMLP:
    """One-hidden-layer tanh MLP on long-tailed digits, full-batch cross-entropy.
    Data comes through ``sd.simulate(..., data=long_tailed_digits(...))``."""

    width: int = static(64)
    init_scale: float = 1.0

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {"W1": self.init_scale * jax.random.normal(k1, (self.width, 64)) / 8.0,
                "W2": self.init_scale * jax.random.normal(k2, (10, self.width)) / jnp.sqrt(self.width)}

    def _logits(self, params, x):
        return jnp.tanh(x @ params["W1"].T) @ params["W2"].T

    def loss(self, params, data):
        logp = jax.nn.log_softmax(self._logits(params, data["x"]))
        return -jnp.mean(jnp.take_along_axis(logp, data["y"][:, None], axis=1))

    def metrics(self, params, data):
        logits = self._logits(params, data["x_test"])
        pred = jnp.argmax(logits, axis=1)
        hit = (pred == data["y_test"]).astype(jnp.float32)
        onehot = jax.nn.one_hot(data["y_test"], 10)
        per_class = jnp.maximum(onehot.sum(0), 1.0)
        class_acc = hit @ onehot / per_class
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), data["y_test"][:, None], axis=1)[:, 0]
        class_loss = nll @ onehot / per_class
        return {"accuracy": jnp.mean(hit), "balanced_accuracy": jnp.mean(class_acc),
                "worst_accuracy": jnp.min(class_acc), "class_accuracy": class_acc,
                "balanced_loss": jnp.mean(class_loss), "class_loss": class_loss}

    metric_dims = {"class_accuracy": ("class",), "class_loss": ("class",)}  # noqa: RUF012
