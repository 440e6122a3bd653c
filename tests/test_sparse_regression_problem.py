"""The SparseRegression problem and its per-layer rule (PAPERS.md §3) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdyn as sd
from specdyn.problems.sparse_regression import SparseRegression, per_layer_rule


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="dim"):
        SparseRegression(dim=2)
    with pytest.raises(ValueError, match="samples"):
        SparseRegression(samples=0)
    with pytest.raises(ValueError, match="spectral_layers"):
        per_layer_rule(0.1, jnp.zeros((3, 4)), (4,))


def test_loss_and_one_rule_step_match_numpy():
    """Loss against a numpy forward pass; one step of the rule (GD on W1, W4; spectral on
    W2, W3) against numpy SVDs and norms, through sd.simulate on the problem."""
    with jax.enable_x64(True):
        prob = SparseRegression(dim=4, samples=24, test_samples=8, diagnostics=False)
        params, data = prob.init(jax.random.PRNGKey(1)), prob.sample(jax.random.PRNGKey(2))
        w = [np.asarray(a) for a in params]
        x, y = np.asarray(data["x"]), np.asarray(data["y"])
        np.testing.assert_allclose(y, x[0] * x[1] * x[2])
        acts = [x]
        for wi in w[:-1]:
            acts.append(np.maximum(wi @ acts[-1], 0) ** 2)
        r = (w[-1] @ acts[-1])[0] - y
        np.testing.assert_allclose(float(prob.loss(params, data)), 0.5 * np.mean(r**2), rtol=1e-12)
        grads = [np.asarray(g) for g in jax.grad(prob.loss)(params, data)]
        lr, new = 0.01, []
        for i, (wi, g, a) in enumerate(zip(w, grads, acts)):
            if i in (1, 2):
                u, s, vt = np.linalg.svd(g, full_matrices=False)
                new.append(wi - lr * 24 / np.sum(a**2) * np.sum(s) * (u @ vt))
            else:
                new.append(wi - lr * 24 / np.linalg.norm(a, 2) ** 2 * g)
        out = jax.jit(lambda d, p: sd.simulate(prob, per_layer_rule(lr, d["x"], (1, 2)), key=jax.random.PRNGKey(0),
                                               steps=1, data=d, params=p))(data, params)
        # polar(G) carries rounding / (gap between G's smallest singular values): ~1e-8 here
        for got, want in zip(out["params"], new):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-7, atol=1e-9)


def test_sweepable_like_any_problem():
    prob = SparseRegression(dim=4, samples=16, test_samples=8)
    ds = sd.sweep(prob, optimizers=["gd"], learning_rates=[1e-4, 1e-3], seeds=2, steps=4, record_every=2,
                  progress=False)
    assert ds["nuclear_rank"].dims[-1] == "layer" and ds["nuclear_rank"].sizes["layer"] == 4
    assert np.all(np.isfinite(ds["loss"].values)) and np.all(ds["diverged_at"].values == -1)
