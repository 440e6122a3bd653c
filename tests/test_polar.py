"""sd.polar against scipy/numpy: exact SVD factor, polynomial bands, Polar Express table, optax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax.contrib._muon as optax_muon
import pytest
import scipy.linalg

import specdyn as sd

SHAPES = [(7, 7), (9, 4), (4, 9), (3, 6, 5), (2, 2, 5, 8)]  # square, tall, wide, batched
SHAPE_IDS = ["square", "tall", "wide", "batch3", "batch2x2"]
JORDAN = (3.4445, -4.7750, 2.0315)
DION = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
CLASSIC = (15 / 8, -10 / 8, 3 / 8)  # the convergent quintic: p(1) = 1, p'(1) = p''(1) = 0
# Polar Express, arXiv 2505.16932, the published 8-step table (before the safety factor).
POLAR_EXPRESS_PUBLISHED = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
METHODS = ["svd", "newton_schulz", "polar_express"]


def well_conditioned(shape, dtype=np.float32, cond=5.0, seed=0):
    """Random matrices (last two axes) with singular values geometric over [1/cond, 1]."""
    rng = np.random.default_rng(seed)
    m, n = shape[-2:]
    k = min(m, n)
    out = []
    for _ in range(int(np.prod(shape[:-2], dtype=int))):
        u, _ = np.linalg.qr(rng.standard_normal((m, k)))
        v, _ = np.linalg.qr(rng.standard_normal((n, k)))
        out.append((u * np.geomspace(1.0, 1.0 / cond, k)) @ v.T)
    return np.stack(out).reshape(shape).astype(dtype)


def scipy_polar(g):
    """U Vᵀ of each matrix of a stack, from scipy.linalg.polar (in float64)."""
    g = np.asarray(g, np.float64)
    flat = g.reshape(-1, *g.shape[-2:])
    out = [scipy.linalg.polar(x)[0] if x.shape[0] >= x.shape[1] else scipy.linalg.polar(x.T)[0].T for x in flat]
    return np.stack(out).reshape(g.shape)


def truncated_polar(g, rank):
    """U_r V_rᵀ of each matrix of a stack, from numpy's SVD cut at ``rank``."""
    u, _, vh = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    return np.matmul(u[..., :rank], vh[..., :rank, :])


def kwargs_for(method):
    return {"method": method, "steps": 8} if method == "polar_express" else {"method": method}


# ---------------------------------------------------------------- exact (svd)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_svd_polar_matches_scipy_float64(shape):
    g = np.random.default_rng(1).standard_normal(shape)
    with jax.enable_x64(True):
        out = sd.polar(jnp.asarray(g))
        assert out.dtype == jnp.float64 and out.shape == shape
        np.testing.assert_allclose(np.asarray(out), scipy_polar(g), atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_svd_polar_matches_scipy_float32(shape):
    # The polar factor's forward error is about eps·κ(G); with κ <= 20 that is ~3e-6
    # at worst for float32, so 1e-5 holds (a Gaussian square matrix can have κ ~ 1e3).
    g = well_conditioned(shape, np.float32, cond=20.0, seed=2)
    out = sd.polar(jnp.asarray(g))
    assert out.dtype == jnp.float32 and out.shape == shape
    np.testing.assert_allclose(np.asarray(out), scipy_polar(g), atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 6), (6, 8), (3, 7, 5)], ids=["tall", "wide", "batched"])
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_svd_polar_of_rank_deficient_matrix_is_the_truncated_factor(shape, rank, dtype, atol):
    # scipy.linalg.polar returns *a* unitary factor for singular input (it completes the
    # null space arbitrarily); the rank-r factor U_r V_rᵀ is the reference here.
    rng = np.random.default_rng(3)
    *batch, m, n = shape
    g = np.matmul(rng.standard_normal((*batch, m, rank)), rng.standard_normal((*batch, rank, n)))
    g = g.astype(dtype)
    with jax.enable_x64(True):
        out = np.asarray(sd.polar(jnp.asarray(g)), np.float64)
    np.testing.assert_allclose(out, truncated_polar(g, rank), atol=atol)
    s = np.linalg.svd(out, compute_uv=False)
    np.testing.assert_allclose(s[..., :rank], 1.0, atol=atol)  # rank r: r ones, the rest zero
    np.testing.assert_allclose(s[..., rank:], 0.0, atol=atol)


def test_svd_rank_tol_drops_singular_values_at_or_below_it():
    with jax.enable_x64(True):
        g = well_conditioned((6, 4), np.float64, seed=4)
        u, _, vh = np.linalg.svd(g, full_matrices=False)
        g = (u * np.array([1.0, 0.6, 0.4, 0.1])) @ vh
        for tol, keep in [(0.0, 4), (0.05, 4), (0.3, 3), (0.5, 2), (0.99, 1)]:
            out = np.asarray(sd.polar(jnp.asarray(g), rank_tol=tol))
            np.testing.assert_allclose(out, u[:, :keep] @ vh[:keep], atol=1e-12, err_msg=f"{tol=}")


# ------------------------------------------------------- zero input, batching


@pytest.mark.parametrize("method", METHODS)
def test_zero_matrix_gives_zeros_and_a_zero_slice_leaves_others_alone(method):
    kw = kwargs_for(method)
    g = well_conditioned((3, 6, 4), seed=5)
    g[1] = 0.0
    out = np.asarray(sd.polar(jnp.asarray(g), **kw))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[1], 0.0)
    for i in (0, 2):  # the other slices are their own polar factors
        np.testing.assert_allclose(out[i], np.asarray(sd.polar(jnp.asarray(g[i]), **kw)), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_leading_axes_equal_vmap_and_jit_equals_eager(method):
    kw = kwargs_for(method)
    g = jnp.asarray(well_conditioned((2, 3, 5, 7), seed=6))
    direct = sd.polar(g, **kw)
    mapped = jax.vmap(jax.vmap(functools.partial(sd.polar, **kw)))(g)
    jitted = jax.jit(functools.partial(sd.polar, **kw))(g)
    np.testing.assert_allclose(np.asarray(direct), np.asarray(mapped), atol=1e-6)
    np.testing.assert_allclose(np.asarray(direct), np.asarray(jitted), atol=1e-6)


# ------------------------------------------------------- polynomial methods


def scalar_composition(g, table, input_scale):
    """The singular values a polynomial method must output, from the scalar map alone.

    Each step X ← aX + bXXᵀX + c(XXᵀ)²X keeps the singular vectors and maps each
    singular value σ ↦ aσ + bσ³ + cσ⁵, starting from σ / (input_scale·‖G‖_F).
    """
    s = np.linalg.svd(np.asarray(g, np.float64), compute_uv=False)
    x = s / (input_scale * np.sqrt(np.sum(s**2, axis=-1, keepdims=True)))
    for a, b, c in table:
        x = a * x + b * x**3 + c * x**5
    return np.sort(np.abs(x), axis=-1)


COMPOSITION_CASES = {
    "jordan-5": (dict(method="newton_schulz"), (JORDAN,) * 5, 1.0),
    "jordan-3": (dict(method="newton_schulz", coeffs="jordan", steps=3), (JORDAN,) * 3, 1.0),
    "dion-5": (dict(method="newton_schulz", coeffs="dion"), DION, 1.0),
    "explicit(3,)-4": (dict(method="newton_schulz", coeffs=CLASSIC, steps=4), (CLASSIC,) * 4, 1.0),
    "explicit(n,3)": (dict(method="newton_schulz", coeffs=np.asarray(DION[:3])), DION[:3], 1.0),
    "polar_express-5": (dict(method="polar_express"), sd.polar_express_coefficients(5), 1.01),
}


@pytest.mark.parametrize("case", list(COMPOSITION_CASES))
def test_polynomial_methods_map_singular_values_by_the_scalar_polynomial(case):
    kw, table, input_scale = COMPOSITION_CASES[case]
    g = np.random.default_rng(7).standard_normal((3, 9, 6))
    with jax.enable_x64(True):
        out = np.asarray(sd.polar(jnp.asarray(g), **kw))
    s = np.sort(np.linalg.svd(out, compute_uv=False), axis=-1)
    np.testing.assert_allclose(s, scalar_composition(g, table, input_scale), atol=1e-10)
    # and the singular vectors are G's: Uᵀ P V is diagonal
    u, _, vh = np.linalg.svd(g, full_matrices=False)
    core = np.swapaxes(u, -1, -2) @ out @ np.swapaxes(vh, -1, -2)
    off = core - np.eye(6) * core
    np.testing.assert_allclose(off, 0.0, atol=1e-10)


# Bands [min, max] of the output singular values, measured on 16 float32 matrices of
# 24x12 with singular values geometric over [1/5, 1] (run `print(s.min(), s.max())`):
#   jordan-3 [0.694, 1.132]   jordan-5 [0.683, 1.126]   (jordan-8 [0.684, 1.133])
#   dion-5 [0.978, 1.030]     classic(15/8,-10/8,3/8)-5 [0.9966, 1.0000]
#   polar_express-3 [0.188, 1.865]  -5 [0.879, 1.118]  -6 [0.9985, 1.0011]  -8 [1, 1]
# Asserted with a margin of 0.02 (1e-3 once converged, 1e-4 at 8+ steps); jordan
# oscillates in its band rather than converging to 1, as designed by K. Jordan.
BANDS = {
    "jordan-3": (dict(method="newton_schulz", steps=3), (0.67, 1.15)),
    "jordan-5": (dict(method="newton_schulz", coeffs="jordan", steps=5), (0.66, 1.15)),
    "jordan(3,)-5": (dict(method="newton_schulz", coeffs=JORDAN), (0.66, 1.15)),
    "dion-5": (dict(method="newton_schulz", coeffs="dion"), (0.958, 1.05)),
    "dion(n,3)": (dict(method="newton_schulz", coeffs=DION), (0.958, 1.05)),
    "classic-5": (dict(method="newton_schulz", coeffs=CLASSIC, steps=5), (0.995, 1.001)),
    "polar_express-3": (dict(method="polar_express", steps=3), (0.168, 1.885)),
    "polar_express-5": (dict(method="polar_express"), (0.859, 1.138)),
    "polar_express-6": (dict(method="polar_express", steps=6), (0.9975, 1.0021)),
    "polar_express-8": (dict(method="polar_express", steps=8), (0.9999, 1.0001)),
}


@pytest.fixture(scope="module")
def band_input():
    return jnp.asarray(well_conditioned((16, 24, 12), cond=5.0, seed=1))


@pytest.mark.parametrize("case", list(BANDS))
def test_polynomial_methods_land_in_their_measured_band(case, band_input):
    kw, (lo, hi) = BANDS[case]
    out = sd.polar(band_input, **kw)
    assert out.dtype == jnp.float32
    s = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
    assert lo <= s.min() and s.max() <= hi, f"{case}: measured [{s.min():.4f}, {s.max():.4f}]"


def test_polar_express_band_is_within_its_design_guarantee(band_input):
    # The table is built so that every σ/(1.01‖G‖_F) in [1e-3, 1] ends in the band the
    # scalar composition gives on that interval; the measured band must lie inside.
    grid = np.geomspace(1e-3, 1.0, 20001) / 1.01
    for steps in (3, 5, 6):
        x = grid
        for a, b, c in sd.polar_express_coefficients(steps):
            x = a * x + b * x**3 + c * x**5
        s = np.linalg.svd(np.asarray(sd.polar(band_input, method="polar_express", steps=steps), np.float64), compute_uv=False)
        assert x.min() - 1e-5 <= s.min() and s.max() <= x.max() + 1e-5, (steps, x.min(), x.max(), s.min(), s.max())


@pytest.mark.parametrize("steps", [8, 10])
@pytest.mark.parametrize("cond", [20.0, 100.0])
def test_polar_express_with_enough_steps_matches_scipy_in_float32(steps, cond):
    # Measured max error ~9e-7 (float32 round-off) from 7 steps on; 6 steps give ~8e-4.
    # The issue asks for 1e-3; 1e-5 is asserted.
    g = well_conditioned((4, 20, 12), cond=cond, seed=2)
    out = sd.polar(jnp.asarray(g), method="polar_express", steps=steps)
    np.testing.assert_allclose(np.asarray(out), scipy_polar(g), atol=1e-5)


def test_polar_express_table_matches_the_published_coefficients():
    # arXiv 2505.16932: the 8-step table, every row but the last divided by the safety
    # factor 1.01 as (a/1.01, b/1.01³, c/1.01⁵). Our generator (Remez + cushion) gives
    # all 8 rows to ~5e-9 relative.
    published = np.array(POLAR_EXPRESS_PUBLISHED)
    safe = published / np.array([1.01, 1.01**3, 1.01**5])
    expected = np.vstack([safe[:-1], published[-1:]])
    table = np.array(sd.polar_express_coefficients(8))
    np.testing.assert_allclose(table[0], (8.28721201814563 / 1.01, -23.595886519098837 / 1.01**3, 17.300387312530933 / 1.01**5), rtol=1e-6)
    np.testing.assert_allclose(table, expected, rtol=1e-6)
    # a shorter table is the longer one's head, with the last row left unscaled
    five = np.array(sd.polar_express_coefficients(5))
    np.testing.assert_allclose(five[:4], expected[:4], rtol=1e-12)
    np.testing.assert_allclose(five[4], published[4], rtol=1e-6)


optax_orthogonalize = jax.jit(optax_muon.orthogonalize_via_newton_schulz, static_argnums=2)


def test_jordan_newton_schulz_agrees_with_optax_contrib_muon():
    # Convention difference: optax divides X by (‖X‖_F + 1e-8); specdyn divides by
    # max|X| and then by ‖X‖_F exactly (no eps). Both then run the same 5 jordan
    # quintics on the wide orientation. The inputs differ by a relative 1e-8/‖X‖_F
    # (~7e-10 here, ~7e-13 at scale 1e3), and the iteration's slope is at most
    # 3.4445⁵ ≈ 490, so in float64 they agree to ~1e-9·scale⁻¹ (measured 7.6e-10, 7.8e-13).
    rng = np.random.default_rng(8)
    for scale in (1.0, 1e3):
        with jax.enable_x64(True):
            for shape in [(12, 20), (20, 12)]:
                g = scale * rng.standard_normal(shape)
                ours = sd.polar(jnp.asarray(g), method="newton_schulz", coeffs="jordan", steps=5)
                theirs = optax_orthogonalize(jnp.asarray(g), jnp.asarray(JORDAN), 5)
                np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=5e-9 / scale)
        g = rng.standard_normal((12, 20)).astype(np.float32) * np.float32(scale)  # float32: round-off
        ours = sd.polar(jnp.asarray(g), method="newton_schulz", coeffs="jordan", steps=5)
        theirs = optax_orthogonalize(jnp.asarray(g), jnp.asarray(JORDAN, jnp.float32), 5)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=5e-6)


def test_optax_eps_floor_breaks_scale_invariance_where_specdyn_does_not():
    # At ‖G‖_F ~ 1e-8 optax's eps dominates its normalisation; specdyn has none.
    g = np.random.default_rng(9).standard_normal((12, 20)).astype(np.float32)
    tiny = jnp.asarray(g * np.float32(1e-9))
    ref = np.asarray(sd.polar(jnp.asarray(g), method="newton_schulz"))
    np.testing.assert_allclose(np.asarray(sd.polar(tiny, method="newton_schulz")), ref, atol=1e-5)
    theirs = np.asarray(optax_orthogonalize(tiny, jnp.asarray(JORDAN, jnp.float32), 5))
    assert np.abs(theirs - ref).max() > 0.05


# ------------------------------------------------------- scale, dtype


@pytest.mark.parametrize("method", METHODS)
def test_scale_invariance_from_1e_minus_20_to_1e20_in_float32(method):
    kw = kwargs_for(method)
    g = well_conditioned((3, 10, 6), cond=4.0, seed=10)
    ref = np.asarray(sd.polar(jnp.asarray(g), **kw))
    for c in [1e-20, 1e-15, 1e-10, 1e-5, 1e5, 1e10, 1e15, 1e20]:
        out = np.asarray(sd.polar(jnp.asarray(g * np.float32(c)), **kw))
        assert np.all(np.isfinite(out)), f"c={c}"
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=f"c={c}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float64], ids=["bf16", "f64"])  # float32: above
def test_dtype_and_shape_preserved_and_zero_stays_zero(method, dtype):
    g = well_conditioned((2, 6, 4), seed=11)
    g[1] = 0.0
    with jax.enable_x64(True):
        out = sd.polar(jnp.asarray(g, dtype), **kwargs_for(method))
    assert out.dtype == dtype and out.shape == g.shape
    out = np.asarray(out, np.float64)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[1], 0.0)
    atol = 0.1 if method == "newton_schulz" else (2e-2 if dtype == jnp.bfloat16 else 1e-10)
    if method != "newton_schulz":  # jordan's band is wide: compare the others to scipy
        np.testing.assert_allclose(out[0], scipy_polar(g[0]), atol=atol)


@pytest.mark.parametrize("method", METHODS)
def test_compute_dtype_is_respected(method):
    # Measured max errors against scipy (16x8, κ = 20): bf16 in/out 1.4e-2 (NS) and
    # 2.3e-2 (PE); bf16 in, float32 compute 3.2e-3 (= bf16 rounding of input and output);
    # float32 3e-7; float32 in, float64 compute 2.8e-8 (= float32 output rounding).
    kw = {"method": method}
    if method == "newton_schulz":
        kw = {"method": method, "coeffs": CLASSIC, "steps": 12}  # converges to U Vᵀ
    elif method == "polar_express":
        kw = {"method": method, "steps": 8}
    g = well_conditioned((16, 8), cond=20.0, seed=5)
    exact = scipy_polar(g)

    def err(x, compute_dtype):
        out = sd.polar(x, compute_dtype=compute_dtype, **kw)
        assert out.dtype == x.dtype
        return np.abs(np.asarray(out, np.float64) - exact).max()

    with jax.enable_x64(True):
        g16, g32 = jnp.asarray(g, jnp.bfloat16), jnp.asarray(g, jnp.float32)
        assert err(g32, jnp.float64) < 6e-8 < err(g32, None)  # only the output rounding is left
        if method == "svd":  # no half-precision SVD: bf16 input is computed in float32
            assert err(g16, None) == err(g16, jnp.float32) < 5e-3
        else:
            assert err(g16, jnp.float32) < 5e-3 < err(g16, None)
            assert err(g32, jnp.bfloat16) > 5e-3  # float32 in, bfloat16 iteration


# ------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(method="qr"), "method='qr'"),
        (dict(method="newton_schulz", coeffs="keller"), "coeffs='keller'"),
        (dict(method="newton_schulz", coeffs=(1.0, 2.0)), r"shape \(2,\)"),
        (dict(method="newton_schulz", coeffs=np.ones((2, 4))), r"shape \(2, 4\)"),
        (dict(method="newton_schulz", coeffs=np.ones((2, 2, 3))), r"shape \(2, 2, 3\)"),
        (dict(method="newton_schulz", coeffs="dion", steps=3), "steps=3"),
        (dict(method="newton_schulz", coeffs=np.ones((4, 3)), steps=5), "4 rows.*steps=5"),
        (dict(method="newton_schulz", coeffs=(1.0, float("nan"), 0.0)), "nan"),
        (dict(method="newton_schulz", steps=0), "steps=0"),
        (dict(method="newton_schulz", steps=-1), "steps=-1"),
        (dict(method="newton_schulz", steps=2.5), "steps=2.5"),
        (dict(method="polar_express", steps=0), "steps=0"),
        (dict(method="polar_express", steps=-1), "steps=-1"),
        (dict(method="polar_express", steps=2.5), "steps=2.5"),
        (dict(method="polar_express", coeffs="jordan"), "coeffs='jordan'"),
        (dict(method="svd", steps=3), "steps=3"),
        (dict(rank_tol=-1.0), "rank_tol=-1.0"),
        (dict(rank_tol=float("nan")), "rank_tol=nan"),
        (dict(method="newton_schulz", rank_tol=0.1), "rank_tol=0.1"),
        (dict(compute_dtype=jnp.int32), "int32"),
        (dict(compute_dtype=jnp.bfloat16), "bfloat16"),
    ],
)
def test_bad_options_raise_value_error_showing_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        sd.polar(jnp.ones((3, 3)), **kw)


@pytest.mark.parametrize(
    "g,match", [(jnp.ones(3), r"shape \(3,\)"), (jnp.ones((3, 3), jnp.int32), "int32")], ids=["vector", "int"]
)
def test_bad_array_raises_value_error(g, match):
    with pytest.raises(ValueError, match=match):
        sd.polar(g)


def test_polar_express_coefficients_validates_its_arguments():
    for kw, match in [(dict(steps=0), "steps=0"), (dict(lower=1.5), "lower=1.5"), (dict(safety=0.5), "safety=0.5")]:
        with pytest.raises(ValueError, match=match):
            sd.polar_express_coefficients(**kw)
