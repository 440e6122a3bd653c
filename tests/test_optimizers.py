"""The optimizer registry through one battery (like optax's alias_test.py), and references."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import specdyn as sd

NAMES = sorted(sd.OPTIMIZERS)
JORDAN = (3.4445, -4.7750, 2.0315)
# A learning rate per optimizer for the quadratic below, picked from a sweep over
# 0.003..1 (fraction of the gap left after 100 steps at the chosen lr: adam 0, gd 2e-4,
# muon 7e-3, ngd 1e-3, shampoo 0, signgd 6e-3, specgd 3e-4). Constant-size steps
# (specgd, ngd, signgd, muon) stall at a distance ~lr from the minimum; Shampoo's
# summed statistics shrink its steps like 1/√t, so it needs a larger lr.
LRS = {"adam": 0.03, "gd": 0.3, "muon": 0.03, "ngd": 0.03, "shampoo": 0.3, "signgd": 0.01, "specgd": 0.03,
       "specpow": 0.1}
MATRIX_ONLY = {"specgd", "specpow"}  # test_transforms / test_spectral_power check their errors


def params_for(name, dtype=jnp.float32):
    """A matrix, plus a bias vector for optimizers that take non-matrix leaves."""
    p = {"w": jnp.zeros((6, 5), dtype)}
    if name not in MATRIX_ONLY:
        p["b"] = jnp.zeros((6,), dtype)
    return p


def quadratic(name):
    """0.5/N ‖W A + b 1ᵀ − B‖²: A (5 x 15) with singular values √15·[1/3, 1], convex."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    v, _ = np.linalg.qr(rng.standard_normal((15, 5)))
    a = jnp.asarray((u * np.geomspace(1.0, 1 / 3, 5)) @ v.T * np.sqrt(15), jnp.float32)
    b = jnp.asarray(rng.standard_normal((6, 15)), jnp.float32)

    def loss(p):
        r = p["w"] @ a - b
        if "b" in p:
            r = r + p["b"][:, None]
        return 0.5 * jnp.mean(jnp.sum(r * r, axis=0))

    design = np.asarray(a, np.float64)
    if name not in MATRIX_ONLY:
        design = np.vstack([design, np.ones((1, 15))])
    sol = np.linalg.lstsq(design.T, np.asarray(b, np.float64).T, rcond=None)[0].T
    minimum = 0.5 * np.mean(np.sum((sol @ design - np.asarray(b, np.float64)) ** 2, axis=0))
    return loss, float(minimum)


def random_grads(params, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)


# ------------------------------------------------------------------ battery


@pytest.mark.parametrize("name", NAMES)
def test_pure_under_jit_state_keeps_its_shape_and_zero_gradient_gives_zero(name):
    opt = sd.get_optimizer(name, 0.1)
    params = params_for(name)
    grads = random_grads(params)
    state = jax.jit(opt.init)(params)
    chex.assert_trees_all_equal(state, opt.init(params))
    update = jax.jit(opt.update)
    first = update(grads, state, params)
    chex.assert_trees_all_equal(first, update(grads, state, params))  # same inputs, same outputs
    chex.assert_trees_all_close(first, opt.update(grads, state, params), rtol=1e-5, atol=1e-7)
    # lax.scan carries the state: its structure, shapes and dtypes must not change
    chex.assert_trees_all_equal_shapes_and_dtypes(first[1], state)
    assert jax.tree.structure(first[1]) == jax.tree.structure(state)
    # a zero gradient gives a zero update and no NaN (same compiled update)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(2):  # also from a state that has seen a zero gradient
        updates, state = update(zeros, state, params)
        for leaf in jax.tree.leaves((updates, state)):
            assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
        for leaf in jax.tree.leaves(updates):
            np.testing.assert_array_equal(np.asarray(leaf), 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_learning_rate_traces_once(name):
    # float64: each row must be that rate's run to rounding (in float32, Shampoo's eigh-based
    # inverse roots differ between the batched and the single program by 2e-4 relative on
    # some CPUs: rounding amplified by the roots, not a wrong row)
    with jax.enable_x64(True):
        params = params_for(name, jnp.float64)
        grads = random_grads(params, seed=1)
        chex.clear_trace_counter()

        @chex.assert_max_traces(n=1)
        def two_steps(lr):
            opt = sd.get_optimizer(name, lr)
            state = opt.init(params)
            u1, state = opt.update(grads, state, params)
            u2, _ = opt.update(grads, state, optax.apply_updates(params, u1))
            return u2

        batched = jax.jit(jax.vmap(two_steps))
        lrs = jnp.asarray([0.01, 0.02, 0.05])
        out = batched(lrs)
        batched(2 * lrs)  # new values, same program: a second trace would raise
        for i, lr in enumerate([0.01, 0.02, 0.05]):  # each row is that learning rate's run
            opt = sd.get_optimizer(name, lr)
            state = opt.init(params)
            u1, state = opt.update(grads, state, params)
            u2, _ = opt.update(grads, state, optax.apply_updates(params, u1))
            chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], out), u2, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_decreases_a_convex_matrix_quadratic(name):
    loss, minimum = quadratic(name)
    params = params_for(name)
    opt = sd.get_optimizer(name, LRS[name])

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=100)[0][0]

    start, end = float(loss(params)), float(loss(run(params)))
    # at least 95% of the gap to the minimum closed in 100 steps
    assert end - minimum < 0.05 * (start - minimum), (start, end, minimum)



@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float64], ids=["bf16", "f64"])  # float32: above
def test_update_keeps_the_dtype_even_with_a_traced_float32_learning_rate(name, dtype):
    with jax.enable_x64(True):
        params = params_for(name, dtype)
        grads = random_grads(params, seed=2)

        @jax.jit
        def update(lr):
            opt = sd.get_optimizer(name, lr)
            return opt.update(grads, opt.init(params), params)

        updates, state = update(jnp.float32(0.1))
        for leaf in jax.tree.leaves(updates):
            assert leaf.dtype == dtype
            assert np.all(np.isfinite(np.asarray(leaf, np.float64)))


# ------------------------------------------------------------- references


def test_spectral_gd_step_is_exactly_minus_lr_uv():
    rng = np.random.default_rng(3)
    g = {"w": rng.standard_normal((7, 5)), "stack": rng.standard_normal((2, 4, 6))}
    w = jax.tree.map(lambda x: rng.standard_normal(x.shape), g)
    with jax.enable_x64(True):
        for scaling in (False, True):
            for lr in (0.3, jnp.asarray(0.3)):
                opt = sd.spectral_gd(lr, nuclear_scaling=scaling)
                upd, _ = opt.update(jax.tree.map(jnp.asarray, g), opt.init(w), w)
                new = optax.apply_updates(w, upd)
                for k in g:
                    u, s, vh = np.linalg.svd(g[k], full_matrices=False)
                    factor = s.sum(-1)[..., None, None] if scaling else 1.0  # ‖G‖_*
                    np.testing.assert_allclose(np.asarray(new[k]), w[k] - 0.3 * factor * (u @ vh), rtol=1e-13, atol=1e-13)


def test_spectral_gd_passes_polar_options_and_diagnostics():
    g = {"w": jnp.asarray(np.random.default_rng(4).standard_normal((6, 4)), jnp.float32)}
    opt = sd.spectral_gd(1.0, method="newton_schulz", steps=3, diagnostics=True)
    upd, state = opt.update(g, opt.init(g))
    np.testing.assert_allclose(np.asarray(upd["w"]), -np.asarray(sd.polar(g["w"], method="newton_schulz", steps=3)), atol=1e-6)
    assert state[0].nuclear_rank["w"].shape == ()


def keller_muon_reference(grads, w0, b0, *, lr, beta, wd, nesterov, adam=(0.9, 0.999, 1e-8)):
    """Keller Jordan's Muon (github.com/KellerJordan/Muon), transcribed to numpy float64.

    Matrix: buf.lerp_(g, 1-β); update = g.lerp_(buf, β) if nesterov else buf;
    NS5 with (3.4445, -4.7750, 2.0315) on X/(‖X‖_F + 1e-7), transposed when tall;
    update *= sqrt(max(1, m/n)); W ← W(1 - lr·wd) - lr·update.
    Vector: AdamW with bias correction, W ← W(1 - lr·wd) - lr·m̂/(√v̂ + eps).
    """
    b1, b2, eps = adam
    w, b = w0.copy(), b0.copy()
    buf, m, v = np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    for t, (gw, gb) in enumerate(grads, start=1):
        buf = buf + (1 - beta) * (gw - buf)
        x = gw + beta * (buf - gw) if nesterov else buf
        tall = x.shape[0] > x.shape[1]
        x = x.T if tall else x
        x = x / (np.linalg.norm(x) + 1e-7)
        for _ in range(5):
            a = x @ x.T
            x = JORDAN[0] * x + (JORDAN[1] * a + JORDAN[2] * a @ a) @ x
        x = x.T if tall else x
        x = x * np.sqrt(max(1.0, w.shape[0] / w.shape[1]))
        w = w * (1 - lr * wd) - lr * x
        m = b1 * m + (1 - b1) * gb
        v = b2 * v + (1 - b2) * gb**2
        b = b * (1 - lr * wd) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w, b


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_keller_jordans_reference_and_sends_vectors_to_adamw(nesterov):
    # specdyn's momentum sums gradients (m ← βm + G) where the reference averages them
    # (buf = (1-β)m): the polar step is scale invariant, so the updates agree. The
    # reference's +1e-7 in the normalisation shifts its input by 1e-7/‖X‖_F (relative),
    # which NS5 (slope < 500) turns into < 1e-5/‖X‖_F in the update, times lr = 0.02 in W:
    # < 1e-7 with ‖X‖_F ~ 3 is asserted; measured 6e-9 (nesterov) and 9e-9 (plain) after
    # 3 steps. The bias follows AdamW exactly (float64 round-off).
    rng = np.random.default_rng(5)
    lr, beta, wd = 0.02, 0.9, 0.1
    grads = [(rng.standard_normal((8, 4)), rng.standard_normal(4)) for _ in range(3)]
    w0, b0 = rng.standard_normal((8, 4)), rng.standard_normal(4)
    with jax.enable_x64(True):
        opt = sd.muon(lr, momentum=beta, nesterov=nesterov, weight_decay=wd, shape_scaling="keller")
        params = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}
        state = opt.init(params)
        for gw, gb in grads:
            upd, state = opt.update({"w": jnp.asarray(gw), "b": jnp.asarray(gb)}, state, params)
            params = optax.apply_updates(params, upd)
    w_ref, b_ref = keller_muon_reference(grads, w0, b0, lr=lr, beta=beta, wd=wd, nesterov=nesterov)
    np.testing.assert_allclose(np.asarray(params["w"]), w_ref, atol=1e-7)
    np.testing.assert_allclose(np.asarray(params["b"]), b_ref, rtol=1e-10)


def test_muon_adam_learning_rate_and_batched_matrices():
    rng = np.random.default_rng(6)
    g = {"stack": rng.standard_normal((3, 5, 4)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
    opt = sd.muon(0.1, momentum=0.0, nesterov=False, adam_learning_rate=0.001)
    params = jax.tree.map(jnp.zeros_like, g)
    upd, _ = opt.update(jax.tree.map(jnp.asarray, g), opt.init(params), params)
    # momentum 0: each matrix of the stack is -lr·NS5(G_i); the bias's first Adam step is -lr_adam·sign(g)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(upd["stack"][i]), -0.1 * np.asarray(sd.polar(g["stack"][i], method="newton_schulz")), atol=1e-6)
    np.testing.assert_allclose(np.asarray(upd["b"]), -0.001 * np.sign(g["b"]), rtol=1e-4)


# An MLP's parameters in optax's layout, x @ W: W has shape (fan_in, fan_out). Non-square
# hidden layers, so the shape factor sqrt(max(1, fan_out/fan_in)) is 2 on W1, 1 elsewhere.
MLP_SHAPES = {"W1": (16, 64), "b1": (64,), "W2": (64, 64), "b2": (64,), "W3": (64, 8), "b3": (8,)}
HAS_CONSISTENT_RMS = "consistent_rms" in inspect.signature(optax.contrib.muon).parameters


def _mlp_grads(dtype, steps=4, seed=11):
    rng = np.random.default_rng(seed)
    draw = lambda: {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in MLP_SHAPES.items()}
    return draw(), [draw() for _ in range(steps)]


def _updates(opt, params, grads):
    """Every update of ``opt`` along the trajectory it makes from ``params``."""
    state, out, update = opt.init(params), [], jax.jit(opt.update)  # eager: seconds per step
    for g in grads:
        upd, state = update(g, state, params)
        params = optax.apply_updates(params, upd)
        out.append(upd)
    return out


OPTAX_CASES = [  # (sd.muon options, optax.contrib.muon options): the same optimizer
    ({}, {}),
    ({"nesterov": False}, {"nesterov": False}),
    ({"momentum": 0.9, "weight_decay": 0.1, "adam_weight_decay": 0.05, "adam_b1": 0.8},
     {"beta": 0.9, "weight_decay": 0.1, "adam_weight_decay": 0.05, "adam_b1": 0.8}),
    ({"shape_scaling": "moonlight"}, {"consistent_rms": 0.2}),
]


@pytest.mark.parametrize("case", range(len(OPTAX_CASES)))
def test_muon_optax_convention_equals_optax_contrib_muon(case):
    # Same gradients, four steps along each optimizer's own trajectory, matrices and
    # biases. float64 with eps = 0 on both sides (optax adds eps to ‖M‖_F before
    # Newton-Schulz and to Adam's denominator; sd.muon's adam_eps is the latter): the
    # same arithmetic, so 1e-12 at lr = 1. float32 with the defaults (eps = 1e-8), at a
    # working rate 0.02: 1e-6, measured 3e-8; one convention difference (shape factor 2 on
    # W1, the momentum form's 1.46 at step 2, Nesterov Adam on the biases) is ~1e-2.
    ours, theirs = OPTAX_CASES[case]
    if "consistent_rms" in theirs and not HAS_CONSISTENT_RMS:
        pytest.skip(f"optax {optax.__version__} has no consistent_rms (added in 0.2.7)")
    with jax.enable_x64(True):
        params, grads = _mlp_grads(jnp.float64)
        a = _updates(sd.muon(1.0, convention="optax", adam_eps=0.0, **ours), params, grads)
        b = _updates(optax.contrib.muon(1.0, eps=0.0, **theirs), params, grads)
    for ua, ub in zip(a, b, strict=True):
        chex.assert_trees_all_close(ua, ub, rtol=0, atol=1e-12)
    if case:
        return  # float32: the defaults, the reported setup
    params, grads = _mlp_grads(jnp.float32)
    a = _updates(sd.muon(0.02, convention="optax", **ours), params, grads)
    b = _updates(optax.contrib.muon(0.02, **theirs), params, grads)
    for ua, ub in zip(a, b, strict=True):
        chex.assert_trees_all_close(ua, ub, rtol=0, atol=1e-6)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(ua))


def test_muon_conventions_on_an_x_at_w_hidden_layer_reproduce_the_factor_two():
    # The reported symptom: on an MLP with x @ W weights, sd.muon's first update of the
    # (16, 64) hidden layer had half the norm of optax.contrib.muon's. The first update is
    # s·polar(G) in every convention (both momentum forms are ∝ G at step 1), so the norms
    # differ by the shape factor s alone: optax's sqrt(64/16) = 2; "specdyn"'s default 1;
    # and "keller" in the "out_in" layout reads the 16 rows as fan_out: 1 as well.
    params, grads = _mlp_grads(jnp.float32, steps=1)
    polar = -np.asarray(sd.polar(grads[0]["W1"], method="newton_schulz"))

    def first(opt):
        return np.asarray(opt.update(grads[0], opt.init(params), params)[0]["W1"])

    for opt, factor in [(optax.contrib.muon(1.0), 2.0), (sd.muon(1.0, convention="optax", layout="out_in"), 1.0),
                        (sd.muon(1.0), 1.0), (sd.muon(1.0, shape_scaling="keller"), 1.0),
                        (sd.muon(1.0, shape_scaling="keller", layout="in_out"), 2.0),
                        (sd.muon(1.0, convention="optax", shape_scaling="none"), 1.0)]:
        np.testing.assert_allclose(first(opt), factor * polar, rtol=0, atol=1e-5)
    ratio = np.linalg.norm(first(optax.contrib.muon(1.0))) / np.linalg.norm(first(sd.muon(1.0)))
    assert abs(ratio - 2.0) < 1e-5
    # at step 2 the momentum forms part: the gradient's weight against the sum's is
    # (1 - β³)/(1 - β²) = 1.46 times larger in optax's, so the directions differ
    params, grads = _mlp_grads(jnp.float32, steps=2)
    a = _updates(sd.muon(1.0, shape_scaling="keller", layout="in_out"), params, grads)[1]["W2"]
    b = _updates(sd.muon(1.0, convention="optax"), params, grads)[1]["W2"]
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_bias_corrected_momentum_closed_form():
    # m_t = β m + (1-β) g; nesterov: β m_t/(1-β^(t+1)) + (1-β) g_t/(1-β^t), in numpy
    rng = np.random.default_rng(12)
    beta, grads = 0.9, [rng.standard_normal(3) for _ in range(4)]
    for nesterov in (True, False):
        tx = sd.bias_corrected_momentum(beta, nesterov=nesterov)
        with jax.enable_x64(True):
            state, m = tx.init(jnp.zeros(3)), np.zeros(3)
            for t, g in enumerate(grads, start=1):
                out, state = tx.update(jnp.asarray(g), state)
                m = beta * m + (1 - beta) * g
                want = (beta * m / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta**t)) if nesterov else m / (1 - beta**t)
                np.testing.assert_allclose(np.asarray(out), want, rtol=1e-13)


def test_shampoo_first_step_is_lr_times_polar_and_bias_is_signlike():
    rng = np.random.default_rng(7)
    g = {"w": rng.standard_normal((6, 4)), "b": rng.standard_normal(6)}
    with jax.enable_x64(True):
        opt = sd.shampoo(0.1, eps=1e-12)
        upd, _ = opt.update(jax.tree.map(jnp.asarray, g), opt.init(jax.tree.map(np.zeros_like, g)))
    u, _, vh = np.linalg.svd(g["w"], full_matrices=False)
    np.testing.assert_allclose(np.asarray(upd["w"]), -0.1 * u @ vh, atol=1e-8)
    np.testing.assert_allclose(np.asarray(upd["b"]), -0.1 * np.sign(g["b"]), atol=1e-8)  # g/√(g²+eps)


def test_normalized_gd_is_scale_invariant_from_1e_minus_20_to_1e20():
    g = np.random.default_rng(8).standard_normal((5, 3)).astype(np.float32)
    opt = sd.normalized_gd(0.5)
    for c in [1e-20, 1e-10, 1.0, 1e10, 1e20]:
        upd, _ = opt.update({"w": jnp.asarray(g * np.float32(c))}, opt.init({"w": g}))
        np.testing.assert_allclose(np.asarray(upd["w"]), -0.5 * g / np.linalg.norm(g), rtol=1e-5, err_msg=f"{c=}")


def test_sign_gd_and_gd_steps():
    g = np.random.default_rng(9).standard_normal((5, 3)).astype(np.float32)
    for name, expected in [("signgd", -0.1 * np.sign(g)), ("gd", -0.1 * g)]:
        opt = sd.get_optimizer(name, 0.1)
        upd, _ = opt.update({"w": jnp.asarray(g)}, opt.init({"w": g}))
        np.testing.assert_allclose(np.asarray(upd["w"]), expected, rtol=1e-6)


def test_get_optimizer_forwards_options():
    g = {"w": jnp.asarray(np.random.default_rng(10).standard_normal((6, 4)), jnp.float32)}
    a = sd.get_optimizer("muon", 0.1, momentum=0.5, steps=3)
    b = sd.muon(0.1, momentum=0.5, steps=3)
    chex.assert_trees_all_close(a.update(g, a.init(g), g), b.update(g, b.init(g), g))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sd.get_optimizer("sgdx", 0.1), "name='sgdx'"),
        (lambda: sd.get_optimizer("muon", 0.1, momentm=0.9), "momentm"),
        (lambda: sd.get_optimizer("specgd", 0.1, methd="svd"), "methd"),
        (lambda: sd.get_optimizer("gd", 0.1, momentum=0.9), "momentum"),
        (lambda: sd.get_optimizer("specgd", 0.1, method="qr"), "method='qr'"),
        (lambda: sd.muon(0.1, momentum=1.0), "momentum=1.0"),
        (lambda: sd.muon(0.1, weight_decay=-0.1), "weight_decay=-0.1"),
        (lambda: sd.muon(0.1, steps=0), "steps=0"),
        (lambda: sd.muon(0.1, shape_scaling="kimi"), "shape_scaling='kimi'"),
        (lambda: sd.muon(0.1, convention="torch"), "convention='torch'"),
        (lambda: sd.muon(0.1, layout="x @ W"), "layout='x @ W'"),
        (lambda: sd.muon(0.1, adam_weight_decay=-1.0), "adam_weight_decay=-1.0"),
        (lambda: sd.get_optimizer("muon", 0.1, convention="jordan"), "convention='jordan'"),
        (lambda: sd.shampoo(0.1, exponent=-0.25), "exponent=-0.25"),
    ],
)
def test_bad_options_raise_value_error_showing_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_registry_names():
    assert set(sd.OPTIMIZERS) == {"gd", "specgd", "specpow", "muon", "ngd", "signgd", "shampoo", "adam"}


# ------------------------------------------------------------------ recognisable optimizers


@pytest.mark.parametrize("name", NAMES)
def test_traced_rate_under_vmap_equals_the_float_rate_run_in_float64(name):
    # The engine rebuilds every optimizer from (factory, options) with a traced rate:
    # eight steps of that, vmapped over rates, equal the run built with a Python float.
    with jax.enable_x64(True):
        params = params_for(name, jnp.float64)
        target = jax.tree.map(lambda p: jnp.asarray(np.linspace(-1.0, 2.0, p.size).reshape(p.shape)), params)
        loss = lambda p: sum(jnp.sum((a - b) ** 2 * (1.0 + a * a)) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target)))

        def run(opt):
            def step(carry, _):
                p, s = carry
                u, s = opt.update(jax.grad(loss)(p), s, p)
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(step, (params, opt.init(params)), None, length=8)[0][0]

        built = sd.get_optimizer(name, 0.1)
        lrs = [0.01, 0.05]
        traced = jax.jit(jax.vmap(lambda lr: run(built.factory(lr, **dict(built.options)))))(jnp.asarray(lrs))
        for i, lr in enumerate(lrs):
            ref = jax.jit(lambda lr=lr: run(sd.get_optimizer(name, lr)))()  # rate baked in as a constant
            chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], traced), ref, rtol=1e-6, atol=1e-12)
            assert jax.tree.leaves(ref)[0].dtype == jnp.float64


@pytest.mark.parametrize("name", NAMES)
def test_factories_return_optimizers_that_carry_their_recipe(name):
    opt = sd.get_optimizer(name, 0.1)
    assert isinstance(opt, optax.GradientTransformation) and isinstance(opt, sd.Optimizer)
    assert opt.learning_rate == 0.1 and opt.factory is sd.OPTIMIZERS[name]
    assert opt.recipe == sd.get_optimizer(name, 0.7).recipe  # the rate is not part of the recipe
    hash(opt.recipe)
    again = opt.factory(0.1, **dict(opt.options))
    params = params_for(name)
    grads = random_grads(params)
    chex.assert_trees_all_close(
        again.update(grads, again.init(params), params), opt.update(grads, opt.init(params), params)
    )
    chained = optax.chain(opt, optax.scale(1.0))  # still composes like any transformation
    chained.update(grads, chained.init(params), params)


def test_options_with_defaults_filled_in_make_one_recipe():
    assert sd.muon(0.1).recipe == sd.muon(0.2, momentum=0.95).recipe
    assert sd.muon(0.1).recipe != sd.muon(0.1, momentum=0.9).recipe
    assert sd.spectral_gd(0.1, method="svd").recipe == sd.get_optimizer("specgd", 0.3, method="svd").recipe
    assert dict(sd.spectral_gd(0.1, method="svd").options) == {"method": "svd", "nuclear_scaling": False}
    assert sd.gd(optax.linear_schedule(0.1, 0.0, 10)).recipe is None  # a schedule is part of the program


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), np.float64(-0.5)])
def test_zero_negative_or_non_finite_rates_are_refused_at_construction(name, bad):
    # A sweep needs rates > 0; so does every factory, with the same words.
    with pytest.raises(ValueError, match=rf"learning_rate must be a finite number > 0, got learning_rate={float(bad)!r}"):
        sd.get_optimizer(name, bad)
    with pytest.raises(ValueError, match=r"learning_rate must be finite and > 0, got learning_rate="):
        sd.get_optimizer(name, jnp.asarray(bad, jnp.float32))  # a concrete array is checked too
    with pytest.raises(ValueError, match="adam_learning_rate"):
        sd.muon(0.1, adam_learning_rate=-1e-3)
