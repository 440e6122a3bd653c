"""Network experiments of PAPERS.md §3 (when spectral updates help): three studies.

1. :func:`init_stable_ranks` — stable rank of post-activation matrices at Gaussian
   init (ReLU, ReLU², tanh, GELU, SwiGLU, and every matrix's input in a
   transformer block) against width, with the closed-form limit
   :func:`stable_rank_limit`.
2. :func:`sparse_regression` — y = x₁x₂x₃ fitted by a bias-free ReLU² network
   d → 4d → 4d → 4d → 1 with per-layer step n/‖A_{ℓ−1}‖² (GD on every layer, or
   spectral steps on the middle layers).
3. :func:`char_lm` — a small causal transformer language model on the Python
   standard library's source, Muon vs AdamW, logging every block's nr(G) and
   st(A) with :func:`specdyn.layerwise.layerwise_criterion`.

Each returns an ``xarray.Dataset``; the ``*_figure`` functions take it and return a
matplotlib Figure. ``python -m specdyn.experiments.networks {activations,sparse,lm}
[--full] [--out DIR]`` runs one and writes ``<name>.nc`` and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import xarray as xr
from scipy import integrate, stats

from specdyn._compile import jit
from specdyn.diagnostics import frobenius_norm, stable_rank
from specdyn.layerwise import incoming_activations
from specdyn.optimizers import muon
from specdyn.plot import legend_outside, save_figure
from specdyn.problem import require
from specdyn.problems.activations import ACTIVATIONS
from specdyn.problems.char_lm import (
    CharLM,
    CharTransformer,
    TransformerBlock,
    block_matrix_name,
    char_lm_data,
    lm_label,
)
from specdyn.problems.sparse_regression import (
    LAYERS,
    SparseRegression,
    network_loss,
    per_layer_rule,
    relu2_forward,
)
from specdyn.simulate import simulate
from specdyn.sweep import sweep

__all__ = [
    "ACTIVATIONS",
    "CharTransformer",
    "TransformerBlock",
    "char_lm",
    "char_lm_figure",
    "init_stable_rank_figure",
    "init_stable_ranks",
    "main",
    "python_stdlib_text",
    "sparse_regression",
    "sparse_regression_curvature",
    "sparse_regression_figure",
    "sparse_regression_loss",
    "sparse_regression_setup",
    "stable_rank_limit",
]

# ---------------------------------------------------------------------------
# 1. stable rank of post-activations at Gaussian init

# ACTIVATIONS: name -> (activation, number of pre-activations it takes), from specdyn.problems.activations

_SCALAR = {
    "relu": lambda g: np.maximum(g, 0.0),
    "relu2": lambda g: np.maximum(g, 0.0) ** 2,
    "tanh": np.tanh,
    "gelu": lambda g: g * stats.norm.cdf(g),
}


def stable_rank_limit(activation: str) -> float:
    """Large-width limit of st(σ(V X)) for Gaussian V, X: E[σ(g)²] / (E σ(g))², g ~ N(0, 1).

    With V ~ N(0, 1/d) the pre-activations are standard Gaussians, and σ(VX) is its
    mean μ·11ᵀ (operator norm² μ²·mn) plus a part whose operator norm² is
    O(mn/width); ‖σ(VX)‖_F² ≈ mn·E σ². So st → E σ²/μ²: π for ReLU, 6 for ReLU²,
    and ∞ (st grows with width) for odd or zero-mean activations (tanh, SwiGLU).
    """
    require(activation in ACTIVATIONS, "activation", activation, f"be one of {sorted(ACTIVATIONS)}")
    if activation not in _SCALAR:  # SwiGLU: silu(g₁)·g₂ with g₂ independent, mean 0
        return math.inf
    f = _SCALAR[activation]
    pdf = stats.norm.pdf
    m1 = integrate.quad(lambda g: f(g) * pdf(g), -np.inf, np.inf)[0]
    m2 = integrate.quad(lambda g: f(g) ** 2 * pdf(g), -np.inf, np.inf)[0]
    return math.inf if abs(m1) < 1e-12 else m2 / m1**2


@functools.partial(jit, static_argnums=(0, 2, 3))
def _post_activation_stable_ranks(activations, key, width, samples):
    """st(σ(V X)) for each activation, V ∈ R^{width×width} ~ N(0, 1/width), X ~ N(0, 1)."""
    out = []
    for i, activation in enumerate(activations):
        fn, arity = ACTIVATIONS[activation]
        kx, *kv = jax.random.split(jax.random.fold_in(key, i), 1 + arity)
        x = jax.random.normal(kx, (width, samples))
        pre = [jax.random.normal(k, (width, width)) / jnp.sqrt(width) @ x for k in kv]
        out.append(stable_rank(fn(*pre)))
    return jnp.stack(out)


def _build(cls, key, **kwargs):
    """``cls(**kwargs, key=key)`` built in one compiled program (eager initialisation
    compiles every random op of every layer separately, which is slow on CPU)."""
    return eqx.filter_jit(lambda k: cls(**kwargs, key=k))(key)


_block_name = block_matrix_name


_BLOCK_MATRICES = ("W_Q", "W_K", "W_V", "W_O", "mlp_in", "mlp_out")


@functools.partial(jit, static_argnums=(1, 2))
def _block_stable_ranks(key, width, samples):
    """st of each matrix's input in a :class:`TransformerBlock` at init (Gaussian tokens)."""
    kb, kx = jax.random.split(key)
    blk = TransformerBlock(width, max(1, width // 32), key=kb)
    x = jax.random.normal(kx, (samples, width))
    acts = incoming_activations(lambda b, x: jnp.mean(b(x) ** 2), blk, x)
    by_name = {_block_name(p): a for p, a in acts.items()}
    return jnp.stack([stable_rank(by_name[name]) for name in _BLOCK_MATRICES])


def init_stable_ranks(
    widths=(64, 128, 256, 512),
    seeds: int = 3,
    activations=tuple(ACTIVATIONS),
    *,
    sample_ratio: float = 2.0,
) -> xr.Dataset:
    """Stable rank of post-activations at Gaussian init against width.

    MLP: A = σ(V X) with V ∈ R^{width×d} ~ N(0, 1/d), X ∈ R^{d×n} ~ N(0, 1), d = width,
    n = sample_ratio·width (SwiGLU: silu(V₁X) ⊙ V₂X). Transformer block
    (:class:`TransformerBlock`, equinox default init, width/32 heads) on one sequence
    of n Gaussian token vectors: st of every matrix's incoming activation.

    Returns a Dataset with ``stable_rank(activation, width, seed)``,
    ``limit(activation)`` (:func:`stable_rank_limit`) and
    ``block_stable_rank(matrix, width, seed)``.
    """
    require(len(widths) > 0 and all(int(w) >= 8 for w in widths), "widths", widths,
            "be a non-empty list of integers >= 8")
    require(int(seeds) >= 1, "seeds", seeds, "be >= 1")
    for a in activations:
        require(a in ACTIVATIONS, "activations", activations, f"contain only {sorted(ACTIVATIONS)}")
    activations = tuple(activations)
    st = np.zeros((len(activations), len(widths), seeds))
    names = list(_BLOCK_MATRICES)
    block = np.zeros((len(names), len(widths), seeds))
    for j, width in enumerate(widths):
        n = int(round(sample_ratio * width))
        keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), width) for s in range(seeds)])
        # all seeds of a width in one compiled, vmapped call
        st[:, j, :] = np.asarray(jit(jax.vmap(
            lambda k, n=n, width=width: _post_activation_stable_ranks(activations, k, width, n)))(keys)).T
        block[:, j, :] = np.asarray(jit(jax.vmap(
            lambda k, n=n, width=width: _block_stable_ranks(jax.random.fold_in(k, 99), width, n)))(keys)).T
    return xr.Dataset(
        {
            "stable_rank": (("activation", "width", "seed"), st),
            "limit": (("activation",), [stable_rank_limit(a) for a in activations]),
            "block_stable_rank": (("matrix", "width", "seed"), block),
        },
        coords={"activation": list(activations), "width": list(widths), "seed": np.arange(seeds),
                "matrix": names},
        attrs={"sample_ratio": sample_ratio},
    )


def init_stable_rank_figure(ds: xr.Dataset) -> plt.Figure:
    """Left: MLP post-activation st vs width (mean ± range over seeds, dashed: limits);
    right: st of each transformer-block matrix's input vs width."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    w = ds.width.values
    for k, act in enumerate(ds.activation.values):
        da = ds.stable_rank.sel(activation=act)
        line, = axes[0].plot(w, da.mean("seed"), "o-", label=str(act), color=f"C{k}")
        axes[0].fill_between(w, da.min("seed"), da.max("seed"), alpha=0.2, color=line.get_color())
        lim = float(ds.limit.sel(activation=act))
        if np.isfinite(lim):
            axes[0].axhline(lim, ls="--", lw=0.8, color=line.get_color())
    for name in ds.matrix.values:
        axes[1].plot(w, ds.block_stable_rank.sel(matrix=name).mean("seed"), "o-", label=str(name))
    for ax, title in zip(axes, ["MLP post-activation (dashed: E σ²/(E σ)²)",
                                "transformer block, input of each matrix"]):
        ax.set(xscale="log", yscale="log", xlabel="width", ylabel="stable rank st(A)", title=title)
        legend_outside(ax, where="below")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 2. sparse regression y = x1 x2 x3 with a ReLU² network


RULES = {"gd": (), "spectral_middle": (1, 2)}  # rule -> layers (0-based) with spectral steps


def sparse_regression_setup(dim: int, samples: int, test_samples: int, seed: int):
    """Training and test sets (x ~ N(0, I_d), y = x₁x₂x₃) and the initial weights of
    :func:`sparse_regression`: (X, y, X_test, y_test, [W1, W2, W3, W4]) from
    ``PRNGKey(seed)`` split into (train, test, weights) keys."""
    prob = SparseRegression(dim=dim, samples=samples, test_samples=test_samples)
    kx, kt, kw = jax.random.split(jax.random.PRNGKey(seed), 3)
    d = prob.inputs(kx, kt)
    return d["x"], d["y"], d["x_test"], d["y_test"], prob.init(kw)


sparse_regression_loss = network_loss  # (1/2n)‖f(X) − y‖² for the ReLU² net with weights [W1, ..., W4]


@functools.partial(jit, static_argnames=("problem", "spectral", "steps", "record_every"))
def _sparse_run(problem, data, params, lr, *, spectral, steps, record_every):
    """One run of the per-layer rule through ``sd.simulate``; the rule is built from the traced
    inputs (an engine sweep cannot: its optimizers do not see the data)."""
    optimizer = per_layer_rule(lr, data["x"], spectral)
    return simulate(problem, optimizer, key=jax.random.PRNGKey(0), steps=steps, record_every=record_every,
                    data=data, params=params)


def sparse_regression(
    *,
    dim: int = 128,
    samples: int = 512,
    steps: int = 300,
    lr: float = 0.003,
    test_samples: int = 1024,
    record_every: int = 10,
    seed: int = 0,
) -> xr.Dataset:
    """y = x₁x₂x₃ (x ~ N(0, I_d)) with a bias-free ReLU² net d → 4d → 4d → 4d → 1.

    Loss (1/2n)‖f(X) − y‖². Each step uses, for layer ℓ with incoming activations
    A_{ℓ−1} at the *current* weights (recomputed every step, so the scale is not an
    optax schedule but a per-step factor applied to the transformed gradients):

    * GD layer: W ← W − lr·(n/‖A_{ℓ−1}‖_op²)·G;
    * spectral layer: W ← W − lr·(n/‖A_{ℓ−1}‖_F²)·‖G‖_*·polar(G)
      (``scale_by_polar(nuclear_scaling=True)``),

    (:func:`specdyn.problems.sparse_regression.per_layer_rule`, one ``sd.simulate`` run per
    rule on :class:`~specdyn.problems.sparse_regression.SparseRegression`; losses are
    recorded every step, nr/st every ``record_every``). Rule ``"gd"`` uses GD on every layer,
    ``"spectral_middle"`` spectral steps on the two middle (4d × 4d) layers.

    Why ``lr`` (a global factor on the paper's per-layer steps) is 0.003 and not 1: the
    constants n/‖A‖² are the exact inverse curvatures of a block whose output *is* the
    prediction (L(W) = (1/2n)‖WA − y‖²), which holds for the last layer only. Inside the
    network the block's output passes through the rest of the network, and f is
    homogeneous of degree 8, 4, 2, 1 in W1, W2, W3, W4 (ReLU² squares its input), so the
    curvature along a layer exceeds the rule's constant by that downstream Jacobian.
    :func:`sparse_regression_curvature` measures it at init (d = 128, n = 512, seed 0,
    float32): the Gauss–Newton curvature of W1 is 9.8× ‖A_0‖²_op/n (36× for the float64
    draw of the same seed: the degree-8 dependence makes it vary strongly between draws),
    0.9× for W2, 1.3× for W3 and exactly 1× for W4; along the spectral steps of W2, W3 it
    is 2.5× and 1.5× ‖A‖²_F/n. A step is stable only below 2/curvature, so at init
    W1 alone needs lr ≲ 0.05–0.2; the curvature then grows with the weights during
    training, and the four layers' steps (each sized as if alone) add up. Measured at
    d = 32, n = 128 (100 steps, float64): both rules train at lr = 0.003 and diverge at
    0.03; with one layer trained alone, W4 is stable at lr = 1 (its rule is exact) and
    W3 at 1, while W1 and W2 diverge at 0.3 and 0.03. The factor multiplies both rules, so
    the comparison between them is unaffected.

    Test loss: the network at init is a random function (output variance ≈ 2 at d = 128);
    with n = 512 samples in d = 128 dimensions a degree-3 target cannot be learnt
    (n ≪ d², let alone d³), so training fits the samples while the random part of the
    initial function stays away from them, and the test loss (1.93 at init, 1.32 after
    300 steps for both rules) stays above the zero predictor's ½·mean(y²) ≈ 0.60
    (``attrs["zero_test_loss"]``). The claim reproduced here is about optimisation
    (training loss, nr(G) against st(A)).

    Returns ``loss``, ``test_loss`` (rule, step) and ``nuclear_rank``,
    ``stable_rank`` (rule, record, layer) of G_ℓ and A_{ℓ−1}.
    """
    for name, v in (("dim", dim), ("samples", samples), ("steps", steps),
                    ("test_samples", test_samples), ("record_every", record_every)):
        require(isinstance(v, int) and v >= 1, name, v, "be a positive integer")
    require(dim >= 3, "dim", dim, "be >= 3 (the target uses x1 x2 x3)")
    require(lr > 0, "lr", lr, "be > 0")
    x, y, xt, yt, weights0 = sparse_regression_setup(dim, samples, test_samples, seed)
    data = {"x": x, "y": y, "x_test": xt, "y_test": yt}
    n_rec = steps // record_every + 1
    losses, diags = {}, {}
    for rule, spectral in RULES.items():
        for diagnostics, every in ((False, 1), (True, record_every)):  # losses every step, SVDs per record
            prob = SparseRegression(dim=dim, samples=samples, test_samples=test_samples, diagnostics=diagnostics)
            out = _sparse_run(prob, data, weights0, jnp.asarray(lr, x.dtype), spectral=spectral, steps=steps,
                              record_every=every)
            if diagnostics:
                keep = np.asarray(out["step"]) % record_every == 0  # the last step only if on the grid
                diags[rule] = (np.asarray(out["nuclear_rank"])[keep], np.asarray(out["stable_rank"])[keep])
            else:
                losses[rule] = (np.asarray(out["loss"]), np.asarray(out["test_loss"]))
    names = list(RULES)
    return xr.Dataset(
        {
            "loss": (("rule", "step"), np.stack([losses[m][0] for m in names])),
            "test_loss": (("rule", "step"), np.stack([losses[m][1] for m in names])),
            "nuclear_rank": (("rule", "record", "layer"), np.stack([diags[m][0] for m in names])),
            "stable_rank": (("rule", "record", "layer"), np.stack([diags[m][1] for m in names])),
        },
        coords={"rule": names, "step": np.arange(steps + 1),
                "record": np.arange(n_rec) * record_every, "layer": list(LAYERS)},
        attrs={"dim": dim, "samples": samples, "lr": lr, "seed": seed,
               "target_variance": float(jnp.var(yt)),
               "zero_train_loss": float(0.5 * jnp.mean(jnp.square(y))),
               "zero_test_loss": float(0.5 * jnp.mean(jnp.square(yt)))},
    )


@functools.partial(jit, static_argnames=("layer", "iters"))
def _layer_curvature(w0, x, y, key, *, layer, iters):
    """[gn_max, along_gradient, along_polar, rule_gd, rule_spectral] of one layer at ``w0``
    (see :func:`sparse_regression_curvature`); the power iteration is a ``fori_loop``."""
    from specdyn.polar import polar

    n = x.shape[-1]

    def with_layer(wl):
        return [wl if i == layer else w for i, w in enumerate(w0)]

    def loss_of(wl):
        return sparse_regression_loss(with_layer(wl), x, y)

    def out_of(wl):
        return relu2_forward(with_layer(wl), x)[0][0]

    def hvp(v):
        return jax.jvp(jax.grad(loss_of), (w0[layer],), (v,))[1]

    pull = jax.vjp(out_of, w0[layer])[1]

    def power(_, carry):  # v <- (1/n) JᵀJ v / ‖·‖; the norm converges to the top eigenvalue
        v, _ = carry
        v = pull(jax.jvp(out_of, (w0[layer],), (v,))[1] / n)[0]
        lam = frobenius_norm(v)
        return v / lam, lam

    v0 = jax.random.normal(key, w0[layer].shape)
    _, lam = jax.lax.fori_loop(0, iters, power, (v0, jnp.zeros((), v0.dtype)))
    g = jax.grad(loss_of)(w0[layer])
    p = polar(g, method="svd")
    a = relu2_forward(w0, x)[1][layer]
    return jnp.stack([lam, jnp.vdot(g, hvp(g)) / jnp.vdot(g, g), jnp.vdot(p, hvp(p)),
                      jnp.linalg.norm(a, ord=2) ** 2 / n, frobenius_norm(a) ** 2 / n])


def sparse_regression_curvature(*, dim: int = 128, samples: int = 512, seed: int = 0,
                                iters: int = 50) -> xr.Dataset:
    """Each layer's curvature at init against the constant the paper's rule assumes.

    For layer ℓ (the others fixed at init): ``gn_max``, the top eigenvalue of the
    Gauss–Newton matrix (1/n)JᵀJ of the predictions (power iteration, ``iters`` steps);
    ``along_gradient`` = ⟨G, ∇²L G⟩/‖G‖²_F and ``along_polar`` = ⟨P, ∇²L P⟩ with
    P = polar(G) (exact Hessian–vector products); ``rule_gd`` = ‖A_{ℓ−1}‖²_op/n and
    ``rule_spectral`` = ‖A_{ℓ−1}‖²_F/n, the curvatures the GD and spectral rules assume.
    Ratios above 1 say by how much the rule's step is too long (see :func:`sparse_regression`).
    """
    x, y, _, _, w0 = sparse_regression_setup(dim, samples, 1, seed)
    rows = [np.asarray(_layer_curvature(w0, x, y, jax.random.PRNGKey(layer), layer=layer, iters=iters))
            for layer in range(len(LAYERS))]  # one program per layer: the shapes differ
    rows = np.asarray(rows)
    names = ["gn_max", "along_gradient", "along_polar", "rule_gd", "rule_spectral"]
    return xr.Dataset({n: ("layer", rows[:, i]) for i, n in enumerate(names)},
                      coords={"layer": ["W1", "W2", "W3", "W4"]},
                      attrs={"dim": dim, "samples": samples, "seed": seed})


def sparse_regression_figure(ds: xr.Dataset) -> plt.Figure:
    """Train and test loss per rule, with the zero predictor's losses (grey: train solid,
    test dashed); nr(G)/st(A) per layer over training."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, m in enumerate(ds.rule.values):
        axes[0].plot(ds.step, ds.loss.sel(rule=m), color=f"C{k}", label=f"{m} train")
        axes[0].plot(ds.step, ds.test_loss.sel(rule=m), "--", color=f"C{k}", label=f"{m} test")
        ratio = ds.nuclear_rank.sel(rule=m) / ds.stable_rank.sel(rule=m)
        for li, layer in enumerate(ds.layer.values):
            axes[1].plot(ds.record, ratio.sel(layer=layer), ["-", "--", ":", "-."][li % 4],
                         color=f"C{k}", label=f"{m} {layer}")
    if "zero_test_loss" in ds.attrs:
        axes[0].axhline(ds.attrs["zero_train_loss"], color="grey", lw=1, label="predict 0, train")
        axes[0].axhline(ds.attrs["zero_test_loss"], color="grey", lw=1, ls="--", label="predict 0, test")
    axes[0].set(yscale="log", xlabel="step", ylabel="loss",
                title=f"y = x1 x2 x3, ReLU² net, d={ds.attrs['dim']}, n={ds.attrs['samples']}, "
                      f"lr factor {ds.attrs['lr']:g}")
    axes[1].axhline(1, color="grey", lw=0.5)
    axes[1].set(yscale="log", xlabel="step", ylabel="nr(G) / st(A)",
                title="> 1: spectral step favoured")
    for ax in axes:
        legend_outside(ax, where="below", fontsize=6)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 3. character-level transformer language model, Muon vs AdamW


def python_stdlib_text(max_chars: int = 2_000_000) -> str:
    """The standard library's top-level ``.py`` sources (sorted by name), concatenated,
    truncated to ``max_chars``: text every Python installation has offline. It differs
    between Python versions (so do the LM's numbers); :func:`char_lm` records the version."""
    root = pathlib.Path(os.path.dirname(os.__file__))
    parts, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


_lm_label = lm_label


_LM_SIZES = {
    "smoke": dict(layers=1, width=32, heads=2, seq=32, batch=8, steps=10, log_every=5,
                  max_chars=50_000),
    "medium": dict(layers=2, width=128, heads=4, seq=64, batch=16, steps=300, log_every=50,
                   max_chars=1_000_000),
    "full": dict(layers=4, width=256, heads=8, seq=256, batch=64, steps=3000, log_every=100,
                 max_chars=5_000_000),
}


def char_lm_setup(size: str = "smoke", *, seed: int = 0, text=None, **overrides):
    """The problem, data and size entries of :func:`char_lm` (same arguments), without training.

    Returns ``(problem, data, cfg)``: a :class:`specdyn.problems.char_lm.CharLM` whose
    vocabulary is 256 for plain text and the largest token id + 1 for a ``.bin`` file, its
    data from :func:`specdyn.problems.char_lm.char_lm_data` and the size's entries with
    ``overrides`` applied. Bad sizes, entries or texts raise ``ValueError`` naming them.
    """
    require(size in _LM_SIZES, "size", size, f"be one of {sorted(_LM_SIZES)}")
    cfg = dict(_LM_SIZES[size])
    for k, v in overrides.items():
        require(k in cfg, k, v, f"be a known size entry ({sorted(cfg)})")
        require(isinstance(v, int) and v >= 1, k, v, "be a positive integer")
        cfg[k] = v
    require(cfg["width"] % cfg["heads"] == 0, "width", cfg["width"], "be divisible by heads")
    if text is None:
        data = np.frombuffer(python_stdlib_text(cfg["max_chars"]).encode("utf-8"), np.uint8)
        data, vocab = data.astype(np.int32), 256
    else:
        from specdyn.problems.datasets import load_tokens

        data, vocab = load_tokens(text)
        data = data[: cfg["max_chars"]]
    require(len(data) > 20 * (cfg["seq"] + 1), "text", text,
            f"hold more than {20 * (cfg['seq'] + 1)} tokens (seq={cfg['seq']}), got {len(data)}")
    seq, batch = cfg["seq"], cfg["batch"]
    problem = CharLM(layers=cfg["layers"], width=cfg["width"], heads=cfg["heads"], seq=seq,
                     batch_size=batch, vocab=vocab)
    lm_data = char_lm_data(data, seq=seq, batch_size=batch, seed=seed)
    return problem, lm_data, cfg


def char_lm(
    size: str = "smoke",
    *,
    muon_lr: float = 0.02,
    adam_lr: float = 3e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    text=None,
    **overrides,
) -> xr.Dataset:
    """Train :class:`CharTransformer` on :func:`python_stdlib_text` (or on ``text``) with Muon and AdamW.

    ``text``: a local file read by :func:`specdyn.problems.datasets.load_tokens` — plain
    text as bytes (vocabulary 256) or a nanoGPT-style ``.bin`` of uint16 token ids (the
    vocabulary is then the largest id + 1); its first ``max_chars`` tokens are used.

    ``size`` is "smoke" (CPU, seconds), "medium" (CPU, minutes) or "full" (GPU);
    ``overrides`` replace its entries (layers, width, heads, seq, batch, steps,
    log_every, max_chars). "muon": ``sd.muon(muon_lr)`` on the blocks' matrices
    (W_Q, W_K, W_V, W_O, mlp_in, mlp_out), AdamW(adam_lr) on embedding, positions,
    head and LayerNorm gains (the usual split); "adamw": AdamW(adam_lr) on all.
    It runs as one engine sweep (one seed) of :class:`specdyn.problems.char_lm.CharLM`
    with ``{"muon": factory, "adamw": factory}`` and ``record_every=log_every``. Both
    optimizers see the same batches: each step's gradient is on ``batch`` random
    windows of the first 90% of the text drawn with ``jax.random`` from
    ``fold_in(PRNGKey(seed), step)`` (the problem's ``batch`` method); the last 10%
    gives a fixed validation set of 4·batch windows. Every ``log_every`` steps (and
    at ``steps``), :func:`layerwise_criterion` on a fixed probe batch of training
    windows gives nr(G) and st(A) of every matrix.

    Returns ``loss(optimizer, step)``, ``val_loss(optimizer, log_step)`` and
    ``nuclear_rank``, ``stable_rank``, ``ratio`` (optimizer, log_step, matrix).

    Changed with the move onto the engine: ``loss`` is the cross-entropy on the fixed
    probe batch at the recorded steps (``step`` = ``log_step`` = 0, log_every, ...,
    steps), no longer each step's minibatch loss at every step (a record every step
    would run the criterion every step); batches come from ``jax.random`` instead of
    a host numpy generator and the criterion uses the probe batch instead of the
    current minibatch, so the numbers differ from earlier versions (same seeds).
    """
    problem, lm_data, cfg = char_lm_setup(size, seed=seed, text=text, **overrides)
    vocab = problem.vocab

    def labels(params):
        def one(path, leaf):
            p = jax.tree_util.keystr(path)
            return "muon" if ".blocks[" in p and leaf.ndim == 2 else "adam"
        return jax.tree_util.tree_map_with_path(one, params)

    def muon_factory(lr):  # sd.muon on the blocks' matrices, AdamW(adam_lr) on the rest
        return optax.partition({"muon": muon(lr, weight_decay=weight_decay),
                                "adam": optax.adamw(adam_lr, weight_decay=weight_decay)}, labels)

    def adamw_factory(lr):
        return optax.adamw(lr, weight_decay=weight_decay)

    swept = sweep(problem, optimizers={"muon": muon_factory, "adamw": adamw_factory},
                  learning_rates={"muon": [muon_lr], "adamw": [adam_lr]}, seeds=[seed],
                  steps=cfg["steps"], record_every=cfg["log_every"], data=lm_data, progress=False)
    run = swept.isel(lr=0, seed=0)
    names = [str(o) for o in swept.optimizer.values]
    logs = [int(t) for t in swept.step.values]
    nr = np.asarray(run.nuclear_rank.transpose("optimizer", "step", "matrix").values)
    st = np.asarray(run.stable_rank.transpose("optimizer", "step", "matrix").values)
    return xr.Dataset(
        {
            "loss": (("optimizer", "step"), np.asarray(run.loss.transpose("optimizer", "step").values)),
            "val_loss": (("optimizer", "log_step"), np.asarray(run.val_loss.transpose("optimizer", "step").values)),
            "nuclear_rank": (("optimizer", "log_step", "matrix"), nr),
            "stable_rank": (("optimizer", "log_step", "matrix"), st),
            "ratio": (("optimizer", "log_step", "matrix"), nr / st),
        },
        coords={"optimizer": names, "step": logs, "log_step": logs,
                "matrix": problem.matrix_labels()},
        attrs={**{k: v for k, v in cfg.items()}, "size": size, "muon_lr": muon_lr,
               "adam_lr": adam_lr, "weight_decay": weight_decay, "seed": seed,
               "text": (f"Python {sys.version_info.major}.{sys.version_info.minor} standard library"
                        if text is None else pathlib.Path(text).name),
               "vocab": vocab, "loss": "cross-entropy on a fixed probe batch of training windows, at records"},
    )


def char_lm_figure(ds: xr.Dataset) -> plt.Figure:
    """Loss per optimizer; nr(G) and st(A) of every matrix over training (per optimizer);
    nr(G)/st(A) over the blocks' matrices (min and median; the criterion favours a spectral
    step where it is ≥ 1). Every legend names the optimizer with its rate and sits below its
    panel (constrained layout), so no legend covers a curve."""
    opts = list(ds.optimizer.values)
    rates = {"muon": ds.attrs.get("muon_lr", float("nan")), "adamw": ds.attrs.get("adam_lr", float("nan"))}

    def name(o):
        return f"{o} lr {rates[o]:g}" if o in rates else str(o)

    def legend_below(ax, ncol, fontsize=7):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=fontsize, frameon=False)

    fig, axes = plt.subplots(1, 2 + len(opts), figsize=(4.6 * (2 + len(opts)), 5.4), layout="constrained")
    for k, o in enumerate(opts):
        axes[0].plot(ds.step, ds.loss.sel(optimizer=o), color=f"C{k}", alpha=0.5, label=f"{name(o)}: probe batch")
        axes[0].plot(ds.log_step, ds.val_loss.sel(optimizer=o), "o-", color=f"C{k}", ms=3,
                     label=f"{name(o)}: validation")
    unit = "byte" if ds.attrs.get("vocab", 256) == 256 else "token"
    axes[0].set(xlabel="step", ylabel=f"cross-entropy (nats/{unit})",
                title=f"{ds.attrs.get('size', '')} size, rates untuned\n"
                      f"(muon: Muon on block matrices, AdamW lr {rates['adamw']:g} on the rest)")
    legend_below(axes[0], ncol=1)
    for ax, o in zip(axes[1:], opts):
        for k, m in enumerate(ds.matrix.values):
            sel = ds.sel(optimizer=o, matrix=m)
            color = plt.get_cmap("tab20")(k % 20)
            ax.plot(ds.log_step, sel.nuclear_rank, "-", color=color, label=f"{m}")
            ax.plot(ds.log_step, sel.stable_rank, ":", color=color)
        ax.set(yscale="log", xlabel="step", ylabel="nr(G) (solid), st(A) (dotted)",
               title=f"{name(o)}: every matrix")
        legend_below(ax, ncol=4, fontsize=6)
    blocks = [m for m in ds.matrix.values if str(m).startswith("L")]
    ratio = ds.ratio.sel(matrix=blocks)
    for k, o in enumerate(opts):
        r = ratio.sel(optimizer=o)
        axes[-1].plot(ds.log_step, r.min("matrix"), "--", color=f"C{k}", label=f"{name(o)}: min")
        axes[-1].plot(ds.log_step, r.median("matrix"), "-", color=f"C{k}", label=f"{name(o)}: median")
    axes[-1].axhline(1.0, color="grey", lw=0.8, label="1: above it the criterion favours a spectral step")
    axes[-1].set(yscale="log", xlabel="step", ylabel="nr(G) / st(A)",
                 title=f"nr(G)/st(A) over the {len(blocks)} block matrices")
    legend_below(axes[-1], ncol=1)
    fig.suptitle(f"character LM, {ds.attrs.get('layers', '?')} layers, width {ds.attrs.get('width', '?')}, "
                 f"seq {ds.attrs.get('seq', '?')}, batch {ds.attrs.get('batch', '?')}, {ds.attrs.get('steps', '?')} steps; text: "
                 f"{ds.attrs.get('text', '?')}; criterion on a fixed probe batch", fontsize=9)
    return fig


# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    """``python -m specdyn.experiments.networks {activations,sparse,lm} [--full] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m specdyn.experiments.networks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["activations", "sparse", "lm"])
    parser.add_argument("--full", action="store_true", help="paper size (GPU for lm)")
    parser.add_argument("--medium", action="store_true", help="lm only: CPU-sized run")
    parser.add_argument("--out", default="out/networks", help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="sparse, lm: number of steps")
    parser.add_argument("--text", default=None,
                        help="lm only: a local text file, or a nanoGPT .bin of uint16 tokens")
    args = parser.parse_args(argv)
    steps = {} if args.steps is None else {"steps": args.steps}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.experiment == "activations":
        widths = (64, 128, 256, 512, 1024) if args.full else (32, 64, 128)
        ds, fig = init_stable_ranks(widths), init_stable_rank_figure
    elif args.experiment == "sparse":
        kw = dict(dim=128, samples=512, steps=1000) if args.full else dict(dim=16, samples=64,
                                                                            steps=200)
        ds, fig = sparse_regression(**{**kw, **steps}), sparse_regression_figure
    else:
        size = "full" if args.full else "medium" if args.medium else "smoke"
        ds, fig = char_lm(size, text=args.text, **steps), char_lm_figure
    ds.to_netcdf(out / f"{args.experiment}.nc")
    save_figure(fig(ds), out / f"{args.experiment}.png", dpi=100)
    print(f"wrote {out / args.experiment}.nc and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
