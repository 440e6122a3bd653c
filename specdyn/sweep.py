"""Vectorized sweeps: seeds × learning rates × problem fields as a few compiled programs.

The grid splits in two. *Static* fields (shapes, switches) and the optimizer make
**cells**: one compiled program each. Inside a cell, seeds × learning rates ×
*data* (float) grid fields form one batch of runs that is ``vmap``-ed and
sharded over all local devices along a ``runs`` mesh axis. A batch too large
for memory is split into equal sub-batches that reuse the same program.

Steps run in equal chunks of record slots (one program, called repeatedly), so
a progress bar moves; each finished cell goes to the store at once, and a
re-run with the same store skips it. The run with seed ``s`` uses
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

from specdyn.optimizers import OPTIMIZERS, get_optimizer
from specdyn.problem import data_fields, is_problem, static_fields
from specdyn.results import CellStore, coordinate_values
from specdyn.simulate import advance, check_run_lengths, init_run, record_steps

__all__ = ["TRACE_COUNTS", "sweep"]

# How many times each cell program was traced (= compiled); tests assert on it.
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
            raise ValueError(
                f"learning_rates must have one list per optimizer: missing {missing}, unknown {extra}"
            )
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
            raise ValueError(
                f"grid field {name!r} is not a field of {type(problem).__name__}; fields: {list(fields)}"
            )
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


def _chunking(slots: int) -> tuple[int, int]:
    """(records per chunk, number of chunks): divide evenly when possible."""
    for n in range(min(_TARGET_CHUNKS, slots), 0, -1):
        if slots % n == 0 and (n >= _TARGET_CHUNKS // 2 or n == slots):
            return slots // n, n
    per = math.ceil(slots / _TARGET_CHUNKS)
    return per, math.ceil(slots / per)


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
      batch_size: most runs per program call (default: from device memory).

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
            bar.set_description(f"{name} " + " ".join(f"{k}={v}" for k, v in zip(static_grid, static_values, strict=True)))
            if cell_store is not None and cell_store.has(index):
                results.append(cell_store.load(index))
                bar.update(n_runs * steps)
                continue
            cell_problem = dataclasses.replace(problem, **dict(zip(static_grid, static_values, strict=True)))
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
    """All runs of one cell: returns {metric: (runs, slots, ...)} and diverged_at (runs,)."""
    runs = list(itertools.product(range(len(lrs)), seeds, range(len(data_combos))))
    n_runs = len(runs)
    # Per-run inputs, in the order lr × seed × data combo.
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray([s for _, s, _ in runs]))
    lr_values = jnp.asarray([lrs[i] for i, _, _ in runs])
    leaves, treedef = jax.tree.flatten(problem)
    field_values = {f: [data_combos[c][j] for _, _, c in runs] for j, f in enumerate(data_grid)}
    batched_leaves = []
    for name, leaf in zip(data_fields(problem), leaves, strict=True):
        if name in field_values:
            batched_leaves.append(jnp.asarray(field_values[name]))
        else:
            leaf = jnp.asarray(leaf)
            batched_leaves.append(jnp.broadcast_to(leaf, (n_runs, *leaf.shape)))
    problems = jax.tree.unflatten(treedef, batched_leaves)

    slots = len(record_steps(steps, record_every))
    per_chunk, n_chunks = _chunking(slots)

    # Batch size from memory: state + data + one chunk of records per run, with headroom.
    def one_run_shapes():
        p0 = jax.tree.map(lambda x: x[0], problems)
        state, data = init_run(p0, factory(lr_values[0]), keys[0])
        _, recs = advance(
            p0, factory(lr_values[0]), state, data, records=per_chunk, record_every=record_every, total_steps=steps
        )
        return state, data, recs

    per_run = 4 * _nbytes(jax.eval_shape(one_run_shapes)) + 1
    n_dev = jax.local_device_count()
    cap = batch_size or max(1, int(0.5 * _memory_per_device() * n_dev / per_run))
    size = min(n_runs, cap)
    size = math.ceil(size / n_dev) * n_dev  # equal shards on every device
    n_batches = math.ceil(n_runs / size)

    shard = NamedSharding(Mesh(np.asarray(jax.local_devices()), ("runs",)), PartitionSpec("runs"))
    init_jit, advance_jit = _programs(factory, per_chunk, record_every, steps, shard)

    outputs = []
    for b in range(n_batches):
        idx = np.minimum(np.arange(b * size, (b + 1) * size), n_runs - 1)  # pad with the last run
        p_b, k_b, lr_b = jax.tree.map(lambda x, idx=idx: jax.device_put(x[idx], shard), (problems, keys, lr_values))
        state, data = init_jit(p_b, k_b, lr_b)
        chunks = []
        real = min(size, n_runs - b * size)
        for c in range(n_chunks):
            state, recs = advance_jit(p_b, lr_b, state, data)
            chunks.append(jax.tree.map(np.asarray, recs))
            done = min(steps, (c + 1) * per_chunk * record_every) - min(steps, c * per_chunk * record_every)
            bar.update(real * done)
        recs = {k: np.concatenate([ch[k] for ch in chunks], axis=1)[:real, :slots] for k in chunks[0]}
        recs["diverged_at"] = np.asarray(state.diverged_at)[:real]
        outputs.append(recs)
    return {k: np.concatenate([o[k] for o in outputs], axis=0) for k in outputs[0]}


_PROGRAMS: dict = {}  # cell programs, reused by later sweeps with the same optimizer and lengths


def _programs(factory, per_chunk: int, record_every: int, steps: int, shard):
    """The jitted (init, advance) pair of a cell; jit's own cache handles problem shapes."""
    desc = _describe_factory(factory)
    key = (json.dumps(desc, sort_keys=True) if isinstance(desc, dict) else factory, per_chunk, record_every, steps, shard)
    if key not in _PROGRAMS:

        def init_batch(problems, keys, lrs):
            return jax.vmap(lambda p, k, lr: init_run(p, factory(lr), k))(problems, keys, lrs)

        def advance_batch(problems, lrs, state, data):
            TRACE_COUNTS["advance"] += 1
            return jax.vmap(
                lambda p, lr, s, d: advance(
                    p, factory(lr), s, d, records=per_chunk, record_every=record_every, total_steps=steps
                )
            )(problems, lrs, state, data)

        if len(_PROGRAMS) > 256:
            _PROGRAMS.clear()
        _PROGRAMS[key] = (jax.jit(init_batch, out_shardings=shard), jax.jit(advance_batch, out_shardings=shard))
    return _PROGRAMS[key]


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
        full = np.stack([r[key] for r in results]).reshape(
            len(names), *static_shape, *run_shape, *per_run_extra
        )
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
