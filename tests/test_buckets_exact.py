"""Buckets, exactness: a run zero-padded to a bucket equals the run at its true size.

In two halves, sharing a few jitted programs (compiles dominate the time):
* end to end: every registry optimizer and polar method trains phase retrieval, matrix
  sensing and random features for a few steps at the true size and zero-padded (true
  sizes as data; two to four padded fields at once, sizes that are not powers of two):
  the same parameters (padded blocks exactly zero) and records (loss and metrics) to
  1e-10 in float64, and three optimizers (GD, SpecGD with Newton-Schulz, Muon with the
  SVD) to 1e-5 in float32;
* optimizers: every registry optimizer and polar method, fed the same given gradients
  at the true shape and zero-padded (full rank, then rank-deficient), keeps padded
  blocks of the parameters exactly zero and the true block equal to 1e-10, float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import specdyn as sd
from specdyn import buckets as bucketing
from specdyn.optimizers import get_optimizer
from specdyn.problem import pad_instance
from specdyn.simulate import RunState, record_metrics, start_run, train_steps

opt = lambda name, **kw: functools.partial(get_optimizer, name, **kw)

# Every registry optimizer and polar method.
EVERY = {
    "gd": opt("gd"),
    "specgd": opt("specgd"),
    "specgd_ns": opt("specgd", method="newton_schulz"),
    "specgd_pe": opt("specgd", method="polar_express"),
    "specgd_nuclear": opt("specgd", nuclear_scaling=True),
    "specpow": opt("specpow"),
    "muon": opt("muon"),
    "muon_svd": opt("muon", method="svd"),
    "muon_pe": opt("muon", method="polar_express"),
    "ngd": opt("ngd"),
    "signgd": opt("signgd"),
    "shampoo": opt("shampoo"),
    "adam": opt("adam"),
}


# End to end. A step is the engine's (specdyn.simulate.train_steps): the problem's
# gradient, the optimizer's update, optax.apply_updates. It runs from Python here so the
# three problems share the optimizers' compiled update (one program per dtype and shape
# for all optimizers, not one per problem; compiled at XLA's lowest CPU optimization
# level, the same arithmetic, about a third less compile time). Measured on the 2-core
# CPU under load (about 7), Python 3.11: 67 s with one program per problem and
# optimizer pair, 16 s so.
# Every problem's parameter is one matrix (W; U in matrix sensing), 5x4 at the true
# sizes and 7x6 padded.
PROBLEMS = {
    "phase_retrieval": (sd.problems.PhaseRetrieval(dim=4, width=5, samples=9, init_type="gaussian"),
                        {"dim": 6, "width": 7, "samples": 12}),
    "matrix_sensing": (sd.problems.MatrixSensing(dim=5, rank=2, width=4, measurements=30),
                       {"dim": 7, "width": 6, "measurements": 33}),
    "random_features": (sd.problems.RandomFeatures(dim=3, outputs=5, feature_dim=4, samples=10),
                        {"dim": 5, "outputs": 7, "feature_dim": 6, "samples": 12}),
}
STEPS = 3  # enough for momentum, Adam's moments and Shampoo's sums to matter
QUICK = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


@functools.cache
def _programs(names: tuple):
    """Jitted programs of the named optimizers at lr 0.05, each for all of them (traced
    per dtype and shape): init, update, and the problem's gradient and record (vmapped
    over the optimizers' parameters)."""
    optimizers = {n: EVERY[n](0.05) for n in names}

    @jax.jit
    def init(w):
        return {n: o.init({"W": w}) for n, o in optimizers.items()}, jnp.stack([w] * len(optimizers))

    @functools.partial(jax.jit, compiler_options=QUICK)
    def update(states, ws, grads):
        out_states, out_ws = {}, []
        for i, (n, o) in enumerate(optimizers.items()):
            updates, out_states[n] = o.update({"W": grads[i]}, states[n], {"W": ws[i]})
            out_ws.append(optax.apply_updates({"W": ws[i]}, updates)["W"])
        return out_states, jnp.stack(out_ws)

    @functools.partial(jax.jit, static_argnames="leaf")
    def grads(problem, ws, data, leaf):
        return jax.vmap(lambda w: jax.grad(problem.loss)({leaf: w}, data)[leaf])(ws)

    @functools.partial(jax.jit, static_argnames="leaf", compiler_options=QUICK)
    def records(problem, ws, data, leaf):
        state = lambda w: RunState({leaf: w}, None, jnp.int32(STEPS), jnp.int32(-1))
        return jax.vmap(lambda w: record_metrics(problem, state(w), data))(ws)

    return init, update, grads, records


def _train(problem, w, data, names, records=True):
    """Final W of every optimizer (numpy, stacked in ``names`` order) and their records
    ({} without ``records``)."""
    init, update, grads, record = _programs(names)
    (leaf,) = jax.eval_shape(problem.init, jax.random.PRNGKey(0))
    states, ws = init(w)
    for _ in range(STEPS):
        states, ws = update(states, ws, grads(problem, ws, data, leaf))
    out = record(problem, ws, data, leaf) if records else {}
    return np.asarray(ws), {k: np.asarray(v) for k, v in out.items()}


def _check_problem(name, names, dtype, rtol, records=True):
    """Train every optimizer in ``names`` at the true sizes and padded, from the same
    start and data (standard normal draws of the problem's shapes at the true sizes, then
    zero-padded: the problem's own draw is checked by test_buckets.py), and compare."""
    problem, bucket = PROBLEMS[name]
    rng = np.random.default_rng(1)
    params, data = bucketing.shapes_of(problem)
    like = bucketing.shapes_of(bucketing.at_sizes(problem, bucket))
    (m, n), (big_m, big_n) = [next(iter(p.values())).shape for p in (params, like[0])]
    w = (0.3 * rng.normal(size=(m, n))).astype(dtype)
    data = {k: rng.normal(size=x.shape).astype(dtype) for k, x in data.items()}
    padded = pad_instance(problem, bucket, {f: np.asarray(getattr(problem, f)) for f in bucket})
    pad = lambda x, target: np.pad(x, [(0, t - s) for s, t in zip(x.shape, target.shape, strict=True)])
    true_w, true_rec = _train(problem, w, data, names, records)
    pad_w, pad_rec = _train(padded, pad(w, np.empty((big_m, big_n))), {k: pad(v, like[1][k]) for k, v in data.items()},
                            names, records)
    assert pad_w.dtype == dtype and pad_w.shape == (len(names), big_m, big_n)
    for i, opt_name in enumerate(names):
        where = f"{name}, {opt_name}, {np.dtype(dtype).name}"
        assert not np.allclose(true_w[i], w, rtol=1e-3, atol=0), f"{where}: did not move"
        # rtol per entry and at the scale of W (Shampoo's eigh rounds an entry 30x smaller
        # than the largest to 5e-10 of itself in random features, float64)
        np.testing.assert_allclose(pad_w[i, :m, :n], true_w[i], rtol=rtol, atol=rtol * np.abs(true_w[i]).max(),
                                   err_msg=where)
        rest = pad_w[i].copy()
        rest[:m, :n] = 0
        assert np.all(rest == 0), f"{where}: padded block not zero"
        for key, ref in true_rec.items():
            np.testing.assert_allclose(pad_rec[key][i], ref[i], rtol=rtol, atol=rtol * np.abs(ref[i]).max(),
                                       err_msg=f"{where}: {key}")
        assert not records or (np.isfinite(true_rec["loss"][i]) and true_rec["loss"][i] > 0)


def test_every_optimizer_trains_the_three_problems_padded_exactly_float64():
    with jax.enable_x64(True):
        for name in PROBLEMS:
            _check_problem(name, tuple(EVERY), np.float64, 1e-10)


def test_padded_runs_are_exact_in_float32():
    # the parameters only: float32 records would compile every metric again
    for name in PROBLEMS:
        _check_problem(name, ("gd", "specgd_ns", "muon_svd"), np.float32, 1e-5, records=False)


def test_every_optimizer_and_polar_method_keeps_zero_padding_exact():
    # W 5x4 padded to 7x6 (the update program of the end-to-end test, no new compile);
    # three given gradients, the second of rank 2 (the SVD's rank tolerance)
    m, n = 5, 4
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(m, n)) for _ in range(3)]
    grads[1] = rng.normal(size=(m, 2)) @ rng.normal(size=(2, n))
    start = rng.normal(size=(m, n))
    pad = lambda x: np.pad(x, ((0, 2), (0, 2)))
    names = tuple(EVERY)
    with jax.enable_x64(True):
        init, update, _, _ = _programs(names)
        out = []
        for w, gs in ((start, grads), (pad(start), [pad(g) for g in grads])):
            states, ws = init(w)
            for g in gs:
                states, ws = update(states, ws, np.stack([g] * len(names)))
            out.append(np.asarray(ws))
    true, padded = out
    for i, name in enumerate(names):
        np.testing.assert_allclose(padded[i, :m, :n], true[i], rtol=1e-10, atol=1e-13, err_msg=name)
        rest = padded[i].copy()
        rest[:m, :n] = 0
        assert np.all(rest == 0), f"{name}: padded block not zero"
        assert not np.allclose(true[i], start), name  # it moved


# Problems with other parameter trees (several matrices, integer labels): one program per
# problem and shape, GD through the engine's train_steps (the optimizers are checked above).
@functools.partial(jax.jit, static_argnames="names", compiler_options=QUICK)
def _train_named(problem, params, data, names):
    out = {}
    for name in names:
        optimizer = EVERY[name](0.05)
        state = train_steps(problem, optimizer, start_run(optimizer, params), data, jax.random.PRNGKey(0), STEPS)
        out[name] = (state.params, record_metrics(problem, state, data))
    return out


def _check_other(problem, bucket, labels=None, names=("gd",)):
    """As _check_problem for any parameter tree: standard normal draws (integer leaves:
    labels in [0, labels)) at the true sizes, zero-padded; parameters and records to 1e-10."""
    rng = np.random.default_rng(2)
    draw = lambda x: (rng.integers(0, labels, size=x.shape) if np.issubdtype(x.dtype, np.integer)
                      else 0.3 * rng.normal(size=x.shape))
    shapes, like = bucketing.shapes_of(problem), bucketing.shapes_of(bucketing.at_sizes(problem, bucket))
    params, data = jax.tree.map(draw, shapes)
    padded = pad_instance(problem, bucket, {f: np.asarray(getattr(problem, f)) for f in bucket})
    pad = lambda x, target: np.pad(x, [(0, t - s) for s, t in zip(x.shape, target.shape, strict=True)])
    true = _train_named(problem, params, data, names)
    out = _train_named(padded, jax.tree.map(pad, params, like[0]), jax.tree.map(pad, data, like[1]), names)
    for name in names:
        where = f"{type(problem).__name__}, {name}"
        for key, leaf in true[name][0].items():
            got, ref = np.asarray(out[name][0][key]), np.asarray(leaf)
            block = tuple(slice(0, n) for n in ref.shape)
            assert not np.allclose(ref, params[key], rtol=1e-3, atol=0), f"{where} {key}: did not move"
            np.testing.assert_allclose(got[block], ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max(),
                                       err_msg=f"{where} {key}")
            rest = got.copy()
            rest[block] = 0
            assert np.all(rest == 0), f"{where} {key}: padded block not zero"
        for key, ref in true[name][1].items():
            np.testing.assert_allclose(out[name][1][key], ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max(),
                                       err_msg=f"{where}: {key}")


def test_gaussian_mixture_pads_exactly():
    with jax.enable_x64(True):
        # depth 3, population loss (the sigma^2 |W_end|^2 term): input dimension and hidden width padded
        _check_other(sd.problems.GaussianMixture(classes=3, dim=4, width=5, depth=3, test_per_class=4,
                                                 init_scale=0.5), {"dim": 6, "width": 7}, labels=3)
        # bilinear, empirical cross-entropy: input dimension, hidden width and samples padded
        _check_other(sd.problems.GaussianMixture(classes=3, dim=4, width=5, depth=2, samples=10, test_per_class=4,
                                                 loss_type="cross_entropy", init_scale=0.5),
                     {"dim": 6, "width": 7, "samples": 13}, labels=3)
