"""Phase retrieval experiments: stage detection, figures and the GD vs SpecGD demo."""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from specdyn.results import log_log_slope


def _first_above(x, threshold, steps):
    x = np.asarray(x)
    hit = x > threshold
    idx = np.argmax(hit, axis=-1)
    out = np.asarray(steps)[idx].astype(float)
    return np.where(hit.any(axis=-1), out, np.nan)


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


def escape_time(alignment, steps=None, threshold=0.5):
    """First step with alignment > threshold (NaN if never).

    numpy: ``alignment`` (..., step) with ``steps`` (step,). xarray: a DataArray with a
    ``step`` dim (or a Dataset with an ``alignment`` variable), vectorised over other dims.
    """
    return _along_steps(alignment, "alignment", steps, lambda x, st: _first_above(x, threshold, st))


def peak_spike_step(spike_ratio, steps=None):
    """Step at which spike_ratio (b/a) peaks; numpy (..., step) or xarray with a step dim."""
    return _along_steps(spike_ratio, "spike_ratio", steps, lambda x, st: st[np.nanargmax(x, axis=-1)])


def demo(out_dir, dim=32, spike=30.0, steps=3000, init_scale=0.01):
    """GD vs SpecGD on the population loss at a strong spike; writes PNGs into out_dir."""
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import specdyn as sd
    from specdyn.problems.phase_retrieval import PhaseRetrieval
    from specdyn.reduced.phase_retrieval import reduced_gd_map, spectral_map

    os.makedirs(out_dir, exist_ok=True)
    p = PhaseRetrieval(dim=dim, spike=spike, init_scale=init_scale)
    lrs = {"gd": 0.5, "specgd": 0.01}  # GD: largest stable-ish step at λ=30, d=32
    runs = {
        "gd": (sd.gd(lrs["gd"]), reduced_gd_map),
        "specgd": (sd.spectral_gd(lrs["specgd"], method="svd"), spectral_map),
    }
    res, red = {}, {}
    for name, (opt, fn) in runs.items():
        res[name] = {
            k: np.asarray(v)
            for k, v in sd.simulate(p, opt, key=jax.random.PRNGKey(0), steps=steps, record_every=10).items()
            if k != "params"
        }
        red[name] = {k: np.abs(np.asarray(v)) for k, v in fn(p, lrs[name], steps, 10).items()}
    figs = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in runs:
        ax.plot(res[name]["step"], res[name]["alignment"], label=f"{name} (lr={lrs[name]:.3g})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("step")
    ax.set_ylabel(r"alignment $\theta^T M\theta/\|M\|_F$")
    ax.set_title(f"phase retrieval, spiked λ={spike:g}, d={dim}")
    ax.legend()
    path = os.path.join(out_dir, "phase_retrieval_alignment.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    figs.append(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, name in zip(axes, runs):
        for k, col in zip("abc", ["C0", "C1", "C2"]):
            ax.plot(res[name]["step"], res[name][k], color=col, label=f"{k} (full)")
            ax.plot(
                red[name]["step"],
                red[name][k],
                "--",
                color="k",
                lw=0.8,
                label="reduced map" if k == "a" else None,
            )
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.legend()
    axes[0].set_ylabel("coefficient (a=‖Wθ‖, b=‖Wv‖, c)")
    path = os.path.join(out_dir, "phase_retrieval_abc.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    figs.append(path)
    summary = {
        name: {
            "final_alignment": float(res[name]["alignment"][-1]),
            "escape_step": int(escape_time(res[name]["alignment"], res[name]["step"])),
            "peak_spike_ratio_b_over_a": float(np.nanmax(res[name]["spike_ratio"])),
            "learning_rate": lrs[name],
        }
        for name in runs
    }
    return {"figures": figs, "summary": summary}


def escape_time_vs_dim(ds, threshold=0.5):
    """Escape time (first step with alignment > threshold, mean over seeds) against dim on
    log-log axes, one line per optimizer, with fitted slopes in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    et = escape_time(ds["alignment"], threshold=threshold)
    for dim in [d for d in et.dims if d not in ("optimizer", "dim")]:
        et = et.mean(dim) if dim == "seed" else et.isel({dim: 0})
    fig, ax = plt.subplots(figsize=(6, 4))
    for opt in et["optimizer"].values:
        y = et.sel(optimizer=opt).values
        x = et["dim"].values.astype(float)
        slope = log_log_slope(x, y)
        label = str(opt) + ("" if np.isnan(slope) else f" (slope {slope:.2f})")
        ax.loglog(x, y, "o-", label=label)
    ax.set_xlabel("dimension d")
    ax.set_ylabel(f"escape step (alignment > {threshold})")
    ax.legend()
    fig.tight_layout()
    return fig


def lr_regimes(ds, threshold=0.5):
    """Learning-rate regimes: final alignment (left) and escape step, the first step with
    alignment > threshold (right), against the learning rate, one line per optimizer (mean
    over seeds; other swept dims at their first value). Diverged runs (``diverged_at`` >= 0)
    are marked with an x at alignment 0 and left out of the escape panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    al = ds["alignment"]
    et = escape_time(al, threshold=threshold)
    final = al.isel(step=-1)
    div = ds["diverged_at"] >= 0 if "diverged_at" in ds else final.isnull()
    extra = [d for d in final.dims if d not in ("optimizer", "lr", "seed")]
    sel = {d: 0 for d in extra}
    final, et, div = final.isel(sel), et.isel(sel), div.isel({d: 0 for d in extra if d in div.dims})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, opt in enumerate(ds["optimizer"].values):
        lr = ds["learning_rate"].sel(optimizer=opt).values.astype(float)
        f = final.sel(optimizer=opt).where(~div.sel(optimizer=opt))
        d_any = div.sel(optimizer=opt)
        d_any = d_any.any("seed").values if "seed" in d_any.dims else d_any.values
        fm = f.mean("seed").values if "seed" in f.dims else f.values
        e = et.sel(optimizer=opt)
        em = e.mean("seed").values if "seed" in e.dims else e.values
        col = f"C{i}"
        axes[0].semilogx(lr, fm, "o-", color=col, label=str(opt))
        if d_any.any():
            axes[0].semilogx(lr[d_any], np.zeros(d_any.sum()), "x", color=col, ms=9,
                             label=f"{opt} diverged")
        axes[1].loglog(lr, em, "o-", color=col, label=str(opt))
    axes[0].set(xlabel="learning rate", ylabel="final alignment", ylim=(-0.05, 1.05))
    axes[0].legend()
    axes[1].set(xlabel="learning rate", ylabel=f"escape step (alignment > {threshold})")
    axes[1].legend()
    fig.suptitle("phase retrieval: learning-rate regimes")
    fig.tight_layout()
    return fig
