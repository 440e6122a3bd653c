"""Analysis of a finished sweep Dataset: best learning rates, seed means, slopes.

The Dataset's layout is described in :mod:`specdyn.storage`, which also writes and
reads it; :func:`save` and :func:`load` are re-exported here for convenience.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from specdyn.storage import CellStore, coordinate_values, load, save

__all__ = [
    "CellStore",
    "best_learning_rate",
    "coordinate_values",
    "learning_rate_scores",
    "log_log_slope",
    "load",
    "mean_over_seeds",
    "problem_of",
    "save",
]


def log_log_slope(x, y) -> float:
    """Least-squares slope of log y against log x over the finite positive points (NaN if < 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def problem_of(ds: xr.Dataset, **grid_values):
    """The problem instance of one grid point of a sweep Dataset.

    Its class and fields come from ``attrs["config"]`` (the sweep's base problem);
    ``grid_values`` override fields, e.g. ``problem_of(ds, width=ds.width.values[2])``.
    As in sweep files, the string "none" means None and lists become tuples.
    """
    import importlib

    config = json.loads(ds.attrs.get("config", "{}"))
    if "problem" not in config or "fields" not in config:
        raise ValueError("the Dataset has no sweep config in attrs['config'] (was it made by specdyn.sweep?)")
    module, qualname = config["problem"].split(":")
    cls = getattr(importlib.import_module(module), qualname)

    def value(v):
        if isinstance(v, str) and v.lower() == "none":
            return None
        if isinstance(v, list):
            return tuple(value(x) for x in v)
        return v.item() if isinstance(v, np.generic) else v

    fields = {k: value(v) for k, v in {**config["fields"], **grid_values}.items()}
    return cls(**fields)


def converged_runs(ds: xr.Dataset) -> xr.DataArray:
    """True for runs that never diverged."""
    return ds["diverged_at"] < 0


def mean_over_seeds(ds: xr.Dataset, metric: str) -> xr.DataArray:
    """Mean of ``metric`` over seeds, leaving diverged runs out (never averaged in)."""
    return ds[metric].where(converged_runs(ds)).mean("seed")


def learning_rate_scores(ds: xr.Dataset, metric: str, *, mode: str = "min", rule: str = "final") -> xr.DataArray:
    """The score of every learning rate: the seed-mean of ``metric`` at the last recorded
    step (``rule="final"``) or at its best recorded step (``rule="peak"``: early
    stopping with an oracle, the fair choice when a finite data set is overfitted late
    in training); ``mode`` is "min" (losses) or "max" (accuracies). A learning rate at
    which any seed diverged scores NaN: a rate that sometimes diverges is never the
    best one. Axes of array-valued metrics are averaged. Dims: those of ``diverged_at``
    less ``seed``."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode=!r}")
    if rule not in ("final", "peak"):
        raise ValueError(f"rule must be 'final' or 'peak', got {rule=!r}")
    if metric not in ds:
        raise ValueError(f"no metric {metric!r} in the results; have {sorted(ds.data_vars)}")
    values = ds[metric]
    extra = [d for d in values.dims if d not in ds["diverged_at"].dims and d != "step"]
    if extra:
        values = values.mean(extra)
    mean = values.mean("seed")
    if rule == "final":
        score = mean.isel(step=-1)
    else:
        score = mean.min("step") if mode == "min" else mean.max("step")
    any_diverged = (~converged_runs(ds)).any("seed")
    return score.where(~any_diverged).drop_vars("step", errors="ignore")


def best_learning_rate(ds: xr.Dataset, metric: str, *, mode: str = "min", rule: str = "final") -> xr.Dataset:
    """Pick, per optimizer (and grid point), the learning rate with the best
    :func:`learning_rate_scores` (an lr where any seed diverged is never picked; if
    every lr diverged somewhere, the first is returned). Returns ``ds`` with the
    ``lr`` dimension selected away: its ``lr`` and ``learning_rate`` coordinates
    say which rate each optimizer got."""
    score = learning_rate_scores(ds, metric, mode=mode, rule=rule)
    fill = np.inf if mode == "min" else -np.inf
    best = score.fillna(fill).argmin("lr") if mode == "min" else score.fillna(fill).argmax("lr")
    return ds.isel(lr=best)


# ---- shared helpers of the experiments: threshold crossings, the best-rate index, one run
__all__ += ["best_lr_index", "first_crossing", "first_step", "index_zero_except"]

def first_step(hit, steps, *, stay: bool = False, axis: int = -1) -> np.ndarray:
    """First entry of ``steps`` where the boolean ``hit`` holds along ``axis`` (NaN if never).

    With ``stay=True``: the first step from which ``hit`` holds up to the last entry (a
    crossing that later reverts does not count). ``steps`` has the length of that axis.
    """
    hit = np.moveaxis(np.asarray(hit, dtype=bool), axis, -1)
    steps = np.asarray(steps)
    if steps.shape != hit.shape[-1:]:
        raise ValueError(f"steps must have one entry per step, got {steps.shape=} for hit of shape {hit.shape}")
    if stay:
        hit = np.flip(np.logical_and.accumulate(np.flip(hit, -1), -1), -1)
    first = np.asarray(steps)[np.argmax(hit, axis=-1)].astype(float)
    return np.where(hit.any(axis=-1), first, np.nan)


def first_crossing(x, threshold, steps, *, stay: bool = False) -> np.ndarray:
    """First entry of ``steps`` where ``x`` (..., step) is > ``threshold`` (NaN if never);
    with ``stay=True``, the first step from which it stays > threshold to the last entry.
    NaN values (a diverged run) count as below the threshold."""
    return first_step(np.asarray(x, dtype=float) > threshold, steps, stay=stay)


def best_lr_index(score: xr.DataArray, *, mode: str = "min") -> xr.DataArray:
    """Index along ``lr`` of the best score (a NaN score, e.g. a rate where a seed diverged,
    is never chosen unless every rate is NaN: then index 0), as :func:`best_learning_rate`."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode=!r}")
    if mode == "min":
        return score.fillna(np.inf).argmin("lr")
    return score.fillna(-np.inf).argmax("lr")


def index_zero_except(da, keep=()):
    """``da`` (DataArray or Dataset) with every dim not in ``keep`` taken at index 0."""
    return da.isel({d: 0 for d in da.dims if d not in keep})
