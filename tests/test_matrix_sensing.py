"""MatrixSensing: gradient vs finite differences, the operators against numpy, 𝒜*𝒜 ≈ I by
Monte Carlo, metrics against scipy, the spectral phase (alignment, error vs α slope), the
power-method prediction of phase I, phase detection, validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import specdyn as sd
from specdyn.experiments import matrix_sensing as ex
from specdyn.problems.matrix_sensing import MAX_OPERATOR_ENTRIES, MatrixSensing
from specdyn.results import log_log_slope

SMALL = dict(dim=6, rank=2, width=3, measurements=40)


def _instance(p, seed=0):
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    return p.init(init_key), p.sample(data_key)


@pytest.mark.parametrize("operator", ["gaussian", "population"])
@pytest.mark.parametrize("init_type", ["random", "spectral"])
def test_gradient_matches_finite_differences(operator, init_type):
    with jax.enable_x64(True):
        p = MatrixSensing(**SMALL, operator=operator, init_type=init_type, init_scale=0.5)
        params, data = _instance(p)
        g = np.asarray(jax.grad(p.loss)(params, data)["U"])
        u0 = np.asarray(params["U"])
        loss = jax.jit(lambda u: p.loss({"U": u}, data))
        f = lambda u: float(loss(jnp.asarray(u)))  # noqa: E731
        h, fd = 1e-6, np.zeros_like(u0)
        for idx in np.ndindex(u0.shape):
            e = np.zeros_like(u0)
            e[idx] = h
            fd[idx] = (f(u0 + e) - f(u0 - e)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_operators_match_numpy():
    with jax.enable_x64(True):
        p = MatrixSensing(**SMALL, init_scale=0.7)
        params, data = _instance(p)
        a, x, u = np.asarray(data["A"]), np.asarray(data["X"]), np.asarray(params["U"])
        m = p.measurements
        np.testing.assert_allclose(a, np.swapaxes(a, -1, -2))  # symmetric A_i
        y = np.einsum("ijk,jk->i", a, x @ x.T) / np.sqrt(m)
        np.testing.assert_allclose(np.asarray(data["y"]), y, rtol=1e-12)
        r = np.einsum("ijk,jk->i", a, u @ u.T) / np.sqrt(m) - y
        np.testing.assert_allclose(float(p.loss(params, data)), 0.25 * np.sum(r**2), rtol=1e-12)
        # population: ¼‖UUᵀ − XXᵀ‖²_F
        pp = dataclasses.replace(p, operator="population")
        want = 0.25 * np.linalg.norm(u @ u.T - x @ x.T) ** 2
        np.testing.assert_allclose(float(pp.loss(params, {"X": data["X"]})), want, rtol=1e-12)
        assert set(pp.sample(jax.random.PRNGKey(1))) == {"X"}


def test_ground_truth_singular_values():
    with jax.enable_x64(True):
        p = MatrixSensing(dim=10, rank=4, width=5, condition=5.0, operator="population")
        x = np.asarray(p.sample(jax.random.PRNGKey(0))["X"])
        np.testing.assert_allclose(np.linalg.svd(x, compute_uv=False), np.linspace(1, 0.2, 4),
                                   rtol=1e-12)


def test_gaussian_normal_operator_is_identity_in_expectation():
    # 𝒜*𝒜(Z) = (1/m) Σ ⟨A_i, Z⟩ A_i over 100 draws × m = 2000 → N = 2·10⁵ samples; an entry
    # of ⟨A, Z⟩A has variance about ‖Z‖²_F (diagonal) or ‖Z‖²_F/2 (off-diagonal), so the root
    # mean square of ‖mean − Z‖_F/‖Z‖_F is about sqrt((n² + n)/(2N)) ≈ 0.009 for n = 5;
    # tolerance 0.03.
    with jax.enable_x64(True):
        p = MatrixSensing(dim=5, rank=1, width=1, measurements=2000)
        b = np.asarray(jax.random.normal(jax.random.PRNGKey(9), (5, 5)))
        z = jnp.asarray(b + b.T)
        keys = jax.random.split(jax.random.PRNGKey(3), 100)
        means = jax.jit(jax.vmap(lambda k: p.normal_operator(z, p.sample(k))))(keys)
        mean = np.asarray(means).mean(0)
        rel = np.linalg.norm(mean - np.asarray(z)) / np.linalg.norm(np.asarray(z))
        assert rel < 0.03, rel
        # and E⟨A, Z⟩² = ‖Z‖²_F (relative standard error sqrt(2/N) ≈ 0.003)
        meas = jax.jit(jax.vmap(lambda k: p.measure(z, p.sample(k))))(keys) * np.sqrt(p.measurements)
        second = float(np.mean(np.asarray(meas) ** 2))
        assert abs(second / float(jnp.sum(z * z)) - 1) < 0.015


def test_metrics_match_scipy():
    with jax.enable_x64(True):
        p = MatrixSensing(dim=8, rank=3, width=5, measurements=30, init_scale=0.4)
        params, data = _instance(p, seed=2)
        met = {k: float(v) for k, v in p.metrics(params, data).items()}
        u, x = np.asarray(params["U"]), np.asarray(data["X"])
        vx = scipy.linalg.orth(x)
        _, s, wt = np.linalg.svd(vx.T @ u, full_matrices=False)
        angles = scipy.linalg.subspace_angles(u @ wt.T, x)
        np.testing.assert_allclose(met["angle"], angles.max(), rtol=1e-9)
        np.testing.assert_allclose(
            met["angle"], float(sd.diagnostics.principal_angles(u @ wt.T, x)[-1]), rtol=1e-6)
        np.testing.assert_allclose(met["sigma_min_signal"], s.min(), rtol=1e-10)
        noise = np.linalg.norm((np.eye(8) - vx @ vx.T) @ u, 2)
        np.testing.assert_allclose(met["noise_norm"], noise, rtol=1e-10)
        err = np.linalg.norm(u @ u.T - x @ x.T) / np.linalg.norm(x @ x.T)
        np.testing.assert_allclose(met["test_error"], err, rtol=1e-10)


def test_spectral_topk_init_starts_at_spectral_estimate():
    with jax.enable_x64(True):
        # population: 𝒜*(y) = XXᵀ, so U_spec U_specᵀ = XXᵀ and the error is O(α)
        p = MatrixSensing(dim=8, rank=2, width=4, operator="population", init_type="spectral_topk",
                          init_scale=1e-6)
        params, data = _instance(p)
        assert float(p.metrics(params, data)["test_error"]) < 1e-5
        # gaussian: U_spec from the top-k eigenpairs of 𝒜*(y), checked with numpy
        g = dataclasses.replace(p, operator="gaussian", measurements=50)
        params, data = _instance(g)
        a = np.asarray(data["A"])
        aty = np.einsum("i,ijk->jk", np.asarray(data["y"]), a) / np.sqrt(50)
        lam, vec = np.linalg.eigh(aty)
        want = vec[:, ::-1][:, :4] * np.sqrt(np.maximum(lam[::-1][:4], 0))
        got = np.asarray(data["U_spec"])
        np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-10)  # up to column signs
        np.testing.assert_allclose(got @ got.T, want @ want.T, atol=1e-10)


def test_spectral_phase_alignment_and_error_shrinks_with_init_scale():
    """GD from α ∈ {1e-2, …, 1e-5}: phase I (angle ≤ 0.25 rad) ends while the signal is still
    below 10% of σ_min(X) (α ≤ 1e-3), the angle stays ≤ 0.25 after it, and the final test error
    falls polynomially in α: fitted slope of log error vs log α is 2 ± 0.15 for the population
    operator (noise frozen at size α) and in [0.8, 2.2] for gaussian measurements."""
    alphas = [1e-2, 1e-3, 1e-4, 1e-5]
    with jax.enable_x64(True):
        slopes = {}
        for op in ("population", "gaussian"):
            p = MatrixSensing(dim=10, rank=2, width=4, measurements=300, operator=op,
                              condition=1.5)
            ds = sd.sweep(p, optimizers=["gd"], learning_rates=[0.25], seeds=1, steps=600,
                          record_every=5, grid={"init_scale": alphas}, progress=False)
            ds = ds.isel(optimizer=0, lr=0, seed=0)
            ends = ex.phase_ends(ds).values  # (alpha, phase)
            assert np.all(np.isfinite(ends)), ends
            assert np.all(np.diff(ends, axis=1) >= 0), ends
            steps = ds["step"].values
            for j, a in enumerate(alphas):
                r = ds.isel(init_scale=j)
                i1 = int(np.searchsorted(steps, ends[j, 0]))
                if a <= 1e-3:
                    assert float(r["sigma_min_signal"][i1]) < 0.1 / 1.5
                assert float(r["angle"][i1:].max()) <= 0.25 + 1e-9
            finals = ds["test_error"].isel(step=-1).values
            slopes[op] = log_log_slope(alphas, finals)
            assert np.all(finals < 0.05), finals
        assert abs(slopes["population"] - 2.0) < 0.15, slopes
        assert 0.8 < slopes["gaussian"] < 2.2, slopes


def test_gd_matches_power_method_in_early_phase_one():
    """While ‖U_t‖ ≤ 1e-3 (α = 1e-6) GD equals (I + μ𝒜*(y))^t U₀ to relative 1e-4 in Frobenius
    norm (the dropped cubic term is O(μ t ‖U‖²)); late in training it does not."""
    with jax.enable_x64(True):
        p = MatrixSensing(dim=10, rank=2, width=4, measurements=300, init_scale=1e-6)
        params, data = _instance(p)
        lr, grid = 0.25, list(range(5, 155, 5))
        pm = ex.power_method(p, data, params["U"], lr, grid)
        gd_u, u, opt = [], params, sd.gd(lr)  # one optimizer object: one compiled program
        for _ in grid:  # GD in chunks of 5 steps, U after each chunk
            u = sd.simulate(p, opt, key=jax.random.PRNGKey(0), steps=5, data=data,
                            params=u)["params"]
            gd_u.append(np.asarray(u["U"]))
        small = [i for i, w in enumerate(pm["U"]) if np.linalg.norm(w, 2) <= 1e-3]
        assert len(small) >= 3 and grid[small[-1]] >= 20, small
        for i in small[-3:]:  # the three largest steps with ‖U_t‖ ≤ 1e-3
            want = np.asarray(pm["U"][i])
            rel = np.linalg.norm(gd_u[i] - want) / np.linalg.norm(want)
            assert rel < 1e-4, (grid[i], rel)
            got_angle = float(p.metrics({"U": jnp.asarray(gd_u[i])}, data)["angle"])
            np.testing.assert_allclose(float(pm["angle"][i]), got_angle, rtol=1e-3)
        rel_end = np.linalg.norm(gd_u[-1] - pm["U"][-1]) / np.linalg.norm(pm["U"][-1])
        assert rel_end > 0.5, rel_end


def test_phase_ends_rule_on_synthetic_trajectory():
    steps = np.arange(0, 100, 10)
    traj = {
        "step": steps,
        "angle": np.array([1.2, 0.9, 0.3, 0.2, 0.1, 0.05, 0.01, 0.0, 0.0, 0.0]),
        "sigma_min_signal": np.array([1e-6, 1e-5, 1e-4, 1e-2, 0.1, 0.3, 0.45, 0.5, 0.5, 0.5]),
        "test_error": np.array([1.0, 1.0, 1.0, 0.9, 0.5, 1e-3, 1e-6, 1.5e-9, 1e-9, 1e-9]),
    }
    np.testing.assert_array_equal(ex.phase_ends(traj, condition=2.0), [30.0, 50.0, 70.0])
    never = dict(traj, angle=np.ones(10))
    assert np.isnan(ex.phase_ends(never, condition=2.0)[0])
    with pytest.raises(ValueError, match="condition"):
        ex.phase_ends(traj)


def test_phase_ends_on_sweep_dataset_matches_simulate():
    """Dataset path of phase_ends (condition read from the swept coordinate) equals the
    simulate path; the vmapped condition field sets σ_min(X) = 1/condition.

    Run in float64: the run escapes a saddle from init 1e-4, and in float32 the sweep's
    batched program and simulate's batch of one round differently (XLA fuses them
    differently). Measured in float32: the two agree to 4e-6 relative over the first 100
    steps (before the escape), then the saddle amplifies rounding to a few per cent and
    phase III's end moves by one record (240 vs 235). In float64 they agree to 1e-8 and
    every phase end is the same record.
    """
    with jax.enable_x64(True):
        p = MatrixSensing(dim=8, rank=2, width=3, measurements=150, condition=1.5,
                          init_scale=1e-4)
        ds = sd.sweep(p, optimizers=["gd"], learning_rates=[0.25], seeds=1, steps=250,
                      record_every=5, grid={"init_scale": [1e-4, 1e-3], "condition": [1.5, 2.0]},
                      progress=False)
        out = sd.simulate(p, sd.gd(0.25), key=jax.random.PRNGKey(0), steps=250, record_every=5)
    assert ds["loss"].dtype == np.float64 and out["loss"].dtype == np.float64
    ends = ex.phase_ends(ds)
    assert ends.dims[-1] == "phase" and list(ends["phase"].values) == ["I", "II", "III"]
    cell = ds.sel(optimizer="gd", init_scale=1e-4, condition=1.5).isel(lr=0, seed=0)
    for name in ("loss", "angle", "sigma_min_signal", "test_error"):
        np.testing.assert_allclose(cell[name].values, out[name], rtol=1e-8, atol=1e-14,
                                   err_msg=name)
    want = ex.phase_ends(out, condition=1.5)
    got = ends.sel(optimizer="gd", init_scale=1e-4, condition=1.5).isel(lr=0, seed=0).values
    np.testing.assert_array_equal(got, want)
    assert np.all(np.isfinite(ends.values))
    smin = ds["sigma_min_signal"].isel(step=-1).squeeze()  # (init_scale, condition)
    np.testing.assert_allclose(smin.values, np.broadcast_to(1 / ds["condition"].values, (2, 2)),
                               rtol=1e-2)
    for fn in (ex.phases, ex.error_vs_init_scale):
        fn(ds).clf()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(rank=3, width=2), "width"),  # k < r
        (dict(dim=4, rank=2, width=5), "width"),  # k > n
        (dict(dim=4, rank=5, width=5), "rank"),
        (dict(operator="bernoulli"), "operator"),
        (dict(init_type="zero"), "init_type"),
        (dict(condition=0.5), "condition"),
        (dict(init_scale=-1.0), "init_scale"),
        (dict(init_scale=0.0), "init_scale"),  # random init at 0 never moves
        (dict(measurements=0), "measurements"),
        (dict(dim=0), "dim"),
    ],
)
def test_bad_inputs_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"{field}="):
        MatrixSensing(**kwargs)


def test_operator_too_large_is_refused():
    n = 200
    m = MAX_OPERATOR_ENTRIES // n**2 + 1
    with pytest.raises(ValueError, match=r"(?s)^measurements .*dim=200.*measurements=839"):
        MatrixSensing(dim=n, rank=2, width=4, measurements=m)
    MatrixSensing(dim=n, rank=2, width=4, measurements=m - 1)  # just fits
    MatrixSensing(dim=n, rank=2, width=4, measurements=m, operator="population")  # no operator
