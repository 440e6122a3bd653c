"""Optimizer options as sweep axes: grid keys ``"<optimizer>.<option>"``.

A sweep's grid may hold, beside problem fields, keys such as ``"muon.momentum"``
or ``"specgd.steps"``: ``<optimizer>`` one of the sweep's optimizer names (a
registry optimizer, possibly with fixed options), ``<option>`` a keyword of its
factory (:func:`specdyn.optimizers.optimizer_options`). Every value is checked at
construction by building the optimizer with it (at learning rate 1.0, with the
sweep's fixed options and the other axes' values), so a bad key or value is a
``ValueError`` naming both before anything runs.

**Data or static, the rule.** An option axis is *data* when all its values are
real numbers (not booleans) and the optimizer builds and traces (``init`` and one
``update`` on a small matrix, under ``jax.eval_shape``, which traces as
``jax.jit`` does) with that option given as a scalar array, every other option at
its fixed value. Data axes are vmapped inside a cell beside the learning rates
(one compiled program for all their values: momentum, weight decay, the spectral
power ``p``, Adam's betas, ...). Every other axis is *static*: each value makes its
own cell and compiled program (``method``, ``steps``, ``coeffs``, ``nesterov``, ...).

**Results.** Each axis is one Dataset dim named by its key (``"muon.momentum"``)
with the values as coordinate. An optimizer the axis does not belong to is run
once, and its runs are broadcast along that dim (equal values at every index):
``ds.sel(optimizer="gd")`` holds GD's runs at every ``muon.momentum``, so
per-grid-point analyses (best rates, paired comparisons, panels of a figure)
find the baseline beside each value. ``attrs["config"]["option_axes"]`` tells which
axis is data and which static.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from specdyn.optimizers import OPTIMIZERS, get_optimizer, optimizer_options

__all__ = ["OptionAxes", "OptionAxis", "is_option_key", "split_grid"]

_MAX_CHECKED_COMBINATIONS = 4096


def is_option_key(key) -> bool:
    """An option axis key ``"<optimizer>.<option>"`` (problem fields never hold a dot)."""
    return isinstance(key, str) and "." in key


def split_grid(grid: Mapping | None) -> tuple[dict, dict]:
    """``(problem fields, option axes)`` of a sweep grid, each in the grid's order."""
    grid = dict(grid or {})
    fields = {k: v for k, v in grid.items() if not is_option_key(k)}
    options = {k: v for k, v in grid.items() if is_option_key(k)}
    return fields, options


@dataclasses.dataclass(frozen=True)
class OptionAxis:
    """One option axis: grid key ``"<optimizer>.<option>"``, its values, and whether it
    is data (vmapped in a cell) or static (a cell per value)."""

    key: str
    optimizer: str  # the sweep's name for the optimizer
    option: str  # the factory keyword
    values: tuple
    data: bool


def _plain(value):
    """numpy scalars as Python numbers (for JSON, reprs and the factories)."""
    return value.item() if isinstance(value, np.generic) else value


def _registry_name(factory) -> str | None:
    if isinstance(factory, functools.partial) and factory.func is get_optimizer and factory.args:
        return factory.args[0]
    return None


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _traces(registry: str, options: dict) -> None:
    """Build the optimizer with ``options`` (some may be tracers), init and one update on
    a matrix and a vector leaf, or on the matrix alone for a matrix-only optimizer."""
    matrix = {"w": jnp.ones((3, 2))}
    for params in ({**matrix, "b": jnp.ones((2,))}, matrix):
        try:
            tx = OPTIMIZERS[registry](1.0, **options)
            state = tx.init(params)
            tx.update(params, state, params)
            return
        except ValueError:
            if params is matrix:
                raise


def _is_data(registry: str, fixed: dict, option: str) -> bool:
    """The rule of the module docstring: does the optimizer trace with ``option`` an array?"""
    try:
        jax.eval_shape(lambda x: _traces(registry, {**fixed, option: x}), jax.ShapeDtypeStruct((), jnp.float32))
    except Exception:  # noqa: BLE001 - any failure to trace (a Python branch, a hash, a check) means static
        return False
    return True


class OptionAxes:
    """The option axes of a sweep, validated and classified (see the module docstring).

    ``grid``: ``{"<optimizer>.<option>": values}``; ``factories``: the sweep's
    ``{name: factory}`` (registry optimizers are ``functools.partial(get_optimizer,
    registry_name, **fixed_options)``)."""

    def __init__(self, grid: Mapping, factories: Mapping):
        names = list(factories)
        axes = []
        for key, values in dict(grid).items():
            name, _, option = key.partition(".")
            if name not in factories:
                raise ValueError(
                    f"grid key {key!r} names optimizer {name!r}, not one of this sweep's optimizers {names}; "
                    f"an option axis is '<optimizer>.<option>', e.g. 'muon.momentum'"
                )
            registry = _registry_name(factories[name])
            if registry is None:
                raise ValueError(
                    f"grid key {key!r}: optimizer {name!r} is a custom factory; option axes need a registry "
                    f"optimizer (its name, or functools.partial(sd.get_optimizer, name, **options))"
                )
            if option == "learning_rate":
                raise ValueError(f"grid key {key!r}: learning rates go in learning_rates, not in the grid")
            known = optimizer_options(registry)
            if option not in known:
                raise ValueError(
                    f"grid key {key!r}: optimizer {registry!r} has no option {option!r}; its options: {list(known)}"
                )
            values = list(values) if isinstance(values, list | tuple | np.ndarray) else [values]
            values = [_plain(v) for v in values]
            if not values:
                raise ValueError(f"grid key {key!r} has no values; give at least one")
            for i, v in enumerate(values):
                if any(v == w for w in values[:i]):
                    raise ValueError(f"grid key {key!r} lists the value {v!r} twice")
            axes.append((key, name, registry, option, values))
        self._registry = {name: _registry_name(f) for name, f in factories.items()}
        self._fixed = {name: dict(getattr(f, "keywords", {}) or {}) for name, f in factories.items()}
        self.axes: tuple[OptionAxis, ...] = ()
        for key, name, registry, option, values in axes:
            mine = [a for a in axes if a[1] == name]
            self._check_combinations(name, registry, mine)
            others = {o: vals[0] for _, n, _, o, vals in mine if o != option}
            data = all(_is_number(v) for v in values) and _is_data(
                registry, {**self._fixed[name], **others}, option
            )
            self.axes += (OptionAxis(key, name, option, tuple(values), data),)

    def _check_combinations(self, name, registry, mine) -> None:
        """Every combination of one optimizer's axes builds (each value, and e.g. method ×
        steps); a failure names the key and value at fault, or the whole point."""
        build = lambda options: get_optimizer(registry, 1.0, **{**self._fixed[name], **options})
        combos = itertools.islice(itertools.product(*(vals for *_, vals in mine)), _MAX_CHECKED_COMBINATIONS)
        for combo in combos:
            try:
                build({o: v for (_, _, _, o, _), v in zip(mine, combo, strict=True)})
            except (ValueError, TypeError) as err:
                for (key, _, _, option, _), v in zip(mine, combo, strict=True):
                    try:
                        build({option: v})
                    except (ValueError, TypeError) as alone:
                        raise ValueError(f"grid key {key!r} value {v!r}: {alone}") from None
                where = ", ".join(f"{k} = {v!r}" for (k, *_), v in zip(mine, combo, strict=True))
                raise ValueError(f"grid point {where}: {err}") from None

    # ---------------------------------------------------------------- per optimizer

    def of(self, name: str, *, data: bool | None = None) -> list[OptionAxis]:
        """The axes of optimizer ``name`` (only data or only static ones with ``data``)."""
        return [a for a in self.axes if a.optimizer == name and (data is None or a.data == data)]

    def cell_options(self, name: str) -> list[dict]:
        """One ``{key: value}`` per cell of optimizer ``name``: the product of its static
        axes in grid order (``[{}]`` without any)."""
        static = self.of(name, data=False)
        return [dict(zip((a.key for a in static), c, strict=True)) for c in itertools.product(*(a.values for a in static))]

    def data_options(self, name: str) -> tuple[int, dict[str, np.ndarray]]:
        """``(n, {option: values})``: the n points of optimizer ``name``'s data axes (their
        product in grid order) as factory keywords, each an (n,) float array."""
        data = self.of(name, data=True)
        points = list(itertools.product(*(a.values for a in data)))
        return len(points), {a.option: np.asarray([p[i] for p in points], float) for i, a in enumerate(data)}

    def factory(self, name: str, factory, options: Mapping):
        """The factory of one cell: ``factory`` with the cell's static option values."""
        if not options:
            return factory
        extra = {key.partition(".")[2]: value for key, value in options.items()}
        return functools.partial(get_optimizer, self._registry[name], **{**self._fixed[name], **extra})

    # ---------------------------------------------------------------- the Dataset

    def coords(self) -> dict[str, list]:
        """``{key: values}``: the Dataset's option dims, in grid order."""
        return {a.key: list(a.values) for a in self.axes}

    def describe(self) -> dict[str, str]:
        """``{key: "data" | "static"}`` for the sweep's config."""
        return {a.key: "data" if a.data else "static" for a in self.axes}

    def merge(self, cells: list[dict], names: list[str], *, n_static: int, n_lr: int, n_seed: int,
              data_shape: tuple) -> list[dict]:
        """One arrays dict per (optimizer, static problem point), runs in order
        lr × seed × data point × option axes (grid order), from the cells of a sweep.

        ``cells``: per optimizer, per static problem point, per combination of the
        optimizer's static axes (:meth:`cell_options`), the cell's arrays with runs in
        order lr × its data axes × seed × data point. An optimizer's runs are broadcast
        along the axes of other optimizers."""
        if not self.axes:
            return cells
        full = [len(a.values) for a in self.axes]
        out, it = [], iter(cells)
        for name in names:
            static, data = self.of(name, data=False), self.of(name, data=True)
            s_shape, d_shape = [len(a.values) for a in static], [len(a.values) for a in data]
            n_cells = math.prod(s_shape)
            pos = {a.key: i for i, a in enumerate(static)}
            pos.update({a.key: len(static) + 1 + j for j, a in enumerate(data)})
            lr_at, seed_at = len(static), len(static) + 1 + len(data)
            data_at = list(range(seed_at + 1, seed_at + 1 + len(data_shape)))
            own = [a.key for a in self.of(name)]
            sizes = [len(a.values) if a.optimizer == name else 1 for a in self.axes]
            for _ in range(n_static):
                group = [next(it) for _ in range(n_cells)]
                merged = {}
                for key in group[0]:
                    x = np.stack([g[key] for g in group])
                    rest = x.shape[2:]
                    x = x.reshape(*s_shape, n_lr, *d_shape, n_seed, *data_shape, *rest)
                    first = seed_at + 1 + len(data_shape)
                    order = [lr_at, seed_at, *data_at, *(pos[k] for k in own), *range(first, x.ndim)]
                    x = x.transpose(order).reshape(n_lr, n_seed, *data_shape, *sizes, *rest)
                    x = np.broadcast_to(x, (n_lr, n_seed, *data_shape, *full, *rest))
                    merged[key] = x.reshape(-1, *rest)
                out.append(merged)
        return out
