"""Vectorized sweeps: seeds × learning rates × problem fields as a few compiled programs.

The grid splits in two. *Static* fields (shapes, switches) and the optimizer make
**cells**: one compiled step program each. Inside a cell, seeds × learning rates ×
*data* (float) grid fields form one batch of runs that is ``vmap``-ed and
sharded over all local devices along a ``runs`` mesh axis. Runs that differ only
in their learning rate share their initial parameters and data, so the batch is
a set of *groups* (one per seed and data grid point), each carrying all learning
rates: a group's data is drawn once, by a program shared by every optimizer, and
stored once; the ``runs`` axis shards the groups. A batch too large for memory
is split into equal sub-batches of groups that reuse the same programs.

Steps run in chunks of whole record slots (one program, called repeatedly; a
second, shorter one when no equal split exists), then the last record and the
steps left after it, as in :func:`specdyn.simulate`: no padded step is computed.
A progress bar moves with the chunks; each finished cell goes to the store at
once, and a re-run with the same store skips it. The run with seed ``s`` uses
``jax.random.PRNGKey(s)``: ``sd.simulate(..., key=jax.random.PRNGKey(s))``
reproduces any run of a sweep.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from specdyn._cpu import blas_threads_limited
from specdyn.optimizers import OPTIMIZERS, get_optimizer
from specdyn.problem import data_fields, is_problem, static_fields
from specdyn.results import CellStore, coordinate_values
from specdyn.simulate import (
    RunState,
    advance,
    check_run_lengths,
    finish,
    record_metrics,
    record_steps,
    sample_run,
    start_run,
)

__all__ = ["TRACE_COUNTS", "sweep"]

# How many times the step programs ("advance"), the program drawing initial parameters
# and data ("draw") and the last-record program ("record") were traced (= compiled);
# tests assert on it.
TRACE_COUNTS: collections.Counter = collections.Counter()

_TARGET_CHUNKS = 10  # progress granularity: about this many calls per batch


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
    if isinstance(factory, functools.partial) and factory.func is get_optimizer:
        return {"name": factory.args[0], "options": dict(factory.keywords)}
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


def _learning_rates(learning_rates, names) -> dict[str, list[float]]:
    if isinstance(learning_rates, Mapping):
        missing = [n for n in names if n not in learning_rates]
        extra = [n for n in learning_rates if n not in names]
        if missing or extra:
            raise ValueError(f"learning_rates must have one list per optimizer: missing {missing}, unknown {extra}")
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


def _memory_per_device() -> float:
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"])
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return total / jax.local_device_count()


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _chunk_lengths(slots: int) -> list[int]:
    """Record slots per program call: about ``_TARGET_CHUNKS`` equal calls.

    Equal lengths when some length between slots/10 and slots/5 divides
    ``slots``; otherwise a shorter last call (a second program). No call is padded.
    """
    if slots == 0:
        return []
    low = math.ceil(slots / _TARGET_CHUNKS)
    for per in range(low, max(low, slots // (_TARGET_CHUNKS // 2)) + 1):
        if slots % per == 0:
            return [per] * (slots // per)
    return [low] * (slots // low) + [slots % low]


def sweep(
    problem,
    *,
    optimizers,
    learning_rates,
    seeds,
    grid: Mapping | None = None,
    steps: int,
    record_every: int = 1,
    store=None,
    progress: bool = True,
    fresh: bool = False,
    batch_size: int | None = None,
) -> xr.Dataset:
    """Run every (optimizer, learning rate, seed, grid point) of a grid.

    Args:
      problem: an ``@sd.problem`` instance; grid fields override its values.
      optimizers: registry names (``["gd", "specgd"]``) or ``{name: factory}``
        with ``factory(learning_rate) -> optax.GradientTransformation``.
      learning_rates: one list for all optimizers, or ``{name: list}`` (equal lengths).
      seeds: a count n (seeds 0..n-1) or a list of ints.
      grid: ``{field: values}``; static fields make separate compiled cells,
        data (float) fields are vmapped with seeds and learning rates.
      steps, record_every: as in :func:`specdyn.simulate`.
      store: a folder; each finished cell is written there, and a re-run skips it.
      progress: show a tqdm progress bar over run-steps.
      fresh: discard what ``store`` holds instead of resuming.
      batch_size: most runs per program call (default: from device memory), rounded down to
        whole groups (all learning rates of one seed and data grid point), at least one group.

    Returns:
      ``xarray.Dataset`` (see :mod:`specdyn.results`).
    """
    if not is_problem(problem):
        raise ValueError(f"problem must be an @sd.problem instance, got {problem!r}")
    check_run_lengths(steps, record_every)
    factories = _optimizer_factories(optimizers)
    names = list(factories)
    lrs = _learning_rates(learning_rates, names)
    seed_list = _seeds(seeds)
    static_grid, data_grid = _grid(problem, grid)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size=!r}")
    steps_at = record_steps(steps, record_every)
    config = {
        "problem": f"{type(problem).__module__}:{type(problem).__qualname__}",
        "fields": {f: _jsonable(getattr(problem, f)) for f in static_fields(problem) + data_fields(problem)},
        "optimizers": {n: _describe_factory(f) for n, f in factories.items()},
        "learning_rates": lrs,
        "seeds": seed_list,
        "grid": _jsonable({**static_grid, **data_grid}),
        "grid_order": list((grid or {}).keys()),
        "steps": int(steps),
        "record_every": int(record_every),
        "x64": bool(jax.config.jax_enable_x64),
    }
    cell_store = None if store is None else CellStore(store, config, fresh=fresh)

    static_combos = list(itertools.product(*static_grid.values()))
    data_combos = list(itertools.product(*data_grid.values()))
    n_runs = len(lrs[names[0]]) * len(seed_list) * len(data_combos)
    cells = list(itertools.product(names, static_combos))
    bar = tqdm(total=len(cells) * n_runs * steps, unit="run-step", unit_scale=True, disable=not progress)
    results = []
    try:
        for index, (name, static_values) in enumerate(cells):
            bar.set_description(
                f"{name} " + " ".join(f"{k}={v}" for k, v in zip(static_grid, static_values, strict=True))
            )
            if cell_store is not None and cell_store.has(index):
                results.append(cell_store.load(index))
                bar.update(n_runs * steps)
                continue
            cell_problem = dataclasses.replace(problem, **dict(zip(static_grid, static_values, strict=True)))
            with blas_threads_limited():
                arrays = _run_cell(
                    cell_problem,
                    factories[name],
                    lrs[name],
                    seed_list,
                    data_grid,
                    data_combos,
                    steps=int(steps),
                    record_every=int(record_every),
                    batch_size=batch_size,
                    bar=bar,
                )
            if cell_store is not None:
                cell_store.save(index, arrays)
            results.append(arrays)
    finally:
        bar.close()
    return _assemble(
        problem, names, lrs, seed_list, static_grid, data_grid, list((grid or {}).keys()), steps_at, results, config
    )


def _run_cell(problem, factory, lrs, seeds, data_grid, data_combos, *, steps, record_every, batch_size, bar):
    """All runs of one cell: returns {metric: (runs, slots, ...)} and diverged_at (runs,).

    Runs form *groups*, one per (seed, data grid point), in that order; the
    learning rates of a group share its initial parameters and data (drawn once,
    stored once), so a program maps over groups and, inside, over learning rates.
    Results come back in run order learning rate × seed × data grid point.
    """
    groups = list(itertools.product(seeds, range(len(data_combos))))
    n_groups, n_lrs = len(groups), len(lrs)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray([s for s, _ in groups]))
    lr_values = jnp.asarray(lrs)
    leaves, treedef = jax.tree.flatten(problem)
    field_values = {f: [data_combos[c][j] for _, c in groups] for j, f in enumerate(data_grid)}
    batched_leaves = []
    for name, leaf in zip(data_fields(problem), leaves, strict=True):
        if name in field_values:
            batched_leaves.append(jnp.asarray(field_values[name]))
        else:
            leaf = jnp.asarray(leaf)
            batched_leaves.append(jnp.broadcast_to(leaf, (n_groups, *leaf.shape)))
    problems = jax.tree.unflatten(treedef, batched_leaves)

    full_slots = steps // record_every
    lengths = _chunk_lengths(full_slots)

    # Batch size from memory: per group, its data and parameters once, and per learning
    # rate a run's state and one chunk of records; with headroom.
    def group_shapes():
        p0 = jax.tree.map(lambda x: x[0], problems)
        params, data = sample_run(p0, keys[0])
        state = start_run(factory(lr_values[0]), params)
        _, recs = advance(
            p0,
            factory(lr_values[0]),
            state,
            data,
            records=max(lengths, default=1),
            record_every=record_every,
            total_steps=steps,
        )
        return (params, data), (state, recs)

    shared, per_lr = jax.eval_shape(group_shapes)
    per_group = 4 * (_nbytes(shared) + n_lrs * _nbytes(per_lr)) + 1
    n_dev = jax.local_device_count()
    cap = max(1, batch_size // n_lrs) if batch_size else max(1, int(0.5 * _memory_per_device() * n_dev / per_group))
    size = min(n_groups, cap)
    size = math.ceil(size / n_dev) * n_dev  # equal shards on every device
    n_batches = math.ceil(n_groups / size)

    shard = NamedSharding(Mesh(np.asarray(jax.local_devices()), ("runs",)), PartitionSpec("runs"))
    draw, record = _draw_program(shard), _record_program(shard)
    start, chunk_programs, finish_program = _programs(factory, lengths, record_every, steps, shard)

    outputs = []
    for b in range(n_batches):
        idx = np.minimum(np.arange(b * size, (b + 1) * size), n_groups - 1)  # pad with the last group
        p_b, k_b = jax.tree.map(lambda x, idx=idx: jax.device_put(x[idx], shard), (problems, keys))
        params, data = draw(p_b, k_b)
        state = start(lr_values, params)
        real = min(size, n_groups - b * size) * n_lrs
        chunks = []
        for length in lengths:
            state, recs = chunk_programs[length](p_b, lr_values, state, data)
            chunks.append(jax.tree.map(np.asarray, recs))
            bar.update(real * length * record_every)
        if steps % record_every:  # the last record, then the leftover steps
            state, last = finish_program(p_b, lr_values, state, data)
        else:  # the last record alone: one program for every optimizer
            last = record(p_b, state.params, state.step, state.diverged_at, data)
        chunks.append(jax.tree.map(np.asarray, last))
        bar.update(real * (steps % record_every))
        recs = {k: np.concatenate([ch[k] for ch in chunks], axis=2) for k in chunks[0]}
        recs["diverged_at"] = np.asarray(state.diverged_at)
        outputs.append({k: v[: n_groups - b * size] for k, v in recs.items()})
    result = {}
    for k in outputs[0]:  # (groups, lrs, ...) -> runs in order lr x seed x data grid point
        by_lr = np.swapaxes(np.concatenate([o[k] for o in outputs], axis=0), 0, 1)
        result[k] = by_lr.reshape(n_lrs * n_groups, *by_lr.shape[2:])
    return result


@functools.cache
def _draw_program(shard):
    """Initial parameters and data of a batch of groups; one program per problem shape,
    shared by every optimizer (jit's cache keys it on the problem's static fields)."""

    def draw(problems, keys):
        TRACE_COUNTS["draw"] += 1
        return jax.vmap(sample_run)(problems, keys)

    # It runs once per batch, so its compile time is what counts: on CPU, LLVM at -O1
    # halves it (the random draws' code) and computes the same values.
    options = {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None
    return jax.jit(draw, out_shardings=shard, compiler_options=options)


@functools.cache
def _record_program(shard):
    """The record of a batch of groups × learning rates (one slot); it reads parameters,
    step and divergence, never the optimizer's state, so one program per problem shape
    serves every optimizer."""

    def record(problems, params, step, diverged_at, data):
        TRACE_COUNTS["record"] += 1

        def one(p, params, step, diverged_at, d):
            state = RunState(params=params, opt_state=None, step=step, diverged_at=diverged_at)
            return jax.tree.map(lambda x: x[None], record_metrics(p, state, d))

        over_lrs = jax.vmap(one, in_axes=(None, 0, 0, 0, None))
        return jax.vmap(over_lrs, in_axes=(0, 0, 0, 0, 0))(problems, params, step, diverged_at, data)

    return jax.jit(record, out_shardings=shard)


_PROGRAMS: dict = {}  # cell programs, reused by later sweeps with the same optimizer and lengths


def _programs(factory, lengths, record_every: int, steps: int, shard):
    """A cell's jitted (start, {chunk length: advance}, finish) programs.

    Each maps over groups (sharded) and, inside, over learning rates, with a
    group's problem, parameters and data shared by its learning rates. jit's own
    cache handles problem shapes.
    """
    desc = _describe_factory(factory)
    base = (
        json.dumps(desc, sort_keys=True) if isinstance(desc, dict) else factory,
        record_every,
        steps,
        shard,
    )
    if len(_PROGRAMS) > 256:
        _PROGRAMS.clear()

    def per_group(fn):
        """vmap ``fn(problem, lr, state, data)`` over learning rates, then over groups."""
        over_lrs = jax.vmap(fn, in_axes=(None, 0, 0, None))
        return jax.vmap(over_lrs, in_axes=(0, None, 0, 0))

    if ("start", *base) not in _PROGRAMS:

        def start(lrs, params):
            return jax.vmap(
                jax.vmap(lambda lr, p: start_run(factory(lr), p), in_axes=(0, None)),
                in_axes=(None, 0),
            )(lrs, params)

        def finish_batch(problems, lrs, state, data):
            return per_group(lambda p, lr, s, d: finish(p, factory(lr), s, d, steps=steps, record_every=record_every))(
                problems, lrs, state, data
            )

        _PROGRAMS["start", *base] = jax.jit(start, out_shardings=shard)
        _PROGRAMS["finish", *base] = jax.jit(finish_batch, out_shardings=shard)
    chunks = {}
    for length in set(lengths):
        if ("advance", length, *base) not in _PROGRAMS:

            def advance_batch(problems, lrs, state, data, length=length):
                TRACE_COUNTS["advance"] += 1
                return per_group(
                    lambda p, lr, s, d: advance(
                        p,
                        factory(lr),
                        s,
                        d,
                        records=length,
                        record_every=record_every,
                        total_steps=steps,
                    )
                )(problems, lrs, state, data)

            _PROGRAMS["advance", length, *base] = jax.jit(advance_batch, out_shardings=shard)
        chunks[length] = _PROGRAMS["advance", length, *base]
    return _PROGRAMS["start", *base], chunks, _PROGRAMS["finish", *base]


def _assemble(problem, names, lrs, seeds, static_grid, data_grid, grid_order, steps_at, results, config):
    n_lr, n_seed = len(lrs[names[0]]), len(seeds)
    static_shape = tuple(len(v) for v in static_grid.values())
    data_shape = tuple(len(v) for v in data_grid.values())
    run_shape = (n_lr, n_seed, *data_shape)
    base_dims = ["optimizer", "lr", "seed", *static_grid, *data_grid]
    metric_dims = getattr(type(problem), "metric_dims", {}) or {}

    variables = {}
    for key in results[0]:
        example = results[0][key]
        per_run_extra = example.shape[1:]  # (slots, ...) for metrics, () for diverged_at
        full = np.stack([r[key] for r in results]).reshape(len(names), *static_shape, *run_shape, *per_run_extra)
        # Move static axes after seed: (opt, lr, seed, *static, *data, ...)
        n_static = len(static_shape)
        order = [0, *range(1 + n_static, 3 + n_static), *range(1, 1 + n_static)]
        order += list(range(3 + n_static, full.ndim))
        full = full.transpose(order)
        if key == "diverged_at":
            dims = base_dims
            full = full.astype(np.int32)
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
        "learning_rate": (("optimizer", "lr"), np.asarray([lrs[n] for n in names])),
    }
    for name, values in {**static_grid, **data_grid}.items():
        coords[name] = coordinate_values(values)
    ds = xr.Dataset(variables, coords=coords)
    order = ["optimizer", "lr", "seed", *grid_order, "step"]
    ds = ds.transpose(*order, ...)
    ds.attrs["config"] = json.dumps(config, sort_keys=True)
    ds.attrs["problem"] = type(problem).__name__
    ds.attrs["devices"] = f"{jax.local_device_count()} x {jax.local_devices()[0].device_kind}"
    return ds
