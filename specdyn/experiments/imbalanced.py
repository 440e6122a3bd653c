"""Imbalanced-data experiments (PAPERS.md §2): figures and the digits MLP.

Figure functions take a sweep Dataset and return a matplotlib Figure (used by the
TOML ``[plot] figures = ["imbalanced.<name>"]``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from specdyn.plot import legend_outside
from specdyn.problems.digits import DigitsMLP, long_tailed_digits
from specdyn.reduced import imbalanced as red
from specdyn.results import (
    BestRateRule,
    best_learning_rate,
    best_lr_index,
    first_step,
    learning_rate_scores,
    picks_rates_by,
    problem_of,
)

__all__ = ["RATE_RULE", "RULE", "alpha_closed_forms", "best_lr_accuracy", "best_rate_table", "depth_gap", "depth_gaps",
           "digits_experiment", "digits_figure", "long_tailed_digits", "rule_text", "saturation_steps"]


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
            curves = ax.plot(t[:, 0], np.asarray(closed(t, lr, p, mu, sigma)), "k--", lw=0.8)
            curves[0].set_label("closed form")  # one entry for the classes' closed forms
        ax.axhline(0, color="grey", lw=0.3)
        for c, s in enumerate(np.asarray(red.components(p, mu, sigma)[2])):
            ax.axhline(s, color="grey", ls=":", lw=0.6, label=r"$\alpha^*_c$" if c == 0 else None)
        ax.set(title=f"{name} (lr={lr:g})" + (" — dashed: closed form" if closed else ""), xlabel="step")
    axes[0, 0].set_ylabel(r"$\alpha_c$")
    legend_outside(axes[0, -1])
    fig.tight_layout()
    return fig


# The one rule of paper 2's comparisons (long_tail and digits): each optimizer's rate is the
# one whose seed-mean balanced test loss is lowest at its best recorded step ("peak":
# early stopping with an oracle). Accuracies are scale-invariant (argmax of W x), so a rule
# on them ties every rate small enough to stay on the first steps' direction; the loss is not.
RULE = {"metric": "balanced_loss", "mode": "min", "rule": "peak"}
RATE_RULE = BestRateRule.of_metric(RULE["metric"], mode=RULE["mode"], rule=RULE["rule"])


def rule_text(rule: dict = RULE) -> str:
    """The selection rule in words, as printed on the figures."""
    best = "lowest" if rule["mode"] == "min" else "highest"
    when = "reached during training (peak)" if rule["rule"] == "peak" else "at the last step (final)"
    return f"lr rule: {best} seed-mean {rule['metric'].replace('_', ' ')} {when}"


def best_rate_table(ds: xr.Dataset, rule: dict = RULE) -> dict:
    """Per optimizer: {"lr", "index", "n_rates", "score", "interior", "scores"} under ``rule``.

    ``interior`` is True when the best rate is neither end of the grid, i.e. both ends
    score worse (a NaN score, a rate where some seed diverged, counts as worse).
    """
    scores = learning_rate_scores(ds, rule["metric"], mode=rule["mode"], rule=rule["rule"])
    best = best_lr_index(scores, mode=rule["mode"])
    fill = np.inf if rule["mode"] == "min" else -np.inf
    out = {}
    for name in ds.optimizer.values:
        sc = scores.sel(optimizer=name).fillna(fill).values
        i = int(best.sel(optimizer=name))
        lrs = ds.learning_rate.sel(optimizer=name).values
        out[str(name)] = {"lr": float(lrs[i]), "index": i, "n_rates": len(lrs), "score": float(sc[i]),
                          "interior": 0 < i < len(lrs) - 1,
                          "scores": dict(zip(lrs.tolist(), sc.tolist(), strict=True))}
    return out


@picks_rates_by(RATE_RULE)
def best_lr_accuracy(ds: xr.Dataset, rule: dict = RULE) -> plt.Figure:
    """Paper 2's comparison of optimizers on the long-tailed mixture.

    Top: balanced and worst-class test accuracy against step, each optimizer at its best
    rate under ``rule`` (:data:`RULE`, printed on the figure; mean ± range over seeds).
    Bottom left: the rule's score against the learning rate (the chosen rate ringed: an
    interior best has worse rates on both sides). Bottom right: the highest balanced
    accuracy reached during training against the learning rate, for every rate of the
    grid (the early balanced-accuracy advantage as a claim across rates).
    """
    table = best_rate_table(ds, rule)
    best = best_learning_rate(ds, rule["metric"], mode=rule["mode"], rule=rule["rule"])
    peak_acc = learning_rate_scores(ds, "balanced_accuracy", mode="max", rule="peak")
    score = learning_rate_scores(ds, rule["metric"], mode=rule["mode"], rule=rule["rule"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for k, name in enumerate(ds.optimizer.values):
        color = f"C{k}"
        row = table[str(name)]
        for ax, metric in zip(axes[0], ["balanced_accuracy", "worst_accuracy"], strict=True):
            da = best[metric].sel(optimizer=name).squeeze(drop=True)
            m = da.mean("seed") if "seed" in da.dims else da
            ax.plot(ds.step, m, color=color, label=f"{name} (lr {row['lr']:g})")
            if "seed" in da.dims:
                ax.fill_between(ds.step, da.min("seed"), da.max("seed"), color=color, alpha=0.2)
        lrs = ds.learning_rate.sel(optimizer=name).values
        axes[1, 0].plot(lrs, score.sel(optimizer=name), "o-", color=color, ms=3, label=str(name))
        axes[1, 0].plot(row["lr"], row["score"], "o", mfc="none", mec=color, ms=9)
        axes[1, 1].plot(lrs, peak_acc.sel(optimizer=name), "o-", color=color, ms=3, label=str(name))
    for ax, metric in zip(axes[0], ["balanced accuracy", "worst-class accuracy"], strict=True):
        ax.set(xscale="symlog", xlabel="step", ylabel=f"test {metric}", title=f"{metric} at each best lr")
    legend_outside(axes[0, 1], title="optimizer (best lr)", title_fontsize=7)
    axes[1, 0].set(xscale="log", xlabel="learning rate", ylabel=f"score: {rule['rule']} {rule['metric']}",
                   title="rule's score (ringed: chosen)")
    axes[1, 1].set(xscale="log", xlabel="learning rate", ylabel="peak balanced accuracy",
                   title="highest balanced accuracy, every rate")
    legend_outside(axes[1, 1])
    n_seeds = ds.sizes.get("seed", 1)
    fig.suptitle(rule_text(rule) + f"; {n_seeds} seed{'s' if n_seeds != 1 else ''}; top: seed mean"
                 + (", shaded: min–max over seeds" if n_seeds > 1 else ""), fontsize=9)
    fig.tight_layout()
    return fig


def saturation_steps(alpha: np.ndarray, star: np.ndarray, steps: np.ndarray, frac: float = 0.9) -> np.ndarray:
    """First recorded step at which α_c ≥ frac·α*_c (NaN if never); class axis last."""
    return first_step(np.asarray(alpha) >= frac * np.asarray(star), steps, axis=0)


def depth_gaps(ds: xr.Dataset, frac: float = 0.9) -> dict:
    """{optimizer: array (depth, lr)} of T(minority) / T(majority), the ratio of the steps at
    which the smallest and largest class reach ``frac``·α*; NaN where the minority class
    did not get there within the run ("not escaped within T"); seed 0."""
    problem = problem_of(ds)
    mu, sigma = problem.mean_norm, problem.noise
    depths = ds["depth"].values if "depth" in ds.dims else [1]
    out = {}
    for name in ds.optimizer.values:
        ratios = np.full((len(depths), ds.sizes["lr"]), np.nan)
        for i, L in enumerate(depths):
            for j in range(ds.sizes["lr"]):
                sel = ds.sel(optimizer=name).isel(lr=j, seed=0)
                if "depth" in ds.dims:
                    sel = sel.sel(depth=L)
                p = sel["priors"].isel(step=0).values
                star = np.asarray(red.components(p, mu, sigma)[2])
                T = saturation_steps(sel["alpha"].values, star, ds.step.values, frac)
                ratios[i, j] = T[-1] / T[0]
        out[str(name)] = ratios
    return out


def depth_gap(ds: xr.Dataset) -> plt.Figure:
    """Minority − majority gap: T(minority)/T(majority) (steps to 90% of α*) against depth.

    Every learning rate of the grid is drawn (dots; line: median over rates), since the
    ratio of two saturation times does not depend on the rate for small rates. A method
    whose minority class never reaches 90% of α* within the run is kept and marked at the
    top of the axis with a triangle and "not escaped within T".
    """
    gaps = depth_gaps(ds)
    depths = ds["depth"].values if "depth" in ds.dims else np.array([1])
    horizon = int(ds.step.values[-1])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    finite = np.concatenate([g[np.isfinite(g)] for g in gaps.values()] + [np.array([1.0])])
    top, bottom = 3.0 * finite.max(), 0.5 * finite.min()
    offsets = np.linspace(-0.06, 0.06, len(gaps))
    notes = []
    for k, (name, g) in enumerate(gaps.items()):
        color = f"C{k}"
        x = depths * (1 + offsets[k])
        med = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan for row in g])
        ax.plot(x, med, "-", color=color, label=name)
        for i in range(len(depths)):
            ok = np.isfinite(g[i])
            ax.plot(np.full(ok.sum(), x[i]), g[i][ok], "o", color=color, ms=3, alpha=0.6)
            if not ok.all():
                ax.plot(x[i], top, "^", color=color, ms=8)
                notes.append(f"{name}, L={int(depths[i])}: {(~ok).sum()}/{ok.size} rates")
    if notes:
        ax.text(0.02, 0.02, f"▲ not escaped within T={horizon} steps:\n" + "\n".join(notes),
                transform=ax.transAxes, fontsize=7, va="bottom")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set(xscale="log", yscale="log", xlabel="depth L", ylabel="T(minority) / T(majority)",
           title="saturation gap (90% of α*), every lr of the grid", xticks=list(depths),
           xticklabels=[str(int(d)) for d in depths], ylim=(bottom / 4, 2 * top))
    ax.minorticks_off()
    ax.plot([], [], "o", color="grey", ms=3, label="each rate of the grid")
    ax.plot([], [], "^", color="grey", ms=8, label=f"not escaped within T={horizon}")
    legend_outside(ax, title="line: median over rates", title_fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- real data: digits
# Centre of each optimizer's grid; the full-size grid is these × 3^k, k = −3..3 (seven rates).
DIGITS_LRS = {"gd": 0.5, "ngd": 0.3, "specgd": 0.03, "muon": 0.015, "shampoo": 0.05, "adam": 0.005}
DIGITS_FACTORS = tuple(3.0**k for k in range(-3, 4))
DIGITS_METRICS = ("loss", "accuracy", "balanced_accuracy", "worst_accuracy", "balanced_loss")


def digits_experiment(*, full: bool = False, seeds=None, imbalance_ratio: float = 10.0, learning_rates=None,
                      optimizers=("gd", "ngd", "specgd", "muon", "shampoo", "adam"), steps=None):
    """Balanced/worst-class test accuracy over full-batch training of
    :class:`~specdyn.problems.digits.DigitsMLP` on long-tailed digits (imbalance ratio
    ρ = n_max/n_min), each optimizer (GD, NGD, SpecGD, Muon, Shampoo, Adam from
    :mod:`specdyn`) at its best learning rate.

    ``learning_rates`` maps an optimizer to a rate or a list of rates; by default, full
    size tries DIGITS_LRS × DIGITS_FACTORS (seven rates a factor 3 apart) and smoke size
    DIGITS_LRS alone. Selection rule: :data:`RULE`, the same as the long-tailed mixture
    (lowest seed-mean balanced test cross-entropy reached during training; a rate at
    which any seed diverged is never chosen), through ``sd.results.best_learning_rate``.
    Each optimizer is one ``sd.sweep`` over its rates × seeds with one data set per seed
    (:func:`~specdyn.problems.digits.long_tailed_digits`). Smoke: 60 steps, 2 seeds; full:
    600 steps, 5 seeds. Returns {optimizer: {metric: array (seed, record), "learning_rate":
    chosen, "scores": {rate: score}, "interior": bool, "peak_balanced_accuracy": {rate:
    value}, "imbalance_ratio": ρ}, "step": steps}.
    """
    from specdyn.sweep import sweep

    default_steps, rec = (600, 10) if full else (60, 10)
    steps = default_steps if steps is None else steps
    seeds = list(range(5 if full else 2)) if seeds is None else list(seeds)
    datas = {s: long_tailed_digits(imbalance_ratio, seed=s) for s in seeds}
    out = {}
    for name in optimizers:  # one sweep each: the optimizers' grids may differ in length
        given = (learning_rates or {}).get(name)
        if given is None:
            given = [DIGITS_LRS[name] * f for f in (DIGITS_FACTORS if full else (1.0,))]
        lrs = [float(v) for v in np.atleast_1d(given)]
        ds = sweep(DigitsMLP(), optimizers=[name], learning_rates=lrs, seeds=seeds, steps=steps,
                   record_every=rec, data=datas.__getitem__, progress=False).sel(optimizer=name)
        out.setdefault("step", ds["step"].values)
        score = learning_rate_scores(ds, RULE["metric"], mode=RULE["mode"], rule=RULE["rule"])
        best = int(best_lr_index(score, mode=RULE["mode"]))
        at_best = best_learning_rate(ds, RULE["metric"], mode=RULE["mode"], rule=RULE["rule"])
        fill = np.inf if RULE["mode"] == "min" else -np.inf
        peak = learning_rate_scores(ds, "balanced_accuracy", mode="max", rule="peak").values
        out[name] = {k: at_best[k].transpose("seed", "step").values for k in DIGITS_METRICS}
        out[name]["learning_rate"] = lrs[best]
        out[name]["scores"] = dict(zip(lrs, score.fillna(fill).values.tolist(), strict=True))
        out[name]["interior"] = 0 < best < len(lrs) - 1
        out[name]["peak_balanced_accuracy"] = dict(zip(lrs, peak.tolist(), strict=True))
        out[name]["imbalance_ratio"] = float(imbalance_ratio)
    return out


def digits_figure(result) -> plt.Figure:
    """Balanced and worst-class test accuracy (mean ± range over seeds) per optimizer at
    its best rate (rule printed), and the highest balanced accuracy against the rate."""
    names = [k for k in result if k != "step"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, name in enumerate(names):
        r, color = result[name], f"C{k}"
        for ax, metric in zip(axes[:2], ["balanced_accuracy", "worst_accuracy"], strict=True):
            ax.plot(result["step"], r[metric].mean(0), color=color, label=f"{name} (lr {r['learning_rate']:.3g})")
            ax.fill_between(result["step"], r[metric].min(0), r[metric].max(0), color=color, alpha=0.2)
        rates = list(r["peak_balanced_accuracy"])
        axes[2].plot(rates, list(r["peak_balanced_accuracy"].values()), "o-", ms=3, color=color, label=name)
    rho = result[names[0]]["imbalance_ratio"]
    for ax, metric in zip(axes[:2], ["balanced accuracy", "worst-class accuracy"], strict=True):
        ax.set(xlabel="step", ylabel=f"test {metric}", title=f"digits, ρ = {rho:g}: {metric}")
    axes[2].set(xscale="log", xlabel="learning rate", ylabel="peak balanced accuracy", title="every rate of the grid")
    legend_outside(axes[0], where="below", title="optimizer (best lr)", title_fontsize=7)
    legend_outside(axes[2], where="below")
    n_seeds = result[names[0]]["balanced_accuracy"].shape[0]
    fig.suptitle(rule_text() + f"; {n_seeds} seeds: line = seed mean"
                 + (", shaded = min–max over seeds" if n_seeds > 1 else ""), fontsize=9)
    fig.tight_layout()
    return fig
