"""Spectral powers U Σᵖ Vᵀ: the ends are SpecGD and GD, the middle is numpy's SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import specdyn as sd

PROBLEM = dict(rows=6, cols=4, samples=16, noise=0.1)


def numpy_power(g, p, rank_tol=None):
    """U Σᵖ Vᵀ over the last two axes with np.linalg.svd (float64), small values dropped."""
    u, s, vh = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    tol = max(g.shape[-2:]) * np.finfo(np.float64).eps if rank_tol is None else rank_tol
    keep = s > tol * s[..., :1]
    power = np.where(keep, np.where(keep, s, 1.0) ** p, 0.0)
    return (u * power[..., None, :]) @ vh


def run(optimizer, steps=6):
    problem = sd.problems.MatrixLeastSquares(**PROBLEM)
    return sd.simulate(problem, optimizer, key=jax.random.PRNGKey(0), steps=steps)


@pytest.mark.parametrize("p,reference", [(0.0, sd.spectral_gd), (1.0, sd.gd)], ids=["p0_specgd", "p1_gd"])
def test_ends_of_the_family_are_specgd_and_gd_over_a_run(p, reference):
    # float64: the two runs agree to rounding (1e-12) in every recorded loss and in the final weights
    with jax.enable_x64(True):
        lr = 0.02 if p == 0 else 0.3
        ours, ref = run(sd.spectral_power(lr, p)), run(reference(lr))
        assert ours["loss"].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(ours["loss"]), np.asarray(ref["loss"]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(ours["params"]["W"]), np.asarray(ref["params"]["W"]), rtol=0, atol=1e-12)
        # the run moved: the comparison is not between two frozen starts
        assert float(ref["loss"][-1]) < 0.9 * float(ref["loss"][0])


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75, 1.5])
def test_intermediate_powers_match_numpy_svd(p):
    rng = np.random.default_rng(1)
    grads = {"w": rng.standard_normal((7, 5)), "stack": rng.standard_normal((3, 4, 6)) * 1e3}
    params = jax.tree.map(np.zeros_like, grads)
    with jax.enable_x64(True):
        opt = sd.get_optimizer("specpow", 0.3, p=p)
        upd, _ = opt.update(jax.tree.map(jnp.asarray, grads), opt.init(params), params)
        for k, g in grads.items():
            ref = -0.3 * numpy_power(g, p)
            # relative to the update's size (the stack has norm ~1e3**p)
            np.testing.assert_allclose(np.asarray(upd[k]), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_low_rank_gradient_keeps_its_rank_and_zero_gives_zero():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 5))  # rank 2
    with jax.enable_x64(True):
        for p in (0.0, 0.5):
            out = np.asarray(sd.scale_by_spectral_power(p).update({"w": jnp.asarray(g)}, optax.EmptyState())[0]["w"])
            assert np.linalg.matrix_rank(out, tol=1e-8) == 2
            np.testing.assert_allclose(out, numpy_power(g, p), atol=1e-10)
        zero = sd.scale_by_spectral_power(0.0).update({"w": jnp.zeros((4, 3))}, optax.EmptyState())[0]["w"]
        np.testing.assert_array_equal(np.asarray(zero), 0.0)


def test_vmap_over_p_equals_the_loop_and_traces_once():
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((5, 4))}  # numpy: float64 inside the x64 block below
    grads = {"w": rng.standard_normal((5, 4))}
    traces = []

    def two_steps(p):
        traces.append(1)
        opt = sd.spectral_power(0.1, p)
        state = opt.init(params)
        u1, state = opt.update(grads, state, params)
        u2, _ = opt.update(grads, state, optax.apply_updates(params, u1))
        return u2["w"]

    with jax.enable_x64(True):
        ps = jnp.asarray([0.0, 0.3, 0.7, 1.0])
        batched = jax.jit(jax.vmap(two_steps))
        out = np.asarray(batched(ps))
        batched(ps / 2)  # new values, same program
        assert len(traces) == 1
        for i, p in enumerate([0.0, 0.3, 0.7, 1.0]):
            np.testing.assert_allclose(out[i], np.asarray(two_steps(p)), rtol=0, atol=1e-12)
            np.testing.assert_allclose(out[i], -0.1 * numpy_power(grads["w"], p), atol=1e-12)
        assert out.dtype == np.float64


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), True, "half", np.asarray([0.0, 1.0])])
def test_bad_p_is_refused_naming_p(bad):
    for build in (lambda: sd.spectral_power(0.1, bad), lambda: sd.get_optimizer("specpow", 0.1, p=bad),
                  lambda: sd.scale_by_spectral_power(bad)):
        with pytest.raises(ValueError, match=r"p must be a"):
            build()


def test_vector_leaf_is_refused_naming_the_leaf():
    opt = sd.spectral_power(0.1, 0.5)
    with pytest.raises(ValueError, match=r"scale_by_spectral_power.*\['b'\].*shape \(3,\)"):
        opt.init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)})


def test_registry_and_recipe():
    opt = sd.get_optimizer("specpow", 0.1, p=0.5)
    assert isinstance(opt, sd.Optimizer) and sd.OPTIMIZERS["specpow"] is sd.spectral_power
    assert dict(opt.options)["p"] == 0.5 and opt.recipe is not None
    again = opt.factory(0.2, **dict(opt.options))
    assert dict(again.options) == dict(opt.options) and again.learning_rate == 0.2
    # positional p means the same optimizer
    assert sd.spectral_power(0.1, 0.5).options == opt.options
