"""The training engine: one pure core and the few compiled programs every run goes through.

A run is *segments*: "record the metrics of the current parameters (or not),
then take n steps". The host plans them (:func:`plan`) and hands them to the
programs as data, so one compiled program serves every step count and record
interval. The pure pieces:

* :func:`sample_run` — initial parameters and data from a key (no optimizer
  involved), :func:`start_run` — the optimizer's state at step 0;
* :func:`train_steps` — a traced number of steps (``lax.fori_loop``);
* :func:`run_segments` — a scan over segments (record, then steps).

The programs (:func:`run_groups`) map over *groups* (one per seed and data
point: a group's initial parameters and data are drawn once) and, inside a
group, over learning rates; ``sd.simulate`` is a sweep of one (one group, one
rate) through the same programs, and :mod:`specdyn.sweep` calls them with many.
They are compiled once per (problem shapes, optimizer recipe): the learning
rate, seed, data fields of the problem, step count and record interval are data;
on CPU with LLVM at -O1 (:mod:`specdyn._compile`).

An optimizer built by a specdyn factory (:class:`specdyn.optimizers.Optimizer`)
is compiled per ``(factory, options)`` with its rate traced; any other optax
transformation is compiled per object (as ``jax.jit`` does with a static
argument), so build it once and reuse it.

A step whose loss is not finite marks the run diverged (``diverged_at`` = that
step); from then on the run stops updating and its records are NaN, so a
diverging run never mixes into averages and never crashes a sweep.

Stochastic minibatches: a problem may define ``batch(self, data, key) -> data``;
each step then computes its gradient on ``problem.batch(data, fold_in(key, step))``
with ``key`` the run's key (``PRNGKey(seed)`` in a sweep; runs of one seed share
their batches across learning rates and optimizers). Records use the full ``data``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdyn._compile import jit
from specdyn._cpu import blas_threads_limited, warn_if_unguarded
from specdyn.optimizers import Optimizer
from specdyn.problem import is_problem, static_fields
from specdyn.telemetry import Telemetry, as_telemetry, record_telemetry, telemetry_leaves

__all__ = [
    "SEGMENTS",
    "Recipe",
    "RunState",
    "check_memory",
    "check_run_lengths",
    "check_telemetry",
    "group_bytes",
    "memory_available",
    "plan",
    "recipe_of",
    "record_metrics",
    "record_steps",
    "run_groups",
    "run_segments",
    "sample_run",
    "simulate",
    "start_run",
    "train_steps",
]

SEGMENTS = 32  # segments per program call: records beyond it cost another call, never a compile
_CALL_SECONDS = 0.5  # target duration of one program call (an interrupt waits for the current one)
_FIRST_CALL_STEPS = 64  # steps of the first call, before the speed is known


class RunState(NamedTuple):
    """The carry of one training run."""

    params: Any  # the problem's parameter pytree
    opt_state: Any  # the optimizer's state pytree
    step: jax.Array  # shape=(), int32: steps taken
    diverged_at: jax.Array  # shape=(), int32: first step with a non-finite loss, -1 if none


class Recipe(NamedTuple):
    """How the programs build an optimizer from a (traced) learning rate; hashable.

    ``factory(rate, **dict(options))``; for a transformation that cannot be rebuilt,
    ``factory`` is None and ``fixed`` is the transformation itself (compiled per object).
    ``rate`` may also be a dict ``{"learning_rate": rate, option: value, ...}``: traced
    option values (a sweep's data option axes) that override ``options``.
    """

    factory: Callable | None
    options: tuple
    fixed: Any = None

    def build(self, rate) -> optax.GradientTransformation:
        if self.factory is None:
            return self.fixed
        if isinstance(rate, dict):
            rate = dict(rate)
            return self.factory(rate.pop("learning_rate"), **{**dict(self.options), **rate})
        return self.factory(rate, **dict(self.options))


def recipe_of(optimizer: optax.GradientTransformation) -> tuple[Recipe, Any]:
    """``(recipe, rate)`` of an optimizer: a specdyn :class:`Optimizer` with a numeric
    rate and hashable options is rebuilt from its factory (rate traced); anything else
    is used as is (rate NaN, unused)."""
    if isinstance(optimizer, Optimizer) and optimizer.recipe is not None:
        factory, options = optimizer.recipe
        return Recipe(factory, options), optimizer.learning_rate
    return Recipe(None, (), optimizer), float("nan")


def sample_run(problem, key, data=None, params=None):
    """Initial parameters and the data set of one run: ``(params, data)``.

    The key is split into (init key, data key); ``data`` given explicitly replaces
    ``problem.sample`` and ``params`` replaces ``problem.init``. Nothing here
    depends on the optimizer, so a sweep draws them once for all its optimizers
    and learning rates.
    """
    init_key, data_key = jax.random.split(key)
    if data is None:
        data = problem.sample(data_key)
    if params is None:
        params = problem.init(init_key)
    return params, data


def start_run(optimizer: optax.GradientTransformation, params) -> RunState:
    """The :class:`RunState` of a run at step 0 from its initial parameters."""
    return RunState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        diverged_at=jnp.full((), -1, jnp.int32),
    )


def check_telemetry(telemetry) -> Telemetry | None:
    """``telemetry`` as a :class:`specdyn.telemetry.Telemetry` (None: off; an int k:
    ``Telemetry(top_k=k)``); anything else raises ValueError naming it."""
    return as_telemetry(telemetry)


def record_metrics(problem, state: RunState, data, telemetry: Telemetry | None = None, optimizer=None,
                   key=None) -> dict:
    """The record of a run at its current step: ``loss`` and the problem's metrics of
    ``state.params`` (NaN once the run has diverged). Without telemetry it reads
    ``params``, ``step`` and ``diverged_at`` only, never the optimizer's state.

    With a :class:`specdyn.telemetry.Telemetry` it also records
    :func:`specdyn.telemetry.record_telemetry` of the state: singular-value summaries
    of weights, full-data gradient, the optimizer's polar input and update (the
    ``optimizer``'s update evaluated and discarded; a problem's minibatch from
    ``key`` as in :func:`train_steps`). Off (None), nothing of it is traced or compiled."""
    out = dict(problem.metrics(state.params, data))
    if "loss" not in out:
        out = {"loss": problem.loss(state.params, data), **out}
    if telemetry is not None:
        batch = getattr(problem, "batch", None)
        step_data = data if batch is None else batch(data, jax.random.fold_in(key, state.step))
        out.update(record_telemetry(problem, optimizer, state.params, state.opt_state, data, step_data, telemetry))
    dead = (state.diverged_at >= 0) & (state.step >= state.diverged_at)

    def blank(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        return jnp.where(dead, jnp.full_like(x, jnp.nan), x)

    return {k: blank(v) for k, v in out.items()}


def train_steps(problem, optimizer, state: RunState, data, key, count) -> RunState:
    """``count`` (a traced int) optimizer steps, as a ``lax.fori_loop``.

    A problem with a ``batch(data, key)`` method gets its gradient on
    ``problem.batch(data, jax.random.fold_in(key, step))``.
    """
    batch = getattr(problem, "batch", None)

    def one_step(_, state: RunState) -> RunState:
        d = data if batch is None else batch(data, jax.random.fold_in(key, state.step))
        loss, grads = jax.value_and_grad(problem.loss)(state.params, d)
        live = state.diverged_at < 0
        finite = jnp.isfinite(loss)
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        take = live & finite
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(take, n, o), new, old)
        return RunState(
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            step=state.step + 1,
            diverged_at=jnp.where(live & ~finite, state.step, state.diverged_at),
        )

    return jax.lax.fori_loop(0, count, one_step, state)


def run_segments(problem, optimizer, state: RunState, data, key, record, count, telemetry=None):
    """Scan over segments: record (where ``record[i]``; zeros elsewhere), then
    ``count[i]`` steps. ``record`` (bool) and ``count`` (int32) are arrays of one
    length, shared by every run of a batch, so a skipped record is a real branch.
    ``telemetry``: see :func:`record_metrics`.
    Returns the new state and the records stacked along axis 0."""
    take = lambda s: record_metrics(problem, s, data, telemetry, optimizer, key)
    shapes = jax.eval_shape(take, state)
    skip = lambda s: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    def one(state, segment):
        flag, n = segment
        rec = jax.lax.cond(flag, take, skip, state)
        return train_steps(problem, optimizer, state, data, key, n), rec

    return jax.lax.scan(one, state, (record, count))


def record_steps(steps: int, record_every: int) -> np.ndarray:
    """Steps at which parameters are recorded: 0, r, 2r, ... and always ``steps`` itself."""
    at = np.arange(0, steps + 1, record_every)
    return at if at[-1] == steps else np.append(at, steps)


MAX_STEPS = int(np.iinfo(np.int32).max)  # a run counts its steps in int32 (RunState.step)


def record_count(steps: int, record_every: int) -> int:
    """``len(record_steps(steps, record_every))``, without making the array."""
    return steps // record_every + 1 + (steps % record_every != 0)


def check_run_lengths(steps, record_every) -> None:
    for name, value in (("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    if steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS} (a run counts its steps in int32), got steps={steps!r}")
    if record_every > steps:
        raise ValueError(
            f"record_every must be <= steps (records at 0, record_every, ..., and at steps), "
            f"got record_every={int(record_every)} > steps={int(steps)}"
        )


def plan(steps: int, record_every: int, *, budget: int | None = None, segments: int = SEGMENTS,
         start: int = 0) -> list:
    """The program calls of a run: a list of ``(record, count)`` arrays of length ``segments``
    (:func:`plan_calls` as a list)."""
    return list(plan_calls(steps, record_every, budget=budget, segments=segments, start=start))


def _record_points(steps: int, record_every: int, start: int):
    """``(step, record?)`` where segments start, from ``start``: ``start`` itself (recorded
    when it is a record step), then each record step after it."""
    yield start, start % record_every == 0 or start == steps
    t = (start // record_every + 1) * record_every
    while t < steps:
        yield t, True
        t += record_every
    if start < steps:
        yield steps, True


def _pieces(steps: int, record_every: int, budget: int | None, start: int):
    """``(record?, steps)`` of each segment: the interval after each record point, split
    into pieces of at most ``budget`` steps; the last record point takes no step."""
    points = _record_points(steps, record_every, start)
    t, flag = next(points)
    for following in itertools.chain(points, [None]):
        left = 0 if following is None else following[0] - t
        while True:
            n = left if budget is None else min(left, budget)
            yield flag, n
            flag, left = False, left - n
            if left <= 0:
                break
        if following is not None:
            t, flag = following


def plan_calls(steps: int, record_every: int, *, budget: int | None = None, segments: int = SEGMENTS,
               start: int = 0):
    """The program calls of a run, one at a time: ``(record, count)`` arrays of length ``segments``.

    Records at :func:`record_steps`; ``budget`` (steps per call, for a moving progress
    bar and short calls) splits long intervals and ends a call once it would exceed the
    budget. Unused segments at the end of a call record nothing and take no step.
    ``start``: the calls of the rest of a run whose first ``start`` steps are taken (and
    whose records before step ``start`` are made). Calls are made as they are taken, so
    the cost of planning is that of the calls a run makes, whatever its length.
    """

    def padded(call):
        call = call + [(False, 0)] * (segments - len(call))
        return np.asarray([f for f, _ in call], bool), np.asarray([n for _, n in call], np.int32)

    current, used = [], 0
    for flag, n in _pieces(steps, record_every, budget, start):
        if current and (len(current) == segments or (budget is not None and used + n > budget)):
            yield padded(current)
            current, used = [], 0
        current.append((flag, n))
        used += n
    yield padded(current)


# ------------------------------------------------------------------ memory

_WORKING = 4  # headroom: gradients, updates and temporaries of a step, as a multiple of the estimate


def memory_available() -> float:
    """Bytes one device can hold: its allocator's limit, or on CPU the host's memory
    shared by its local devices."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"])
    return host_memory() / jax.local_device_count()


def host_memory() -> float:
    """Bytes of the host's memory (8 GB when the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return float(8 << 30)


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _spec(tree):
    leaves, treedef = jax.tree.flatten(tree)
    dtype = lambda x: x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
    return treedef, tuple((tuple(np.shape(x)), np.dtype(dtype(x))) for x in leaves)


@functools.lru_cache(maxsize=256)
def _group_shapes(problem_spec, key_spec, data_spec, params_spec, recipe: Recipe, x64: bool, telemetry):
    rebuild = lambda spec: jax.tree.unflatten(spec[0], [jax.ShapeDtypeStruct(s, d) for s, d in spec[1]])

    def shapes(problem, key, data, params):
        params, data = sample_run(problem, key, data, params)
        optimizer = recipe.build(jnp.asarray(1.0))
        state = start_run(optimizer, params)
        return params, data, state.opt_state, record_metrics(problem, state, data, telemetry, optimizer, key)

    return jax.eval_shape(shapes, *(rebuild(s) for s in (problem_spec, key_spec, data_spec, params_spec)))


def group_bytes(problem, recipe: Recipe, rates: int, *, key=None, data=None, params=None,
                telemetry: Telemetry | None = None) -> dict[str, int]:
    """Device bytes of one group of ``rates`` runs (one program call), from ``jax.eval_shape``
    (nothing is allocated): ``params`` and ``optimizer state`` of every run, the group's
    ``data`` and initial parameters once, ``records`` of one call (:data:`SEGMENTS`
    records per run), and ``total`` = their sum times a working-memory headroom."""
    key = jax.random.PRNGKey(0) if key is None else key
    params0, data0, opt, recs = _group_shapes(
        _spec(problem), _spec(key), _spec(data), _spec(params), recipe, bool(jax.config.jax_enable_x64), telemetry
    )
    parts = {
        "params": (rates + 1) * _nbytes(params0),
        "data": _nbytes(data0),
        "optimizer state": rates * _nbytes(opt),
        "records": rates * SEGMENTS * _nbytes(recs),
    }
    return {**parts, "total": _WORKING * sum(parts.values()) + 1}


def record_bytes(problem, recipe: Recipe, *, key=None, data=None, params=None,
                 telemetry: Telemetry | None = None) -> int:
    """Host bytes of one record of one run (its loss, metrics and telemetry at one step),
    from ``jax.eval_shape`` as in :func:`group_bytes`."""
    key = jax.random.PRNGKey(0) if key is None else key
    *_, recs = _group_shapes(
        _spec(problem), _spec(key), _spec(data), _spec(params), recipe, bool(jax.config.jax_enable_x64), telemetry
    )
    return _nbytes(recs)


_HOST_COPIES = 2  # the records of a run are kept as they come, then copied into its result


def check_records(nbytes: int, *, runs: int, steps: int, record_every: int, available: float | None = None) -> None:
    """Refuse (ValueError naming ``steps`` and ``record_every``) runs whose records cannot
    fit the host's memory: ``nbytes``, the bytes of every record of the ``runs`` runs
    (:func:`record_count` records of :func:`record_bytes` each), are kept as they come,
    then copied once into the result."""
    available = host_memory() if available is None else available
    need = _HOST_COPIES * nbytes
    if need <= available:
        return
    count = record_count(steps, record_every)
    what = "one run" if runs == 1 else f"{runs} runs"
    raise ValueError(
        f"steps={steps} with record_every={record_every} makes {count} records per run: the records of {what} "
        f"need {_gb(need)} of host memory ({_gb(nbytes / (runs * count))} per record and run, kept, then copied "
        f"into the result), the host has {_gb(available)}; record less often (a larger record_every) or run "
        f"fewer steps"
    )


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{int(n)} B"


def check_memory(problem, estimate: dict[str, int], *, runs: int = 1, available: float | None = None,
                 bucket: dict | None = None) -> None:
    """Refuse (ValueError) a group of ``runs`` runs (the learning rates of one seed) that
    cannot fit one device, naming the problem's static fields and the estimate (from
    :func:`group_bytes`) against the device's memory. ``bucket`` ({field: bucket size}):
    the runs are zero-padded to it (:mod:`specdyn.buckets`; ``estimate`` is then at the
    bucket sizes), named beside the problem's true sizes."""
    available = memory_available() if available is None else available
    if estimate["total"] <= available:
        return
    cls = type(problem)
    fields = {f: getattr(problem, f) for f in static_fields(problem)}
    defaults = {f.name: f.default for f in getattr(cls, "__dataclass_fields__", {}).values()}
    shown = {f: v for f, v in fields.items() if defaults.get(f) != v} or fields
    parts = ", ".join(f"{k} {_gb(v)}" for k, v in estimate.items() if k != "total")
    where = ", ".join(f"{k}={v}" for k, v in shown.items()) or cls.__name__
    if bucket:
        where += " padded to its bucket " + ", ".join(f"{k}={v}" for k, v in bucket.items())
    what = f"one run of {cls.__name__}" if runs == 1 else f"one group of {runs} runs of {cls.__name__} (one seed)"
    raise ValueError(
        f"{where}: {what} needs {_gb(estimate['total'])} ({parts}, times {_WORKING} "
        f"for a step's working memory), the device has {_gb(available)}; use smaller static fields"
        + (" or smaller buckets (buckets=None: one program per size)" if bucket else "")
    )


# ------------------------------------------------------------------ the programs
#
# Batched over groups (axis 0, sharded along ``shard``) and, inside a group, over
# learning rates (axis 1). jit's own cache keys them on (shapes, recipe, shard).


@functools.cache
def _draw_program():
    """Initial parameters and data of a batch of groups; one program per problem shape,
    shared by every optimizer."""

    def draw(problems, keys, data, params, shard):
        out = jax.vmap(sample_run)(problems, keys, data, params)
        return jax.lax.with_sharding_constraint(out, shard)

    return jit(draw, static_argnames="shard")


@functools.partial(jit, static_argnames=("recipe", "shard"))
def _start_program(rates, params, *, recipe, shard):
    one = lambda rate, p: start_run(recipe.build(rate), p)
    out = jax.vmap(jax.vmap(one, in_axes=(0, None)))(rates, params)
    return jax.lax.with_sharding_constraint(out, shard)


@functools.partial(jit, static_argnames=("recipe", "shard", "telemetry"))
def _chunk_program(problems, rates, state, data, keys, record, count, *, recipe, shard, telemetry=None):
    def one(problem, rate, state, data, key):
        return run_segments(problem, recipe.build(rate), state, data, key, record, count, telemetry)

    over_rates = jax.vmap(one, in_axes=(None, 0, 0, None, None))
    out = jax.vmap(over_rates)(problems, rates, state, data, keys)
    return jax.lax.with_sharding_constraint(out, shard)


def _rule_program(rule):
    return jit(jax.vmap(lambda p, d: jnp.asarray(rule(p, d))))


_rule_programs = functools.lru_cache(maxsize=64)(_rule_program)


def group_rates(rule, multipliers, problems, data) -> jax.Array:
    """Learning rates ``multipliers × rule(problem, data)`` of a batch of groups: (groups, rates)."""
    base = _rule_programs(rule)(problems, data)
    return base[:, None] * jax.device_put(np.asarray(multipliers, float))[None, :]


def single_device():
    """A sharding that keeps everything on the first local device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    return NamedSharding(Mesh(np.asarray(jax.local_devices()[:1]), ("runs",)), PartitionSpec("runs"))


def run_groups(
    problems,
    keys,
    recipe: Recipe,
    rates,
    *,
    steps: int,
    record_every: int,
    data=None,
    params=None,
    rule=None,
    shard=None,
    budget: int | None = None,
    on_call: Callable[[int], None] | None = None,
    telemetry: Telemetry | None = None,
    options: dict | None = None,
):
    """Train a batch of groups × learning rates through the cached programs.

    Args:
      problems: a problem whose data leaves have a leading groups axis.
      keys: (groups,) PRNG keys: each group's run key.
      recipe: the optimizer's :class:`Recipe`.
      rates: (rates,) learning rates shared by every group, (groups, rates) per group,
        or, with ``rule``, multipliers of ``rule(problem, data)`` per group.
      data, params: given data / initial parameters with a leading groups axis (or None).
      shard: the sharding of the groups axis (default: one device).
      budget: most steps per program call (see :func:`plan`); calls are also kept to about
        half a second of work, so that SIGINT stops a run within seconds; ``on_call(steps)``
        after each call.
      telemetry: None, or a :class:`specdyn.telemetry.Telemetry`: also record spectral
        telemetry (:func:`record_metrics`); a static option of the chunk program.
      options: ``{option: (rates,) values}``: optimizer options traced beside the
        learning rates, one value per entry of ``rates`` (a sweep's data option axes;
        see :meth:`Recipe.build`).

    Returns ``(records, state, rates)``: records ``{metric: (groups, rates, R, ...)}``
    as numpy arrays at :func:`record_steps`, the final :class:`RunState` (batched) and
    the (groups, rates) learning rates used.
    """
    # One OpenBLAS thread on few-core CPUs while the programs run (see specdyn/_cpu.py);
    # every record is read back to the host inside, so the work is done on exit.
    with blas_threads_limited():
        shard = single_device() if shard is None else shard
        put = lambda tree: jax.tree.map(lambda x: jax.device_put(x, shard), tree)
        problems, keys, data, params = put((problems, keys, data, params))
        params, data = _draw_program()(problems, keys, data, params, shard=shard)
        n_groups = keys.shape[0]
        if rule is not None:
            rates = group_rates(rule, rates, problems, data)
        elif np.ndim(rates) == 2:  # (groups, rates) given per group
            pass
        else:
            rates = np.broadcast_to(np.asarray(rates, float), (n_groups, len(rates)))
        rates = jax.device_put(rates, shard)
        hyper = rates
        if options:
            widen = lambda v: jax.device_put(np.broadcast_to(np.asarray(v, float), rates.shape), shard)
            hyper = {"learning_rate": rates, **{k: widen(v) for k, v in options.items()}}
        state = _start_program(hyper, params, recipe=recipe, shard=shard)
        kept, done = [], 0
        # Calls are kept short (about _CALL_SECONDS of work) so that an interrupt (SIGINT,
        # raised between calls) stops a run within seconds: the steps per call start
        # small and follow the measured speed, never above ``budget``.
        size = min(budget or steps, _FIRST_CALL_STEPS)
        calls = plan_calls(steps, record_every, budget=size)
        call = next(calls)
        while call is not None:
            record, count = call
            began = time.perf_counter()
            state, recs = _chunk_program(
                problems, hyper, state, data, keys, record, count, recipe=recipe, shard=shard, telemetry=telemetry
            )
            if record.any():
                kept.append({k: np.asarray(v)[:, :, record] for k, v in recs.items()})
            jax.block_until_ready(state.step)
            took, n = time.perf_counter() - began, int(count.sum())
            done += n
            if on_call is not None:
                on_call(n)
            call = next(calls, None)
            if call is not None and n >= size:  # a full call: fit the next ones to the measured speed
                fit = int(n * _CALL_SECONDS / max(took, 1e-6))
                new = max(1, min(budget or steps, 4 * size, max(size // 4, fit)))
                if new != size:
                    size, calls = new, plan_calls(steps, record_every, budget=new, start=done)
                    call = next(calls)
        records = {k: np.concatenate([c[k] for c in kept], axis=2) for k in kept[0]}
        return records, state, rates


def _traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _run_traced(problem, optimizer, key, data, params, steps, record_every, telemetry=None):
    """The same run as pure traced code, for ``simulate`` called under jit or vmap."""
    params, data = sample_run(problem, key, data, params)
    state = start_run(optimizer, params)
    (record, count), *rest = plan(steps, record_every, segments=len(record_steps(steps, record_every)))
    assert not rest
    state, recs = run_segments(problem, optimizer, state, data, key, jnp.asarray(record), jnp.asarray(count), telemetry)
    return state, recs


def _leading(tree):
    """Add a leading axis of length 1 to every leaf (numbers become strong-typed arrays)."""
    return jax.tree.map(lambda x: x[None] if isinstance(x, jax.Array) else jax.device_put(np.asarray(x)[None]), tree)


def _check_key(key):
    """A run's PRNG key: a raw key (``jax.random.PRNGKey(seed)``, or a traced one), or an int
    seed, which becomes ``jax.random.PRNGKey(seed)``; anything else is refused (ValueError)."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        if not -(2**63) <= int(key) < 2**64:
            raise ValueError(f"key must be a PRNG key or an int seed that fits 64 bits, got key={key!r}")
        return jax.random.PRNGKey(int(key))
    if isinstance(key, jax.core.Tracer):
        return key
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise ValueError(
            f"key must be a raw PRNG key (jax.random.PRNGKey(seed)) or an int seed, got a typed key of dtype "
            f"{dtype}; pass jax.random.key_data(key)"
        )
    if not (dtype == np.uint32 and np.ndim(key) == 1):
        shown = f"an array of shape {np.shape(key)} and dtype {dtype}" if dtype is not None else repr(key)
        raise ValueError(f"key must be a PRNG key (jax.random.PRNGKey(seed)) or an int seed, got key={shown}")
    return key


def simulate(
    problem, optimizer, *, key, steps: int, record_every: int = 1, data=None, params=None, telemetry=None
) -> dict:
    """Train ``problem`` with ``optimizer`` for ``steps`` steps: a sweep of one run.

    The run goes through the engine's cached programs: after a first call, another
    learning rate, seed, data field value, step count or record interval, or a new
    optimizer object from the same specdyn factory and options, compiles nothing.
    A plain optax transformation (not built by a specdyn factory, or with a schedule
    as its rate) is compiled per object, as ``jax.jit`` would: build it once.
    Called under ``jax.jit``/``jax.vmap`` (traced arguments), it runs as pure traced code.
    A run that cannot fit the device's memory is refused before it starts (ValueError
    with the estimate of :func:`group_bytes`); SIGINT stops a run within about a second.

    Args:
      problem: an ``@sd.problem`` instance.
      optimizer: an ``optax.GradientTransformation`` (e.g. ``sd.spectral_gd(0.1)``).
      key: a PRNG key, split into (init key, data key); minibatches (a problem's
        ``batch`` method) use ``fold_in(key, step)``. An int ``seed`` stands for
        ``jax.random.PRNGKey(seed)`` (the key a sweep gives its runs of that seed); a
        typed key (``jax.random.key``) is refused: pass ``jax.random.key_data(key)``.
      steps: number of optimizer steps (at most 2**31 - 1). Runs whose records cannot
        fit the host's memory are refused before they start (ValueError naming
        ``steps`` and ``record_every``).
      record_every: record every r steps (and always at the last step); r <= steps.
      data: a data dict replacing ``problem.sample(data key)`` (to run on given arrays).
      params: initial parameters replacing ``problem.init(init key)``.
      telemetry: None (default: off, nothing extra compiled), an int k (the same as
        ``sd.Telemetry(top_k=k)``) or an ``sd.Telemetry``: also record, per matrix of
        the parameters, singular-value summaries of the weights, the full-data
        gradient, the optimizer's polar input and its update, and the polar step's
        errors (:mod:`specdyn.telemetry`): ``"weights_sv"`` of shape (records, leaf, k),
        ``"weights_quantile"`` (records, leaf, quantile), ``"weights_stable_rank"`` and
        ``"weights_nuclear_rank"`` (records, leaf), likewise ``grads_*``,
        ``polar_input_*``, ``update_*``, and ``"polar_orthogonality_error"``,
        ``"polar_distance"`` (records, leaf); ``"leaf"`` holds the leaf names in order
        (:func:`specdyn.telemetry.telemetry_leaves`; not under jit).

    Returns:
      dict of arrays: ``step`` (0, r, 2r, ... and ``steps``), ``loss`` and the
      problem's metrics for the parameters at those steps (before that step's
      update), ``diverged_at`` (first step with a non-finite loss, -1 if none;
      records from then on are NaN) and ``params`` (the final parameters).
    """
    if not is_problem(problem):
        raise ValueError(f"problem must be an @sd.problem instance, got {problem!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer must be an optax.GradientTransformation (e.g. sd.get_optimizer('gd', 0.1)), got {optimizer!r}"
        )
    check_run_lengths(steps, record_every)
    telemetry = check_telemetry(telemetry)
    key = _check_key(key)
    warn_if_unguarded()
    steps, record_every = int(steps), int(record_every)
    recipe, rate = recipe_of(optimizer)
    if not _traced((problem, key, data, params, rate)):
        check_memory(problem, group_bytes(problem, recipe, 1, key=key, data=data, params=params, telemetry=telemetry))
        per_record = record_bytes(problem, recipe, key=key, data=data, params=params, telemetry=telemetry)
        check_records(record_count(steps, record_every) * per_record, runs=1, steps=steps, record_every=record_every)
    out = {"step": jax.device_put(record_steps(steps, record_every).astype(np.int32))}
    if _traced((problem, key, data, params, rate)):
        state, records = _run_traced(problem, optimizer, key, data, params, steps, record_every, telemetry)
        out.update(records)
        out["diverged_at"] = state.diverged_at
        out["params"] = state.params
        return out  # no "leaf" names under jit (strings are not JAX values): sd.telemetry_leaves(params)
    records, state, _ = run_groups(
        _leading(problem),
        _leading(key),
        recipe,
        [rate],
        steps=steps,
        record_every=record_every,
        data=None if data is None else _leading(data),
        params=None if params is None else _leading(params),
        telemetry=telemetry,
    )
    out.update({k: jax.device_put(v[0, 0]) for k, v in records.items()})
    first = lambda tree: jax.tree.map(lambda x: x[0, 0], tree)
    out["diverged_at"] = first(state.diverged_at)
    out["params"] = first(state.params)
    if telemetry is not None:
        out["leaf"] = np.asarray(telemetry_leaves(out["params"]), dtype=str)
    return out
