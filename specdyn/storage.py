"""Sweep storage: the resumable cell store, atomic writes, result files, Dataset assembly.

A sweep's result is one Dataset with dims ``optimizer, lr, seed, <grid fields>,
step`` (grid fields include option axes such as ``muon.momentum``; plus the axes of
array-valued metrics), the coordinate
``learning_rate(optimizer, lr)``, one variable per metric, ``diverged_at`` (the
first step with a non-finite loss, -1 if none) and the sweep's full config as a
JSON string in ``attrs["config"]``.

Files are netCDF-3 written through scipy (readable wherever xarray and scipy
are, no HDF5 stack needed). The :class:`CellStore` keeps one ``.npz`` per
finished cell, written atomically, plus the config it belongs to. Every file is
written through a temporary file in the same folder, created with the user's
umask, then renamed: a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["CellStore", "assemble", "atomic_write", "coordinate_values", "load", "save"]

_FRESH_HINT = "start afresh (fresh=True, CLI --fresh)"


def coordinate_values(values) -> np.ndarray:
    """Grid values as a coordinate array: numbers stay numbers, anything else becomes its repr."""
    values = list(values)
    if all(isinstance(v, bool | int | float | np.number) and not isinstance(v, bool) for v in values):
        return np.asarray(values)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    return np.asarray([repr(v) for v in values], dtype=str)


def _temporary(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def atomic_write(path, write) -> None:
    """Call ``write(tmp)`` on a temporary file in the same folder, then rename it to ``path``.

    The temporary file is created with mode 0o666 less the user's umask (the mode
    the final file keeps), and removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


class CellStore:
    """A folder of finished sweep cells, tied to one sweep config.

    ``config.json`` holds the config (with the code fingerprints of
    :mod:`specdyn.provenance`); ``cell-NNNN.npz`` one finished cell each;
    ``provenance.json`` one entry per sweep that opened the store.
    Opening a store that holds a different config raises ValueError naming the
    first key that differs, so results of two sweeps are never mixed; an
    unreadable ``config.json`` or cell file is reported by name. Temporary files
    left by an interrupted write are removed when the store is opened (one sweep
    writes to a store at a time).
    """

    def __init__(self, path, config: dict, *, fresh: bool = False, provenance: dict | None = None):
        if not isinstance(path, str | os.PathLike) or not os.fspath(path) or "\0" in os.fspath(path):
            raise ValueError(f"store must be a folder path, got store={path!r}")
        self.path = Path(path)
        self.config = json.loads(json.dumps(config))  # normalise (tuples -> lists)
        config_file = self.path / "config.json"
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"store {str(self.path)!r} is a file, not a folder; choose a folder for the store")
        for stray in self.path.glob(".*.tmp") if self.path.is_dir() else ():
            stray.unlink()
        if fresh and self.path.exists():
            for f in self.path.glob("cell-*.npz"):
                f.unlink()
            if config_file.exists():
                config_file.unlink()
            if (self.path / "provenance.json").exists():
                (self.path / "provenance.json").unlink()
        if config_file.exists():
            try:
                stored = json.loads(config_file.read_text())
            except (ValueError, OSError) as err:
                raise ValueError(
                    f"store config {str(config_file)!r} cannot be read ({err}); "
                    f"delete the store folder, or {_FRESH_HINT}"
                ) from None
            if stored != self.config:
                key = _code_change(stored.get("code"), self.config.get("code"), self.config.get("problem"))
                key = key or _first_difference(stored, self.config)
                raise ValueError(
                    f"store {str(self.path)!r} holds results of a different sweep ({key}); "
                    f"use another store folder, or {_FRESH_HINT}"
                )
        else:
            text = json.dumps(self.config, indent=2, sort_keys=True)
            try:
                atomic_write(config_file, lambda tmp: Path(tmp).write_text(text))
            except OSError as err:
                raise ValueError(
                    f"store {str(self.path)!r} cannot be made or written to as a folder "
                    f"({err.strerror or err}); choose a folder you can write to"
                ) from None
        if provenance is not None:
            self._add_provenance(provenance)

    def check_config(self) -> None:
        """ValueError unless ``config.json`` still holds this store's config (a task in
        another process checks this before it writes: the folder may have been started
        afresh for another sweep meanwhile)."""
        config_file = self.path / "config.json"
        try:
            stored = json.loads(config_file.read_text())
        except (ValueError, OSError) as err:
            raise ValueError(f"store config {str(config_file)!r} cannot be read ({err}); not writing cells") from None
        if stored != self.config:
            raise ValueError(
                f"store {str(self.path)!r} now holds another sweep's config "
                f"({_first_difference(stored, self.config)}); not writing cells"
            )

    def _add_provenance(self, entry: dict) -> None:
        """Append ``entry`` to ``provenance.json`` (one entry per sweep that opened the
        store; never compared, so a new date or version does not invalidate the cells)."""
        file = self.path / "provenance.json"
        try:
            sessions = json.loads(file.read_text()) if file.exists() else []
        except (ValueError, OSError):
            sessions = []
        sessions = [*(sessions if isinstance(sessions, list) else []), entry]
        text = json.dumps(sessions, indent=2, sort_keys=True)
        atomic_write(file, lambda tmp: Path(tmp).write_text(text))

    def _file(self, index: int) -> Path:
        return self.path / f"cell-{index:04d}.npz"

    def has(self, index: int) -> bool:
        return self._file(index).exists()

    def load(self, index: int, *, runs: int | None = None) -> dict[str, np.ndarray]:
        """The arrays of cell ``index``; ``runs`` checks its number of runs."""
        f = self._file(index)
        try:
            with open(f, "rb") as handle, np.load(handle, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as err:  # zip, pickle, OS errors: all mean "not a usable cell"
            raise ValueError(
                f"cell file {str(f)!r} cannot be read ({type(err).__name__}: {err}): it is truncated or "
                f"not a specdyn cell; delete it, or {_FRESH_HINT}"
            ) from None
        shape = arrays["diverged_at"].shape if "diverged_at" in arrays else None
        if shape is None or "loss" not in arrays or (runs is not None and shape[:1] != (runs,)):
            raise ValueError(
                f"cell file {str(f)!r} is not a cell of this sweep (arrays {sorted(arrays)}, "
                f"expected loss and diverged_at for {runs} runs); delete it, or {_FRESH_HINT}"
            )
        return arrays

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(self._file(index), write)


def _code_change(old, new, problem: str | None = None) -> str | None:
    """What changed between two code fingerprints (``config["code"]``, see
    :mod:`specdyn.provenance`), in words, or None when they agree. ``problem``: the
    problem's ``module:qualname``, to say which module defines it."""
    if old == new:
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "the store was written by a specdyn without code fingerprints"
    changes = []

    def changed(part: dict | None, other: dict | None) -> list[str]:
        part, other = part or {}, other or {}
        return [k for k in sorted(set(part) | set(other)) if part.get(k) != other.get(k)]

    if old.get("specdyn") != new.get("specdyn"):
        changes.append(f"specdyn's version changed from {old.get('specdyn')} to {new.get('specdyn')}")
    if "specdyn_source" not in old:
        changes.append("the store was written by a specdyn that did not record its own source")
    elif old.get("specdyn_source") != new.get("specdyn_source"):
        files = changed(old.get("specdyn_source"), new.get("specdyn_source"))
        shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        changes.append(f"specdyn's source changed ({shown})")
    names = changed(old.get("problem"), new.get("problem"))
    if names:
        methods = [n for n in names if "." in n] or names  # the class body changes with any method
        changes.append(f"the problem's code changed ({', '.join(methods)})")
    for kind, label in (("optimizers", "optimizer"), ("learning_rate_rules", "learning-rate rule of")):
        old_part, new_part = old.get(kind) or {}, new.get(kind) or {}
        for name in changed(old_part, new_part):
            what = (new_part.get(name) or old_part.get(name) or {}).get("code", "")
            changes.append(f"the code of {label} {name!r} changed ({what})")
    if old.get("data") != new.get("data"):
        changes.append("the code of the data callable changed")
    old_modules, new_modules = old.get("modules") or {}, new.get("modules") or {}
    for name in changed(old_modules, new_modules):
        if name not in new_modules:
            changes.append(f"the code no longer uses the module {name!r}")
        elif name not in old_modules:
            changes.append(f"the code now uses the module {name!r}")
        else:
            role = " defining the problem" if (problem or "").split(":")[0] == name.split(" (")[0] else ""
            changes.append(f"the module {name!r}{role} changed")
    return "; ".join(changes) or "the code fingerprint changed"


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
    atomic_write(path, lambda tmp: out.to_netcdf(tmp, engine="scipy"))
    return path


def load(path) -> xr.Dataset:
    """Read a Dataset written by :func:`save` (or ``specdyn sweep``) into memory."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no results file at path={str(path)!r}")
    if path.is_dir():
        raise ValueError(f"path={str(path)!r} is a folder, not a results file")
    try:
        with xr.open_dataset(path, engine="scipy") as ds:
            return ds.load()
    except OSError:
        raise
    except Exception as err:  # scipy's reader: TypeError, IndexError, ValueError, EOFError, ...
        raise ValueError(
            f"path={str(path)!r} is not a results file written by specdyn (it does not read as "
            f"netCDF-3: {type(err).__name__}); it is truncated or of another kind"
        ) from None


def assemble(*, problem_name, names, learning_rates, seeds, static_grid, data_grid, grid_order, steps_at,
             cells, metric_dims, config, attrs=None) -> xr.Dataset:
    """One Dataset from a sweep's cells.

    ``cells`` (one per optimizer × static grid point, in that order) map each
    variable to an array with a leading runs axis in order lr × seed × data grid
    point: metrics ``(runs, records, ...)``, ``diverged_at`` and, when learning rates
    came from a rule, ``effective_learning_rate`` ``(runs,)``.
    """
    n_lr, n_seed = len(learning_rates[names[0]]), len(seeds)
    static_shape = tuple(len(v) for v in static_grid.values())
    data_shape = tuple(len(v) for v in data_grid.values())
    run_shape = (n_lr, n_seed, *data_shape)
    base_dims = ["optimizer", "lr", "seed", *static_grid, *data_grid]

    variables = {}
    for key in cells[0]:
        per_run_extra = cells[0][key].shape[1:]  # (records, ...) for metrics, () per run otherwise
        full = np.stack([c[key] for c in cells]).reshape(len(names), *static_shape, *run_shape, *per_run_extra)
        # Move static axes after seed: (opt, lr, seed, *static, *data, ...)
        n_static = len(static_shape)
        order = [0, *range(1 + n_static, 3 + n_static), *range(1, 1 + n_static)]
        order += list(range(3 + n_static, full.ndim))
        full = full.transpose(order)
        if key == "diverged_at":
            dims = base_dims
            full = full.astype(np.int32)
        elif key == "effective_learning_rate":
            dims = base_dims
        else:
            extra = full.ndim - len(base_dims) - 1
            named = tuple(metric_dims.get(key, ()))
            if len(named) != extra:
                named = tuple(f"{key}_dim{i}" for i in range(extra))
            dims = [*base_dims, "step", *named]
        variables[key] = (dims, full)

    coords = {
        "optimizer": np.asarray(names, dtype=str),
        "lr": np.arange(n_lr),
        "seed": np.asarray(seeds),
        "step": np.asarray(steps_at),
        "learning_rate": (("optimizer", "lr"), np.asarray([learning_rates[n] for n in names])),
    }
    for name, values in {**static_grid, **data_grid}.items():
        coords[name] = coordinate_values(values)
    ds = xr.Dataset(variables, coords=coords)
    ds = ds.transpose("optimizer", "lr", "seed", *grid_order, "step", ...)
    ds.attrs["config"] = json.dumps(config, sort_keys=True)
    ds.attrs["problem"] = problem_name
    ds.attrs.update(attrs or {})
    return ds
