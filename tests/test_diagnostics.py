"""Spectral diagnostics against numpy/scipy, and the nuclear rank kept by scale_by_polar."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import specdyn as sd

SHAPES = [(7, 7), (9, 4), (4, 9), (3, 6, 5)]
SHAPE_IDS = ["square", "tall", "wide", "batched"]


def numpy_spectra(a):
    s = np.linalg.svd(np.asarray(a, np.float64), compute_uv=False)
    return {
        "stable_rank": (s**2).sum(-1) / s[..., 0] ** 2,  # ‖A‖_F² / ‖A‖_2²
        "nuclear_rank": s.sum(-1) ** 2 / (s**2).sum(-1),  # ‖A‖_*² / ‖A‖_F²
        "nuclear_norm": s.sum(-1),
        "frobenius_norm": np.sqrt((s**2).sum(-1)),
    }


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_ranks_and_norms_match_numpy_svd(shape):
    a = np.random.default_rng(0).standard_normal(shape) * np.geomspace(1, 0.01, shape[-1])
    expected = numpy_spectra(a)
    with jax.enable_x64(True):
        for name, value in expected.items():
            got = getattr(sd, name)(jnp.asarray(a))
            assert got.shape == shape[:-2]
            np.testing.assert_allclose(np.asarray(got), value, rtol=1e-10, err_msg=name)
    for name, value in expected.items():  # float32
        np.testing.assert_allclose(np.asarray(getattr(sd, name)(jnp.asarray(a, jnp.float32))), value, rtol=1e-5, err_msg=name)


def test_rank_bounds_and_exact_cases():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        a = jnp.asarray(rng.standard_normal((20, 8, 6)))
        st, nr = np.asarray(sd.stable_rank(a)), np.asarray(sd.nuclear_rank(a))
        # 1 <= st <= nr <= rank: Σσ² <= σ₁Σσ gives st <= nr, Cauchy-Schwarz gives nr <= rank
        assert np.all(1 <= st) and np.all(st <= nr + 1e-12) and np.all(nr <= 6 + 1e-12)
        q, _ = np.linalg.qr(rng.standard_normal((8, 3)))  # orthonormal columns: both equal 3
        np.testing.assert_allclose([float(sd.stable_rank(jnp.asarray(q))), float(sd.nuclear_rank(jnp.asarray(q)))], 3.0, rtol=1e-12)
        r1 = np.outer(rng.standard_normal(8), rng.standard_normal(6))  # rank one: both equal 1
        np.testing.assert_allclose([float(sd.stable_rank(jnp.asarray(r1))), float(sd.nuclear_rank(jnp.asarray(r1)))], 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", ["stable_rank", "nuclear_rank", "nuclear_norm", "frobenius_norm"])
def test_zero_matrix_gives_zero_and_extreme_scales_stay_finite(name):
    a = np.random.default_rng(2).standard_normal((3, 6, 4)).astype(np.float32)
    a[1] = 0.0
    fn = getattr(sd, name)
    ref = np.asarray(fn(jnp.asarray(a)))
    assert ref[1] == 0.0 and np.all(np.isfinite(ref))
    homogeneity = {"nuclear_norm": 1, "frobenius_norm": 1}.get(name, 0)  # ranks are scale free
    for c in [1e-20, 1e20]:
        got = np.asarray(fn(jnp.asarray(a * np.float32(c))), np.float64)
        np.testing.assert_allclose(got, ref * c**homogeneity, rtol=1e-5, err_msg=f"{c=}")


def test_principal_angles_match_scipy_subspace_angles():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((10, 3)), rng.standard_normal((10, 4))
    b[:, 0] = a[:, 0] + 1e-3 * rng.standard_normal(10)  # one small angle
    with jax.enable_x64(True):
        got = np.asarray(sd.principal_angles(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_allclose(got, np.sort(scipy.linalg.subspace_angles(a, b)), atol=1e-10)
    assert np.all(np.diff(got) >= 0)  # ascending


def test_safe_divide_gives_zero_and_a_finite_gradient_where_the_denominator_is_zero():
    from specdyn.diagnostics import safe_divide

    num, den = jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray([2.0, 0.0, -1.0])
    np.testing.assert_array_equal(np.asarray(safe_divide(num, den)), [0.5, 0.0, -3.0])
    grad = jax.grad(lambda d: jnp.sum(safe_divide(num, d)))(den)
    np.testing.assert_array_equal(np.asarray(grad), [-0.25, 0.0, -3.0])


# -------------------------------------------------- scale_by_polar diagnostics


def diagnostic_tree(dtype):
    rng = np.random.default_rng(4)
    return {
        "a": rng.standard_normal((6, 4)).astype(dtype),
        "stack": (rng.standard_normal((3, 5, 7)) * np.geomspace(1, 0.1, 7)).astype(dtype),
        "nested": {"low_rank": (rng.standard_normal((8, 2)) @ rng.standard_normal((2, 5))).astype(dtype)},
    }


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_scale_by_polar_state_holds_each_leafs_nuclear_rank(dtype, rtol):
    grads = diagnostic_tree(dtype)
    with jax.enable_x64(True):
        tx = sd.scale_by_polar(diagnostics=True)  # method="svd": the exact ‖G‖_*
        state = tx.init(grads)
        _, state = jax.jit(tx.update)(jax.tree.map(jnp.asarray, grads), state)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        got = np.asarray(_get(state.nuclear_rank, path))
        assert got.dtype == dtype and got.shape == g.shape[:-2]
        np.testing.assert_allclose(got, numpy_spectra(g)["nuclear_rank"], rtol=rtol, err_msg=jax.tree_util.keystr(path))


def _get(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


@pytest.mark.parametrize(
    "kw,rtol",
    # <P, G> with a polynomial P ≠ U Vᵀ is Σ p(σ)σ, not Σσ: the diagnostic inherits the
    # method's error. Measured relative errors: polar_express 8 steps <= 3e-7;
    # jordan 5 steps 0.19-0.31 (its band is [0.68, 1.13], squared in the ratio).
    [(dict(method="polar_express", steps=8), 1e-5), (dict(method="newton_schulz"), 0.4)],
    ids=["polar_express-8", "jordan-5"],
)
def test_polynomial_methods_give_approximate_nuclear_rank(kw, rtol):
    grads = diagnostic_tree(np.float32)
    tx = sd.scale_by_polar(diagnostics=True, **kw)
    _, state = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(grads))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        np.testing.assert_allclose(np.asarray(_get(state.nuclear_rank, path)), numpy_spectra(g)["nuclear_rank"], rtol=rtol)
