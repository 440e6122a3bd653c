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
    "log_log_slope",
    "coordinate_values",
    "load",
    "mean_over_seeds",
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


def converged_runs(ds: xr.Dataset) -> xr.DataArray:
    """True for runs that never diverged."""
    return ds["diverged_at"] < 0


def mean_over_seeds(ds: xr.Dataset, metric: str) -> xr.DataArray:
    """Mean of ``metric`` over seeds, leaving diverged runs out (never averaged in)."""
    return ds[metric].where(converged_runs(ds)).mean("seed")


def best_learning_rate(ds: xr.Dataset, metric: str, *, mode: str = "min") -> xr.Dataset:
    """Pick, per optimizer (and grid point), the lr whose final ``metric`` is best.

    The score is the seed-mean of ``metric`` at the last recorded step over runs
    that did not diverge; an lr where any seed diverged is never picked (its score
    is NaN). ``mode`` is "min" (losses) or "max" (accuracies). Returns ``ds`` with
    the ``lr`` dimension selected away.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode=!r}")
    if metric not in ds:
        raise ValueError(f"no metric {metric!r} in the results; have {sorted(ds.data_vars)}")
    final = ds[metric].isel(step=-1)
    extra = [d for d in final.dims if d not in ds["diverged_at"].dims]
    if extra:
        final = final.mean(extra)
    any_diverged = (~converged_runs(ds)).any("seed")
    score = final.mean("seed").where(~any_diverged)
    fill = np.inf if mode == "min" else -np.inf
    score = score.fillna(fill).drop_vars("step")
    best = score.argmin("lr") if mode == "min" else score.argmax("lr")
    return ds.isel(lr=best)
