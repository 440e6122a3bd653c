"""Imbalanced-data experiments (PAPERS.md §2): figures and the digits MLP.

Figure functions take a sweep Dataset and return a matplotlib Figure (used by the
TOML ``[plot] figures = ["imbalanced.<name>"]``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from specdyn.reduced import imbalanced as red
from specdyn.results import best_learning_rate, learning_rate_scores, problem_of

__all__ = ["alpha_closed_forms", "best_lr_accuracy", "depth_gap", "saturation_steps"]


def alpha_closed_forms(ds: xr.Dataset) -> plt.Figure:
    """α_c over steps per optimizer (first lr, seed 0) with the GD/SpecGD closed forms."""
    problem = problem_of(ds)
    mu, sigma = problem.mean_norm, problem.noise
    opts = list(ds.optimizer.values)
    fig, axes = plt.subplots(1, len(opts), figsize=(4 * len(opts), 3.4), squeeze=False, sharey=True)
    t = ds.step.values.astype(float)[:, None]
    for ax, name in zip(axes[0], opts, strict=True):
        sel = ds.sel(optimizer=name).isel(lr=0, seed=0)
        lr = float(ds.learning_rate.sel(optimizer=name).isel(lr=0))
        p = sel["priors"].isel(step=0).values
        alpha = sel["alpha"].values
        for c in range(alpha.shape[-1]):
            ax.plot(t[:, 0], alpha[:, c], label=f"class {c} (p={p[c]:.2f})")
        closed = {"gd": red.gd_alpha, "specgd": red.specgd_alpha}.get(str(name))
        if closed is not None:
            ax.plot(t[:, 0], np.asarray(closed(t, lr, p, mu, sigma)), "k--", lw=0.8)
        ax.axhline(0, color="grey", lw=0.3)
        for s in np.asarray(red.components(p, mu, sigma)[2]):
            ax.axhline(s, color="grey", ls=":", lw=0.6)
        ax.set(title=f"{name} (lr={lr:g})" + (" — dashed: closed form" if closed else ""), xlabel="step")
    axes[0, 0].set_ylabel(r"$\alpha_c$")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def best_lr_accuracy(ds: xr.Dataset, rule: str = "peak") -> plt.Figure:
    """Balanced and worst-class accuracy vs step, each optimizer at its best lr by
    :func:`specdyn.results.best_learning_rate` on balanced accuracy with ``rule``
    (mean ± range over seeds)."""
    best = best_learning_rate(ds, "balanced_accuracy", mode="max", rule=rule)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, metric in zip(axes, ["balanced_accuracy", "worst_accuracy"], strict=True):
        for name in ds.optimizer.values:
            da = best[metric].sel(optimizer=name).squeeze(drop=True)
            lr = float(best.learning_rate.sel(optimizer=name))
            m = da.mean("seed") if "seed" in da.dims else da
            line, = ax.plot(ds.step, m, label=f"{name} (lr={lr:g})")
            if "seed" in da.dims:
                ax.fill_between(ds.step, da.min("seed"), da.max("seed"), color=line.get_color(), alpha=0.2)
        ax.set(xscale="symlog", xlabel="step", title=f"{metric.replace('_', ' ')} (lr: {rule} rule)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def saturation_steps(alpha: np.ndarray, star: np.ndarray, steps: np.ndarray, frac: float = 0.9) -> np.ndarray:
    """First recorded step at which α_c ≥ frac·α*_c (NaN if never); class axis last."""
    hit = alpha >= frac * star
    first = np.argmax(hit, axis=0)
    return np.where(hit.any(axis=0), steps[first], np.nan)


def depth_gap(ds: xr.Dataset) -> plt.Figure:
    """Minority − majority gap in time to 90% saturation vs depth, per optimizer."""
    problem = problem_of(ds)
    mu, sigma = problem.mean_norm, problem.noise
    fig, ax = plt.subplots(figsize=(5, 3.8))
    depths = ds["depth"].values if "depth" in ds.dims else [1]
    for name in ds.optimizer.values:
        ratios = []
        for L in depths:
            sel = ds.sel(optimizer=name).isel(lr=0, seed=0)
            if "depth" in ds.dims:
                sel = sel.sel(depth=L)
            p = sel["priors"].isel(step=0).values
            star = np.asarray(red.components(p, mu, sigma)[2])
            T = saturation_steps(sel["alpha"].values, star, ds.step.values)
            ratios.append(T[-1] / T[0])
        ax.plot(depths, ratios, "o-", label=str(name))
    ax.set(xlabel="depth L", ylabel="T(minority) / T(majority)", title="saturation gap (90% of α*)", yscale="log")
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- real data: digits
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from specdyn.problem import problem, static  # noqa: E402


def long_tailed_digits(ratio: float = 0.05, seed: int = 0, test_fraction: float = 0.3):
    """scikit-learn's 8×8 digits (shipped, no download), scaled to [0, 1] and standardised.

    Split per class (stratified, so every seed gives arrays of the same shapes): a
    fraction ``test_fraction`` of each class goes to a balanced test set; of the rest,
    class c keeps a fraction ratio^(c/9) (class 0 all of it, class 9 a fraction
    ``ratio``). ``seed`` picks which examples. Returns a data dict for :class:`DigitsMLP`.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        n_keep = max(1, int(round(ratio ** (c / 9) * (len(idx) - n_test))))
        test.append(idx[:n_test])
        train.append(idx[n_test:n_test + n_keep])
    train, test = np.concatenate(train), np.concatenate(test)
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
        pred = jnp.argmax(self._logits(params, data["x_test"]), axis=1)
        hit = (pred == data["y_test"]).astype(jnp.float32)
        onehot = jax.nn.one_hot(data["y_test"], 10)
        class_acc = hit @ onehot / jnp.maximum(onehot.sum(0), 1.0)
        return {"accuracy": jnp.mean(hit), "balanced_accuracy": jnp.mean(class_acc),
                "worst_accuracy": jnp.min(class_acc), "class_accuracy": class_acc}

    metric_dims = {"class_accuracy": ("class",)}  # noqa: RUF012


DIGITS_LRS = {"gd": 0.5, "muon": 0.015, "shampoo": 0.05, "adam": 0.005}
DIGITS_METRICS = ("loss", "accuracy", "balanced_accuracy", "worst_accuracy")


def digits_experiment(*, full: bool = False, seeds=None, ratio: float = 0.05, learning_rates=None,
                      optimizers=("gd", "muon", "shampoo", "adam"), steps=None):
    """Balanced/worst-class test accuracy over full-batch training (GD, Muon, Shampoo, Adam
    from :mod:`specdyn`) of :class:`DigitsMLP` on long-tailed digits, each optimizer at its
    best learning rate.

    ``learning_rates`` maps an optimizer to a rate or a list of rates; by default, full
    size tries DIGITS_LRS × (1/9, 1/3, 1, 3, 9) and smoke size DIGITS_LRS alone. Selection rule
    (:func:`specdyn.results.learning_rate_scores`): the rate whose final balanced test
    accuracy, averaged over seeds, is largest; a rate at which any seed diverged scores −inf. Seeds and rates of
    one optimizer run as one vmapped program. Smoke: 60 steps, 2 seeds; full: 600 steps,
    5 seeds. Returns {optimizer: {metric: array (seed, record), "learning_rate": chosen,
    "scores": {rate: mean final balanced accuracy}}, "step": steps}.
    """
    import specdyn as sd
    from specdyn.simulate import record_steps

    default_steps, rec = (600, 10) if full else (60, 10)
    steps = default_steps if steps is None else steps
    seeds = list(range(5 if full else 2)) if seeds is None else list(seeds)
    datas = [long_tailed_digits(ratio, seed=s) for s in seeds]
    data = jax.tree.map(lambda *a: jnp.stack(a), *datas)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    prob = DigitsMLP()
    out = {}
    for name in optimizers:
        given = (learning_rates or {}).get(name)
        if given is None:
            given = [DIGITS_LRS[name] * f for f in ((1 / 9, 1 / 3, 1.0, 3.0, 9.0) if full else (1.0,))]
        lrs = [float(v) for v in np.atleast_1d(given)]

        def run(lr, key, d, name=name):
            r = sd.simulate(prob, sd.get_optimizer(name, lr), key=key, steps=steps, record_every=rec, data=d)
            return {k: r[k] for k in (*DIGITS_METRICS, "diverged_at")}

        runs = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0, 0)), in_axes=(0, None, None)))(
            jnp.asarray(lrs, jnp.float32), keys, data)
        runs = {k: np.asarray(v) for k, v in runs.items()}
        ds = xr.Dataset({"balanced_accuracy": (("lr", "seed", "step"), runs["balanced_accuracy"]),
                         "diverged_at": (("lr", "seed"), runs["diverged_at"])})
        score = learning_rate_scores(ds, "balanced_accuracy", mode="max").fillna(-np.inf).values
        best = int(np.argmax(score))
        out[name] = {k: runs[k][best] for k in DIGITS_METRICS}
        out[name]["learning_rate"] = lrs[best]
        out[name]["scores"] = dict(zip(lrs, score.tolist(), strict=True))
        out["step"] = record_steps(steps, rec)
    return out


def digits_figure(result) -> plt.Figure:
    """Balanced and worst-class test accuracy (mean ± range over seeds) per optimizer."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, metric in zip(axes, ["balanced_accuracy", "worst_accuracy"], strict=True):
        for name, r in result.items():
            if name == "step":
                continue
            line, = ax.plot(result["step"], r[metric].mean(0), label=f"{name} (lr {r['learning_rate']:.3g})")
            ax.fill_between(result["step"], r[metric].min(0), r[metric].max(0), color=line.get_color(), alpha=0.2)
        ax.set(xlabel="step", title=f"long-tailed digits: {metric.replace('_', ' ')}")
    axes[0].legend()
    fig.tight_layout()
    return fig
