"""Layerwise spectral criterion: nr(G) against st(A) for every weight matrix of a model.

For a block W of a network whose output is y = W a (or a W) for incoming
activations A (features × samples) and loss gradient G, a spectral step beats
GD's guaranteed decrease exactly when nr(G) = ‖G‖_*²/‖G‖_F² ≥ st(A) = ‖A‖_F²/‖A‖_2²
(PAPERS.md §3). :func:`layerwise_criterion` reports both sides, and their ratio
nr/st (> 1: the spectral step is favoured), for every matrix parameter of any
JAX model — plain dict-of-arrays MLPs, equinox modules, transformers — without
the model having to expose its activations.

How the incoming activations are found: the loss is traced to a jaxpr and
re-evaluated by a small interpreter that watches every ``dot_general`` (the
primitive behind ``@``, ``jnp.dot``, ``jnp.einsum``, ``eqx.nn.Linear``). When one
operand is a parameter matrix (possibly transposed or cast), the other operand is
that matrix's incoming activation: its contracted axis is the feature axis, all
its other axes (batch, tokens, heads…) are samples, so it is reshaped to
features × (everything else). A matrix used by several matmuls along the same
axis (weight sharing) gets the concatenation of their activations, which is
exact: G = Σ_k D_k A_kᵀ = [D_1 D_2 …][A_1 A_2 …]ᵀ. Calls to ``jax.jit`` functions,
``custom_jvp`` / ``custom_vjp`` functions and ``jax.checkpoint`` are looked into.

Conventions and limits (stable_rank and ratio are NaN where there is no answer):

* only leaves with ndim == 2 are reported (vectors, gains and biases are skipped,
  and so are stacked weights with ndim > 2, e.g. layers stacked for ``lax.scan``);
* an embedding table is gathered, not multiplied: it has no incoming activation
  matrix here (its implicit input is one-hot, of stable rank = number of distinct
  tokens in the batch), so its stable rank is NaN; likewise a learned positional
  embedding that is only added;
* a matrix used inside ``lax.scan`` / ``while`` / ``cond`` bodies is not seen
  (NaN), nor one multiplied along both of its axes (tied input/output use);
* the activation is "the other operand as written": in (W₂ W₁) x the activation
  of W₂ is W₁, in W₂ (W₁ x) it is W₁ x.

The gradient is ``jax.grad`` of the loss itself, so nr(G) is exact whatever the
interpreter sees. Everything is traceable: the functions work under ``jax.jit``
and inside a problem's ``metrics`` (see :func:`layerwise_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from specdyn._compile import jit
from specdyn.diagnostics import nuclear_rank, stable_rank

__all__ = [
    "incoming_activations",
    "layerwise_criterion",
    "layerwise_metrics",
    "matrix_paths",
]

# call-like primitives whose sub-jaxpr takes exactly the equation's inputs
_CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "remat", "checkpoint")
# primitives that keep a parameter matrix "the same matrix" (axes possibly permuted)
_SAME = ("convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier")


def _is_float_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.inexact)


def _split(tree):
    """(float array leaves, rebuild(leaves) -> tree) with every other leaf held fixed."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    where = [i for i, leaf in enumerate(leaves) if _is_float_array(leaf)]

    def rebuild(arrays):
        full = list(leaves)
        for i, a in zip(where, arrays, strict=True):
            full[i] = a
        return jax.tree_util.tree_unflatten(treedef, full)

    return [leaves[i] for i in where], rebuild


def matrix_paths(params) -> list[str]:
    """``jax.tree_util.keystr`` paths of the matrix leaves (ndim == 2), in tree order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [jax.tree_util.keystr(p) for p, leaf in flat if _is_float_array(leaf) and leaf.ndim == 2]


def _sub_jaxpr(eqn):
    if eqn.primitive.name not in _CALLS:
        return None
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(sub, jcore.ClosedJaxpr):
        jaxpr, consts = sub.jaxpr, sub.consts
    elif isinstance(sub, jcore.Jaxpr):
        jaxpr, consts = sub, []
    else:
        return None
    if len(jaxpr.invars) != len(eqn.invars):
        return None
    return jaxpr, consts


def _capture(eqn, invals, tags, found):
    """Record the incoming activation if a dot_general multiplies a tagged parameter."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    for side in (0, 1):
        tag = tags[side]
        if tag is None:
            continue
        leaf, perm = tag
        mine, other = (lc, rc) if side == 0 else (rc, lc)
        batch = lb if side == 0 else rb
        if len(mine) != 1 or batch:
            continue
        x = invals[1 - side]
        axis = other[0]
        a = jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
        found.setdefault((leaf, perm[mine[0]]), []).append(jax.lax.stop_gradient(a))


def _run(jaxpr, consts, args, arg_tags, found):
    """Evaluate ``jaxpr``; ``arg_tags[i]`` = (leaf index, axis permutation) or None."""
    env, tags = {}, {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def tag_of(v):
        return None if isinstance(v, jcore.Literal) else tags.get(v)

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a, t in zip(jaxpr.invars, args, arg_tags, strict=True):
        env[v] = a
        if t is not None:
            tags[v] = t

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        intags = [tag_of(v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            outvals = _run(sub[0], sub[1], invals, intags, found)
        else:
            if name == "dot_general" and any(t is not None for t in intags):
                _capture(eqn, invals, intags, found)
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            if intags and intags[0] is not None and len(eqn.outvars) == 1:
                leaf, perm = intags[0]
                if name in _SAME:
                    tags[eqn.outvars[0]] = (leaf, perm)
                elif name == "transpose":
                    tags[eqn.outvars[0]] = (leaf, tuple(perm[p] for p in eqn.params["permutation"]))
        for v, val in zip(eqn.outvars, outvals, strict=True):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def _flat_loss(loss_fn, params, args, kwargs):
    """The loss as a function of (parameter arrays, argument arrays), those arrays, and
    the key paths of the parameter arrays (non-array leaves are held fixed)."""
    p_arrays, p_rebuild = _split(params)
    a_arrays, a_rebuild = _split((args, kwargs))
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    paths = [jax.tree_util.keystr(p) for p, leaf in flat if _is_float_array(leaf)]

    def flat_loss(p, a):
        fargs, fkwargs = a_rebuild(a)
        return loss_fn(p_rebuild(p), *fargs, **fkwargs)

    return flat_loss, p_arrays, a_arrays, paths


def incoming_activations(loss_fn: Callable[..., Any], params, *args, **kwargs) -> dict[str, jax.Array]:
    """Incoming activation A (features × samples) of every matrix of ``params``.

    ``loss_fn(params, *args, **kwargs)`` is traced once; a matrix not multiplied by
    a ``dot_general`` (see the module docstring) is absent from the result.
    """
    flat_loss, p_arrays, a_arrays, paths = _flat_loss(loss_fn, params, args, kwargs)

    return jit(lambda p, a: _activations(flat_loss, p, a, paths))(p_arrays, a_arrays)


def _activations(flat_loss, p_arrays, a_arrays, paths):
    closed = jax.make_jaxpr(flat_loss)(p_arrays, a_arrays)
    arg_tags = [(i, (0, 1)) if x.ndim == 2 else None for i, x in enumerate(p_arrays)]
    arg_tags += [None] * len(a_arrays)
    found: dict = {}
    _run(closed.jaxpr, closed.consts, [*p_arrays, *a_arrays], arg_tags, found)
    out = {}
    for i, path in enumerate(paths):
        uses = {axis: mats for (leaf, axis), mats in found.items() if leaf == i}
        if len(uses) == 1:
            (mats,) = uses.values()
            out[path] = mats[0] if len(mats) == 1 else jnp.concatenate(mats, axis=1)
    return out


def layerwise_criterion(loss_fn: Callable[..., Any], params, *args, **kwargs) -> dict[str, dict]:
    """nr(G), st(A) and nr/st for every matrix parameter, at ``params``.

    Args:
      loss_fn: ``loss_fn(params, *args, **kwargs) -> scalar`` (e.g. ``problem.loss``,
        or ``lambda p, x, y: loss(apply(p, x), y)``).
      params: any pytree (dicts, equinox modules); its float array leaves with
        ndim == 2 are reported, other leaves are held fixed.
      *args, **kwargs: the loss's other arguments (inputs, targets, data dict).

    Returns:
      ``{path: {"nuclear_rank": nr(G), "stable_rank": st(A), "ratio": nr/st}}`` with
      ``path = jax.tree_util.keystr(...)`` of the leaf and scalar arrays as values;
      ``stable_rank`` and ``ratio`` are NaN for a matrix with no incoming activation
      (an embedding table; see the module docstring).

    Under a transformation, pass ``params`` as you would to ``jax.grad``: an
    equinox module holding non-array fields goes through ``eqx.filter_jit``.
    """
    flat_loss, p_arrays, a_arrays, paths = _flat_loss(loss_fn, params, args, kwargs)

    @jit  # one program (inlined when called under an outer jit)
    def compute(p, a):
        grads = jax.grad(flat_loss)(p, a)
        acts = _activations(flat_loss, p, a, paths)
        out = {}
        for key, g in zip(paths, grads, strict=True):
            if g.ndim != 2:
                continue
            nr = nuclear_rank(g)
            st = stable_rank(acts[key]) if key in acts else jnp.full((), jnp.nan, nr.dtype)
            out[key] = {"nuclear_rank": nr, "stable_rank": st, "ratio": nr / st}
        return out

    crit = compute(p_arrays, a_arrays)
    return {k: crit[k] for k in paths if k in crit}  # tree order (jit returns sorted keys)


def layerwise_metrics(loss_fn: Callable[..., Any], params, *args, **kwargs) -> dict[str, jax.Array]:
    """:func:`layerwise_criterion` as fixed-shape arrays, for a problem's ``metrics``.

    Returns ``{"nuclear_rank": (L,), "stable_rank": (L,), "criterion_ratio": (L,)}``
    with the L matrices in the order of :func:`matrix_paths` (declare
    ``metric_dims = {"nuclear_rank": ("layer",), ...}`` on the problem).
    """
    crit = layerwise_criterion(loss_fn, params, *args, **kwargs)
    stack = lambda k: jnp.stack([v[k] for v in crit.values()])
    return {
        "nuclear_rank": stack("nuclear_rank"),
        "stable_rank": stack("stable_rank"),
        "criterion_ratio": stack("ratio"),
    }
