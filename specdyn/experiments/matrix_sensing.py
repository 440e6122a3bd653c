"""Matrix sensing experiments (PAPERS.md §4): phase detection, the power-method prediction
of phase I, and figures.

Phase rule (:func:`phase_ends`), on a trajectory of metrics recorded at ``step``:

* phase I (spectral/alignment) ends at the first recorded step where ``angle`` ≤
  ``angle_threshold`` (radians, default 0.25);
* phase II (saddle avoidance) ends at the first recorded step where ``sigma_min_signal`` ≥
  ``signal_fraction`` · σ_min(X) (default ½), with σ_min(X) = 1/condition;
* phase III (local refinement) ends at the first recorded step from which ``test_error``
  stays ≤ ``plateau_factor`` · (its final value) (default 2): the error has plateaued.

A phase that never ends gives NaN. The power-method prediction (:func:`power_method`) is
U_t = (I + μ𝒜*(y))^t U₀ — GD without its cubic term −μ𝒜*𝒜(UUᵀ)U, exact in the limit α → 0
while ‖U_t‖ stays small.

Figure functions take a sweep ``xarray.Dataset`` and return a matplotlib Figure
(``[plot] figures = ["matrix_sensing.<name>"]``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from specdyn.problems.matrix_sensing import MatrixSensing
from specdyn.results import log_log_slope, problem_of
from specdyn.simulate import sample_run

__all__ = [
    "error_vs_init_scale",
    "error_vs_width",
    "methods",
    "phase_ends",
    "phases",
    "power_method",
]

_PHASES = ("I", "II", "III")


# ---------------------------------------------------------------- phase detection
def _first(hit, steps):
    idx = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), np.asarray(steps)[idx].astype(float), np.nan)


def _ends(angle, smin, err, steps, sigma_min_x, angle_threshold, signal_fraction, plateau_factor):
    angle, smin, err = np.asarray(angle), np.asarray(smin), np.asarray(err)
    end1 = _first(angle <= angle_threshold, steps)
    end2 = _first(smin >= signal_fraction * np.asarray(sigma_min_x)[..., None], steps)
    final = err[..., -1:]
    # "stays below from t on": reverse cumulative AND
    below = np.flip(np.logical_and.accumulate(np.flip(err <= plateau_factor * final, -1), -1), -1)
    end3 = _first(below & np.isfinite(final), steps)
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
    for d in list(da.dims):
        if d in keep:
            continue
        da = da.mean(d, skipna=True) if d == "seed" else da.isel({d: 0})
    return da


# ---------------------------------------------------------------- figures
def phases(ds: xr.Dataset) -> plt.Figure:
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
        for e, name in zip(ends.values, _PHASES, strict=True):
            if np.isfinite(e):
                ax.axvline(e, color="grey", ls=":", lw=1)
                ax.text(e, 0.98, f" end {name}", transform=ax.get_xaxis_transform(),
                        va="top", fontsize=7, color="grey")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[1].set_ylabel("largest principal angle (rad)")
    fig.suptitle(f"matrix sensing, {opt}: phase ends (seed 0) at steps "
                 + ", ".join(f"{n}={e:g}" for n, e in zip(_PHASES, ends.values, strict=True)))
    fig.tight_layout()
    return fig


def error_vs_init_scale(ds: xr.Dataset) -> plt.Figure:
    """Final test error against α = init_scale (log-log, mean over seeds), one line per
    optimizer (and per other swept dim's first value), with the fitted slope in the legend."""
    final = _reduce_rest(ds["test_error"].isel(step=-1), ("optimizer", "init_scale"))
    alpha = ds["init_scale"].values.astype(float)
    fig, ax = plt.subplots(figsize=(6, 4))
    for opt in final["optimizer"].values:
        y = final.sel(optimizer=opt).values
        ax.loglog(alpha, y, "o-", label=f"{opt} (slope {log_log_slope(alpha, y):.2f})")
    ax.set(xlabel=r"init scale $\alpha$", ylabel=r"final $\|UU^T-XX^T\|_F/\|XX^T\|_F$",
           title="test error vs initialization scale")
    ax.legend()
    fig.tight_layout()
    return fig


def error_vs_width(ds: xr.Dataset) -> plt.Figure:
    """Final test error against the width k (mean over seeds), one line per optimizer."""
    final = _reduce_rest(ds["test_error"].isel(step=-1), ("optimizer", "width"))
    k = ds["width"].values.astype(float)
    fig, ax = plt.subplots(figsize=(6, 4))
    for opt in final["optimizer"].values:
        ax.semilogy(k, final.sel(optimizer=opt).values, "o-", label=str(opt))
    ax.set(xlabel="width k", ylabel="final relative test error",
           title="test error vs overparameterization")
    ax.legend()
    fig.tight_layout()
    return fig


def methods(ds: xr.Dataset) -> plt.Figure:
    """Test error against step for each (optimizer, init_type) on the same instances (mean over
    seeds), each at its best learning rate: the lr index with the smallest mean final test
    error (diverged runs are NaN and skipped)."""
    err = _reduce_rest(ds["test_error"], ("optimizer", "init_type", "step", "lr"))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    inits = err["init_type"].values if "init_type" in err.dims else [None]
    for i, opt in enumerate(err["optimizer"].values):
        for j, it in enumerate(inits):
            e = err.sel(optimizer=opt) if it is None else err.sel(optimizer=opt, init_type=it)
            best = int(e.isel(step=-1).fillna(np.inf).argmin("lr"))
            lr = float(ds["learning_rate"].sel(optimizer=opt).isel(lr=best))
            e = e.isel(lr=best)
            ax.semilogy(ds["step"], e, color=f"C{i}", ls=["-", "--", ":"][j % 3],
                        label=f"{opt} lr={lr:g}, {it or 'random'} init "
                              f"(final {float(e[-1]):.1e})")
    ax.set(xlabel="step", ylabel="relative test error", title="GD vs SpecGD vs spectral init")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
