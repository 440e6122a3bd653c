"""Spectral telemetry: singular-value summaries of every matrix leaf at record steps.

Opt-in (``telemetry=`` on :func:`specdyn.simulate` and :func:`specdyn.sweep`,
``[telemetry]`` in sweep files); off (None), nothing of it is traced or compiled.
A :class:`Telemetry` says what to record; at each record step, for every matrix
of the parameters (a leaf with ndim >= 2; a stacked leaf ``(..., m, n)`` gives one
entry per matrix, named ``"['W'][i]"``), it summarises the singular values of

* ``weights`` — the parameters;
* ``grads`` — the full-data gradient at them;
* ``polar_input`` — what the optimizer's polar step receives (the gradient for
  SpecGD, Nesterov momentum ``G + βm`` for Muon, its bias-corrected form with
  ``convention="optax"``); NaN for an optimizer without a
  polar step (GD, Adam, Shampoo, spectral powers) and for leaves it routes elsewhere;
* ``update`` — the update the step applies (``optax`` sign: ``-lr · direction``).

The polar input and the update come from the optimizer's ``update`` evaluated on
the recorded state and discarded (the trajectory is unchanged); a problem with a
``batch`` method gets that step's minibatch gradient, as the step itself does. The
polar step is observed through :func:`specdyn.transforms.polar_tap`, so every
optimizer built on :func:`specdyn.scale_by_polar` has it.

Each summary of a category ``c`` is a record variable with named dims:
``c_sv`` (leaf, sv) the top ``top_k`` singular values, descending, NaN past
min(m, n); ``c_quantile`` (leaf, quantile) the chosen quantiles of all min(m, n)
singular values (linear interpolation, ``jnp.quantile``); ``c_stable_rank`` (leaf)
‖A‖_F²/‖A‖_2² and ``c_nuclear_rank`` (leaf) ‖A‖_*²/‖A‖_F².

With ``polar_error``, for the polar output Q of input X and the exact factor
Q⋆ = polar_svd(X) (rank-aware: singular values ``<= max(m, n) · eps · s_max``
dropped): ``polar_orthogonality_error`` (leaf) = ‖QᵀQ − Q⋆ᵀQ⋆‖_F on the smaller
side (QᵀQ when m >= n, else QQᵀ), which is ‖QᵀQ − I‖_F when X has full rank and
does not charge the exact factor for X's null space otherwise; and
``polar_distance`` (leaf) = ‖Q − Q⋆‖_F. Both are ≈ 0 (rounding) for the exact
method, NaN without a polar step.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from specdyn.diagnostics import safe_divide
from specdyn.polar import polar_config, polar_with_config
from specdyn.transforms import polar_tap

__all__ = ["CATEGORIES", "Telemetry", "as_telemetry", "record_telemetry", "telemetry_coords", "telemetry_dims",
           "telemetry_leaves"]

CATEGORIES = ("weights", "grads", "polar_input", "update")


@dataclasses.dataclass(frozen=True)
class Telemetry:
    """What spectral telemetry records (hashable: a static option of the compiled programs).

    Args:
      top_k: the number k >= 1 of largest singular values kept per matrix.
      quantiles: quantile levels in [0, 1] of each matrix's singular values (any
        order; stored sorted, without repeats); ``()`` for none.
      of: the categories summarised, among ``"weights"``, ``"grads"``,
        ``"polar_input"``, ``"update"``.
      polar_error: also record the polar output's orthogonality error and its
        distance to the exact polar factor of the same input.
    """

    top_k: int = 4
    quantiles: tuple = ()
    of: tuple = CATEGORIES
    polar_error: bool = True

    def __post_init__(self):
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"Telemetry top_k must be an int >= 1 (singular values kept per matrix), got top_k={k!r}")
        q = self.quantiles
        if isinstance(q, str) or not isinstance(q, list | tuple | np.ndarray):
            raise ValueError(f"Telemetry quantiles must be a list of levels in [0, 1], got quantiles={q!r}")
        for v in q:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"Telemetry quantiles must lie in [0, 1], got {v!r} in quantiles={list(q)!r}")
        of = (self.of,) if isinstance(self.of, str) else self.of
        if not isinstance(of, list | tuple) or not of:
            raise ValueError(f"Telemetry of must name at least one of {CATEGORIES}, got of={self.of!r}")
        for c in of:
            if c not in CATEGORIES:
                raise ValueError(f"Telemetry of: unknown category {c!r} in of={self.of!r}; choose from {CATEGORIES}")
        if not isinstance(self.polar_error, bool):
            raise ValueError(f"Telemetry polar_error must be true or false, got polar_error={self.polar_error!r}")
        object.__setattr__(self, "top_k", int(k))
        object.__setattr__(self, "quantiles", tuple(sorted({float(v) for v in q})))
        object.__setattr__(self, "of", tuple(c for c in CATEGORIES if c in of))

    def as_config(self) -> dict:
        """Plain JSON values (a sweep's config and its store fingerprint)."""
        return {"top_k": self.top_k, "quantiles": list(self.quantiles), "of": list(self.of),
                "polar_error": self.polar_error}


def as_telemetry(telemetry) -> Telemetry | None:
    """``telemetry`` as given to simulate/sweep: None (off), an int k (``Telemetry(top_k=k)``)
    or a :class:`Telemetry`; anything else is refused naming it."""
    if telemetry is None or isinstance(telemetry, Telemetry):
        return telemetry
    if isinstance(telemetry, bool) or not isinstance(telemetry, numbers.Integral) or telemetry < 1:
        raise ValueError(
            "telemetry must be None (off), the number of top singular values to record (an int >= 1) "
            f"or an sd.Telemetry(...), got telemetry={telemetry!r}"
        )
    return Telemetry(top_k=int(telemetry))


def _matrices(tree) -> dict[str, jax.Array]:
    """``{keystr(path): leaf}`` of the leaves with ndim >= 2, in tree order."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat if jnp.ndim(x) >= 2}


def telemetry_leaves(params) -> list[str]:
    """Names of the matrices telemetry records, in order (the ``leaf`` coordinate):
    ``keystr`` of each leaf with ndim >= 2, with ``[i]``... per matrix of a stacked leaf."""
    names = []
    for name, x in _matrices(params).items():
        lead = tuple(np.shape(x)[:-2])
        names += [name + "".join(f"[{i}]" for i in idx) for idx in np.ndindex(*lead)] if lead else [name]
    return names


def telemetry_dims(spec: Telemetry | None) -> dict[str, tuple[str, ...]]:
    """The named dims (after ``step``) of every variable telemetry records."""
    if spec is None:
        return {}
    out = {}
    for c in spec.of:
        out[f"{c}_sv"] = ("leaf", "sv")
        if spec.quantiles:
            out[f"{c}_quantile"] = ("leaf", "quantile")
        out[f"{c}_stable_rank"] = ("leaf",)
        out[f"{c}_nuclear_rank"] = ("leaf",)
    if spec.polar_error:
        out["polar_orthogonality_error"] = ("leaf",)
        out["polar_distance"] = ("leaf",)
    return out


def telemetry_coords(spec: Telemetry | None, params) -> dict:
    """Coordinates of the telemetry dims: ``leaf`` names, ``sv`` = 1..k (rank order),
    ``quantile`` levels."""
    if spec is None:
        return {}
    out = {"leaf": np.asarray(telemetry_leaves(params), dtype=str), "sv": np.arange(1, spec.top_k + 1)}
    if spec.quantiles:
        out["quantile"] = np.asarray(spec.quantiles, float)
    return out


def _stack(x) -> jax.Array:
    """A matrix leaf as (count, m, n), in a dtype LAPACK takes (no half precision)."""
    x = jnp.asarray(x)
    x = x.astype(jnp.float32) if jnp.finfo(x.dtype).bits < 32 else x
    return x.reshape(-1, *x.shape[-2:])


def _summaries(x, spec: Telemetry) -> dict[str, jax.Array]:
    s = jnp.linalg.svd(_stack(x), compute_uv=False)  # (count, min(m, n)), descending
    k = spec.top_k
    top = s[:, :k]
    out = {"sv": jnp.pad(top, [(0, 0), (0, k - top.shape[1])], constant_values=jnp.nan)}
    if spec.quantiles:
        out["quantile"] = jnp.quantile(s, jnp.asarray(spec.quantiles, s.dtype), axis=-1).T
    squares = jnp.sum(jnp.square(s), axis=-1)
    out["stable_rank"] = safe_divide(squares, jnp.square(s[:, 0]))
    out["nuclear_rank"] = safe_divide(jnp.square(jnp.sum(s, axis=-1)), squares)
    return out


def _polar_errors(x, q) -> tuple[jax.Array, jax.Array]:
    """(‖QᵀQ − Q⋆ᵀQ⋆‖_F on the smaller side, ‖Q − Q⋆‖_F) per matrix, Q⋆ the exact factor of x."""
    x, q = _stack(x), _stack(q).astype(_stack(x).dtype)
    exact = polar_with_config(x, polar_config(method="svd"))
    if x.shape[-2] < x.shape[-1]:
        q, exact = jnp.swapaxes(q, -1, -2), jnp.swapaxes(exact, -1, -2)
    gram = lambda a: jnp.matmul(jnp.swapaxes(a, -1, -2), a)
    norm = lambda a: jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1)))
    return norm(gram(q) - gram(exact)), norm(q - exact)


def record_telemetry(problem, optimizer, params, opt_state, data, step_data, spec: Telemetry) -> dict:
    """The telemetry record of one state (see the module doc): ``{variable: array}``
    with leading dims as in :func:`telemetry_dims` (leaf first).

    ``data`` is the full data set (for ``grads``), ``step_data`` what the step's
    gradient uses (the minibatch, or ``data``); ``optimizer.update`` is evaluated on
    ``(params, opt_state)`` and its result discarded."""
    leaves = _matrices(params)
    sizes = {name: math.prod(x.shape[:-2]) for name, x in leaves.items()}
    trees = {}
    if "weights" in spec.of:
        trees["weights"] = _matrices(params)
    if "grads" in spec.of:
        trees["grads"] = _matrices(jax.grad(problem.loss)(params, data))
    taps = []
    if "polar_input" in spec.of or "update" in spec.of or spec.polar_error:
        grads = jax.grad(problem.loss)(params, step_data)
        with polar_tap() as taps:
            updates, _ = optimizer.update(grads, opt_state, params)
        trees["update"] = _matrices(updates)
    inputs, outputs = ({}, {}) if not taps else (_matrices(taps[0][0]), _matrices(taps[0][1]))
    trees["polar_input"] = inputs
    dtype = jnp.result_type(*[_stack(x).dtype for x in leaves.values()]) if leaves else jnp.float32
    blank = lambda n, *shape: jnp.full((n, *shape), jnp.nan, dtype)

    # One batched SVD per leaf for all its categories (they share its shape): fewer
    # library calls and sorts to compile than one per (leaf, category).
    parts = {}  # (category, summary) -> per-leaf arrays
    for name, n in sizes.items():
        have = [c for c in spec.of if trees[c].get(name) is not None]
        if have:
            stacked = _summaries(jnp.concatenate([_stack(trees[c][name]).astype(dtype) for c in have]), spec)
        for c in spec.of:
            if c in have:
                i = have.index(c)
                got = {k: v[i * n:(i + 1) * n] for k, v in stacked.items()}
            else:
                got = {"sv": blank(n, spec.top_k), "stable_rank": blank(n), "nuclear_rank": blank(n)}
                if spec.quantiles:
                    got["quantile"] = blank(n, len(spec.quantiles))
            for k, v in got.items():
                parts.setdefault((c, k), []).append(v.astype(dtype))
    out = {f"{c}_{k}": jnp.concatenate(v) for (c, k), v in parts.items()}
    if spec.polar_error:
        errors = []
        for name, n in sizes.items():
            if name in inputs and name in outputs:
                errors.append(_polar_errors(inputs[name], outputs[name]))
            else:
                errors.append((blank(n), blank(n)))
        if errors:
            out["polar_orthogonality_error"] = jnp.concatenate([e[0].astype(dtype) for e in errors])
            out["polar_distance"] = jnp.concatenate([e[1].astype(dtype) for e in errors])
    return out
