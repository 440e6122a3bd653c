"""Sweep results: labelled ``xarray.Dataset`` assembly, the resumable cell store, files.

A sweep's result is one Dataset with dims ``optimizer, lr, seed, <grid fields>,
step`` (plus the axes of array-valued metrics), the coordinate
``learning_rate(optimizer, lr)``, one variable per metric, ``diverged_at`` (the
first step with a non-finite loss, -1 if none) and the sweep's full config as a
JSON string in ``attrs["config"]``.

Files are netCDF-3 written through scipy (readable wherever xarray and scipy
are, no HDF5 stack needed). The :class:`CellStore` keeps one ``.npz`` per
finished cell, written atomically, plus the config it belongs to.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

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


def coordinate_values(values) -> np.ndarray:
    """Grid values as a coordinate array: numbers stay numbers, anything else becomes its repr."""
    values = list(values)
    if all(isinstance(v, bool | int | float | np.number) and not isinstance(v, bool) for v in values):
        return np.asarray(values)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    return np.asarray([repr(v) for v in values], dtype=str)


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class CellStore:
    """A folder of finished sweep cells, tied to one sweep config.

    ``config.json`` holds the config; ``cell-NNNN.npz`` one finished cell each.
    Opening a store that holds a different config raises ValueError naming the
    first key that differs, so results of two sweeps are never mixed.
    """

    def __init__(self, path, config: dict, *, fresh: bool = False):
        self.path = Path(path)
        self.config = json.loads(json.dumps(config))  # normalise (tuples -> lists)
        config_file = self.path / "config.json"
        if fresh and self.path.exists():
            for f in self.path.glob("cell-*.npz"):
                f.unlink()
            if config_file.exists():
                config_file.unlink()
        if config_file.exists():
            stored = json.loads(config_file.read_text())
            if stored != self.config:
                key = _first_difference(stored, self.config)
                raise ValueError(
                    f"store {str(self.path)!r} holds results of a different sweep ({key}); "
                    "use another store folder, or start afresh (fresh=True, CLI --fresh)"
                )
        else:
            text = json.dumps(self.config, indent=2, sort_keys=True)
            _atomic_write(config_file, lambda tmp: Path(tmp).write_text(text))

    def _file(self, index: int) -> Path:
        return self.path / f"cell-{index:04d}.npz"

    def has(self, index: int) -> bool:
        return self._file(index).exists()

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self._file(index)) as z:
            return {k: z[k] for k in z.files}

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        _atomic_write(self._file(index), write)


def _first_difference(old, new, prefix="") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k, "<missing>") != new.get(k, "<missing>"):
                return _first_difference(old.get(k, "<missing>"), new.get(k, "<missing>"), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: stored {old!r}, now {new!r}"


def save(ds: xr.Dataset, path) -> Path:
    """Write a Dataset as netCDF-3 (scipy engine), atomically."""
    path = Path(path)
    out = ds.copy()
    for name, var in list(out.variables.items()):
        if var.dtype == np.int64:
            out[name] = var.astype(np.int32)
        elif var.dtype == bool:
            out[name] = var.astype(np.int8)
    _atomic_write(path, lambda tmp: out.to_netcdf(tmp, engine="scipy"))
    return path


def load(path) -> xr.Dataset:
    """Read a Dataset written by :func:`save` (or ``specdyn sweep``) into memory."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no results file at path={str(path)!r}")
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


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
