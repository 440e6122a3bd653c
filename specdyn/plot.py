"""Standard figures from sweep results (matplotlib).

:func:`plot_metric` draws one metric against steps: one panel per grid point,
one line per optimizer and learning rate (seed mean over runs that did not
diverge, shaded with its confidence interval over seeds). Paper-specific figures live
in :mod:`specdyn.experiments`; :func:`standard_figures` draws them from functions
the caller resolved (:func:`specdyn.config.resolve_figure`), so this module never
imports the experiments above it. Figures are :class:`matplotlib.figure.Figure` objects
made without pyplot: drawing one never switches the matplotlib backend, so a
notebook keeps its inline figures and a script can save them anywhere.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from specdyn.results import converged_runs, seed_statistics

__all__ = ["plot_metric", "standard_figures"]

_RUN_DIMS = ("optimizer", "lr", "seed", "step")
_MAX_PANELS = 12
_LINESTYLES = ("-", "--", ":", "-.")


def _panels(da: xr.DataArray) -> list[dict]:
    dims = [d for d in da.dims if d not in _RUN_DIMS]
    combos = itertools.product(*(range(da.sizes[d]) for d in dims))
    return [dict(zip(dims, c, strict=True)) for c in itertools.islice(combos, _MAX_PANELS)]


def _title(da: xr.DataArray, sel: dict) -> str:
    parts = []
    for dim, i in sel.items():
        value = da[dim].values[i] if dim in da.coords else i
        parts.append(f"{dim}={value:g}" if isinstance(value, float | np.floating) else f"{dim}={value}")
    return ", ".join(parts)


def plot_metric(ds: xr.Dataset, metric: str, *, logy: bool | None = None, confidence: float = 0.95) -> Figure:
    """``metric`` against step, one panel per grid point (at most 12).

    One line per optimizer and learning rate: the seed mean over runs that did not
    diverge, shaded with its ``confidence`` Student-t interval over seeds
    (:func:`specdyn.results.seed_statistics`; the title says so).
    """
    if metric not in ds:
        raise ValueError(f"no metric {metric!r} in the results; have {sorted(ds.data_vars)}")
    da = ds[metric].where(converged_runs(ds))
    band = seed_statistics(ds, metric, confidence=confidence, method="t")
    panels = _panels(da)
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    values = da.values[np.isfinite(da.values)]
    if logy is None:
        logy = values.size > 0 and values.min() > 0 and values.max() / values.min() > 100
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    steps = ds["step"].values
    for ax, sel in zip(axes.flat, panels, strict=False):
        panel = band.isel(sel)
        for o, opt in enumerate(ds["optimizer"].values):
            for lr in range(ds.sizes["lr"]):
                runs = panel.sel(optimizer=opt).isel(lr=lr)
                lr_value = float(ds["learning_rate"].sel(optimizer=opt).values[lr])
                n_ok = int(runs["n"].isel(step=0))
                if n_ok == 0:
                    continue
                color = colors[o % len(colors)]
                label = f"{opt} lr={lr_value:.3g}" + ("" if n_ok == ds.sizes["seed"] else f" ({n_ok} ok)")
                ax.plot(steps, runs["mean"], color=color, ls=_LINESTYLES[lr % 4], label=label)
                if n_ok > 1:
                    low, high = runs["low"].values, runs["high"].values
                    if logy:  # a band reaching below zero is cut at the axis, not dropped
                        low = np.where(low > 0, low, np.nan)
                    ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        ax.set_title(_title(da, sel), fontsize=9)
        ax.set_xlabel("step")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel(metric)
    axes[0, 0].legend(fontsize=7)
    bands = f"seed mean; shaded: {confidence:.0%} t-interval" if ds.sizes["seed"] > 1 else "one seed"
    fig.suptitle(f"{ds.attrs.get('problem', '')}: {metric}\n{bands}", fontsize=9)
    fig.tight_layout()
    return fig


def _close(fig) -> None:
    """Release a figure: pyplot's figures stay registered until closed; a bare
    :class:`~matplotlib.figure.Figure` is freed with its last reference."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def standard_figures(ds: xr.Dataset, out_dir, *, metrics=("loss",), figures=None) -> list[Path]:
    """Write one PNG per metric and per figure into ``out_dir``; return the paths.

    ``figures``: ``{name: function(ds) -> Figure}`` (a named figure of a sweep file is
    resolved by :func:`specdyn.config.resolve_figure`); the PNG is ``<name>.png`` with
    dots as dashes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in metrics:
        fig = plot_metric(ds, metric)
        paths.append(out_dir / f"{metric}.png")
        fig.savefig(paths[-1], dpi=110)
        _close(fig)
    for name, draw in (figures or {}).items():
        fig = draw(ds)
        paths.append(out_dir / f"{name.replace('.', '-')}.png")
        fig.savefig(paths[-1], dpi=110)
        _close(fig)
    return paths
