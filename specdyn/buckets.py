"""Buckets: runs of several sizes of a field in one compiled program, zero-padded exactly.

A static size field declared ``sd.static(16, pad=True)`` may be *bucketed*: the sizes
of a sweep's grid that go to one bucket (the smallest bucket size that holds them)
run in one cell program, each run zero-padded to the bucket size and vmapped with
the others. The mechanism, in order:

1. **Draw at the true size.** Each run's initial parameters and data come from the
   problem at its true size (one draw program per true shape), so
   ``sd.simulate(problem at that size, key=PRNGKey(seed))`` reproduces the run.
2. **Pad.** Every leaf of params and data is zero-padded at the end of each axis to
   its shape at the bucket size (:func:`pad_tree`).
3. **Run a padded instance** (:func:`specdyn.problem.pad_instance`): the field holds
   the bucket size, :func:`specdyn.problem.true_size` the true size, a data leaf (so
   runs of several sizes vmap). The problem normalises by the true size and gives
   zero gradient in padded blocks; its opt-in says so.
4. **Slice back.** Records whose shape depends on the size are cut to their shape
   at the true size; the Dataset is the one an unbucketed sweep returns.

Optimizers need no true shapes: a zero gradient block stays a zero update block in
GD, sign GD, normalized GD, Adam, Shampoo (its ``eps·I`` on a padded block only
meets zero rows of G), Newton-Schulz and Polar Express, and the SVD's default rank
tolerance counts only rows and columns that are not all zero
(:func:`specdyn.polar.default_rank_tol`). The one shape-dependent option, Muon's
``shape_scaling`` other than ``"none"`` (the default of ``convention="optax"`` is
``"keller"``), and any optimizer not from the registry
(whose math the engine cannot know) run one program per size, as do given
``data=`` and a problem whose ``__can_pad__()`` is False.

``buckets="auto"`` chooses buckets by a cost model (:func:`auto_buckets`): the
sizes of a field, sorted, are split into contiguous buckets minimising

    Σ_buckets  COMPILE_SECONDS + runs · steps · flops(bucket size) / FLOPS_PER_SECOND

with ``flops`` one training step of one run from XLA's cost analysis of the lowered
step (nothing compiled; when even one bucket at the largest size runs in less than a
compile, that is the answer and only the largest size is lowered). Runs per size are
learning rates × seeds × data grid points; each padded field is bucketed on its own,
the other static fields at their first grid value, FLOPs summed over the optimizers.
Constants measured by ``python bench/dimensions.py --small`` on the 2-core x86 CPU
(jaxlib 0.10.2, float32, phase retrieval, GD and SpecGD with Newton-Schulz), shared
with other jobs (load about 5): 7.4 s to compile one cell's training programs, and
2.8e9 FLOP/s for the warm vmapped steps. Load slows both alike; what decides is
their product, about 2e10 FLOPs: the work a compile is worth (bench/RESULTS.md,
"Dimensions in parallel"). The constants are this CPU's: on a GPU, where steps are
far cheaper, the model overrates padded work and buckets less than it could (GPU
constants: to be measured).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from specdyn.optimizers import OPTIMIZERS, muon_settings
from specdyn.problem import pad_instance, padded_fields
from specdyn.simulate import Recipe, RunState, record_metrics, sample_run, start_run, train_steps

__all__ = [
    "COMPILE_SECONDS",
    "FLOPS_PER_SECOND",
    "auto_buckets",
    "can_pad",
    "check_buckets",
    "pad_tree",
    "pads_exactly",
    "resolve_buckets",
    "step_flops",
]

COMPILE_SECONDS = 7.0  # one cell's training programs (start + chunk), 2-core CPU under load
FLOPS_PER_SECOND = 2.8e9  # warm vmapped training steps, same machine and load


def check_buckets(problem, buckets):
    """Validate ``buckets``: None, ``"auto"``, or ``{field: [sizes]}`` (ascending
    positive ints) over fields the problem declares ``pad=True``. Returns None,
    "auto" or ``{field: tuple(sizes)}``; raises ValueError naming key and value."""
    if buckets is None or (isinstance(buckets, str) and buckets == "auto"):
        return buckets
    if not isinstance(buckets, Mapping):
        raise ValueError(f'buckets must be "auto", None or a dict field -> list of sizes, got buckets={buckets!r}')
    out = {}
    name = type(problem).__name__
    for field, sizes in buckets.items():
        if field not in padded_fields(problem):
            raise ValueError(
                f"buckets key {field!r} is not a padded size of {name}; padded fields: "
                f"{list(padded_fields(problem))} (declared sd.static(..., pad=True))"
            )
        if isinstance(sizes, str) and sizes == "auto":
            out[field] = "auto"
            continue
        values = list(sizes) if isinstance(sizes, list | tuple) else [sizes]
        ok = values and all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in values)
        if not ok or sorted(set(values)) != values:
            raise ValueError(
                f"buckets[{field!r}] must be ascending distinct positive integers (or \"auto\"), "
                f"got buckets[{field!r}]={sizes!r}"
            )
        out[field] = tuple(int(v) for v in values)
    return out


def can_pad(problem) -> bool:
    """Whether this instance may run padded (its optional ``__can_pad__()``)."""
    check = getattr(problem, "__can_pad__", None)
    return bool(check()) if check is not None else True


def pads_exactly(recipe: Recipe) -> bool:
    """Whether an optimizer recipe gives a padded run equal to the unpadded one: every
    registry optimizer, except Muon with a shape scaling (it needs the true shape)."""
    if recipe.factory is None or recipe.factory not in OPTIMIZERS.values():
        return False
    if recipe.factory is not OPTIMIZERS["muon"]:
        return True
    options = dict(recipe.options)
    _, scaling = muon_settings(options.get("convention", "specdyn"), shape_scaling=options.get("shape_scaling", "auto"))
    return scaling == "none"


def at_sizes(problem, sizes: dict):
    """``problem`` with static ``sizes`` replaced, without validation (a bucket's shapes)."""
    return pad_instance(problem, sizes, None)


def pad_tree(tree, like):
    """Zero-pad every leaf of ``tree`` at the end of each axis to the shape of the
    matching leaf of ``like`` (shape structs); a leading batch axis of ``tree`` beyond
    ``like``'s rank is kept."""

    def pad(x, target):
        lead = x.ndim - len(target.shape)
        widths = [(0, 0)] * lead + [(0, t - s) for s, t in zip(x.shape[lead:], target.shape, strict=True)]
        if any(w < 0 for _, w in widths):
            raise ValueError(f"cannot pad shape {x.shape} to {target.shape}: a bucket is smaller than a size")
        return jnp.pad(x, widths) if any(w for _, w in widths) else x

    return jax.tree.map(pad, tree, like)


def shapes_of(problem, key=None):
    """Shape structs of ``(params, data)`` of one run of ``problem``."""
    key = jax.random.PRNGKey(0) if key is None else key
    return jax.eval_shape(lambda k: sample_run(problem, k), key)


def record_shapes(problem, key=None):
    """Shape structs of one record (:func:`specdyn.simulate.record_metrics`) of ``problem``."""
    key = jax.random.PRNGKey(0) if key is None else key

    def one(k):
        params, data = sample_run(problem, k)
        state = RunState(params, None, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))
        return record_metrics(problem, state, data)

    return jax.eval_shape(one, key)


def step_flops(problem, recipe: Recipe) -> float:
    """FLOPs of one training step of one run (XLA's cost analysis of the lowered step;
    nothing is compiled; cached per problem and recipe)."""
    try:
        return _step_flops(problem, recipe, bool(jax.config.jax_enable_x64))
    except TypeError:  # an unhashable field value
        return _step_flops.__wrapped__(problem, recipe, bool(jax.config.jax_enable_x64))


@functools.lru_cache(maxsize=256)
def _step_flops(problem, recipe: Recipe, x64: bool) -> float:
    params, data = shapes_of(problem)

    def step(params, data):
        optimizer = recipe.build(jnp.asarray(0.1))
        return train_steps(problem, optimizer, start_run(optimizer, params), data, jax.random.PRNGKey(0), 1)

    cost = jax.jit(step).lower(params, data).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float((cost or {}).get("flops", 0.0))


def auto_buckets(sizes, flops, *, runs: int, steps: int, compile_seconds: float = COMPILE_SECONDS,
                 flops_per_second: float = FLOPS_PER_SECOND) -> tuple[int, ...]:
    """Bucket sizes for ``sizes`` minimising the modelled time (see the module doc):
    contiguous groups of the sorted sizes, each padded to its largest, by dynamic
    programming. ``flops[s]``: one step of one run at size s; ``runs`` per size."""
    sizes = sorted(set(sizes))
    k = len(sizes)
    best = [0.0] + [float("inf")] * k  # best[i]: cheapest split of sizes[:i]
    cut = [0] * (k + 1)
    for i in range(1, k + 1):
        for j in range(i):  # sizes[j:i] in one bucket of size sizes[i-1]
            cost = best[j] + compile_seconds + (i - j) * runs * steps * flops[sizes[i - 1]] / flops_per_second
            if cost < best[i]:
                best[i], cut[i] = cost, j
    out, i = [], k
    while i > 0:
        out.append(sizes[i - 1])
        i = cut[i]
    return tuple(sorted(out))


def resolve_buckets(problem, static_grid: dict, spec, *, recipes, runs: int, steps: int) -> dict:
    """``{field: {size: bucket size}}`` for the padded fields of the static grid
    (empty: one program per size). ``spec`` from :func:`check_buckets`; "auto" uses
    :func:`auto_buckets` on the summed step FLOPs of the paddable ``recipes``
    (other fields at their first grid value)."""
    if spec is None:
        return {}
    fields = [f for f in padded_fields(problem) if f in static_grid]
    fields = [f for f in fields if all(isinstance(v, int) and not isinstance(v, bool) for v in static_grid[f])]
    if spec != "auto":
        fields = [f for f in fields if f in spec]
    recipes = [r for r in recipes if pads_exactly(r)]
    if not recipes:
        return {}
    base = {f: v[0] for f, v in static_grid.items()}
    out = {}
    for field in fields:
        sizes = sorted(set(static_grid[field]))
        rule = "auto" if spec == "auto" else spec[field]
        if rule == "auto":
            if len(sizes) < 2:
                continue
            flops_at = lambda s, field=field: sum(step_flops(at_sizes(problem, {**base, field: s}), r)
                                                  for r in recipes)
            top = flops_at(sizes[-1])
            if len(sizes) * runs * steps * top / FLOPS_PER_SECOND <= COMPILE_SECONDS:
                bounds = (sizes[-1],)  # all padded to the largest cost less than a second compile
            else:
                flops = {s: flops_at(s) for s in sizes[:-1]} | {sizes[-1]: top}
                bounds = auto_buckets(sizes, flops, runs=runs, steps=steps)
        else:
            bounds = rule
            too_big = [s for s in sizes if s > bounds[-1]]
            if too_big:
                raise ValueError(
                    f"buckets[{field!r}]={list(bounds)} holds no bucket for {field}={too_big[0]}: "
                    f"add a bucket >= {max(too_big)}"
                )
        out[field] = {s: next(b for b in bounds if b >= s) for s in sizes}
    return out
