"""Standard figures from sweep results (matplotlib).

:func:`plot_metric` draws one metric against steps: one panel per grid point,
one line per optimizer and learning rate (seed mean over runs that did not
diverge, shaded with its confidence interval over seeds), each in a style of its own
(:func:`curve_style`) and every one in the legend, which sits outside the panels
(:func:`legend_outside`); :func:`save_figure` saves with ``bbox_inches="tight"`` so
nothing outside the axes is cut. Paper-specific figures live
in :mod:`specdyn.experiments`; :func:`standard_figures` draws them from functions
the caller resolved (:func:`specdyn.config.resolve_figure`), so this module never
imports the experiments above it. Figures are :class:`matplotlib.figure.Figure` objects
made without pyplot: drawing one never switches the matplotlib backend, so a
notebook keeps its inline figures and a script can save them anywhere.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from specdyn.results import converged_runs, seed_statistics

__all__ = ["curve_style", "legend_outside", "plot_metric", "save_figure", "standard_figures"]

_RUN_DIMS = ("optimizer", "lr", "seed", "step")
_MAX_PANELS = 12
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def curve_style(group: int, member: int = 0, members: int = 1) -> dict:
    """Line style of curve ``member`` (of ``members``) of group ``group``, e.g. learning rate
    ``member`` of optimizer ``group``: the group's color (matplotlib's color cycle, C0, C1, …),
    shaded from light (first member) to dark (last), with a line style and a marker of its own.
    No two (group, member) pairs of up to 10 groups share a color, and members of one group
    differ in line style and marker too, so curves stay apart in print and in grey."""
    if group < 0 or member < 0 or members < 1 or member >= members:
        raise ValueError(f"curve_style needs 0 <= member < members and group >= 0, got {group=}, {member=}, {members=}")
    from matplotlib.colors import to_rgb

    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    base = np.asarray(to_rgb(colors[group % len(colors)]))
    t = 0.0 if members == 1 else member / (members - 1) * 0.9 - 0.45  # -0.45 (light) ... +0.45 (dark)
    rgb = base + (1 - base) * -t if t < 0 else base * (1 - 0.75 * t)
    n_ls = len(_LINESTYLES)
    return {
        "color": tuple(float(c) for c in np.clip(rgb, 0, 1)),
        "ls": _LINESTYLES[member % n_ls],
        "marker": _MARKERS[member % len(_MARKERS)] if members > 1 else None,
    }


def legend_outside(ax, *, where: str = "right", fontsize: float = 7, **kwargs):
    """The legend of ``ax`` outside its plotted area, so it never covers a curve: to the
    right (``where="right"``) or below the x-axis label (``"below"``, in columns; for panels
    side by side). Saved figures keep it whole (:func:`save_figure` uses
    ``bbox_inches="tight"``)."""
    if where not in ("right", "below"):
        raise ValueError(f"where must be 'right' or 'below', got {where=!r}")
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if where == "right":
        place = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}
    else:  # clear the tick labels and the x label (about 36 points)
        place = {"loc": "upper center", "bbox_to_anchor": (0.5, 0.0), "borderaxespad": 36.0 / fontsize,
                 "ncol": 2 if len(handles) > 3 else 1}
    return ax.legend(fontsize=fontsize, **{**place, "framealpha": 0.9, **kwargs})


def save_figure(fig, path, *, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` with ``bbox_inches="tight"``: legends outside the axes and
    footnotes are kept whole rather than cut at the figure's edge."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return Path(path)


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


def _at(da, sel: dict):
    """``da`` at a panel's grid point, over the dims it has (``diverged_at`` lacks a metric's own axes)."""
    return da.isel({d: i for d, i in sel.items() if d in da.dims})


def _band(ds: xr.Dataset, metric: str, confidence: float, log: bool) -> tuple[xr.Dataset, str]:
    """The seed statistics a panel draws, and their caption. On a log axis: the geometric
    mean with the t-interval of the mean of log(metric), exponentiated, so the band is
    positive wherever it is defined (an arithmetic interval reaching ≤ 0 would vanish)."""
    if not log:
        band = seed_statistics(ds, metric, confidence=confidence, method="t")
        return band, f"seed mean; shaded: {confidence:.0%} t-interval of the mean"
    values = ds[metric]
    logged = ds.assign({metric: np.log(values.where(values > 0))})
    band = seed_statistics(logged, metric, confidence=confidence, method="t")
    band = band.assign({k: np.exp(band[k]) for k in ("mean", "low", "high")})
    return band, f"geometric seed mean; shaded: {confidence:.0%} t-interval of the mean of log({metric})"


def plot_metric(ds: xr.Dataset, metric: str, *, logy: bool | None = None, confidence: float = 0.95,
                rule=None) -> Figure:
    """``metric`` against step, one panel per grid point (at most 12).

    One line per optimizer and learning rate, each with its own style
    (:func:`curve_style`: the optimizer's color, shaded light to dark from the smallest to
    the largest rate, a line style and marker per rate), every rate in the legend (outside
    the panels; a rate where every seed diverged is listed as such). Line: the seed mean over
    runs that did not diverge, shaded with its ``confidence`` Student-t interval over seeds
    (:func:`specdyn.results.seed_statistics`); on a log y axis (``logy``; by default when the
    values span more than two decades) the geometric mean and the interval of the mean log.
    With a ``rule`` (:class:`specdyn.results.BestRateRule`) each panel's best rates by
    it are drawn thick and named in the panel's title, and the rule is printed in the title.
    """
    if metric not in ds:
        raise ValueError(f"no metric {metric!r} in the results; have {sorted(ds.data_vars)}")
    da = ds[metric].where(converged_runs(ds))
    panels = _panels(da)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    width = 4.4 * cols + 2.8  # the legend's column to the right
    fig = Figure(figsize=(width, 3.4 * rows + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    values = da.values[np.isfinite(da.values)]
    if logy is None:
        logy = bool(values.size > 0 and values.min() > 0 and values.max() / values.min() > 100)
    band, caption = _band(ds, metric, confidence, logy)
    if ds.sizes["seed"] == 1:
        caption = "one seed (no band)"
    rule = rule if ds.sizes["lr"] > 1 else None  # one rate per optimizer: nothing to pick
    best = rule.best_index(ds) if rule is not None else None
    steps = ds["step"].values
    positive = steps[steps > 0]
    logx = positive.size > 1 and positive.max() / positive.min() > 100  # steps over decades: symlog x
    optimizers = [str(o) for o in ds["optimizer"].values]
    n_lr = ds.sizes["lr"]
    ok = converged_runs(ds).sum("seed")
    for ax, sel in zip(axes.flat, panels, strict=False):
        panel = band.isel(sel)
        best_names = []
        for o, opt in enumerate(optimizers):
            b = int(_at(best.sel(optimizer=opt), sel)) if best is not None else -1
            for lr in range(n_lr):
                runs = panel.sel(optimizer=opt).isel(lr=lr)
                lr_value = float(ds["learning_rate"].sel(optimizer=opt).values[lr])
                style = curve_style(o, lr, n_lr)
                n_ok = int(_at(ok.sel(optimizer=opt).isel(lr=lr), sel))
                if lr == b:
                    best_names.append(f"{opt} {lr_value:.3g}")
                if n_ok == 0:
                    continue
                ax.plot(steps, runs["mean"], **style, lw=2.6 if lr == b else 1.2, ms=3.5, markevery=0.1)
                if n_ok > 1:
                    ax.fill_between(steps, runs["low"], runs["high"], color=style["color"], alpha=0.15, lw=0)
        title = _title(da, sel)
        if best_names:
            title = (title + "\n" if title else "") + "best: " + ", ".join(best_names)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step" + (" (symlog scale)" if logx else ""))
        if logx:
            ax.set_xscale("symlog", linthresh=float(positive.min()))
            ax.set_xlim(left=0)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(metric + (" (log scale)" if logy else ""))
    # one legend for all panels: every (optimizer, rate), with how many seeds ran to the end
    n_seeds = ds.sizes["seed"]
    legend_ax = axes[0, min(len(panels), cols) - 1]
    for o, opt in enumerate(optimizers):
        for lr in range(n_lr):
            lr_value = float(ds["learning_rate"].sel(optimizer=opt).values[lr])
            counts = [int(_at(ok.sel(optimizer=opt).isel(lr=lr), sel)) for sel in panels]
            lo, hi = min(counts), max(counts)
            if hi == 0:
                note = " (every seed diverged)"
            elif lo == n_seeds:
                note = ""
            else:
                note = f" ({lo} ok)" if lo == hi else f" ({lo}-{hi} of {n_seeds} seeds ok per panel)"
            legend_ax.plot([], [], **curve_style(o, lr, n_lr), label=f"{opt} lr={lr_value:.3g}{note}")
    legend_outside(legend_ax, title="optimizer, learning rate", title_fontsize=7)
    lines = [f"{ds.attrs.get('problem', '')}: {metric}", caption]
    if rule is not None:
        lines.append("thick: " + rule.description)
    fig.suptitle("\n".join(textwrap.fill(line, int(width * 15)) for line in lines), fontsize=9)
    fig.tight_layout()
    return fig


def _close(fig) -> None:
    """Release a figure: pyplot's figures stay registered until closed; a bare
    :class:`~matplotlib.figure.Figure` is freed with its last reference."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def standard_figures(ds: xr.Dataset, out_dir, *, metrics=("loss",), figures=None, rule=None) -> list[Path]:
    """Write one PNG per metric and per figure into ``out_dir``; return the paths.

    ``figures``: ``{name: function(ds) -> Figure}`` (a named figure of a sweep file is
    resolved by :func:`specdyn.config.resolve_figure`); the PNG is ``<name>.png`` with
    dots as dashes. ``rule``: the :class:`specdyn.results.BestRateRule` whose best
    rates :func:`plot_metric` marks."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in metrics:
        fig = plot_metric(ds, metric, rule=rule)
        paths.append(save_figure(fig, out_dir / f"{metric}.png"))
        _close(fig)
    for name, draw in (figures or {}).items():
        fig = draw(ds)
        paths.append(save_figure(fig, out_dir / f"{name.replace('.', '-')}.png"))
        _close(fig)
    return paths
