"""Phase retrieval experiments (PAPERS.md §1): escape detection, the learning-rate rule,
figures and the GD vs SpecGD demo.

Learning-rate rule used by every figure that compares optimizers (printed on the figure):

* **accuracy rule** (:func:`best_rate_by_accuracy`): a run's time to accuracy is the first
  recorded step from which the distance ‖M − θθᵀ‖_F stays ≤ ``tol`` (0.1; ‖θθᵀ‖_F = 1) until
  the end of the run; a rate scores the seed mean of these steps, and is out if any seed
  diverged or never got there; the best rate has the smallest score (ties: the smaller final
  distance). The escape step (first step from which the alignment θᵀMθ/‖M‖_F stays > 0.5,
  :func:`escape_time` with ``stay=True``) is then reported at the chosen rates. Tuning on the
  escape step alone is degenerate for SpecGD: its sign update aligns in a couple of steps at
  any rate ≳ 1 and then chatters with amplitude ~lr around the solution, which alignment
  (scale-free) does not see but the distance does.
* **distance rule** (finite samples, label noise): the smallest seed-mean distance
  ‖M − θθᵀ‖_F over the run (``rule="peak"``: oracle early stopping, fair when noisy labels are
  overfitted late; ``rule="final"``: at the last step), via
  ``sd.results.best_learning_rate(ds, "distance", mode="min", rule=...)``.

A best rate at either end of its grid is reported as such (``interior`` is False) in the
figure's legend. Claims that hold at every rate (GD's spike amplification and its loss of
alignment) are drawn over the whole grid: :func:`lr_regimes`.

Figure functions take a sweep Dataset and return a :class:`matplotlib.figure.Figure`; none
switches the matplotlib backend.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from specdyn.plot import curve_style, legend_outside, save_figure
from specdyn.results import (
    BestRateRule,
    best_learning_rate,
    best_lr_index,
    first_crossing,
    learning_rate_scores,
    log_log_slope,
    picks_rates_by,
)
from specdyn.results import index_zero_except as _rest_first

__all__ = [
    "ACCURACY_RULE",
    "ESCAPE_RULE",
    "DISTANCE_RULE",
    "accuracy_scores",
    "best_rate_by_accuracy",
    "best_rate_by_distance",
    "escape_scores",
    "demo",
    "escape_time",
    "escape_time_vs_dim",
    "first_crossing",
    "label_noise",
    "lr_regimes",
    "peak_spike_step",
    "power_law",
    "sliding_figure",
    "spike_strengths",
]

ESCAPE_RULE = ("rule: each optimizer at the rate (log grid) with the smallest seed-mean step from "
               "which ‖M−θθᵀ‖_F stays ≤ {tol:g}; escape = first step from which alignment stays > {thr:g}")
DISTANCE_RULE = ("rule: each optimizer at the rate (log grid) with the smallest seed-mean ‖M−θθᵀ‖_F "
                 "({when})")


# ---------------------------------------------------------------- threshold crossings
def _along_steps(data, name, steps, reduce):
    """Apply ``reduce(values, steps)`` over the step axis of numpy (..., step) data,
    or of a DataArray with a ``step`` dim (a Dataset: its ``name`` variable), vectorised
    over every other dim."""
    if isinstance(data, xr.Dataset | xr.DataArray):
        da = data[name] if isinstance(data, xr.Dataset) else data
        st = da["step"].values
        return xr.apply_ufunc(lambda x: reduce(x, st), da, input_core_dims=[["step"]])
    steps = np.arange(np.shape(data)[-1]) if steps is None else np.asarray(steps)
    return reduce(np.asarray(data), steps)


def escape_time(alignment, steps=None, threshold=0.5, *, stay=False):
    """First step with alignment > threshold (NaN if never); ``stay=True``: the first step
    from which it stays above until the end (the escape rule).

    numpy: ``alignment`` (..., step) with ``steps`` (step,). xarray: a DataArray with a
    ``step`` dim (or a Dataset with an ``alignment`` variable), vectorised over other dims.
    """
    return _along_steps(alignment, "alignment", steps,
                        lambda x, st: first_crossing(x, threshold, st, stay=stay))


def peak_spike_step(spike_ratio, steps=None):
    """Step at which spike_ratio (b/a) peaks; numpy (..., step) or xarray with a step dim."""
    return _along_steps(spike_ratio, "spike_ratio", steps, lambda x, st: st[np.nanargmax(x, axis=-1)])


# ---------------------------------------------------------------- the learning-rate rule
def escape_scores(ds, threshold=0.5):
    """Seed-mean escape step (alignment stays > threshold) of every (optimizer, lr, grid
    point); NaN where a seed diverged or never escaped."""
    et = escape_time(ds["alignment"], threshold=threshold, stay=True)
    diverged = (ds["diverged_at"] >= 0).any("seed")
    return et.mean("seed", skipna=False).where(~diverged)


def accuracy_scores(ds, tol=0.1):
    """Seed-mean time to accuracy (distance stays ≤ tol) of every (optimizer, lr, grid point);
    NaN where a seed diverged or never got there."""
    t = _along_steps(-ds["distance"], "distance", None,
                     lambda x, st: first_crossing(x, -tol, st, stay=True))
    diverged = (ds["diverged_at"] >= 0).any("seed")
    return t.mean("seed", skipna=False).where(~diverged)


def _final_distance(ds):
    return ds["distance"].isel(step=-1).mean("seed")


def accuracy_rule(tol=0.1) -> BestRateRule:
    """The accuracy rule (module docstring) as a :class:`specdyn.results.BestRateRule`:
    the figures and ``specdyn sweep``'s summary pick rates by it."""
    return BestRateRule(
        description=(f"best lr = the smallest seed-mean step from which ‖M−θθᵀ‖_F stays ≤ {tol:g} "
                     "(ties: smaller final distance; a rate where a seed diverged or never got there is out)"),
        scores=lambda ds: accuracy_scores(ds, tol),
        mode="min",
        score_name="time to accuracy",
        tiebreak=_final_distance,
    )


ACCURACY_RULE = accuracy_rule()


def _pick(ds, score, rule):
    """ds with lr selected by ``rule`` (ties: smaller final distance), plus ``best_index``,
    ``interior`` and ``score`` variables over the remaining dims."""
    best = rule.best_index(ds).drop_vars("step", errors="ignore")
    score = score.drop_vars("step", errors="ignore")
    out = ds.isel(lr=best)
    n = ds.sizes["lr"]
    out["best_index"] = best
    out["interior"] = (best > 0) & (best < n - 1) & np.isfinite(score.isel(lr=best))
    out["score"] = score.isel(lr=best)
    return out


def best_rate_by_accuracy(ds, tol=0.1, threshold=0.5):
    """``ds`` at each optimizer's (and grid point's) best rate by the accuracy rule (module
    docstring); adds ``best_index``, ``interior`` (best not at a grid end, and it got there),
    ``score`` (its seed-mean time to accuracy) and ``escape`` (its seed-mean escape step)."""
    out = _pick(ds, accuracy_scores(ds, tol), accuracy_rule(tol))
    out["escape"] = escape_scores(ds, threshold).isel(lr=out["best_index"])
    return out


def best_rate_by_distance(ds, rule="peak"):
    """``ds`` at each optimizer's best rate by the distance rule (``rule`` "peak": smallest
    over the run; "final": at the last step), with the same added variables as
    :func:`best_rate_by_accuracy` (via ``sd.results.best_learning_rate``)."""
    out = best_learning_rate(ds, "distance", mode="min", rule=rule)
    score = learning_rate_scores(ds, "distance", mode="min", rule=rule)
    best = best_lr_index(score)
    n = ds.sizes["lr"]
    out["best_index"] = best
    out["interior"] = (best > 0) & (best < n - 1)
    out["score"] = score.isel(lr=best)
    return out


def _label(opt, sel):
    lr = float(sel["learning_rate"])
    edge = "" if bool(sel["interior"]) else ", at grid edge!"
    return f"{opt} lr={lr:.3g}{edge}"


# ---------------------------------------------------------------- figures
@picks_rates_by(ACCURACY_RULE)
def lr_regimes(ds, threshold=0.5, tol=0.1):
    """Over the whole rate grid, per optimizer (mean over seeds, other grid dims at index 0):
    time to accuracy (solid; the best rate circled) and escape step (dashed), the minimum
    alignment over the run against its start, and the peak spike ratio b/a. Diverged rates
    are marked x."""
    sc = accuracy_scores(ds, tol)
    esc = escape_scores(ds, threshold)
    min_al = ds["alignment"].min("step").mean("seed")
    al0 = ds["alignment"].isel(step=0).mean("seed")
    peak = ds["spike_ratio"].max("step").mean("seed")
    div = (ds["diverged_at"] >= 0).any("seed")
    best = best_rate_by_accuracy(ds, tol, threshold)
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    for i, opt in enumerate(ds["optimizer"].values):
        keep = ("lr",)
        lr = ds["learning_rate"].sel(optimizer=opt).values.astype(float)
        s = _rest_first(sc.sel(optimizer=opt), keep).values
        d = _rest_first(div.sel(optimizer=opt), keep).values
        col = f"C{i}"
        b = _rest_first(best.sel(optimizer=opt), ())
        axes[0].loglog(lr, s, "o-", color=col, label=_label(opt, b) + f": to accuracy {float(b['score']):g}")
        axes[0].loglog(lr, _rest_first(esc.sel(optimizer=opt), keep).values, "s--", color=col,
                       ms=4, label=f"{opt}: escape step (escape {float(b['escape']):g} at best)")
        axes[0].plot([float(b["learning_rate"])], [float(b["score"])], "o", ms=12, mfc="none", color=col)
        ma = np.where(d, np.nan, _rest_first(min_al.sel(optimizer=opt), keep).values)
        axes[1].semilogx(lr, ma, "o-", color=col, label=f"{opt}: min over run")
        axes[1].axhline(float(_rest_first(al0.sel(optimizer=opt), keep).mean()), color=col, ls=":",
                        lw=1, label=f"{opt}: at step 0")
        pk = np.where(d, np.nan, _rest_first(peak.sel(optimizer=opt), keep).values)
        axes[2].loglog(lr, pk, "o-", color=col, label=opt)
        for ax in axes:
            if d.any():
                ax.plot(lr[d], np.full(d.sum(), ax.get_ylim()[0] if ax is not axes[1] else 0.0),
                        "x", color=col, ms=9)
    axes[0].set(xlabel="learning rate", ylabel="step")
    axes[1].set(xlabel="learning rate", ylabel="alignment", yscale="log",
                title="min alignment over the run, every rate")
    axes[2].set(xlabel="learning rate", ylabel="peak b/a = ‖Wv‖/‖Wθ‖", title="spike amplification")
    for ax in axes:
        legend_outside(ax, where="below")
    fig.suptitle(_title(ds) + "\n" + ESCAPE_RULE.format(thr=threshold, tol=tol) + "; x = diverged",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _title(ds):
    cfg = json.loads(ds.attrs.get("config", "{}")).get("fields", {})
    keys = [k for k in ("dim", "covariance", "spike", "exponent", "init_scale", "samples")
            if k in cfg and k not in ds.dims and not (k == "exponent" and cfg.get("covariance") == "spiked")
            and not (k == "spike" and cfg.get("covariance") == "power_law")]
    parts = [f"{k}={cfg[k]}" if not (k == "samples" and cfg[k] in (None, "none")) else "population loss" for k in keys]
    return "phase retrieval: " + ", ".join(parts)


@picks_rates_by(ACCURACY_RULE)
def spike_strengths(ds, threshold=0.5, tol=0.1):
    """Alignment against step at each spike strength λ, each optimizer at its best rate per λ
    (accuracy rule), and the minimum alignment against λ over every rate of the grid."""
    best = best_rate_by_accuracy(ds, tol, threshold)
    opts = list(ds["optimizer"].values)
    spikes = ds["spike"].values
    fig = Figure(figsize=(5 * (len(opts) + 1), 4))
    axes = fig.subplots(1, len(opts) + 1)
    steps = ds["step"].values
    for j, opt in enumerate(opts):
        for i, lam in enumerate(spikes):
            b = best.sel(optimizer=opt).isel(spike=i)
            axes[j].plot(steps, b["alignment"].mean("seed"), color=f"C{i}",
                         label=f"λ={lam:g}: " + _label(opt, b).split(" ", 1)[1])
        axes[j].set(xscale="symlog", xlabel="step", ylabel="alignment", title=f"{opt} at best rate")
        legend_outside(axes[j], where="below")
        min_al = ds["alignment"].sel(optimizer=opt).min("step").mean("seed")
        div = (ds["diverged_at"].sel(optimizer=opt) >= 0).any("seed")
        min_al = min_al.where(~div)
        axes[-1].fill_between(spikes, min_al.min("lr"), min_al.max("lr"), color=f"C{j}", alpha=0.3, lw=0,
                              label=f"{opt}: range over non-diverged rates")
        axes[-1].plot(spikes, min_al.median("lr"), "o-", color=f"C{j}", ms=4, lw=1,
                      label=f"{opt}: median over non-diverged rates")
    axes[-1].axhline(float(ds["alignment"].isel(step=0).mean()), color="k", ls=":", label="at step 0")
    axes[-1].set(xscale="log", yscale="log", xlabel="spike λ", ylabel="min alignment over run")
    legend_outside(axes[-1], where="below")
    fig.suptitle(_title(ds) + "\n" + ESCAPE_RULE.format(thr=threshold, tol=tol), fontsize=9)
    fig.tight_layout()
    return fig


@picks_rates_by(ACCURACY_RULE)
def escape_time_vs_dim(ds, threshold=0.5, tol=0.1):
    """Left: escape step (solid) and time to accuracy (dashed) against d, each optimizer's rate
    tuned per d (accuracy rule), log-log with fitted slopes. Middle: the escape step at each
    fixed rate of the grid (slopes in the legend: the 1/m in f_W slows GD ∝ d at a fixed rate).
    Right: the best rate against d."""
    best = best_rate_by_accuracy(ds, tol, threshold)
    esc = escape_scores(ds, threshold)
    diverged = (ds["diverged_at"] >= 0).any("seed")
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    x = ds["dim"].values.astype(float)
    for i, opt in enumerate(ds["optimizer"].values):
        b = _rest_first(best.sel(optimizer=opt), ("dim",))
        y = b["escape"].values
        lrs = b["learning_rate"].values
        ya = b["score"].values
        edge = "" if bool(b["interior"].all()) else " (some best rates at a grid edge)"
        axes[0].loglog(x, y, "o-", color=f"C{i}", label=f"{opt}: escape (slope {log_log_slope(x, y):.2f}){edge}")
        axes[0].loglog(x, ya, "s--", color=f"C{i}", ms=4,
                       label=f"{opt}: time to accuracy (slope {log_log_slope(x, ya):.2f})")
        axes[2].loglog(x, lrs, "o-", color=f"C{i}", label=f"{opt} (slope {log_log_slope(x, lrs):.2f})")
        e = _rest_first(esc.sel(optimizer=opt), ("dim", "lr"))
        rates = ds["learning_rate"].sel(optimizer=opt).values
        for j, lr in enumerate(rates):  # every rate drawn and named; a slope only from >= 3 sizes
            yj = e.isel(lr=j).values
            seen = int(np.isfinite(yj).sum())
            n_div = int(_rest_first(diverged.sel(optimizer=opt), ("dim", "lr")).isel(lr=j).sum())
            slope = (f"slope {log_log_slope(x, yj):.2f}" if seen >= 3
                     else f"escapes at {seen} of {len(x)} d" + (f", diverges at {n_div}" if n_div else ""))
            axes[1].loglog(x, yj, **curve_style(i, j, len(rates)), lw=1.0, ms=4,
                           label=f"{opt} lr={lr:g} ({slope})")
    axes[0].set(xlabel="dimension d (= width m)", ylabel="step", title="rate tuned per d")
    axes[1].set(xlabel="dimension d", ylabel=f"escape step (stays > {threshold})",
                title="each fixed rate (light: small, dark: large)")
    axes[2].set(xlabel="dimension d", ylabel="best learning rate", title="best rate per d")
    for ax in axes:
        ax.set_xticks(x, [f"{v:g}" for v in x])  # the sizes themselves, not 3×10¹-style labels
        ax.minorticks_off()
        legend_outside(ax, where="below")
    fig.suptitle(_title(ds) + "\n" + ESCAPE_RULE.format(thr=threshold, tol=tol), fontsize=9)
    fig.tight_layout()
    return fig


@picks_rates_by(ACCURACY_RULE)
def power_law(ds, threshold=0.5, tol=0.1):
    """Normalised power-law Σ: alignment against step at each exponent (best rate per exponent,
    accuracy rule) and the escape step / min alignment against the exponent."""
    best = best_rate_by_accuracy(ds, tol, threshold)
    opts = list(ds["optimizer"].values)
    ex = ds["exponent"].values
    fig = Figure(figsize=(5 * (len(opts) + 1), 4))
    axes = fig.subplots(1, len(opts) + 1)
    steps = ds["step"].values
    for j, opt in enumerate(opts):
        for i, e in enumerate(ex):
            b = _rest_first(best.sel(optimizer=opt).isel(exponent=i), ("seed", "step"))
            axes[j].plot(steps, b["alignment"].mean("seed"), color=f"C{i}",
                         label=f"exponent {e:g}: " + _label(opt, b).split(" ", 1)[1])
        axes[j].set(xscale="symlog", xlabel="step", ylabel="alignment", title=f"{opt} at best rate")
        legend_outside(axes[j], where="below")
        b = _rest_first(best.sel(optimizer=opt), ("exponent",))
        axes[-1].plot(ex, b["escape"], "o-", color=f"C{j}", label=f"{opt}: escape step (best rate)")
        axes[-1].plot(ex, b["score"], "s--", color=f"C{j}", ms=4, label=f"{opt}: time to accuracy")
    axes[-1].set(xlabel="power-law exponent", ylabel="step (log scale)", yscale="log",
                 title="escape and time to accuracy at the best rates")
    legend_outside(axes[-1], where="below")
    fig.suptitle(_title(ds) + "\n" + ESCAPE_RULE.format(thr=threshold, tol=tol), fontsize=9)
    fig.tight_layout()
    return fig


@picks_rates_by(BestRateRule.of_metric("distance", mode="min", rule="peak"))
def label_noise(ds, rule="peak"):
    """Finite samples with label noise: the distance ‖M − θθᵀ‖_F (smallest over the run for
    ``rule="peak"``, final for "final") against the sample count, one line per (optimizer,
    noise level), each at its best rate (distance rule)."""
    best = best_rate_by_distance(ds, rule)
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    n = ds["samples"].values.astype(float) if "samples" in ds.dims else None
    noise = ds["label_noise"].values if "label_noise" in ds.dims else [0.0]
    for i, opt in enumerate(ds["optimizer"].values):
        for j, s in enumerate(noise):
            b = best.sel(optimizer=opt)
            if "label_noise" in b.dims:
                b = b.isel(label_noise=j)
            lrs = ", ".join(f"{v:.2g}" for v in np.atleast_1d(b["learning_rate"].values))
            edge = "" if bool(b["interior"].all()) else " (edge!)"
            ax.loglog(n, np.asarray(b["score"]), marker="o", color=f"C{i}", ls=["-", "--", ":"][j % 3],
                      label=f"{opt}, σ={s:g}, lr per n: {lrs}{edge}")
    ax.set(xlabel="samples n", ylabel=f"‖M − θθᵀ‖_F ({'min over the run' if rule == 'peak' else 'final'})")
    legend_outside(ax)
    when = "min over the run: oracle early stopping" if rule == "peak" else "final"
    fig.suptitle(_title(ds) + "\n" + DISTANCE_RULE.format(when=when), fontsize=9)
    fig.tight_layout()
    return fig


def sliding_figure(dim=16, spike=10.0, init_scale=0.01, lr=0.01, steps=1500, record_every=10):
    """SpecGD past chattering (float64): the full simulation, the sign map and the sliding
    (Filippov) flow of the reduced (a, b, c) dynamics against t = lr·step; right: the
    distance of full and map from the flow. Returns (figure, summary)."""
    import jax

    import specdyn as sd
    from specdyn.problems.phase_retrieval import PhaseRetrieval
    from specdyn.reduced.phase_retrieval import sliding_flow, spectral_map, switching_functions

    with jax.enable_x64(True):
        p = PhaseRetrieval(dim=dim, spike=spike, init_scale=init_scale)
        full = sd.simulate(p, sd.spectral_gd(lr, method="svd"), key=jax.random.PRNGKey(0),
                           steps=steps, record_every=record_every)
        full = {k: np.asarray(v) for k, v in full.items() if k != "params"}
        red = {k: np.abs(np.asarray(v)) for k, v in spectral_map(p, lr, steps + 1, record_every).items()}
        t = full["step"] * lr
        flow = {k: np.asarray(v) for k, v in sliding_flow(p, t).items()}
        h = np.stack([np.asarray(x) for x in switching_functions(p, red["a"], red["b"], red["c"])])
    # first step at which the map sits within lr of a zero of some g (it starts chattering)
    chat = (np.abs(np.diff(np.sign(h), axis=1)) > 0).any(0) | (red["b"][1:] < lr) | (red["c"][1:] < lr)
    t_chat = float(t[1:][np.argmax(chat)]) if chat.any() else float("nan")
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 2)
    for k, col in zip("abc", ["C0", "C1", "C2"]):
        axes[0].plot(t, full[k], color=col, lw=2, alpha=0.6, label=f"{k}: full SpecGD")
        axes[0].plot(t, red[k][: len(t)], "--", color="k", lw=0.8, label="sign map" if k == "a" else None)
        axes[0].plot(t, flow[k], ":", color="m", lw=1.5, label="sliding flow" if k == "a" else None)
        axes[1].semilogy(t, np.abs(full[k] - flow[k]) + 1e-9, color=col, label=f"|{k}_full − {k}_flow|")
        axes[1].semilogy(t, np.abs(red[k][: len(t)] - flow[k]) + 1e-9, "--", color=col, lw=0.8,
                         label=f"|{k}_map − {k}_flow|")
    for ax in axes:
        if np.isfinite(t_chat):
            ax.axvline(t_chat, color="grey", ls=":", lw=1)
            ax.text(t_chat, 0.98, " map starts chattering", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7, color="grey")
        ax.set_xlabel("t = lr · step")
        legend_outside(ax, where="below")
    axes[0].set(ylabel="coefficient (a=‖Wθ‖, b=‖Wv‖, c)")
    axes[1].set(ylabel="|coefficient − flow| + 1e-9")
    axes[1].set_ylim(bottom=1e-8)
    fig.suptitle(f"SpecGD on phase retrieval past chattering: d=m={dim}, λ={spike:g}, α={init_scale:g}, "
                 f"lr={lr:g} (float64)", fontsize=9)
    fig.tight_layout()
    after = t > t_chat if np.isfinite(t_chat) else np.zeros_like(t, bool)
    summary = {
        "t_chatter": t_chat,
        "max_map_minus_flow": {k: float(np.max(np.abs(red[k][: len(t)] - flow[k]))) for k in "abc"},
        "max_full_minus_flow_after_chatter": {
            k: float(np.max(np.abs(full[k] - flow[k])[after])) if after.any() else float("nan")
            for k in "abc"},
        "final": {"full": {k: float(full[k][-1]) for k in "abc"},
                  "flow": {k: float(flow[k][-1]) for k in "abc"}},
    }
    return fig, summary


# ---------------------------------------------------------------- the demo
def _grids(ds):
    """Each optimizer's rate grid, e.g. ``gd 0.3–30 (5 rates)``."""
    parts = []
    for opt in ds["optimizer"].values:
        lr = ds["learning_rate"].sel(optimizer=opt).values
        parts.append(f"{opt} {lr.min():g}–{lr.max():g} ({lr.size} rates)")
    return ", ".join(parts)


DEMO_RATES = {"gd": [0.3, 1.0, 3.0, 10.0, 30.0], "specgd": [0.01, 0.03, 0.1, 0.3, 1.0]}


def demo(out_dir, dim=32, spike=30.0, steps=400, init_scale=0.01, threshold=0.5, tol=0.1,
         learning_rates=None):
    """GD vs SpecGD on the population loss at a strong spike, each at its best rate from a
    5-rate log grid by the accuracy rule; writes two PNGs into out_dir: alignment against
    step, and (a, b, c) with the reduced maps overlaid (the SpecGD sliding flow is in
    :func:`sliding_figure`, slower: its stiff solve compiles for tens of seconds).
    ``learning_rates``: ``{"gd": [...], "specgd": [...]}`` (default :data:`DEMO_RATES`).
    Returns figures, a summary per optimizer, the rule and the sweep's Dataset."""

    import specdyn as sd
    from specdyn.problems.phase_retrieval import PhaseRetrieval
    from specdyn.reduced.phase_retrieval import reduced_gd_map, spectral_map

    os.makedirs(out_dir, exist_ok=True)
    p = PhaseRetrieval(dim=dim, spike=spike, init_scale=init_scale)
    ds = sd.sweep(p, optimizers={"gd": sd.gd, "specgd": lambda lr: sd.spectral_gd(lr, method="svd")},
                  learning_rates=learning_rates or DEMO_RATES, seeds=1, steps=steps, record_every=1, progress=False)
    best = best_rate_by_accuracy(ds, tol, threshold)
    runs = list(ds["optimizer"].values)
    lrs = {o: float(best["learning_rate"].sel(optimizer=o)) for o in runs}
    res = {o: best.sel(optimizer=o).isel(seed=0) for o in runs}
    steps_arr = ds["step"].values
    red = {"gd": reduced_gd_map(p, lrs["gd"], steps, 1), "specgd": spectral_map(p, lrs["specgd"], steps, 1)}
    figs = []
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for o in runs:
        ax.plot(steps_arr, res[o]["alignment"], label=f"{o} ({_label(o, res[o]).split(' ', 1)[1]})")
    ax.set(xscale="symlog", xlabel="step", ylabel=r"alignment $\theta^T M\theta/\|M\|_F$",
           title=f"phase retrieval, spiked λ={spike:g}, d={dim}, one seed")
    legend_outside(ax, fontsize=8, title="optimizer (best lr)", title_fontsize=8)
    footnote = textwrap.fill(ESCAPE_RULE.format(thr=threshold, tol=tol) + f"; rate grids: {_grids(ds)}", 100)
    fig.text(0.01, 0.01, footnote, fontsize=7, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.035 * (footnote.count("\n") + 1) + 0.02, 1, 1))  # room for the footnote
    path = os.path.join(out_dir, "phase_retrieval_alignment.png")
    save_figure(fig, path, dpi=100)
    figs.append(path)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, o in zip(axes, runs):
        for k, col in zip("abc", ["C0", "C1", "C2"]):
            ax.plot(steps_arr, res[o][k], color=col, label=f"{k} (full)")
            ax.plot(red[o]["step"], np.abs(np.asarray(red[o][k])), "--", color="k", lw=0.8,
                    label=("reduced map" if k == "a" else None))
        ax.set(yscale="log", xlabel="step", title=f"{o} at its best lr={lrs[o]:.3g}")
        legend_outside(ax, where="below")
    axes[0].set_ylabel("coefficient (a=‖Wθ‖, b=‖Wv‖, c)")
    fig.suptitle(f"phase retrieval, spiked λ={spike:g}, d={dim}: full simulation vs reduced (a, b, c) map",
                 fontsize=9)
    fig.tight_layout()
    path = os.path.join(out_dir, "phase_retrieval_abc.png")
    save_figure(fig, path, dpi=100)
    figs.append(path)
    summary = {
        o: {
            "learning_rate": lrs[o],
            "best_rate_interior": bool(best["interior"].sel(optimizer=o)),
            "time_to_accuracy": float(best["score"].sel(optimizer=o)),
            "escape_step": float(best["escape"].sel(optimizer=o)),
            "final_alignment": float(res[o]["alignment"][-1]),
            "min_alignment": float(res[o]["alignment"].min()),
            "peak_spike_ratio_b_over_a": float(np.nanmax(res[o]["spike_ratio"])),
        }
        for o in runs
    }
    return {"figures": figs, "summary": summary, "rule": ESCAPE_RULE.format(thr=threshold, tol=tol),
            "results": ds}
