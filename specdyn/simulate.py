"""The pure training core: one ``lax.scan`` over steps, no host round-trip per step.

:func:`simulate` runs one problem with one optimizer. It is built from pure
pieces that :mod:`specdyn.sweep` vmaps and shards:

* :func:`sample_run` — initial parameters and data from a key (no optimizer
  involved), and :func:`start_run` — the optimizer's state at step 0
  (:func:`init_run` is both);
* :func:`advance` — ``records`` record slots, each "record the metrics of the
  current parameters, then take ``record_every`` steps", as one ``lax.scan``;
* :func:`finish` — the last record and the steps left over after the last
  full slot.

A step whose loss is not finite marks the run diverged (``diverged_at`` = that
step); from then on the run stops updating and its records are NaN, so a
diverging run never mixes into averages and never crashes a sweep.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdyn._cpu import blas_threads_limited
from specdyn.problem import is_problem

__all__ = [
    "RunState",
    "advance",
    "finish",
    "init_run",
    "record_metrics",
    "record_steps",
    "sample_run",
    "simulate",
    "start_run",
]


class RunState(NamedTuple):
    """The carry of one training run."""

    params: Any  # the problem's parameter pytree
    opt_state: Any  # the optimizer's state pytree
    step: jax.Array  # shape=(), int32: steps taken (padding steps included)
    diverged_at: jax.Array  # shape=(), int32: first step with a non-finite loss, -1 if none


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


def init_run(problem, optimizer: optax.GradientTransformation, key, data=None, params=None):
    """Initial :class:`RunState` and the data set of one run (see :func:`sample_run`)."""
    params, data = sample_run(problem, key, data, params)
    return start_run(optimizer, params), data


def record_metrics(problem, state: RunState, data) -> dict:
    """The record of a run at its current step: ``loss`` and the problem's metrics of
    ``state.params`` (NaN once the run has diverged). Reads ``params``, ``step`` and
    ``diverged_at`` only, never the optimizer's state."""
    out = dict(problem.metrics(state.params, data))
    if "loss" not in out:
        out = {"loss": problem.loss(state.params, data), **out}
    dead = (state.diverged_at >= 0) & (state.step >= state.diverged_at)

    def blank(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        return jnp.where(dead, jnp.full_like(x, jnp.nan), x)

    return {k: blank(v) for k, v in out.items()}


def advance(problem, optimizer, state: RunState, data, *, records: int, record_every: int, total_steps: int):
    """Run ``records`` slots of (record, then ``record_every`` steps) as one scan.

    Steps at or past ``total_steps`` are no-ops (padding for equal-sized chunks).
    Returns the new state and a dict of records stacked along axis 0.
    """

    def one_step(state: RunState, _):
        loss, grads = jax.value_and_grad(problem.loss)(state.params, data)
        live = (state.diverged_at < 0) & (state.step < total_steps)
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
        ), None

    def one_slot(state: RunState, _):
        record = record_metrics(problem, state, data)
        state, _ = jax.lax.scan(one_step, state, None, length=record_every)
        return state, record

    return jax.lax.scan(one_slot, state, None, length=records)


def record_steps(steps: int, record_every: int) -> np.ndarray:
    """Steps at which parameters are recorded: 0, r, 2r, ... up to ``steps``."""
    return np.arange(0, steps + 1, record_every)


def check_run_lengths(steps, record_every) -> None:
    for name, value in (("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def finish(problem, optimizer, state: RunState, data, *, steps: int, record_every: int):
    """The last record of a run, then its remaining ``steps % record_every`` steps.

    A run of ``steps`` steps is ``steps // record_every`` slots of :func:`advance`
    followed by this: no padded steps are computed. Returns the final state and
    the last record (a dict of arrays with a leading axis of length 1).
    """
    rest = steps % record_every
    if rest:
        return advance(problem, optimizer, state, data, records=1, record_every=rest, total_steps=steps)
    return state, jax.tree.map(lambda x: x[None], record_metrics(problem, state, data))


def _simulate(problem, key, data, params, *, optimizer, steps, record_every):
    state, data = init_run(problem, optimizer, key, data, params)
    state, records = advance(
        problem, optimizer, state, data, records=steps // record_every, record_every=record_every, total_steps=steps
    )
    state, last = finish(problem, optimizer, state, data, steps=steps, record_every=record_every)
    records = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), records, last)
    return state, records


_simulate_jit = jax.jit(_simulate, static_argnames=("optimizer", "steps", "record_every"))


def simulate(problem, optimizer, *, key, steps: int, record_every: int = 1, data=None, params=None) -> dict:
    """Train ``problem`` with ``optimizer`` for ``steps`` steps in one jitted scan.

    Args:
      problem: an ``@sd.problem`` instance.
      optimizer: an ``optax.GradientTransformation`` (e.g. ``sd.spectral_gd(0.1)``).
      key: a PRNG key, split into (init key, data key).
      steps: number of optimizer steps.
      record_every: record every r steps.
      data: a data dict replacing ``problem.sample(data key)`` (to run on given arrays).
      params: initial parameters replacing ``problem.init(init key)``.

    Returns:
      dict of arrays: ``step`` (steps 0, r, 2r, ... <= steps), ``loss`` and the
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
    with blas_threads_limited():
        state, records = jax.block_until_ready(
            _simulate_jit(problem, key, data, params, optimizer=optimizer, steps=int(steps), record_every=int(record_every))
        )
    out = {"step": jnp.asarray(record_steps(steps, record_every))}
    out.update(records)
    out["diverged_at"] = state.diverged_at
    out["params"] = state.params
    return out
