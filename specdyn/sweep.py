"""Vectorized sweeps: seeds × learning rates × problem fields as a few compiled programs.

The grid splits in two. *Static* fields (shapes, switches) and the optimizer make
**cells**. Inside a cell, seeds × learning rates × *data* (float) grid fields form
one batch of runs that is ``vmap``-ed and sharded over all local devices along a
``runs`` mesh axis. Runs that differ only in their learning rate share their
initial parameters and data, so the batch is a set of *groups* (one per seed and
data grid point), each carrying all learning rates: a group's data is drawn once,
by a program shared by every optimizer. A batch too large for memory is split
into equal sub-batches of groups that reuse the same programs.

Every run goes through the engine of :mod:`specdyn.simulate` (the programs of
``sd.simulate``, which is a sweep of one): compiled once per (problem shapes,
optimizer recipe), with learning rates, seeds, data fields, step count and record
interval as data. Steps run in short program calls (at most a tenth of the run each,
and about half a second of work) so that a progress bar moves and SIGINT stops a
sweep within seconds; a cell whose one group cannot fit the device's memory is
refused before anything runs (:func:`sweep_plan`). Each finished cell goes to the store (:mod:`specdyn.storage`) at once,
and a re-run with the same store skips it. With an ``executor`` or a Dask ``client``
each unit of work (a cell, or the cells of one bucket) is a task in another process
that computes it with the same programs and writes it into the store
(:mod:`specdyn.executors`). The run with seed ``s`` uses
``jax.random.PRNGKey(s)``: ``sd.simulate(..., key=jax.random.PRNGKey(s))``
reproduces any run of a sweep.

Learning rates may be given by a rule of the data (:class:`LearningRateRule`):
``lr = multiplier × rule(problem, data)``, computed per group inside the engine.

Optimizer options are grid axes too (``"muon.momentum"``, ``"specgd.steps"``; see
:mod:`specdyn.option_axes`): numeric options the optimizer can trace are vmapped
beside the learning rates (a cell's runs are then learning rate × option point ×
seed × data point), the others make cells, one per value.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from specdyn import buckets as bucketing
from specdyn import executors
from specdyn._cpu import blas_threads_limited, warn_if_unguarded
from specdyn.optimizers import OPTIMIZERS, get_optimizer
from specdyn.option_axes import OptionAxes, split_grid
from specdyn.problem import data_fields, is_problem, pad_instance, static_fields
from specdyn.provenance import (
    code_fingerprint,
    describe_callable,
    problem_fingerprint,
    provenance,
    specdyn_source,
    user_code,
)
from specdyn.simulate import (
    Recipe,
    _draw_program,
    check_memory,
    check_records,
    check_run_lengths,
    group_bytes,
    group_rates,
    memory_available,
    recipe_of,
    record_bytes,
    record_count,
    record_steps,
    run_groups,
    single_device,
)
from specdyn.storage import CellStore, assemble
from specdyn.telemetry import as_telemetry, telemetry_coords, telemetry_dims

__all__ = ["CellPlan", "LearningRateRule", "sweep", "sweep_plan"]

_TARGET_CHUNKS = 10  # progress granularity: about this many program calls per batch


@dataclasses.dataclass(frozen=True)
class LearningRateRule:
    """Learning rates from the data: ``lr = multiplier × rule(problem, data)`` per run.

    ``rule(problem, data) -> scalar`` is traced (one compile per rule and shape) and
    evaluated on each group's problem and data (per seed and data grid point); the
    sweep's ``lr`` axis runs over ``multipliers``, its ``learning_rate`` coordinate
    holds the multipliers and the variable ``effective_learning_rate`` the rates used.
    Example (paper 3): ``LearningRateRule(lambda p, d: gd_learning_rate(d))``.
    """

    rule: Callable
    multipliers: tuple = (1.0,)

    def __post_init__(self):
        if not callable(self.rule):
            raise ValueError(f"rule must be a callable rule(problem, data), got rule={self.rule!r}")
        values = tuple(float(m) for m in np.atleast_1d(self.multipliers))
        if not values or not all(math.isfinite(m) and m > 0 for m in values):
            raise ValueError(f"multipliers must be finite numbers > 0, got multipliers={list(values)!r}")
        object.__setattr__(self, "multipliers", values)


def _recipe(factory) -> Recipe:
    """The engine recipe of a sweep's optimizer: a registry name (with options) compiles
    per (factory, options), the same programs ``sd.simulate`` uses; another callable
    ``factory(lr)`` compiles per callable object."""
    if isinstance(factory, functools.partial) and factory.func is get_optimizer:
        recipe, _ = recipe_of(factory(1.0))
        if recipe.factory is not None:
            return recipe
    return Recipe(factory, ())

def _optimizer_factories(optimizers) -> dict[str, Callable]:
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    if isinstance(optimizers, Mapping):
        items = list(optimizers.items())
    elif isinstance(optimizers, Sequence):
        items = [(name, None) for name in optimizers]
    else:
        raise ValueError(f"optimizers must be a list of names or a dict name -> factory, got {optimizers!r}")
    if not items:
        raise ValueError("optimizers must name at least one optimizer, got an empty collection")
    factories = {}
    for name, factory in items:
        if not isinstance(name, str):
            raise ValueError(f"optimizer names must be strings, got {name!r}")
        if factory is None:
            if name not in OPTIMIZERS:
                raise ValueError(f"unknown optimizer name={name!r}; choose one of {sorted(OPTIMIZERS)}")
            factory = functools.partial(get_optimizer, name)
        elif not callable(factory):
            raise ValueError(f"optimizer {name!r} must map to a factory(learning_rate), got {factory!r}")
        factories[name] = factory
    return factories


def _describe_factory(factory) -> dict | str:
    """The store's record of an optimizer: registry name and options, or the callable's name."""
    if isinstance(factory, functools.partial) and factory.func is get_optimizer:
        return {"name": factory.args[0], "options": dict(factory.keywords)}
    return describe_callable(factory)


def _code_of(factory) -> dict:
    """Fingerprint of what an optimizer factory or rule computes: a registry name's factory
    function (its options are in the config), or the callable itself."""
    if isinstance(factory, functools.partial) and factory.func is get_optimizer:
        factory = OPTIMIZERS[factory.args[0]]
    return {"code": describe_callable(factory), "digest": code_fingerprint(factory)}


def _rules(learning_rates, names) -> tuple[dict, dict]:
    """Split rules (LearningRateRule or a bare callable) from lists of rates."""
    if callable(learning_rates) or isinstance(learning_rates, LearningRateRule):
        learning_rates = {n: learning_rates for n in names}
    rules, plain = {}, {}
    for name, value in (learning_rates.items() if isinstance(learning_rates, Mapping) else ()):
        if isinstance(value, LearningRateRule):
            rules[name] = value
        elif callable(value):
            rules[name] = LearningRateRule(value)
    if isinstance(learning_rates, Mapping):
        plain = {n: (list(rules[n].multipliers) if n in rules else v) for n, v in learning_rates.items()}
    else:
        plain = learning_rates
    return rules, plain


def _learning_rates(learning_rates, names) -> dict[str, list[float]]:
    if isinstance(learning_rates, Mapping):
        missing = [n for n in names if n not in learning_rates]
        extra = [n for n in learning_rates if n not in names]
        if missing or extra:
            problems = ", ".join(
                part for part in (f"missing {missing}" if missing else "", f"unknown {extra}" if extra else "") if part
            )
            raise ValueError(f"learning_rates must have one list per optimizer: {problems}")
        table = {n: list(np.atleast_1d(learning_rates[n])) for n in names}
    else:
        values = list(np.atleast_1d(learning_rates))
        table = {n: values for n in names}
    lengths = {n: len(v) for n, v in table.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"every optimizer needs the same, non-zero number of learning rates, got {lengths}")
    for name, values in table.items():
        for v in values:
            if not (isinstance(v, int | float | np.number) and math.isfinite(v) and v > 0):
                raise ValueError(f"learning rates must be finite numbers > 0, got {v!r} for {name!r}")
    return {n: [float(v) for v in values] for n, values in table.items()}


def _seeds(seeds) -> list[int]:
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count or a list of ints, got {seeds=}")
        return list(range(int(seeds)))
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be a positive count or a list of ints, got {seeds=!r}") from None
    if not out or len(set(out)) != len(out) or any(s < 0 for s in out):
        raise ValueError(f"seeds must be distinct non-negative ints, got {seeds=!r}")
    return out


def _grid(problem, grid) -> tuple[dict, dict]:
    """Split the grid into static and data fields, validating every value."""
    grid = dict(grid or {})
    fields = static_fields(problem) + data_fields(problem)
    static, data = {}, {}
    for name, values in grid.items():
        if name not in fields:
            raise ValueError(f"grid field {name!r} is not a field of {type(problem).__name__}; fields: {list(fields)}")
        values = list(values) if isinstance(values, list | tuple | np.ndarray) else [values]
        if not values:
            raise ValueError(f"grid field {name!r} has no values")
        for v in values:
            dataclasses.replace(problem, **{name: v})  # construction-time validation
        (static if name in static_fields(problem) else data)[name] = values
    return static, data


def _jsonable(value):
    if isinstance(value, np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _data_digest(data) -> str | None:
    """What the store records of given data: a digest of its arrays, or the callable's name."""
    if data is None:
        return None
    if callable(data):
        return describe_callable(data)
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        leaf = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _batched(problem, values_per_group: dict, n_groups: int):
    """``problem`` with a leading groups axis on every data leaf (``values_per_group``
    overrides fields); numbers become strongly typed arrays, as in ``sd.simulate``."""
    leaves, treedef = jax.tree.flatten(problem)
    out = []
    for name, leaf in zip(data_fields(problem), leaves, strict=True):
        if name in values_per_group:
            out.append(jax.device_put(np.asarray(values_per_group[name])))
        else:
            if isinstance(leaf, jax.Array):
                out.append(jnp.broadcast_to(leaf, (n_groups, *leaf.shape)))
            else:
                leaf = np.asarray(leaf)
                out.append(jax.device_put(np.broadcast_to(leaf, (n_groups, *leaf.shape))))
    return jax.tree.unflatten(treedef, out)


@dataclasses.dataclass(frozen=True)
class CellPlan:
    """How one cell of a sweep runs: its optimizer, static grid values and static option
    values (``options``), its runs and
    groups (runs sharing a seed and data grid point), the device bytes of one group
    (:func:`specdyn.simulate.group_bytes`), groups per program call (``calls``
    sub-batches), and ``bucket``: the padded sizes its program runs at when it shares
    one with other sizes (:mod:`specdyn.buckets`), else None; a bucketed cell's bytes
    and groups per call are those of its runs padded to the bucket. ``records_bytes``:
    host bytes of the cell's records (every run, every record step) once it is done."""

    optimizer: str
    static: dict
    runs: int
    groups: int
    bytes_per_group: dict
    groups_per_call: int
    calls: int
    options: dict = dataclasses.field(default_factory=dict)  # static option axes: {"muon.method": "svd"}
    bucket: dict | None = None  # {field: bucket size} when the cell runs padded with others
    records_bytes: int = 0


def _prepare(problem, *, optimizers, learning_rates, seeds, grid, steps, record_every, data, batch_size,
             telemetry=None, buckets=None):
    """Validate a sweep's arguments (ValueError naming the argument) and lay out its cells."""
    if not is_problem(problem):
        raise ValueError(f"problem must be an @sd.problem instance, got {problem!r}")
    check_run_lengths(steps, record_every)
    telemetry = as_telemetry(telemetry)
    warn_if_unguarded()
    factories = _optimizer_factories(optimizers)
    names = list(factories)
    rules, plain_rates = _rules(learning_rates, names)
    lrs = _learning_rates(plain_rates, names)
    seed_list = _seeds(seeds)
    field_grid, option_grid = split_grid(grid)
    static_grid, data_grid = _grid(problem, field_grid)
    axes = OptionAxes(option_grid, factories)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size=!r}")
    if data is not None and not (callable(data) or isinstance(data, Mapping)):
        raise ValueError(f"data must be a dict of arrays or a callable data(seed) -> dict, got {data!r}")
    static_combos = list(itertools.product(*static_grid.values()))
    data_combos = list(itertools.product(*data_grid.values()))
    # cells: optimizer x static grid point x static option point (options {} without option axes)
    cells = [(n, c, o) for n in names for c in static_combos for o in axes.cell_options(n)]
    bucket_spec = bucketing.check_buckets(problem, buckets)
    return dict(
        bucket_spec=bucket_spec,
        factories=factories, names=names, rules=rules, lrs=lrs, seeds=seed_list, static_grid=static_grid,
        data_grid=data_grid, data_combos=data_combos, cells=cells, axes=axes, n_static=len(static_combos),
        recipes=[_recipe(axes.factory(n, factories[n], o)) for n, _, o in cells],
        telemetry=telemetry,
    )


def _plan_cells(problem, setup, first_data, batch_size, steps, record_every) -> list[CellPlan]:
    """One :class:`CellPlan` per cell, refusing (ValueError) a cell whose one group cannot
    fit the device, or records that cannot fit the host (naming ``steps`` and ``record_every``)."""
    available = memory_available()
    n_lrs = len(setup["lrs"][setup["names"][0]])
    n_groups = len(setup["seeds"]) * len(setup["data_combos"])
    out = []
    for (name, static_values, options), recipe in zip(setup["cells"], setup["recipes"], strict=True):
        static = dict(zip(setup["static_grid"], static_values, strict=True))
        cell_problem = dataclasses.replace(problem, **static)
        per_group = n_lrs * setup["axes"].data_options(name)[0]  # runs of a group: rates x data option points
        estimate = group_bytes(cell_problem, recipe, per_group, data=first_data, telemetry=setup["telemetry"])
        check_memory(cell_problem, estimate, runs=per_group, available=available)
        size = _groups_per_call(estimate, n_groups, per_group, batch_size, available)
        per_record = record_bytes(cell_problem, recipe, data=first_data, telemetry=setup["telemetry"])
        out.append(CellPlan(name, static, per_group * n_groups, n_groups, estimate, size, math.ceil(n_groups / size),
                            options, records_bytes=per_group * n_groups * record_count(steps, record_every) * per_record))
    check_records(sum(p.records_bytes for p in out), runs=sum(p.runs for p in out), steps=steps,
                  record_every=record_every)
    return out


def _groups_per_call(estimate, n_groups, n_lrs, batch_size, available) -> int:
    n_dev = jax.local_device_count()
    if batch_size:
        cap = max(1, batch_size // n_lrs)
    else:
        cap = max(1, int(0.5 * available * n_dev / estimate["total"]))
    size = min(n_groups, cap)
    return math.ceil(size / n_dev) * n_dev  # equal shards on every device


def _bucket_units(problem, setup, plans, data, steps) -> list[tuple[dict | None, list[int]]]:
    """Cells that run together: ``(bucket, [cell indices])`` with ``bucket`` the padded
    sizes ({field: bucket size}) of cells that share a program, None for a cell alone.

    Cells run alone (one program per size) with given ``data``, with telemetry (the
    singular-value quantiles of a padded matrix would count its zero block) and for an
    optimizer with data option axes; static option values are part of a bucket's key."""
    if data is not None or setup["bucket_spec"] is None or setup["telemetry"] is not None:
        return [(None, [i]) for i in range(len(plans))]
    runs = max(p.runs for p in plans)
    mapping = bucketing.resolve_buckets(problem, setup["static_grid"], setup["bucket_spec"],
                                        recipes=list(dict.fromkeys(setup["recipes"])), runs=runs, steps=steps)
    units: dict = {}
    for i, plan in enumerate(plans):
        bucket = {f: sizes[plan.static[f]] for f, sizes in mapping.items()}
        cell_problem = dataclasses.replace(problem, **plan.static)
        if (bucket and not setup["axes"].data_options(plan.optimizer)[1]
                and bucketing.pads_exactly(setup["recipes"][i]) and bucketing.can_pad(cell_problem)):
            others = tuple((f, v) for f, v in plan.static.items() if f not in bucket)
            key = (plan.optimizer, tuple(sorted(plan.options.items())), tuple(sorted(bucket.items())), others)
            units.setdefault(key, (bucket, []))[1].append(i)
        else:
            units[("alone", i)] = (None, [i])
    return [(b if len(members) > 1 else None, members) for b, members in units.values()]


def _bucketed(problem, setup, plans, data, steps, batch_size) -> list[tuple[dict | None, list[int]]]:
    """The units of :func:`_bucket_units`, with the plan of each cell that runs padded
    re-estimated at its bucket's sizes (its arrays' shapes): bytes per group, groups per
    call and ``bucket``, refusing (ValueError naming the field, its value and the bucket)
    a cell whose one padded group cannot fit the device's memory."""
    units = _bucket_units(problem, setup, plans, data, steps)
    available = memory_available()
    for bucket, members in units:
        for i in members if bucket is not None else ():
            plan = plans[i]
            true = dataclasses.replace(problem, **plan.static)
            per_group = plan.runs // plan.groups
            estimate = group_bytes(bucketing.at_sizes(true, bucket), setup["recipes"][i], per_group)
            check_memory(true, estimate, runs=per_group, available=available, bucket=bucket)
            size = _groups_per_call(estimate, plan.groups, per_group, batch_size, available)
            plans[i] = dataclasses.replace(plan, bytes_per_group=estimate, groups_per_call=size,
                                           calls=math.ceil(plan.groups / size), bucket=bucket)
    return units


def sweep_plan(
    problem,
    *,
    optimizers,
    learning_rates,
    seeds,
    grid: Mapping | None = None,
    steps: int,
    record_every: int = 1,
    data=None,
    batch_size: int | None = None,
    telemetry=None,
    buckets="auto",
) -> list[CellPlan]:
    """The cells :func:`sweep` would run with these arguments, one :class:`CellPlan` each
    (runs, groups, bytes per group, groups per program call), without running anything.
    Raises the ValueError :func:`sweep` would, including for a cell whose one group
    cannot fit the device's memory. ``buckets``: as in :func:`sweep`; a cell that shares
    a padded program with others has its ``bucket``, and its bytes per group, groups per
    call and memory check are at the bucket's sizes (what its padded runs allocate)."""
    setup = _prepare(problem, optimizers=optimizers, learning_rates=learning_rates, seeds=seeds, grid=grid,
                     steps=steps, record_every=record_every, data=data, batch_size=batch_size, telemetry=telemetry,
                     buckets=buckets)
    first = data(setup["seeds"][0]) if callable(data) else data
    plans = _plan_cells(problem, setup, first, batch_size, int(steps), int(record_every))
    _bucketed(problem, setup, plans, data, steps, batch_size)
    return plans


def sweep(
    problem,
    *,
    optimizers,
    learning_rates,
    seeds,
    grid: Mapping | None = None,
    steps: int,
    record_every: int = 1,
    data=None,
    store=None,
    progress: bool = True,
    fresh: bool = False,
    batch_size: int | None = None,
    provenance: Mapping | None = None,
    telemetry=None,
    buckets="auto",
    executor=None,
    client=None,
) -> xr.Dataset:
    """Run every (optimizer, learning rate, seed, grid point) of a grid.

    Args:
      problem: an ``@sd.problem`` instance; grid fields override its values.
      optimizers: registry names (``["gd", "specgd"]``) or ``{name: factory}``
        with ``factory(learning_rate) -> optax.GradientTransformation`` (a name
        compiles per (factory, options), as ``sd.simulate`` does; a callable
        compiles per callable object: reuse it across sweeps).
      learning_rates: one list for all optimizers, or ``{name: list}`` (equal
        lengths); instead of a list, a :class:`LearningRateRule` (or a bare
        callable ``rule(problem, data)``, multiplier 1): the rate of each run is
        multiplier × rule on its problem and data.
      seeds: a count n (seeds 0..n-1) or a list of ints.
      grid: ``{field: values}``; static fields make separate compiled cells,
        data (float) fields are vmapped with seeds and learning rates. Keys
        ``"<optimizer>.<option>"`` (``"muon.momentum"``) sweep an option of one of
        ``optimizers`` (:mod:`specdyn.option_axes`): numeric options the optimizer can
        trace are vmapped with the learning rates, others make cells; the Dataset gets
        one dim per key, along which the other optimizers' runs are broadcast.
      steps, record_every: as in :func:`specdyn.simulate` (records at 0, r, 2r, ...
        and always at ``steps``).
      data: given data arrays replacing ``problem.sample``: a dict of arrays shared
        by every run, or a callable ``data(seed) -> dict`` (one data set per seed).
      store: a folder; each finished cell is written there, and a re-run skips it.
      progress: show a tqdm progress bar over run-steps.
      fresh: discard what ``store`` holds instead of resuming.
      batch_size: most runs per program call (default: from device memory), rounded down to
        whole groups (all learning rates and data option points of one seed and data grid
        point), at least one group.
      provenance: extra entries for the results' provenance (the CLI passes
        ``sweep_file_text``); see :func:`specdyn.provenance.provenance`.
      telemetry: None (off), an int k or an ``sd.Telemetry``: spectral telemetry as in
        :func:`specdyn.simulate`, as variables with dims ``(..., step, leaf, sv)``,
        ``(..., step, leaf, quantile)`` or ``(..., step, leaf)`` and coordinates
        ``leaf`` (names), ``sv`` (1..k) and ``quantile`` (levels). Its settings are
        part of the config, so a store recorded with other settings is refused.
      buckets: sizes of a padded field (``sd.static(..., pad=True)``) that share a
        bucket run in one compiled program, zero-padded exactly (see
        :mod:`specdyn.buckets`): ``{field: [bucket sizes]}`` (a size goes to the
        smallest bucket that holds it), ``"auto"`` (default: buckets from a cost
        model of compile time against padded FLOPs), or None (one program per size).
        The results are the same either way.
      executor: None (default: every cell in this process), or a
        ``concurrent.futures.Executor`` that runs each unit of work (a cell, or the cells
        of one bucket) as a task in another process: a Dask ``Client.get_executor()``, a
        ``ProcessPoolExecutor`` with a ``spawn`` context (tasks are pickled: plain ``pickle``
        needs module-level optimizer factories and rules; Dask's cloudpickle does not).
        Each task computes its cells with the same programs as here and writes them
        atomically into ``store`` (a folder every worker can reach), skipping cells
        already there; this process then assembles the Dataset from the store, the same
        numbers as in-process. A worker that dies loses only its unfinished cells (Dask
        retries them elsewhere; otherwise a re-run resumes). The progress bar counts cells.
      client: the Dask shortcut (:mod:`specdyn.executors`): a ``distributed.Client`` or
        the address of a Dask scheduler (``"tcp://host:8786"``), not both with ``executor``.

    A cell whose one group cannot fit the device's memory (see :func:`sweep_plan`) is
    refused with a ValueError before anything runs. The Dataset's attrs hold the config
    (with code fingerprints: a store refuses results of changed code), ``provenance``
    (JSON: versions, devices, date, git commit), ``cells`` and ``cells_from_store``.

    Returns:
      ``xarray.Dataset`` (see :mod:`specdyn.storage`).
    """
    setup = _prepare(problem, optimizers=optimizers, learning_rates=learning_rates, seeds=seeds, grid=grid,
                     steps=steps, record_every=record_every, data=data, batch_size=batch_size, telemetry=telemetry,
                     buckets=buckets)
    telemetry = setup["telemetry"]
    executors.check(executor, client)
    _warn_host_devices()
    names, rules, lrs, seed_list = setup["names"], setup["rules"], setup["lrs"], setup["seeds"]
    static_grid, data_grid, factories = setup["static_grid"], setup["data_grid"], setup["factories"]
    axes = setup["axes"]
    seed_data = {} if not callable(data) else {s: data(s) for s in seed_list}
    plans = _plan_cells(problem, setup, seed_data[seed_list[0]] if callable(data) else data, batch_size, int(steps),
                        int(record_every))
    config = {
        "format": 3,  # records at 0, r, 2r, ... and at steps; code fingerprints
        "problem": describe_callable(type(problem)),
        "fields": {f: _jsonable(getattr(problem, f)) for f in static_fields(problem) + data_fields(problem)},
        "optimizers": {n: _describe_factory(f) for n, f in factories.items()},
        "learning_rates": lrs,
        "seeds": seed_list,
        "grid": _jsonable({**static_grid, **data_grid, **axes.coords()}),
        "grid_order": list((grid or {}).keys()),
        "steps": int(steps),
        "record_every": int(record_every),
        "x64": bool(jax.config.jax_enable_x64),
        "code": {
            "specdyn": _specdyn_version(),
            "specdyn_source": specdyn_source(),
            "problem": problem_fingerprint(type(problem)),
            "optimizers": {n: _code_of(f) for n, f in factories.items()},
            "modules": user_code([type(problem), *factories.values(), *(r.rule for r in rules.values()),
                                  *([data] if callable(data) else [])]),
        },
    }
    if axes.axes:
        config["option_axes"] = axes.describe()
    if rules:
        config["learning_rate_rules"] = {n: _describe_factory(r.rule) for n, r in rules.items()}
        config["code"]["learning_rate_rules"] = {n: _code_of(r.rule) for n, r in rules.items()}
    if telemetry is not None:  # absent when off: stores written before telemetry existed stay valid
        config["telemetry"] = telemetry.as_config()
    if data is not None:
        config["data"] = _data_digest(data)
        if callable(data):
            config["code"]["data"] = code_fingerprint(data)
    run_provenance = _provenance(provenance)
    cell_store = None if store is None else CellStore(store, config, fresh=fresh, provenance=run_provenance)

    cells = setup["cells"]
    units = _bucketed(problem, setup, plans, data, int(steps), batch_size)
    # given data: one dict for every run, or {seed: dict} from a callable (so no callable travels to workers)
    work = dict(data=seed_data if callable(data) else data, per_seed=callable(data), steps=int(steps),
                record_every=int(record_every), batch_size=batch_size)
    if executor is not None or client is not None:
        results, from_store = _run_elsewhere(problem, setup, plans, units, work, cell_store, executor=executor,
                                             client=client, progress=progress)
    else:
        results, from_store = _run_here(problem, setup, plans, units, work, cell_store, progress=progress)
    results = axes.merge(results, names, n_static=setup["n_static"], n_lr=len(lrs[names[0]]), n_seed=len(seed_list),
                         data_shape=tuple(len(v) for v in data_grid.values()))
    ds = assemble(
        problem_name=type(problem).__name__,
        names=names,
        learning_rates=lrs,
        seeds=seed_list,
        static_grid=static_grid,
        data_grid={**data_grid, **axes.coords()},  # option axes: dims after the data fields
        grid_order=list((grid or {}).keys()),
        steps_at=record_steps(steps, record_every),
        cells=results,
        metric_dims={**(getattr(type(problem), "metric_dims", {}) or {}), **telemetry_dims(telemetry)},
        config=config,
        attrs={
            "devices": f"{jax.local_device_count()} x {jax.local_devices()[0].device_kind}",
            "provenance": json.dumps(run_provenance, sort_keys=True),
            "cells": len(cells),
            "cells_from_store": from_store,
        },
    )
    if telemetry is not None:
        ds = ds.assign_coords(telemetry_coords(telemetry, jax.eval_shape(problem.init, jax.random.PRNGKey(0))))
    return ds


def _run_here(problem, setup, plans, units, work, cell_store, *, progress):
    """Every unit in this process, cell by cell (the default): (cell results, cells from the store)."""
    steps = work["steps"]
    bar = tqdm(total=sum(p.runs for p in plans) * steps, unit="run-step", unit_scale=True, disable=not progress)
    results, from_store = [None] * len(plans), 0
    try:
        for bucket, members in units:
            todo = []
            for index in members:
                if cell_store is not None and cell_store.has(index):
                    results[index] = cell_store.load(index, runs=plans[index].runs)
                    from_store += 1
                    bar.update(plans[index].runs * steps)
                else:
                    todo.append(index)
            if not todo:
                continue
            for index, arrays in zip(todo, _compute_unit(problem, setup, plans, bucket, todo, bar=bar, **work),
                                     strict=True):
                if cell_store is not None:
                    cell_store.save(index, arrays)
                results[index] = arrays
    finally:
        bar.close()
    return results, from_store


def _compute_unit(problem, setup, plans, bucket, todo, *, data, per_seed, steps, record_every, batch_size, bar):
    """The arrays of the cells ``todo`` of one unit (cells that share a bucket's program,
    or one cell alone), one dict per cell: the same programs wherever it runs."""
    cells, lrs, rules, axes = setup["cells"], setup["lrs"], setup["rules"], setup["axes"]
    name = cells[todo[0]][0]
    recipe = setup["recipes"][todo[0]]
    common = dict(data=data, per_seed=per_seed, steps=steps, record_every=record_every, bar=bar)
    if bucket is not None and len(todo) > 1:  # no data option axes, no telemetry (see _bucket_units)
        bar.set_description(f"{name} " + " ".join(f"{k}<={v}" for k, v in
                                                  {**bucket, **plans[todo[0]].options}.items()))
        size = _groups_per_call(
            group_bytes(bucketing.at_sizes(problem, {**plans[todo[0]].static, **bucket}),
                        recipe, len(lrs[name])),
            len(todo) * plans[todo[0]].groups, len(lrs[name]), batch_size, memory_available())
        ran = _run_bucket(problem, bucket, [plans[i].static for i in todo], recipe,
                          lrs[name], rules.get(name), setup["seeds"], setup["data_grid"], setup["data_combos"],
                          size=size, **common)
    else:
        ran = []
        for index in todo:
            bar.set_description(f"{name} " + " ".join(f"{k}={v}" for k, v in
                                                      {**plans[index].static, **plans[index].options}.items()))
            ran.append(_run_cell(dataclasses.replace(problem, **plans[index].static), recipe,
                                 lrs[name], rules.get(name), setup["seeds"], setup["data_grid"], setup["data_combos"],
                                 size=plans[index].groups_per_call, options=axes.data_options(name)[1],
                                 telemetry=setup["telemetry"], **common))
    if rules and name not in rules:
        for index, arrays in zip(todo, ran, strict=True):
            n_runs = plans[index].runs
            arrays["effective_learning_rate"] = np.repeat(np.asarray(lrs[name]), n_runs // len(lrs[name]))
    return ran


@dataclasses.dataclass(frozen=True)
class _UnitTask:
    """One unit of a sweep as a task for another process: calling it there computes the
    unit's cells that its store lacks (:func:`_compute_unit`, under the sweep's x64
    setting, after :func:`specdyn.guard_cpu`) and writes each atomically into the store;
    it returns ``{cell index: arrays}`` without a store, ``{cell index: None}`` with one."""

    problem: object
    setup: dict
    plans: list
    bucket: dict | None
    members: tuple
    work: dict
    x64: bool
    store: CellStore | None

    def __call__(self) -> dict:
        from specdyn._cpu import guard_cpu

        guard_cpu()  # first thing in a worker process: before its JAX backend starts
        todo = [i for i in self.members if self.store is None or not self.store.has(i)]
        if not todo:
            return dict.fromkeys(self.members)
        with jax.enable_x64(self.x64):
            ran = _compute_unit(self.problem, self.setup, self.plans, self.bucket, todo,
                                bar=tqdm(disable=True), **self.work)
        if self.store is None:
            return dict(zip(todo, ran, strict=True))
        self.store.check_config()  # the store may have been emptied for another sweep meanwhile
        for index, arrays in zip(todo, ran, strict=True):
            self.store.save(index, arrays)
        return dict.fromkeys(self.members)


def _run_elsewhere(problem, setup, plans, units, work, cell_store, *, executor, client, progress):
    """Every unit the store lacks as one task on ``executor`` (or the Dask ``client``),
    with a progress bar over cells as they finish: (cell results, cells from the store)."""
    results, from_store = [None] * len(plans), 0
    pending = []
    for bucket, members in units:
        missing = [i for i in members if cell_store is None or not cell_store.has(i)]
        from_store += len(members) - len(missing)
        if missing:
            pending.append((bucket, members, missing))
    # largest units first (by their planned device bytes, a proxy for their cost), so that the
    # sweep's tail is a small unit and no worker idles while another finishes a large one
    size = lambda unit: sum(plans[i].groups * plans[i].bytes_per_group["total"] for i in unit[2])
    pending.sort(key=size, reverse=True)
    tasks = [_UnitTask(problem, setup, plans, bucket, tuple(members), work, bool(jax.config.jax_enable_x64),
                       cell_store) for bucket, members, _ in pending]
    counts = [len(missing) for *_, missing in pending]
    bar = tqdm(total=len(plans), initial=from_store, unit="cell", disable=not progress)
    done = {}

    def finished(k: int, cells: dict) -> None:
        done.update(cells)
        bar.update(counts[k])

    try:
        with executors.resolve(executor, client) as pool:
            executors.run_tasks(pool, tasks, finished)
    finally:
        bar.close()
    for index, plan in enumerate(plans):
        arrays = done.get(index)
        results[index] = arrays if arrays is not None else cell_store.load(index, runs=plan.runs)
    return results, from_store


def host_device_warning(backend: str, devices: int, jaxlib_version: str, limit_blas: str | None) -> str | None:
    """The warning for several CPU host devices on jaxlib 0.10.x (known to hang there; see
    the README's note on CPUs with few cores), or None; ``SPECDYN_LIMIT_BLAS=0`` silences it."""
    if backend != "cpu" or devices < 2 or not jaxlib_version.startswith("0.10.") or limit_blas == "0":
        return None
    return (
        f"{devices} CPU host devices on jaxlib {jaxlib_version}: sweeps on several host devices are known "
        "to hang on jaxlib 0.10 (README, 'A note on CPUs with few cores'); use one device (no "
        "--xla_force_host_platform_device_count) or jaxlib >= 0.12; SPECDYN_LIMIT_BLAS=0 silences this"
    )


@functools.cache
def _warn_host_devices() -> None:
    """Warn once per process (see :func:`host_device_warning`)."""
    import jaxlib

    message = host_device_warning(
        jax.default_backend(), jax.local_device_count(), jaxlib.__version__, os.environ.get("SPECDYN_LIMIT_BLAS")
    )
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _specdyn_version() -> str:
    import specdyn

    return specdyn.__version__


def _provenance(extra: Mapping | None) -> dict:
    if extra is not None and not isinstance(extra, Mapping):
        raise ValueError(f"provenance must be a dict of extra entries, got provenance={extra!r}")
    return provenance(**{str(k): v for k, v in (extra or {}).items()})


def _given_data(data, per_seed, groups, n_groups):
    if data is None:
        return None
    if per_seed:  # {seed: data}
        return jax.tree.map(lambda *a: np.stack(a), *[data[s] for s, _ in groups])
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n_groups, *np.shape(x))), dict(data))


def _run_cell(problem, recipe, lrs, rule, seeds, data_grid, data_combos, *, data, per_seed, steps, record_every,
              size, bar, options=None, telemetry=None):
    """All runs of one cell: {metric: (runs, records, ...)}, diverged_at (runs,) and, with a
    rule, effective_learning_rate (runs,).

    Runs form *groups*, one per (seed, data grid point), in that order; the
    learning rates of a group share its initial parameters and data (drawn once),
    so a program maps over groups and, inside, over learning rates and the points of
    the data option axes (``options``: ``{option: (points,) values}``).
    Results come back in run order learning rate × option point × seed × data grid point.
    """
    groups = list(itertools.product(seeds, range(len(data_combos))))
    inner = list(rule.multipliers if rule is not None else lrs)
    n_points = len(next(iter(options.values()))) if options else 1
    if options:  # inner runs: learning rate x option point
        inner = list(np.repeat(inner, n_points))
        options = {k: np.tile(np.asarray(v), len(lrs)) for k, v in options.items()}
    n_groups = len(groups)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray([s for s, _ in groups]))
    field_values = {f: [data_combos[c][j] for _, c in groups] for j, f in enumerate(data_grid)}
    problems = _batched(problem, field_values, n_groups)
    given = _given_data(data, per_seed, groups, n_groups)
    out = _run_batches(problems, keys, recipe, inner, None if rule is None else rule.rule, given, None,
                       steps=steps, record_every=record_every, size=size, bar=bar, n_lrs=len(lrs) * n_points,
                       options=options, telemetry=telemetry)
    return _by_run(out)


def _by_run(out: dict) -> dict:
    """(groups, lrs, ...) -> runs in order lr x seed x data grid point."""
    result = {}
    for k, v in out.items():
        by_lr = np.swapaxes(v, 0, 1)
        result[k] = by_lr.reshape(by_lr.shape[0] * by_lr.shape[1], *by_lr.shape[2:])
    return result


def _run_batches(problems, keys, recipe, rates, rule, given, params, *, steps, record_every, size, bar, n_lrs,
                 options=None, telemetry=None):
    """Run groups (leading axis of ``problems``, ``keys``, ``given``, ``params``) in
    sub-batches of ``size`` groups: {metric: (groups, lrs, ...)}, diverged_at and, with
    a rule or per-group rates, effective_learning_rate. ``options``, ``telemetry``: as in
    :func:`specdyn.simulate.run_groups`."""
    n_groups = keys.shape[0]
    n_batches = math.ceil(n_groups / size)
    shard = NamedSharding(Mesh(np.asarray(jax.local_devices()), ("runs",)), PartitionSpec("runs"))
    budget = max(1, math.ceil(steps / _TARGET_CHUNKS))
    per_group = np.ndim(rates) == 2

    outputs = []
    for b in range(n_batches):
        idx = np.minimum(np.arange(b * size, (b + 1) * size), n_groups - 1)  # pad with the last group
        take = lambda tree, idx=idx: jax.tree.map(lambda x: x[idx], tree)
        real = min(size, n_groups - b * size)
        records, state, used = run_groups(
            take(problems),
            keys[idx],
            recipe,
            np.asarray(rates)[idx] if per_group else rates,
            rule=rule,
            steps=steps,
            record_every=record_every,
            data=None if given is None else take(given),
            params=None if params is None else take(params),
            shard=shard,
            budget=budget,
            on_call=lambda n, real=real: bar.update(real * n_lrs * n),
            options=options,
            telemetry=telemetry,
        )
        out = dict(records)
        out["diverged_at"] = np.asarray(state.diverged_at)
        if rule is not None or per_group:
            out["effective_learning_rate"] = np.asarray(used)
        outputs.append({k: v[:real] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outputs], axis=0) for k in outputs[0]}


def _run_bucket(problem, bucket, statics, recipe, lrs, rule, seeds, data_grid, data_combos, *, data, per_seed, steps,
                record_every, size, bar):
    """The cells of ``statics`` (static values, sizes within ``bucket``) as one batch of
    groups in the bucket's programs: each cell's groups are drawn at its true sizes,
    zero-padded to the bucket (:mod:`specdyn.buckets`), run together, and their records
    cut back to the true shapes. One ``_run_cell`` result per cell."""
    assert data is None
    groups = list(itertools.product(seeds, range(len(data_combos))))
    n_groups = len(groups)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray([s for s, _ in groups]))
    field_values = {f: [data_combos[c][j] for _, c in groups] for j, f in enumerate(data_grid)}
    target = None
    parts, rec_shapes = [], []
    with blas_threads_limited():
        for static in statics:
            true = dataclasses.replace(problem, **static)
            if target is None:
                target = bucketing.shapes_of(bucketing.at_sizes(true, bucket))
            problems = _batched(true, field_values, n_groups)
            params, drawn = _draw_program()(problems, keys, None, None, shard=single_device())
            if rule is not None:
                rates = group_rates(rule.rule, rule.multipliers, problems, drawn)
            else:
                rates = np.broadcast_to(np.asarray(lrs, float), (n_groups, len(lrs)))
            sizes = {f: np.full(n_groups, static[f], np.int32) for f in bucket}
            padded = pad_instance(problems, bucket, sizes)
            parts.append((padded, keys, bucketing.pad_tree(params, target[0]), bucketing.pad_tree(drawn, target[1]),
                          np.asarray(rates)))
            rec_shapes.append(bucketing.record_shapes(true))
    joined = jax.tree.map(lambda *x: np.concatenate([np.asarray(v) for v in x]), *parts)
    problems, all_keys, params, drawn, rates = joined
    out = _run_batches(problems, jnp.asarray(all_keys), recipe, rates, None, drawn, params, steps=steps,
                       record_every=record_every, size=size, bar=bar, n_lrs=len(lrs))
    if rule is None:
        out.pop("effective_learning_rate")
    results = []
    for c, shapes in enumerate(rec_shapes):
        cell = {}
        for k, v in out.items():
            v = v[c * n_groups:(c + 1) * n_groups]
            if k in shapes:  # (groups, lrs, records, *metric shape at the bucket) -> the true shape
                v = v[(slice(None),) * 3 + tuple(slice(0, n) for n in shapes[k].shape)]
            cell[k] = v
        results.append(_by_run(cell))
    return results
