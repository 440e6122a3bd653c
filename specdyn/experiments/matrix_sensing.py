"""Matrix sensing experiments (PAPERS.md §4): phase detection, the power-method prediction
of phase I, and figures.

Phase rule (:func:`phase_ends`), on a trajectory of metrics recorded at ``step``:

* phase I (spectral/alignment) ends at the first recorded step where ``angle`` ≤
  ``angle_threshold`` (radians, default 0.25);
* phase II (saddle avoidance) ends at the first recorded step where ``sigma_min_signal`` ≥
  ``signal_fraction`` · σ_min(X) (default ½), with σ_min(X) = 1/condition;
* phase III (local refinement) ends at the first recorded step from which ``test_error``
  stays ≤ ``plateau_factor`` · (its final value) (default 2): the error has plateaued.

A phase that never ends gives NaN.

Plateau rule (:func:`plateau`): a run has reached its plateau at its horizon T when its test
error changed by at most ``factor`` (default 1.1, i.e. 10%) over the last doubling of steps:
err(T/2)/err(T) ≤ 1.1. Errors of runs that have not are errors at the stated horizon (upper
bounds on their plateau), drawn hollow.

Alignment phase (:func:`alignment_phase`): the power-method regime, which ends at the first
step where σ_min(V_XᵀU) ≥ ``signal_fraction``·σ_min(X) (default 0.1; the cubic term of the
gradient is then no longer negligible); reported: its length (that step) and the largest
principal angle there, against the width k.

Learning rates in :func:`methods`: each (optimizer, init) at its best rate by the smallest
seed-mean final test error (``sd.results.best_learning_rate(ds, "test_error", rule="final")``). The power-method prediction (:func:`power_method`) is
U_t = (I + μ𝒜*(y))^t U₀ — GD without its cubic term −μ𝒜*𝒜(UUᵀ)U, exact in the limit α → 0
while ‖U_t‖ stays small.

Figure functions take a sweep ``xarray.Dataset`` and return a matplotlib Figure
(``[plot] figures = ["matrix_sensing.<name>"]``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from specdyn.plot import curve_style, legend_outside
from specdyn.problems.matrix_sensing import MatrixSensing
from specdyn.results import (
    BestRateRule,
    best_lr_index,
    first_step,
    index_zero_except,
    log_log_slope,
    picks_rates_by,
    problem_of,
)
from specdyn.simulate import sample_run

__all__ = [
    "alignment_phase",
    "alignment_vs_width",
    "plateau",
    "error_vs_init_scale",
    "error_vs_width",
    "methods",
    "phase_ends",
    "phases",
    "power_method",
]

_PHASES = ("I", "II", "III")


# ---------------------------------------------------------------- phase detection
def _ends(angle, smin, err, steps, sigma_min_x, angle_threshold, signal_fraction, plateau_factor):
    angle, smin, err = np.asarray(angle), np.asarray(smin), np.asarray(err)
    end1 = first_step(angle <= angle_threshold, steps)
    end2 = first_step(smin >= signal_fraction * np.asarray(sigma_min_x)[..., None], steps)
    final = err[..., -1:]
    end3 = first_step((err <= plateau_factor * final) & np.isfinite(final), steps, stay=True)  # stays below
    return np.stack([end1, end2, end3], axis=-1)


def _config(ds) -> dict:
    return json.loads(ds.attrs.get("config", "{}"))


def phase_ends(traj, *, condition=None, angle_threshold=0.25, signal_fraction=0.5,
               plateau_factor=2.0):
    """Steps at which phases I, II, III end (rule in the module docstring).

    ``traj``: a dict from ``sd.simulate`` (give ``condition``, the problem's field) → a numpy
    array (3,) of steps; or a sweep Dataset → a DataArray with a ``phase`` dim ("I", "II",
    "III") over the Dataset's other dims (condition from its coordinate or config unless given).
    """
    kw = dict(angle_threshold=angle_threshold, signal_fraction=signal_fraction,
              plateau_factor=plateau_factor)
    if isinstance(traj, xr.Dataset):
        if condition is None:
            condition = traj["condition"] if "condition" in traj.coords else problem_of(traj).condition
        cond = xr.DataArray(condition) if not isinstance(condition, xr.DataArray) else condition
        st = traj["step"].values
        out = xr.apply_ufunc(
            lambda a, s, e, c: _ends(a, s, e, st, 1.0 / c, **kw),
            traj["angle"], traj["sigma_min_signal"], traj["test_error"], cond,
            input_core_dims=[["step"], ["step"], ["step"], []], output_core_dims=[["phase"]],
        )
        return out.assign_coords(phase=list(_PHASES))
    if condition is None:
        raise ValueError("condition must be given for a simulate() trajectory, got condition=None")
    return _ends(traj["angle"], traj["sigma_min_signal"], traj["test_error"], traj["step"],
                 1.0 / float(condition), **kw)


# ---------------------------------------------------------------- power method
def power_method(problem: MatrixSensing, data, u0, learning_rate, steps):
    """The power-method prediction U_t = (I + μ𝒜*(y))^t U₀ at each of ``steps``.

    𝒜*(y) = 𝒜*𝒜(XXᵀ) (XXᵀ for the population operator); computed from its
    eigendecomposition. Returns a dict with ``"U"`` (len(steps), n, k) and the problem's
    metrics of each predicted U_t (random init; ``U_spec`` in ``data`` is ignored).
    """
    data = {k: v for k, v in data.items() if k != "U_spec"}
    x = data["X"]
    mat = x @ x.T if problem.operator == "population" else problem.adjoint(data["y"], data)
    lam, vec = jnp.linalg.eigh((mat + mat.T) / 2)
    t = jnp.asarray(np.asarray(steps), dtype=lam.dtype)
    gain = (1.0 + learning_rate * lam)[None, :] ** t[:, None]  # (T, n)
    coef = vec.T @ u0  # n×k
    us = jnp.einsum("ij,tj,jk->tik", vec, gain, coef)
    mets = jax.vmap(lambda u: problem.metrics({"U": u}, data))(us)
    return {"U": us, **mets}


# ---------------------------------------------------------------- helpers for figures
def _reduce_rest(da, keep):
    """Mean over seeds (diverged runs are NaN and skipped); other unkept dims at index 0."""
    if "seed" in da.dims and "seed" not in keep:
        da = da.mean("seed", skipna=True)
    return index_zero_except(da, keep)


# ---------------------------------------------------------------- figures
def phases(ds: xr.Dataset) -> Figure:
    """Test error, angle, σ_min(signal) and ‖noise‖ against step (first optimizer, lr, grid
    point; each seed a thin line), with the phase ends of seed 0 marked, and the power-method
    prediction of the angle (dashed, GD only) over phase I."""
    opt = str(ds["optimizer"].values[0])
    sel = ds.isel(optimizer=0, lr=0)
    extra = {d: 0 for d in sel["test_error"].dims if d not in ("seed", "step")}
    sel = sel.isel(extra)
    prob = problem_of(ds, **{d: ds[d].values[i].item() for d, i in extra.items()})
    ends = phase_ends(sel.isel(seed=0), condition=prob.condition)
    steps = ds["step"].values
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for s in range(sel.sizes["seed"]):
        r = sel.isel(seed=s)
        a = 1.0 if s == 0 else 0.35
        axes[0].semilogy(steps, r["test_error"], color="C0", alpha=a,
                         label="test error" if s == 0 else None)
        axes[0].semilogy(steps, r["noise_norm"], color="C2", alpha=a,
                         label=r"$\|V_{X\perp}^T U\|$" if s == 0 else None)
        axes[0].semilogy(steps, r["sigma_min_signal"], color="C3", alpha=a,
                         label=r"$\sigma_{min}(V_X^T U)$" if s == 0 else None)
        axes[1].plot(steps, r["angle"], color="C1", alpha=a, label="angle" if s == 0 else None)
    if opt == "gd":
        seed = int(sel["seed"].values[0])
        lr = float(ds["learning_rate"].sel(optimizer=opt).isel(lr=0))
        t_end = ends.values[0] if np.isfinite(ends.values[0]) else steps[-1]
        pm_steps = steps[steps <= t_end]
        with jax.enable_x64(bool(_config(ds).get("x64", False))):  # the sweep's precision
            params, data = sample_run(prob, jax.random.PRNGKey(seed))
            pm = power_method(prob, data, params["U"], lr, pm_steps)
        axes[1].plot(pm_steps, pm["angle"], "k--", lw=1, label="power method (seed 0)")
    for ax in axes:
        for k, (e, name) in enumerate(zip(ends.values, _PHASES, strict=True)):
            if np.isfinite(e):  # labels at staggered heights: phase ends can be a few steps apart
                ax.axvline(e, color="grey", ls=":", lw=1)
                ax.text(e, 0.98 - 0.07 * k, f" end {name}", transform=ax.get_xaxis_transform(),
                        va="top", fontsize=7, color="dimgrey")
        ax.set_xlabel("step (symlog scale)")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        legend_outside(ax, where="below")
    axes[0].set_ylabel("test error and subspace norms (log scale)")
    axes[1].set_ylabel("largest principal angle (rad)")
    lr = float(ds["learning_rate"].sel(optimizer=opt).isel(lr=0))
    fig.suptitle(f"matrix sensing, {opt} lr={lr:g}, {sel.sizes['seed']} seeds (seed 0 solid, others faint): "
                 "phase ends (seed 0) at steps "
                 + ", ".join(f"{n}={e:g}" for n, e in zip(_PHASES, ends.values, strict=True)), fontsize=9)
    fig.tight_layout()
    return fig


def plateau(err, steps, factor=1.1):
    """(reached, ratio): ratio = err(T/2)/err(T) over the last axis (T the last recorded step,
    T/2 the nearest recorded step), reached = ratio ≤ factor (the plateau rule)."""
    err, steps = np.asarray(err, float), np.asarray(steps)
    half = int(np.argmin(np.abs(steps - steps[-1] / 2)))
    ratio = err[..., half] / err[..., -1]
    return ratio <= factor, ratio


def alignment_phase(ds, signal_fraction=0.1, condition=None):
    """Length of the alignment (power-method) phase and the largest principal angle at its end,
    per run: a Dataset with ``length`` and ``angle`` over the sweep's dims less ``step`` (NaN
    if it never ends). σ_min(X) = 1/condition (the problem's field unless given)."""
    cond = problem_of(ds).condition if condition is None else condition
    hit = ds["sigma_min_signal"] >= signal_fraction / cond
    steps = ds["step"].values
    idx = hit.argmax("step")
    ok = hit.any("step")
    length = xr.DataArray(steps[idx.values], dims=idx.dims, coords=idx.coords).where(ok)
    angle = ds["angle"].isel(step=idx).where(ok)
    return xr.Dataset({"length": length.astype(float), "angle": angle.drop_vars("step", errors="ignore")})


def _curves_and_finals(ds, dim, label, xlog):
    err = _reduce_rest(ds["test_error"], ("step", dim, "seed"))
    steps = ds["step"].values
    xs = ds[dim].values.astype(float)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    finals, reached_all = [], []
    for i, x in enumerate(xs):
        e = err.isel({dim: i})
        m = e.mean("seed").values
        reached, ratio = plateau(m, steps)
        style = curve_style(0, i, len(xs)) if len(xs) > 10 else {"color": f"C{i}"}
        axes[0].loglog(steps[1:], m[1:], **style, label=f"{label}={x:g}: err(T/2)/err(T)={ratio:.2f}")
        if e.sizes["seed"] > 1:  # every seed's error is positive: the range is visible on the log axis
            axes[0].fill_between(steps[1:], e.min("seed").values[1:], e.max("seed").values[1:],
                                 color=style["color"], alpha=0.15, lw=0)
        finals.append(m[-1])
        reached_all.append(bool(reached))
    finals, reached_all = np.array(finals), np.array(reached_all)
    n_seeds = err.sizes["seed"]
    band = ", shaded: min–max over seeds" if n_seeds > 1 else ""
    axes[0].set(xlabel="step", ylabel="relative test error",
                title=f"curves to the horizon T={steps[-1]}: mean of {n_seeds} seeds{band}")
    axes[0].title.set_fontsize(9)
    legend_outside(axes[0], where="below")
    plot = axes[1].loglog if xlog else axes[1].semilogy
    plot(xs, finals, "-", color="C0")
    axes[1].plot(xs[reached_all], finals[reached_all], "o", color="C0", label="plateau reached")
    axes[1].plot(xs[~reached_all], finals[~reached_all], "o", mfc="none", color="C0",
                 label="still falling at T (error at T)")
    for i, x in enumerate(xs):
        for s_ in range(err.sizes["seed"]):
            axes[1].plot([x], [float(err.isel({dim: i, "seed": s_, "step": -1}))], ".",
                         color="grey", ms=3, label="each seed" if i == s_ == 0 else None)
    axes[1].set(xlabel=label, ylabel=f"test error at T={steps[-1]}")
    return fig, axes, xs, finals, reached_all


def error_vs_init_scale(ds: xr.Dataset) -> Figure:
    """Left: test error against step for each α (seed mean). Right: error at the horizon
    against α (log-log), filled where the plateau rule holds, hollow where the error is still
    falling; slopes of log error vs log α over all points and over the plateaued ones."""
    fig, axes, xs, finals, reached = _curves_and_finals(ds, "init_scale", "α", True)
    s_all = log_log_slope(xs, finals)
    s_pl = log_log_slope(xs[reached], finals[reached])
    axes[1].set_title(f"seed mean at T; slope {s_all:.2f} (all α), {s_pl:.2f} (plateaued α only)", fontsize=9)
    legend_outside(axes[1], where="below")
    prob = problem_of(ds)
    fig.suptitle(f"matrix sensing, GD: n={prob.dim}, r={prob.rank}, k={prob.width}, "
                 f"m={prob.measurements} (n(n+1)/2={prob.dim * (prob.dim + 1) // 2}); plateau rule: "
                 "err(T/2)/err(T) ≤ 1.1", fontsize=9)
    fig.tight_layout()
    return fig


def error_vs_width(ds: xr.Dataset) -> Figure:
    """As :func:`error_vs_init_scale`, against the width k (first α, lr, optimizer)."""
    fig, axes, xs, finals, reached = _curves_and_finals(ds, "width", "k", False)
    axes[1].set_title("seed mean at T", fontsize=9)
    legend_outside(axes[1], where="below")
    prob = problem_of(ds)
    fig.suptitle(f"matrix sensing, GD: n={prob.dim}, r={prob.rank}, m={prob.measurements}, "
                 f"α={prob.init_scale:g}; plateau rule: err(T/2)/err(T) ≤ 1.1", fontsize=9)
    fig.tight_layout()
    return fig


def alignment_vs_width(ds: xr.Dataset, signal_fraction=0.1) -> Figure:
    """Left: largest principal angle against step for each width k (seed mean). Right: the
    alignment phase against k — its length (steps until σ_min(V_XᵀU) ≥ 0.1·σ_min(X)) and the
    angle at its end (seed mean, seeds as dots), and the step where the angle first is ≤ 0.25."""
    sel = _reduce_rest(ds[["angle", "sigma_min_signal", "test_error"]], ("step", "width", "seed"))
    sel.attrs = ds.attrs
    ph = alignment_phase(sel, signal_fraction)
    cond = problem_of(ds).condition
    ends = phase_ends(sel, condition=cond).sel(phase="I")
    ks = ds["width"].values.astype(float)
    steps = ds["step"].values
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    for i, k in enumerate(ks):
        axes[0].plot(steps, sel["angle"].isel(width=i).mean("seed"), color=f"C{i % 10}", label=f"k={k:g}")
    axes[0].set(xlabel="step", ylabel="largest principal angle (rad)", title="angle (seed mean)",
                xlim=(0, min(float(steps[-1]), 3 * float(np.nanmax(ends.values)))))
    legend_outside(axes[0], where="below")
    for name, ax, lab in (("angle", axes[1], "angle at the phase's end (rad)"),
                          ("length", axes[2], "step")):
        v = ph[name]
        ax.plot(ks, v.mean("seed"), "o-", color="C0", label=f"{name} of the alignment phase (seed mean)")
        ax.set_title(f"alignment phase: its {name}", fontsize=9)
        for s_ in range(v.sizes["seed"]):
            ax.plot(ks, v.isel(seed=s_), ".", color="grey", ms=3, label="each seed" if s_ == 0 else None)
        ax.set(xlabel="width k", ylabel=lab)
    axes[2].plot(ks, ends.mean("seed"), "s--", color="C1", label="first step with angle ≤ 0.25 (seed mean)")
    for ax in axes[1:]:
        legend_outside(ax, where="below")
    prob = problem_of(ds)
    fig.suptitle(f"alignment phase vs width: n={prob.dim}, r={prob.rank}, m={prob.measurements}, "
                 f"condition={cond:g}, α={prob.init_scale:g}, {ds.sizes['seed']} seeds\n"
                 f"alignment phase: from step 0 until σ_min(V_XᵀU) ≥ {signal_fraction:g}·σ_min(X)", fontsize=9)
    fig.tight_layout()
    return fig


METHODS_RULE = BestRateRule.of_metric("test_error", mode="min", rule="final")


@picks_rates_by(METHODS_RULE)
def methods(ds: xr.Dataset) -> Figure:
    """Test error against step for each (optimizer, init_type) on the same instances (seed
    mean, shaded: min–max over seeds), each at its best learning rate (:data:`METHODS_RULE`:
    smallest seed-mean final test error; a rate where a seed diverged is never chosen); the
    legend says whether that rate is interior."""
    best = METHODS_RULE.best(ds)
    score = METHODS_RULE.scores(ds)
    n_lr = ds.sizes["lr"]
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    inits = ds["init_type"].values if "init_type" in ds.dims else [None]
    for i, opt in enumerate(ds["optimizer"].values):
        for j, it in enumerate(inits):
            b = best.sel(optimizer=opt) if it is None else best.sel(optimizer=opt, init_type=it)
            sc = score.sel(optimizer=opt) if it is None else score.sel(optimizer=opt, init_type=it)
            sc = _reduce_rest(sc, ("lr",))
            idx = int(best_lr_index(sc))
            edge = "" if 0 < idx < n_lr - 1 else ", grid edge!"
            runs = _reduce_rest(b["test_error"], ("step", "seed"))
            e = runs.mean("seed")
            lr = float(np.asarray(b["learning_rate"]).ravel()[0])
            style = curve_style(i, j, len(inits))
            style.pop("marker")
            ax.semilogy(ds["step"], e, **style,
                        label=f"{opt}, {it or 'random'} init, lr={lr:g}{edge} (final {float(e[-1]):.1e})")
            if runs.sizes["seed"] > 1:
                ax.fill_between(ds["step"], runs.min("seed"), runs.max("seed"), color=style["color"],
                                alpha=0.15, lw=0)
    ax.set(xlabel="step", ylabel="relative test error (log scale)")
    legend_outside(ax, title="optimizer, init, best lr", title_fontsize=7)
    prob = problem_of(ds)
    n_seeds = ds.sizes["seed"]
    fig.suptitle(f"n={prob.dim}, r={prob.rank}, k={prob.width}, m={prob.measurements}, α={prob.init_scale:g}; "
                 f"line: mean of {n_seeds} seeds" + (", shaded: min–max" if n_seeds > 1 else "")
                 + "\n" + METHODS_RULE.description, fontsize=8)
    fig.tight_layout()
    return fig
