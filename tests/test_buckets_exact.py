"""Buckets, exactness: a run zero-padded to a bucket equals the run at its true size.

In two halves, float64, each one jitted program (compiles dominate the time):
* optimizers: every registry optimizer and polar method, fed the same gradients at the
  true shape and zero-padded (full rank, then rank-deficient), keeps padded blocks of
  the parameters exactly zero and the true block equal to 1e-10;
* problems: a run at the true size and the same run padded (true sizes as data) give
  the same parameters (padded blocks exactly zero) and records (loss and metrics) to
  1e-10, for phase retrieval, matrix sensing and random features.
Together: a padded run of any of these optimizers on these problems is the true run.
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
from specdyn.simulate import record_metrics, sample_run, start_run, train_steps

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


def _padded_and_true(problem, bucket: dict, optimizers: dict, steps=4, metrics=True):
    """{name: ((params, records) padded, (params, records) true)} after ``steps`` steps of
    one run at the true size and of the same run zero-padded to ``bucket`` (true sizes as
    data), for every optimizer, in one jitted program (one compile)."""
    like = bucketing.shapes_of(bucketing.at_sizes(problem, bucket))
    padded = pad_instance(problem, bucket, {f: jnp.asarray(getattr(problem, f)) for f in bucket})

    @jax.jit
    def every(padded, key):
        true_params, true_data = sample_run(problem, key)
        params, data = bucketing.pad_tree(true_params, like[0]), bucketing.pad_tree(true_data, like[1])
        out = {}
        for name, optimizer in optimizers.items():
            out[name] = []
            for prob, p, d in ((padded, params, data), (problem, true_params, true_data)):
                state = train_steps(prob, optimizer, start_run(optimizer, p), d, key, steps)
                rec = record_metrics(prob, state, d) if metrics else {"loss": prob.loss(state.params, d)}
                out[name].append((state.params, rec))
        return out, true_params

    out, start = every(padded, jax.random.PRNGKey(0))
    for (_, _), (params, _) in out.values():  # training moved the parameters
        assert not np.allclose(params[next(iter(params))], start[next(iter(params))])
    return out


def _assert_exact(problem, bucket, optimizers, metrics=True):
    for name, ((pp, prec), (tp, trec)) in _padded_and_true(problem, bucket, optimizers, metrics=metrics).items():
        for leaf_p, leaf_t in zip(jax.tree.leaves(pp), jax.tree.leaves(tp), strict=True):
            block = tuple(slice(0, n) for n in leaf_t.shape)
            np.testing.assert_allclose(leaf_p[block], leaf_t, rtol=1e-10, atol=1e-13, err_msg=name)
            rest = np.asarray(leaf_p).copy()
            rest[block] = 0
            assert np.all(rest == 0), f"{name}: padded block not zero"
        for key in trec:
            np.testing.assert_allclose(prec[key], trec[key], rtol=1e-10, atol=1e-13, err_msg=f"{name} {key}")
        assert np.isfinite(trec["loss"]) and trec["loss"] > 0


MATRIX_ONLY = ("specgd", "specgd_ns", "specgd_pe", "specgd_nuclear", "specpow")


def test_every_optimizer_and_polar_method_keeps_zero_padding_exact():
    # W 5x4 padded to 7x6 (not powers of two), b 5 padded to 7; three gradients, the second of rank 2
    m, n, big_m, big_n = 5, 4, 7, 6
    rng = np.random.default_rng(0)
    grads = [{"W": rng.normal(size=(m, n)), "b": rng.normal(size=m)} for _ in range(3)]
    grads[1]["W"] = rng.normal(size=(m, 2)) @ rng.normal(size=(2, n))
    start = {"W": rng.normal(size=(m, n)), "b": rng.normal(size=m)}
    pad = lambda t: {"W": jnp.pad(t["W"], ((0, big_m - m), (0, big_n - n))), "b": jnp.pad(t["b"], (0, big_m - m))}
    with jax.enable_x64(True):
        optimizers = {name: factory(0.05) for name, factory in EVERY.items()}

        @jax.jit
        def every(start, grads):
            out = {}
            for name, optimizer in optimizers.items():
                keep = (lambda t: {"W": t["W"]}) if name in MATRIX_ONLY else (lambda t: t)
                out[name] = []
                for params, gs in ((pad(start), [pad(g) for g in grads]), (start, grads)):
                    params = keep(params)
                    state = optimizer.init(params)
                    for g in gs:
                        updates, state = optimizer.update(keep(g), state, params)
                        params = optax.apply_updates(params, updates)
                    out[name].append(params)
            return out

        for name, (padded, true) in every(start, grads).items():
            for key in true:
                block = tuple(slice(0, k) for k in true[key].shape)
                np.testing.assert_allclose(padded[key][block], true[key], rtol=1e-10, atol=1e-13, err_msg=name)
                rest = np.asarray(padded[key]).copy()
                rest[block] = 0
                assert np.all(rest == 0), f"{name}: padded block of {key} not zero"
                assert not np.allclose(true[key], start[key]), name  # it moved


def test_phase_retrieval_matrix_sensing_and_random_features_are_exact():
    with jax.enable_x64(True):
        # dim 5 (not a power of two) padded to 7 and samples 9 to 12: two padded fields, W 5x5 -> 7x7
        problem = sd.problems.PhaseRetrieval(dim=5, samples=9, init_type="gaussian", init_scale=0.5)
        _assert_exact(problem, {"dim": 7, "samples": 12}, {"gd": sd.gd(0.05)})
        sensing = sd.problems.MatrixSensing(dim=5, rank=2, width=3, measurements=30, init_scale=0.1)
        _assert_exact(sensing, {"dim": 8, "width": 4, "measurements": 33}, {"gd": sd.gd(0.05)})
        features = sd.problems.RandomFeatures(dim=4, feature_dim=6, samples=10)
        _assert_exact(features, {"feature_dim": 9, "samples": 12}, {"gd": sd.gd(0.1)})
