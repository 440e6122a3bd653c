"""When spectral updates help (Davis & Drusvyatskiy 2025, PAPERS.md §3): random features.

Three experiments on :class:`specdyn.problems.random_features.RandomFeatures`, each run
with the paper's data-dependent step rules — GD with rate n/‖A‖²_op and SpecGD
(``nuclear_scaling=True``) with rate n/‖A‖²_F, computed from each instance's features:

1. :func:`compare_rules` — both rules from zero init (ReLU features: SpecGD wins and
   nr(G) ≥ st(A) along the way), and :func:`restarts` — SpecGD restarted from GD's
   iterates every ``every`` steps;
2. the same on SwiGLU features, where nr(G) falls below st(A) and GD wins;
3. :func:`nuclear_rank_growth` — nr(G) at zero init and after one GD step against the
   size k (n = 2k, d = k/2, p = m = k) on spiked inputs, with :func:`growth_slope` the
   fitted slope of log nr against log k.

Inputs of experiment 3: x_i = z_i + θ ξ_i u (z_i ~ N(0, I_d), ξ_i ~ N(0, 1), a random unit
u), i.e. X = Z + θ u ξᵀ, a rank-one spike in the inputs (θ = ``spike``). ReLU features
are spiked on their own: their mean E[ReLU] = 1/sqrt(2π) puts a rank-one spike
(≈ μ 1 1ᵀ) in A, which is why st(A) ≈ π stays bounded.

Every function returns an ``xarray.Dataset``; the figure functions take those (and
:func:`rules_figure` also a sweep Dataset from ``sweeps/layerwise/*.toml``).
:func:`main` runs all three at smoke or full size.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from specdyn._compile import jit
from specdyn.diagnostics import nuclear_rank, stable_rank
from specdyn.optimizers import get_optimizer
from specdyn.plot import legend_outside, save_figure
from specdyn.problem import pad_instance, problem, require, static, true_size
from specdyn.problems.random_features import (
    ACTIVATIONS,
    RandomFeatures,
    gd_learning_rate,
    spectral_learning_rate,
)
from specdyn.results import best_learning_rate, index_zero_except, log_log_slope
from specdyn.simulate import sample_run, simulate
from specdyn.sweep import LearningRateRule, sweep

__all__ = [
    "FULL",
    "GrowthFeatures",
    "OPTIMIZERS",
    "RULES",
    "SMOKE",
    "compare_rules",
    "growth_figure",
    "growth_slope",
    "instance",
    "main",
    "nuclear_rank_growth",
    "restarts",
    "restarts_figure",
    "rules_figure",
    "step_rules",
]

# Sizes of the three experiments: the paper's (FULL) and a seconds-long smoke size.
FULL = {
    "relu": {"problem": {"dim": 50, "feature_dim": 100, "samples": 400}, "steps": 1000,
             "record_every": 1, "every": 100, "horizon": 100},
    "swiglu": {"problem": {"dim": 50, "feature_dim": 100, "samples": 400}, "steps": 400,
               "record_every": 1},
    "growth": {"ks": (64, 128, 256, 512), "seeds": 3},
}
SMOKE = {
    "relu": {"problem": {"dim": 10, "feature_dim": 20, "samples": 80}, "steps": 100,
             "record_every": 1, "every": 25, "horizon": 25},
    "swiglu": {"problem": {"dim": 20, "feature_dim": 40, "samples": 160}, "steps": 200,
               "record_every": 10},
    "growth": {"ks": (16, 32, 64), "seeds": 2},
}


def instance(problem: RandomFeatures, seed: int = 0) -> dict:
    """The data set ``sd.simulate``/``sd.sweep`` draw for ``seed`` (key = PRNGKey(seed))."""
    return sample_run(problem, jax.random.PRNGKey(seed))[1]


def _gd_rate(problem, data):
    """Paper 3's GD rule n/‖A‖²_op (``gd_learning_rate``) as a sweep rule(problem, data)."""
    return gd_learning_rate(data)


def _spectral_rate(problem, data):
    """Paper 3's SpecGD rule n/‖A‖²_F (``spectral_learning_rate``) as a sweep rule(problem, data)."""
    return spectral_learning_rate(data)


# The paper's two methods and their data-dependent rates, as a sweep takes them: module-level
# objects, so every call reuses the same compiled programs.
OPTIMIZERS = {"gd": None,
              "specgd": functools.partial(get_optimizer, "specgd", nuclear_scaling=True, method="svd")}
RULES = {"gd": LearningRateRule(_gd_rate), "specgd": LearningRateRule(_spectral_rate)}


def step_rules(data) -> dict:
    """The paper's two rules on ``data``: {"gd": GD at n/‖A‖²_op,
    "specgd": SpecGD (exact polar, nuclear scaling) at n/‖A‖²_F}; the rates stay arrays."""
    return {name: (get_optimizer(name, RULES[name].rule(None, data)) if factory is None
                   else factory(RULES[name].rule(None, data)))
            for name, factory in OPTIMIZERS.items()}


def _fields(problem) -> dict:
    return {k: v for k, v in vars(problem).items() if isinstance(v, int | float | str)}


def compare_rules(problem: RandomFeatures, *, seed: int = 0, steps: int = 1000,
                  record_every: int = 1, x64: bool = True) -> xr.Dataset:
    """GD and SpecGD from zero init with the paper's rates on one instance: one sweep.

    Returns a Dataset with dims (optimizer, step) holding every metric of the problem
    (loss, nuclear_rank, stable_rank_A, the guaranteed and realized one-step decreases of
    both rules at the current iterate), ``diverged_at(optimizer)`` and
    ``learning_rate(optimizer)`` (the rates the rules gave on this instance).
    """
    with jax.enable_x64(x64):
        ds = sweep(problem, optimizers=OPTIMIZERS, learning_rates=RULES, seeds=[seed],
                   steps=steps, record_every=record_every, progress=False)
    ds = ds.isel(lr=0, seed=0, drop=True)
    rates = ds["effective_learning_rate"]
    ds = ds.drop_vars(["effective_learning_rate", "learning_rate"], errors="ignore")
    ds = ds.assign_coords(learning_rate=("optimizer", rates.values))
    ds.attrs.update({"seed": seed, **_fields(problem)})
    return ds


def restarts(problem: RandomFeatures, *, seed: int = 0, steps: int = 1000, every: int = 100,
             horizon: int | None = None, x64: bool = True) -> xr.Dataset:
    """GD for ``steps`` steps, and SpecGD restarted from GD's iterate at steps 0, every, 2·every, ...

    Each restart runs ``horizon`` SpecGD steps (default ``every``). Returns a Dataset with
    ``gd_loss(step)`` (GD's loss at steps 0..steps), ``specgd_loss(restart, offset)`` (the
    restarted run's loss ``offset`` steps after its start; ``restart`` is the start step)
    and ``gd_loss_at(restart, offset)`` (GD's loss at the same absolute step, NaN past
    ``steps``), so ``specgd_loss < gd_loss_at`` says switching to SpecGD there pays.
    """
    horizon = every if horizon is None else horizon
    if steps % every:
        raise ValueError(f"steps must be a multiple of every, got {steps=}, {every=}")
    key = jax.random.PRNGKey(seed)
    with jax.enable_x64(x64):
        data = instance(problem, seed)
        gd = step_rules(data)["gd"]
        w = problem.init(key)
        gd_losses, starts = [], []
        for _ in range(steps // every):  # sd.simulate from the last iterate: one cached program
            out = simulate(problem, gd, key=key, steps=every, data=data, params=w)
            gd_losses.append(np.asarray(out["loss"][:-1]))
            starts.append(w)
            w = out["params"]
        starts.append(w)
        gd_losses.append(np.asarray([float(problem.loss(w, data))]))
        spec = _spectral_restarts(problem, data, jax.tree.map(lambda *a: jnp.stack(a), *starts), key, horizon)
    gd_loss = np.concatenate(gd_losses)
    restart = np.arange(0, steps + 1, every)
    offset = np.arange(horizon + 1)
    at = restart[:, None] + offset[None, :]
    gd_at = np.where(at <= steps, gd_loss[np.minimum(at, steps)], np.nan)
    return xr.Dataset(
        {"gd_loss": ("step", gd_loss),
         "specgd_loss": (("restart", "offset"), np.asarray(spec)),
         "gd_loss_at": (("restart", "offset"), gd_at)},
        coords={"step": np.arange(steps + 1), "restart": restart, "offset": offset},
        attrs={"seed": seed, "every": every, "horizon": horizon, **_fields(problem)},
    )


@functools.partial(jit, static_argnames=("steps",))
def _spectral_restarts(problem, data, starts, key, steps):
    """SpecGD at the paper's rate from each of ``starts`` (stacked parameters): one vmapped
    ``sd.simulate``; the loss (restart, record). Compiled once per shapes and ``steps``."""
    optimizer = OPTIMIZERS["specgd"](RULES["specgd"].rule(problem, data))
    run = lambda w0: simulate(problem, optimizer, key=key, steps=steps, data=data, params=w0)["loss"]  # noqa: E731
    return jax.vmap(run)(starts)


@problem
class GrowthFeatures:
    """Experiment 3's instance at size k: :class:`RandomFeatures` with n = 2k samples,
    d = k/2 inputs and p = m = k features and outputs (``features()``), whose metrics are
    nr(G) and st(A). One size field, ``k``, that pads (:mod:`specdyn.buckets`): a padded
    instance runs the padded RandomFeatures at the bucket's sizes with the true ones as
    data, so the sizes of a sweep share one compiled program."""

    k: int = static(64, pad=True)
    activation: str = static("relu")
    spike: float = 1.0

    def __check_init__(self):
        require(isinstance(self.k, int) and not isinstance(self.k, bool) and self.k >= 2, "k", self.k,
                "be an integer >= 2")
        require(self.activation in ACTIVATIONS, "activation", self.activation, f"be one of {ACTIVATIONS}")
        require(self.spike >= 0, "spike", self.spike, "be >= 0")

    def features(self) -> RandomFeatures:
        """The RandomFeatures instance (fields unvalidated: ``spike`` may be traced); padded
        (sizes at the bucket, true sizes from ``true_size``) when this instance is."""
        k, true_k = self.k, true_size(self, "k")
        sizes = {"dim": max(k // 2, 1), "feature_dim": k, "outputs": None, "samples": 2 * k,
                 "activation": self.activation, "spike": self.spike}
        true = None if isinstance(true_k, int) else {"dim": true_k // 2, "feature_dim": true_k, "samples": 2 * true_k}
        return pad_instance(RandomFeatures(), sizes, true)

    def init(self, key):
        return self.features().init(key)

    def sample(self, key):
        return self.features().sample(key)

    def loss(self, params, data):
        return self.features().loss(params, data)

    def metrics(self, params, data):
        return {"nuclear_rank": nuclear_rank(self.features().gradient(params, data)),
                "stable_rank_A": stable_rank(data["A"])}


def nuclear_rank_growth(ks=(64, 128, 256, 512), *, seeds: int = 3, activation: str = "relu",
                        spike: float = 1.0, x64: bool = True, buckets="auto") -> xr.Dataset:
    """nr(G) at zero init and after one GD step (rate n/‖A‖²_op), and st(A), against k.

    Sizes: n = 2k samples, d = k/2 inputs, p = m = k features and outputs
    (:class:`GrowthFeatures`); spiked inputs with strength ``spike``. One ``sd.sweep`` of
    one GD step over ``k`` (``buckets`` as there: by default the sizes share padded
    programs; the results are those of one program per size). Dataset dims (k, seed):
    ``nr_init``, ``nr_one_step``, ``stable_rank_A``.
    """
    with jax.enable_x64(x64):
        ds = sweep(GrowthFeatures(k=int(ks[0]), activation=activation, spike=spike), optimizers=["gd"],
                   learning_rates=RULES["gd"], seeds=seeds, grid={"k": [int(k) for k in ks]}, steps=1,
                   record_every=1, progress=False, buckets=buckets)
    one = ds.isel(optimizer=0, lr=0).transpose("k", "seed", "step")
    out = {"nr_init": one["nuclear_rank"].isel(step=0), "nr_one_step": one["nuclear_rank"].isel(step=1),
           "stable_rank_A": one["stable_rank_A"].isel(step=0)}
    return xr.Dataset(
        {name: (("k", "seed"), np.asarray(v.values)) for name, v in out.items()},
        coords={"k": list(ks), "seed": np.arange(seeds)},
        attrs={"activation": activation, "spike": spike},
    )


def growth_slope(ds: xr.Dataset, var: str = "nr_one_step") -> float:
    """Least-squares slope of log(seed-mean ``var``) against log k."""
    return log_log_slope(ds.k.values, ds[var].mean("seed").values)


# ---- figures ----------------------------------------------------------------------------
def _one_run(ds: xr.Dataset) -> xr.Dataset:
    """A sweep Dataset reduced to (optimizer, step): seed 0 at each optimizer's best lr
    (smallest final loss, never a diverged run), other grid dims at index 0."""
    if "lr" in ds.dims and "seed" in ds.dims:
        ds = best_learning_rate(ds.isel(seed=[0]), "loss", mode="min", rule="final")
    return index_zero_except(ds, ("optimizer", "step"))


def rules_figure(ds: xr.Dataset) -> plt.Figure:
    """Loss of each rule (log scale) and nr(G) against st(A) over steps."""
    ds = _one_run(ds)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ds.optimizer.values:
        sel = ds.sel(optimizer=name)
        axes[0].semilogy(ds.step, sel["loss"], label=str(name))
        axes[1].plot(ds.step, sel["nuclear_rank"], label=f"nr(G), {name}")
    axes[1].plot(ds.step, ds["stable_rank_A"].isel(optimizer=0), "k--", label="st(A)")
    axes[0].set(xlabel="step", ylabel="loss (log scale)", title="loss, each rule at its own step size")
    axes[1].set(xlabel="step", ylabel="rank (log scale)", title="nuclear rank of G vs stable rank of A",
                yscale="log")
    for ax in axes:
        legend_outside(ax, where="below", fontsize=8)
    fig.tight_layout()
    return fig


def restarts_figure(ds: xr.Dataset) -> plt.Figure:
    """GD's loss, and SpecGD's loss restarted from GD's iterates (one curve per restart)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.semilogy(ds.step, ds["gd_loss"], "k", label="GD")
    for i, r in enumerate(ds.restart.values):
        ax.semilogy(r + ds.offset, ds["specgd_loss"].isel(restart=i), color="C1",
                    label="SpecGD from GD iterate" if i == 0 else None)
    ax.set(xlabel="step", ylabel="loss (log scale)",
           title="SpecGD restarted from GD's iterate (each orange curve: one restart)")
    ax.title.set_fontsize(9)
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig


def growth_figure(ds: xr.Dataset) -> plt.Figure:
    """nr(G) at init and after one step, and st(A), against k (log-log, mean ± range)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    k = ds.k.values
    for var, label in [("nr_init", "nr(G) at init"), ("nr_one_step", "nr(G) after one step"),
                       ("stable_rank_A", "st(A)")]:
        v = ds[var]
        line, = ax.plot(k, v.mean("seed"), "o-", label=label)
        ax.fill_between(k, v.min("seed"), v.max("seed"), alpha=0.2, color=line.get_color(), lw=0)
    ax.set(xscale="log", yscale="log", xlabel="k (n = 2k, d = k/2)", ylabel="rank",
           title=f"mean of {ds.sizes['seed']} seeds, shaded: min–max; slope after one step: {growth_slope(ds):.2f}")
    ax.title.set_fontsize(9)
    ax.set_xticks(k, [f"{v:g}" for v in k])  # the sizes, not 2×10²-style labels
    ax.minorticks_off()
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig


def main(full: bool = False, seed: int = 0, out=None) -> dict:
    """Run experiments 1–3 (smoke size unless ``full``); returns their Datasets.

    With ``out`` (a folder), also writes each Dataset as ``<name>.nc`` and the figures as PNGs.
    """
    size = FULL if full else SMOKE
    relu = RandomFeatures(activation="relu", **size["relu"]["problem"])
    swiglu = RandomFeatures(activation="swiglu", **size["swiglu"]["problem"])
    res = {
        "relu": compare_rules(relu, seed=seed, steps=size["relu"]["steps"],
                              record_every=size["relu"]["record_every"]),
        "relu_restarts": restarts(relu, seed=seed, steps=size["relu"]["steps"],
                                  every=size["relu"]["every"], horizon=size["relu"]["horizon"]),
        "swiglu": compare_rules(swiglu, seed=seed, steps=size["swiglu"]["steps"],
                                record_every=size["swiglu"]["record_every"]),
        "growth": nuclear_rank_growth(size["growth"]["ks"], seeds=size["growth"]["seeds"]),
    }
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, ds in res.items():
            ds.to_netcdf(folder / f"{name}.nc")
        figures = {"relu": rules_figure(res["relu"]), "swiglu": rules_figure(res["swiglu"]),
                   "relu_restarts": restarts_figure(res["relu_restarts"]),
                   "growth": growth_figure(res["growth"])}
        for name, fig in figures.items():
            save_figure(fig, folder / f"{name}.png", dpi=100)
            plt.close(fig)
    return res


def _summary(res: dict) -> str:
    lines = []
    for name in ("relu", "swiglu"):
        ds = res[name]
        fin = ds["loss"].isel(step=-1)
        st = float(ds["stable_rank_A"].isel(optimizer=0, step=0))
        lines.append(f"{name}: final loss gd={float(fin.sel(optimizer='gd')):.3e} "
                     f"specgd={float(fin.sel(optimizer='specgd')):.3e}; st(A)={st:.2f}")
        for opt in ("gd", "specgd"):
            nr = ds["nuclear_rank"].sel(optimizer=opt).values
            below = np.flatnonzero(nr < st)
            lines.append(
                f"  nr(G) along {opt}: init {nr[0]:.2f}, max {nr.max():.2f}, final {nr[-1]:.2f}; "
                f"fraction of records with nr >= st: {np.mean(nr >= st):.2f}, "
                f"nr >= 2 st: {np.mean(nr >= 2 * st):.2f}; first record below st: "
                f"{int(ds.step[below[0]]) if below.size else 'none'}")
    r = res["relu_restarts"]
    end = r["specgd_loss"].isel(offset=-1)
    lines.append("restarts (start: specgd after horizon / gd at same step): " + ", ".join(
        f"{int(s)}: {float(a):.2e}/{float(b):.2e}"
        for s, a, b in zip(r.restart.values, end.values, r["gd_loss_at"].isel(offset=-1).values,
                           strict=True)))
    g = res["growth"]
    lines.append(f"growth (spike={g.attrs['spike']}): k, nr_init, nr_one_step, st(A) (seed means)")
    for k in g.k.values:
        m = g.sel(k=k).mean("seed")
        lines.append(f"  {int(k)}: {float(m.nr_init):.2f} {float(m.nr_one_step):.2f} "
                     f"{float(m.stable_rank_A):.2f}")
    lines.append(f"  slope log nr_one_step vs log k: {growth_slope(g):.3f}; "
                 f"nr_init: {growth_slope(g, 'nr_init'):.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    full = "--full" in sys.argv
    print(_summary(main(full=full, out="out/when_spectral_helps" + ("" if full else "-smoke"))))
