"""Full optimizers (transforms chained with a learning rate) and the by-name registry.

Every optimizer takes ``learning_rate`` as a float, a traced array or an optax
schedule, so a jitted update vmapped over learning rates compiles once.

Each factory returns an :class:`Optimizer`: an ``optax.GradientTransformation``
(``isinstance`` holds, ``optax.chain`` accepts it) that also carries the factory
that built it, its static options and its learning rate. The training engine
(:func:`specdyn.simulate`, :func:`specdyn.sweep`) rebuilds it from
``factory(traced_rate, **options)``, so it compiles once per (problem shapes,
factory, options) and treats the rate as data.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdyn.polar import polar_config
from specdyn.transforms import (
    LAYOUTS,
    SHAPE_SCALINGS,
    bias_corrected_momentum,
    normalize_frobenius,
    scale_by_polar,
    scale_by_shampoo,
    scale_by_shape,
    scale_by_spectral_power,
)

__all__ = [
    "OPTIMIZERS",
    "Optimizer",
    "adam",
    "gd",
    "MUON_CONVENTIONS",
    "get_optimizer",
    "matrix_labels",
    "muon",
    "muon_settings",
    "normalized_gd",
    "optimizer_options",
    "shampoo",
    "sign_gd",
    "spectral_gd",
    "spectral_power",
]


class Optimizer(optax.GradientTransformation):
    """An ``optax.GradientTransformation`` that knows how it was made.

    Attributes (besides ``init`` and ``update``):
      factory: the public factory that built it (e.g. :func:`spectral_gd`);
      options: its keyword options, defaults filled in, as a sorted tuple of
        ``(name, value)`` pairs (hashable when every value is);
      learning_rate: the rate it was built with (float, array or schedule).

    ``optimizer.factory(rate, **dict(optimizer.options))`` rebuilds it at another
    rate; :attr:`recipe` is ``(factory, options)`` when that pair is hashable and
    the rate a number (what the engine compiles for), else None.
    """

    # No __slots__: a NamedTuple subclass with a __dict__ can carry the attributes.

    @property
    def recipe(self):
        if callable(self.learning_rate):  # a schedule: part of the program
            return None
        try:
            hash((self.factory, self.options))
        except TypeError:
            return None
        return (self.factory, self.options)

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
        name = getattr(self.factory, "__name__", repr(self.factory))
        return f"{name}({self.learning_rate!r}{', ' if opts else ''}{opts})"


def check_learning_rate(value, name: str = "learning_rate") -> None:
    """Refuse a concrete rate (a number or an array of numbers) that is not finite and > 0;
    traced rates (the engine's, vmapped over learning rates) and schedules pass."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {name}={value!r}")
    if isinstance(value, numbers.Real):
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {name}={float(value)!r}")
    elif isinstance(value, np.ndarray | jax.Array) and not isinstance(value, jax.core.Tracer):
        rates = np.asarray(value)
        if rates.dtype.kind in "biuf" and not (np.all(np.isfinite(rates)) and np.all(rates > 0)):
            shown = float(rates) if rates.ndim == 0 else rates.tolist()
            raise ValueError(f"{name} must be finite and > 0, got {name}={shown!r}")


def _recognisable(factory):
    """Make ``factory(learning_rate, **options)`` return an :class:`Optimizer`."""
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def build(learning_rate, *args, **options):
        check_learning_rate(learning_rate)
        if options.get("adam_learning_rate") is not None:
            check_learning_rate(options["adam_learning_rate"], "adam_learning_rate")
        tx = factory(learning_rate, *args, **options)
        bound = signature.bind(learning_rate, *args, **options)
        bound.apply_defaults()
        opts = {}
        for key, value in bound.arguments.items():
            if key == "learning_rate":
                continue
            if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                opts.update(value)
            else:
                opts[key] = value
        out = Optimizer(tx.init, tx.update)
        out.factory = build
        out.options = tuple(sorted(opts.items()))
        out.learning_rate = learning_rate
        return out

    return build


def _keep_dtype(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Cast every update back to its gradient's dtype.

    A traced float32 learning rate (a sweep vmapped over lr) would otherwise
    promote bfloat16 updates to float32; multiplying in float32 and casting the
    product is also more accurate than casting lr to bfloat16 first.
    """

    def update_fn(updates, state, params=None):
        new, state = tx.update(updates, state, params)
        return jax.tree.map(lambda u, g: u.astype(jnp.result_type(g)), new, updates), state

    return optax.GradientTransformation(tx.init, update_fn)


@_recognisable
def gd(learning_rate) -> optax.GradientTransformation:
    """Plain gradient descent W ← W − lr·G (= ``optax.sgd``)."""
    return _keep_dtype(optax.sgd(learning_rate))


@_recognisable
def spectral_gd(learning_rate, *, nuclear_scaling: bool = False, **polar_kwargs) -> optax.GradientTransformation:
    """SpecGD: W ← W − lr·U Vᵀ, or W ← W − lr·‖G‖_*·U Vᵀ with ``nuclear_scaling``.

    ``polar_kwargs`` (method, steps, coeffs, rank_tol, compute_dtype, diagnostics)
    go to :func:`specdyn.scale_by_polar`.
    """
    return _keep_dtype(
        optax.chain(
            scale_by_polar(nuclear_scaling=nuclear_scaling, **polar_kwargs),
            optax.scale_by_learning_rate(learning_rate),
        )
    )


@_recognisable
def spectral_power(learning_rate, p: float = 0.5, *, rank_tol: float | None = None) -> optax.GradientTransformation:
    """Spectral powers: W ← W − lr·U Σᵖ Vᵀ (p = 0 SpecGD, p = 1 GD).

    Exact via the SVD (:func:`specdyn.scale_by_spectral_power`): p = 0 is
    :func:`spectral_gd` (rank-aware: singular values ``<= rank_tol * s_max``
    dropped), p = 1 is :func:`gd`, values between interpolate. ``p`` is data (a
    float or a traced scalar): ``jax.vmap(lambda p: spectral_power(lr, p)...)``
    compiles once. In a sweep, the grid key ``"specpow.p"`` (an option axis, see
    :mod:`specdyn.option_axes`) vmaps over p: one compiled program for all values.
    Matrix leaves only.
    """
    return _keep_dtype(
        optax.chain(
            scale_by_spectral_power(p, rank_tol=rank_tol),
            optax.scale_by_learning_rate(learning_rate),
        )
    )


@_recognisable
def normalized_gd(learning_rate) -> optax.GradientTransformation:
    """Normalized GD: W ← W − lr·G/‖G‖_F, per leaf."""
    return _keep_dtype(optax.chain(normalize_frobenius(), optax.scale_by_learning_rate(learning_rate)))


@_recognisable
def sign_gd(learning_rate) -> optax.GradientTransformation:
    """Sign GD: W ← W − lr·sign(G)."""
    return _keep_dtype(optax.chain(optax.scale_by_sign(), optax.scale_by_learning_rate(learning_rate)))


@_recognisable
def adam(learning_rate, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
    """Adam (``optax.adam``), or AdamW when ``weight_decay`` > 0 or traced (a sweep's
    option axis: AdamW at 0 adds exactly 0·W, so it equals Adam)."""
    if isinstance(weight_decay, jax.core.Tracer) or weight_decay:
        return _keep_dtype(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return _keep_dtype(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


@_recognisable
def shampoo(learning_rate, *, exponent: float = 0.25, eps: float = 1e-6, decay: float = 1.0):
    """Full-matrix Shampoo W ← W − lr·L^(-1/4) G R^(-1/4) (see :func:`scale_by_shampoo`)."""
    return _keep_dtype(
        optax.chain(
            scale_by_shampoo(exponent=exponent, eps=eps, decay=decay),
            optax.scale_by_learning_rate(learning_rate),
        )
    )


# What each Muon convention sets (see :func:`muon`): the momentum form, and the defaults of the
# weight layout, the shape scaling and the weight decay of the non-matrix leaves' Adam.
MUON_CONVENTIONS = ("specdyn", "optax")


def muon_settings(convention: str = "specdyn", *, layout: str = "auto", shape_scaling: str = "auto") -> tuple[str, str]:
    """``(layout, shape_scaling)`` that :func:`muon` uses for these options, ``"auto"``
    replaced by the convention's choice."""
    if convention not in MUON_CONVENTIONS:
        raise ValueError(f"unknown Muon convention={convention!r}; choose one of {MUON_CONVENTIONS}")
    if layout == "auto":
        layout = "out_in" if convention == "specdyn" else "in_out"
    if shape_scaling == "auto":
        shape_scaling = "none" if convention == "specdyn" else "keller"
    if layout not in LAYOUTS:
        raise ValueError(f"unknown weight layout={layout!r}; choose one of {('auto', *LAYOUTS)}")
    if shape_scaling not in SHAPE_SCALINGS:
        raise ValueError(f"unknown shape_scaling={shape_scaling!r}; choose one of {('auto', *SHAPE_SCALINGS)}")
    return layout, shape_scaling


@_recognisable
def muon(
    learning_rate,
    *,
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    method: str = "newton_schulz",
    steps: int | None = 5,
    coeffs=None,
    compute_dtype=None,
    convention: str = "specdyn",
    shape_scaling: str = "auto",
    layout: str = "auto",
    adam_learning_rate=None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float | None = None,
) -> optax.GradientTransformation:
    """Muon: momentum, then the (approximate) polar factor, on every matrix leaf.

    Matrix leaves (ndim >= 2, last two axes; leading axes are a stack of matrices):
    W ← W − lr·(s·polar(M) + weight_decay·W), with M the momentum below, polar by
    ``method`` (default: 5 Newton-Schulz steps with Jordan's quintic), s the shape
    factor of ``shape_scaling`` (:func:`specdyn.scale_by_shape`: ``"none"``,
    ``"keller"`` = sqrt(max(1, fan_out/fan_in)) or ``"moonlight"``) read in ``layout``
    (``"out_in"``: a (fan_out, fan_in) weight used as W @ x; ``"in_out"``: a (fan_in,
    fan_out) weight used as x @ W). Other leaves (biases, gains) go to Adam with
    ``adam_learning_rate`` (default ``learning_rate``) and weight decay
    ``adam_weight_decay``.

    ``convention`` picks the momentum form and what ``"auto"`` (``shape_scaling``,
    ``layout``) and None (``adam_weight_decay``) mean:

    * ``"specdyn"`` (default): m ← β m + G and M = G + β m with ``nesterov``, else m
      (``optax.trace``; Jordan's reference code up to a factor, which the polar factor
      ignores); layout ``"out_in"`` (this package's problems, PyTorch and Jordan's code);
      shape scaling ``"none"`` (the pure method, and independent of the layout);
      AdamW with ``adam_weight_decay = weight_decay``.
    * ``"optax"``: ``optax.contrib.muon``'s: the bias-corrected average of
      :func:`specdyn.bias_corrected_momentum` (NAdam's form with ``nesterov``); layout
      ``"in_out"``; shape scaling ``"keller"``; Adam with Nesterov momentum when
      ``nesterov`` (optax passes it on) and ``adam_weight_decay = 0``. So
      ``sd.muon(lr, convention="optax")`` gives ``optax.contrib.muon(lr)``'s updates on
      matrices and vectors (tested on optax 0.2.8; the same in the source of 0.2.5 to
      0.2.8), and with matched options too: ``momentum`` is optax's ``beta``,
      ``adam_eps`` its ``eps``, ``shape_scaling="moonlight"`` its ``consistent_rms=0.2``
      (to float32 round-off: optax adds ``eps`` to ‖M‖_F before Newton-Schulz, specdyn
      divides exactly). One difference stays: optax sends leaves with ndim > 2 to
      Adam, specdyn treats them as stacks of matrices.

    The two conventions' first updates differ by the shape factor alone: on a (16, 64)
    weight used as x @ W, ``optax.contrib.muon`` scales polar(G) by sqrt(64/16) = 2, and
    ``"specdyn"`` by 1 (``shape_scaling="keller"`` there would read the 16 rows as
    fan_out: factor 1 as well). Later updates also differ by the momentum form, and the
    biases by Nesterov Adam. Bad option values raise ValueError naming the option.
    """
    # momentum and weight_decay may be traced (a sweep's option axes vmap over them):
    # concrete values are checked here, traced ones were checked before tracing.
    if not isinstance(momentum, jax.core.Tracer) and not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum=}")
    if not isinstance(weight_decay, jax.core.Tracer) and not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay=}")
    if adam_weight_decay is not None and not isinstance(adam_weight_decay, jax.core.Tracer) and not adam_weight_decay >= 0:
        raise ValueError(f"adam_weight_decay must be >= 0, got {adam_weight_decay=}")
    layout, shape_scaling = muon_settings(convention, layout=layout, shape_scaling=shape_scaling)
    if method == "svd" and steps == 5:
        steps = None  # the default step count means nothing to the exact method
    polar_config(method=method, steps=steps, coeffs=coeffs, compute_dtype=compute_dtype)
    optax_form = convention == "optax"
    if adam_weight_decay is None:
        adam_weight_decay = 0.0 if optax_form else weight_decay
    if optax_form:
        momentum_tx = bias_corrected_momentum(momentum, nesterov=nesterov)
    else:
        momentum_tx = optax.trace(decay=momentum, nesterov=nesterov)
    matrix = optax.chain(
        momentum_tx,
        scale_by_polar(method=method, steps=steps, coeffs=coeffs, compute_dtype=compute_dtype),
        scale_by_shape(shape_scaling, layout=layout),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    other = optax.adamw(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        weight_decay=adam_weight_decay,
        nesterov=bool(nesterov) and optax_form,
    )
    return _keep_dtype(optax.partition({"matrix": matrix, "other": other}, matrix_labels))


def matrix_labels(params):
    """``"matrix"`` for every leaf with ndim >= 2, ``"other"`` for the rest: the labels
    of ``optax.partition`` that route matrices to a spectral transform and biases,
    gains and scalars elsewhere (as :func:`muon` does)."""
    return jax.tree.map(lambda p: "matrix" if jnp.ndim(p) >= 2 else "other", params)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "gd": gd,
    "specgd": spectral_gd,
    "specpow": spectral_power,
    "muon": muon,
    "ngd": normalized_gd,
    "signgd": sign_gd,
    "shampoo": shampoo,
    "adam": adam,
}


def get_optimizer(name: str, learning_rate, **kwargs) -> optax.GradientTransformation:
    """Build a registered optimizer by name: ``get_optimizer("muon", 0.02, momentum=0.9)``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer name={name!r}; choose one of {sorted(OPTIMIZERS)}")
    factory = OPTIMIZERS[name]
    try:
        inspect.signature(factory).bind(learning_rate, **kwargs)
    except TypeError as err:
        params = [p for p in inspect.signature(factory).parameters if p != "learning_rate"]
        raise ValueError(
            f"optimizer {name!r} got bad options {sorted(kwargs)}: {err}; it takes {params}"
        ) from None
    try:
        return factory(learning_rate, **kwargs)
    except TypeError as err:  # e.g. an unknown polar option passed through **kwargs
        raise ValueError(f"optimizer {name!r} got bad options {sorted(kwargs)}: {err}") from None


def optimizer_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options of a registered optimizer, ``**polar_kwargs`` expanded to the
    options of :func:`specdyn.scale_by_polar` it passes them to."""
    options = {}
    for pname, p in inspect.signature(OPTIMIZERS[name]).parameters.items():
        if pname == "learning_rate":
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            if pname == "polar_kwargs":
                for qname, q in inspect.signature(scale_by_polar).parameters.items():
                    options.setdefault(qname, q)
            continue
        options[pname] = p
    return options
