"""Buckets, exactness: a run zero-padded to a bucket equals the run at its true size.

One jitted program per problem holds, for each optimizer, the run at the true size and
the same run padded (true sizes as data), float64: parameters to 1e-10 relative with
exactly zero padded blocks, records (loss and metrics) to 1e-10.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

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
FEW = {k: EVERY[k] for k in ("gd", "specgd", "muon")}


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


def test_every_optimizer_and_polar_method_is_exact_on_phase_retrieval():
    # dim 5 (not a power of two) padded to 7 and samples 9 to 12: two padded fields, W 5x5 -> 7x7
    with jax.enable_x64(True):
        problem = sd.problems.PhaseRetrieval(dim=5, samples=9, init_type="gaussian", init_scale=0.5)
        _assert_exact(problem, {"dim": 7, "samples": 12}, {n: f(0.05) for n, f in EVERY.items()})


def test_matrix_sensing_and_random_features_are_exact():
    with jax.enable_x64(True):
        sensing = sd.problems.MatrixSensing(dim=5, rank=2, width=3, measurements=30, init_scale=0.1)
        # (its metrics divide by no size: loss and parameters only)
        _assert_exact(sensing, {"dim": 8, "width": 4, "measurements": 33}, {n: f(0.05) for n, f in FEW.items()},
                      metrics=False)
        features = sd.problems.RandomFeatures(dim=4, feature_dim=6, samples=10)
        _assert_exact(features, {"feature_dim": 9, "samples": 12}, {n: f(0.1) for n, f in FEW.items()})
