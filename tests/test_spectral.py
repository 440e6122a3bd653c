"""Polar factor, spectral transforms and the optimizer registry, against numpy/scipy/optax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib._muon as optax_muon
import pytest
import scipy.linalg

import specdyn as sd

RNG = np.random.default_rng(0)
SHAPES = [(7, 7), (9, 4), (4, 9), (3, 6, 5), (2, 2, 5, 8)]  # square, tall, wide, batched


def scipy_polar(g):
    g = np.asarray(g, np.float64)
    flat = g.reshape(-1, *g.shape[-2:])
    return np.stack([scipy.linalg.polar(x)[0] if x.shape[0] >= x.shape[1] else scipy.linalg.polar(x.T)[0].T for x in flat]).reshape(g.shape)


def truncated_polar(g, rank):
    u, s, vh = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    return u[:, :rank] @ vh[:rank]


def well_conditioned(shape, dtype=np.float32, cond=5.0, seed=0):
    """Random matrices with singular values spread over [1/cond, 1]."""
    rng = np.random.default_rng(seed)
    m, n = shape[-2:]
    k = min(m, n)
    out = []
    for _ in range(int(np.prod(shape[:-2], dtype=int))):
        u, _ = np.linalg.qr(rng.standard_normal((m, k)))
        v, _ = np.linalg.qr(rng.standard_normal((n, k)))
        out.append((u * np.geomspace(1.0, 1.0 / cond, k)) @ v.T)
    return np.stack(out).reshape(shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_polar_matches_scipy_float64(shape):
    g = RNG.standard_normal(shape)
    with jax.enable_x64(True):
        out = np.asarray(sd.polar(jnp.asarray(g)))
    np.testing.assert_allclose(out, scipy_polar(g), atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_polar_matches_scipy_float32(shape):
    g = well_conditioned(shape, np.float32, cond=20.0)
    out = sd.polar(jnp.asarray(g))
    assert out.dtype == jnp.float32 and out.shape == g.shape
    np.testing.assert_allclose(np.asarray(out), scipy_polar(g), atol=1e-5)


@pytest.mark.parametrize("rank", [1, 3])
def test_svd_polar_of_rank_deficient_matrix_has_that_rank(rank):
    g = RNG.standard_normal((8, rank)) @ RNG.standard_normal((rank, 6))
    with jax.enable_x64(True):
        out = np.asarray(sd.polar(jnp.asarray(g)))
    np.testing.assert_allclose(out, truncated_polar(g, rank), atol=1e-10)
    assert np.linalg.matrix_rank(out, tol=1e-8) == rank


# Bands [min, max] of output singular values on 16 matrices 24x12 with singular
# values spread over [1/5, 1]; measured: jordan-5 [0.683, 1.126], dion-5
# [0.978, 1.030], polar_express-5 [0.879, 1.118], polar_express-8 [1.000, 1.000].
# Asserted with a 0.02 margin (1e-3 for the converged one).
BANDS = {
    ("newton_schulz", "jordan", 5): (0.66, 1.15),
    ("newton_schulz", "dion", 5): (0.95, 1.06),
    ("polar_express", None, 5): (0.85, 1.14),
    ("polar_express", None, 8): (0.999, 1.001),
}


@pytest.mark.parametrize("key", list(BANDS), ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}")
def test_polynomial_methods_land_in_their_band(key):
    method, coeffs, steps = key
    g = well_conditioned((16, 24, 12), cond=5.0, seed=1)
    out = sd.polar(jnp.asarray(g), method=method, steps=steps, coeffs=coeffs)
    s = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
    lo, hi = BANDS[key]
    assert lo <= s.min() and s.max() <= hi, (s.min(), s.max())


def test_polar_express_with_enough_steps_is_exact_to_1e_3():
    g = well_conditioned((4, 20, 12), cond=20.0, seed=2)
    out = sd.polar(jnp.asarray(g), method="polar_express", steps=10)
    np.testing.assert_allclose(np.asarray(out), scipy_polar(g), atol=1e-3)


def test_polar_express_table_matches_published_coefficients():
    published = (8.28721201814563, -23.595886519098837, 17.300387312530933)
    first = sd.polar_express_coefficients(8)[0]
    expected = (published[0] / 1.01, published[1] / 1.01**3, published[2] / 1.01**5)
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    np.testing.assert_allclose(sd.polar_express_coefficients(8)[-1], (15 / 8, -10 / 8, 3 / 8), rtol=1e-6)


def test_jordan_newton_schulz_agrees_with_optax_muon():
    # optax divides by ‖X‖_F + 1e-8 where specdyn divides by ‖X‖_F exactly (after
    # dividing by max|X|): for ‖X‖_F ~ 10 the two inputs differ by ~1e-9 relative.
    g = RNG.standard_normal((12, 20)).astype(np.float32)
    ours = sd.polar(jnp.asarray(g), method="newton_schulz", coeffs="jordan", steps=5)
    theirs = optax_muon.orthogonalize_via_newton_schulz(jnp.asarray(g), jnp.asarray((3.4445, -4.7750, 2.0315)), 5)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=2e-5)


METHODS = [dict(method="svd"), dict(method="newton_schulz"), dict(method="polar_express")]


@pytest.mark.parametrize("kw", METHODS, ids=lambda k: k["method"])
def test_scale_invariance_from_1e_minus_20_to_1e20(kw):
    g = well_conditioned((10, 6), cond=4.0, seed=3)
    ref = np.asarray(sd.polar(jnp.asarray(g), **kw))
    for c in [1e-20, 1e-10, 1e-3, 1e3, 1e10, 1e20]:
        out = np.asarray(sd.polar(jnp.asarray(g * np.float32(c)), **kw))
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=f"c={c}")
    normalized = sd.normalized_gd(1.0)
    a = normalized.update({"w": jnp.asarray(g * np.float32(1e-20))}, normalized.init({"w": g}))[0]["w"]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kw", METHODS, ids=lambda k: k["method"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_dtype_preserved_and_zero_gives_zero(kw, dtype):
    with jax.enable_x64(True):
        g = jnp.asarray(well_conditioned((6, 4), seed=4), dtype)
        assert sd.polar(g, **kw).dtype == dtype
        zero = sd.polar(jnp.zeros((3, 5, 4), dtype), **kw)
        assert zero.dtype == dtype and not np.any(np.asarray(zero, np.float32))


def test_compute_dtype_float32_is_more_accurate_for_bfloat16_input():
    g = well_conditioned((16, 8), cond=3.0, seed=5)
    exact = scipy_polar(g)
    low = np.asarray(sd.polar(jnp.asarray(g, jnp.bfloat16), method="polar_express", steps=8), np.float32)
    high = np.asarray(
        sd.polar(jnp.asarray(g, jnp.bfloat16), method="polar_express", steps=8, compute_dtype=jnp.float32),
        np.float32,
    )
    assert np.abs(high - exact).max() < np.abs(low - exact).max()


def quadratic(seed=0, m=6, n=5):
    rng = np.random.default_rng(seed)
    a = well_conditioned((n, 3 * n), np.float32, cond=3.0, seed=seed) * np.sqrt(3 * n)
    b = rng.standard_normal((m, 3 * n)).astype(np.float32)
    params = {"w": jnp.zeros((m, n)), "b": jnp.zeros((m,))}

    def loss(p):
        r = p["w"] @ a + p["b"][:, None] - b
        return 0.5 * jnp.mean(jnp.sum(r * r, axis=0))

    # the minimum, from numpy least squares on [A; 1]
    design = np.vstack([a, np.ones((1, a.shape[1]))]).astype(np.float64)
    sol = np.linalg.lstsq(design.T, b.T.astype(np.float64), rcond=None)[0].T
    loss.minimum = float(0.5 * np.mean(np.sum((sol @ design - b) ** 2, axis=0)))
    return params, loss


LRS = {"gd": 0.1, "specgd": 0.05, "muon": 0.03, "ngd": 0.1, "signgd": 0.005, "shampoo": 0.05, "adam": 0.05}


def matrix_only(name, lr):
    """specgd / shampoo act on matrices; route the bias to plain GD with optax.partition."""
    if name == "specgd":
        labels = lambda p: {"w": "m", "b": "v"}
        return optax.partition({"m": sd.spectral_gd(lr), "v": optax.sgd(0.1)}, labels)
    return sd.get_optimizer(name, lr)


@pytest.mark.parametrize("name", sorted(sd.OPTIMIZERS))
def test_every_optimizer_decreases_a_convex_matrix_quadratic(name):
    params, loss = quadratic()
    opt = matrix_only(name, LRS[name])
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    start = float(loss(params))
    for _ in range(150):
        params, state = step(params, state)
    # at least half of the way from the start to the minimum
    assert float(loss(params)) - loss.minimum < 0.5 * (start - loss.minimum)


@pytest.mark.parametrize("name", sorted(sd.OPTIMIZERS))
def test_zero_gradient_gives_zero_update_and_dtype_kept(name):
    params, _ = quadratic()
    opt = matrix_only(name, LRS[name])
    state = opt.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(opt.update)(zeros, state, params)
    for leaf in jax.tree.leaves(updates):
        assert leaf.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)


@pytest.mark.parametrize("name", sorted(sd.OPTIMIZERS))
def test_vmap_over_learning_rate_compiles_once(name):
    params, loss = quadratic(seed=1)
    grads = jax.grad(loss)(params)
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def update(lr):
        opt = matrix_only(name, lr)
        return opt.update(grads, opt.init(params), params)[0]

    batched_update = jax.jit(jax.vmap(update))
    lrs = jnp.asarray([0.01, 0.02, 0.05])
    batched = batched_update(lrs)
    batched_update(lrs * 2)  # new values, same program: no retrace
    one = matrix_only(name, 0.02).update(grads, matrix_only(name, 0.02).init(params), params)[0]
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[1], batched), one, rtol=1e-5, atol=1e-7)


def test_spectral_gd_step_is_exactly_minus_lr_uv():
    with jax.enable_x64(True):
        g = RNG.standard_normal((7, 5))
        w = RNG.standard_normal((7, 5))
        u, s, vh = np.linalg.svd(g, full_matrices=False)
        for scaling, factor in ((False, 1.0), (True, s.sum())):
            opt = sd.spectral_gd(0.3, nuclear_scaling=scaling)
            upd, _ = opt.update({"w": jnp.asarray(g)}, opt.init({"w": jnp.asarray(w)}))
            np.testing.assert_allclose(np.asarray(w + upd["w"]), w - 0.3 * factor * (u @ vh), atol=1e-12)


def test_diagnostics_state_holds_nuclear_rank_per_matrix():
    with jax.enable_x64(True):
        grads = {"a": jnp.asarray(RNG.standard_normal((6, 4))), "stack": jnp.asarray(RNG.standard_normal((3, 5, 7)))}
        tx = sd.scale_by_polar(diagnostics=True)
        _, state = tx.update(grads, tx.init(grads))
        for name, g in grads.items():
            s = np.linalg.svd(np.asarray(g), compute_uv=False)
            expected = s.sum(-1) ** 2 / (s**2).sum(-1)
            np.testing.assert_allclose(np.asarray(state.nuclear_rank[name]), expected, rtol=1e-10)
            np.testing.assert_allclose(np.asarray(sd.nuclear_rank(g)), expected, rtol=1e-10)
            np.testing.assert_allclose(np.asarray(sd.stable_rank(g)), (s**2).sum(-1) / s[..., 0] ** 2, rtol=1e-10)


def test_muon_matches_a_numpy_reference_and_sends_vectors_to_adamw():
    g = [RNG.standard_normal((6, 4)).astype(np.float32) for _ in range(3)]
    w0 = RNG.standard_normal((6, 4)).astype(np.float32)
    lr, beta, wd = 0.02, 0.9, 0.1
    opt = sd.muon(lr, momentum=beta, weight_decay=wd)
    params = {"w": jnp.asarray(w0), "b": jnp.ones(4)}
    state = opt.init(params)
    # numpy reference (Jordan's Muon: lerp momentum, nesterov, NS5 jordan, decoupled decay)
    w, buf = w0.astype(np.float64), np.zeros_like(w0, np.float64)
    for gt in g:
        updates, state = opt.update({"w": jnp.asarray(gt), "b": jnp.ones(4)}, state, params)
        params = optax.apply_updates(params, updates)
        buf = beta * buf + (1 - beta) * gt
        x = (1 - beta) * gt + beta * buf
        x = (x / np.linalg.norm(x)).T  # tall -> iterate on the wide transpose
        for _ in range(5):
            a = x @ x.T
            x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
        w = w - lr * (x.T + wd * w)
    np.testing.assert_allclose(np.asarray(params["w"]), w, atol=1e-5)
    # the bias moved like AdamW's first steps: by about lr per step, against the gradient
    np.testing.assert_allclose(np.asarray(params["b"]), 1 - 3 * lr * (1 + wd), atol=3e-3)


def test_shampoo_matches_scipy_fractional_powers_and_first_step_is_polar():
    with jax.enable_x64(True):
        gs = [RNG.standard_normal((5, 3)) for _ in range(3)]
        eps = 1e-6
        tx = sd.scale_by_shampoo(eps=eps)
        state = tx.init({"w": jnp.zeros((5, 3))})
        left, right = eps * np.eye(5), eps * np.eye(3)
        for t, g in enumerate(gs):
            upd, state = tx.update({"w": jnp.asarray(g)}, state)
            left, right = left + g @ g.T, right + g.T @ g
            ref = np.real(scipy.linalg.fractional_matrix_power(left, -0.25) @ g @ scipy.linalg.fractional_matrix_power(right, -0.25))
            np.testing.assert_allclose(np.asarray(upd["w"]), ref, rtol=1e-6, atol=1e-8)
            if t == 0:  # no memory yet: (GGᵀ)^-1/4 G (GᵀG)^-1/4 = U Vᵀ
                np.testing.assert_allclose(np.asarray(upd["w"]), scipy_polar(g), atol=1e-4)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sd.polar(jnp.ones((3, 3)), method="qr"), "method='qr'"),
        (lambda: sd.polar(jnp.ones((3, 3)), method="newton_schulz", coeffs="keller"), "coeffs='keller'"),
        (lambda: sd.polar(jnp.ones((3, 3)), method="newton_schulz", coeffs=(1.0, 2.0)), r"shape \(2,\)"),
        (lambda: sd.polar(jnp.ones((3, 3)), method="newton_schulz", coeffs="dion", steps=3), "steps=3"),
        (lambda: sd.polar(jnp.ones((3, 3)), method="newton_schulz", steps=0), "steps=0"),
        (lambda: sd.polar(jnp.ones((3, 3)), method="polar_express", steps=-1), "steps=-1"),
        (lambda: sd.polar(jnp.ones((3, 3)), method="newton_schulz", steps=2.5), "steps=2.5"),
        (lambda: sd.polar(jnp.ones((3, 3)), rank_tol=-1.0), "rank_tol=-1.0"),
        (lambda: sd.scale_by_polar().init({"w": jnp.ones((3, 3)), "b": jnp.ones(3)}), r"\['b'\].*optax.partition.*sd.muon"),
        (lambda: sd.get_optimizer("sgdx", 0.1), "name='sgdx'"),
        (lambda: sd.get_optimizer("muon", 0.1, momentm=0.9), "momentm"),
        (lambda: sd.get_optimizer("specgd", 0.1, methd="svd"), "methd"),
    ],
)
def test_bad_input_raises_value_error_showing_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
