"""RandomFeatures (PAPERS.md §3) against numpy, the one-step guarantees and the paper's claims."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import specdyn as sd
from specdyn.experiments import when_spectral_helps as wsh
from specdyn.problems.random_features import (
    RandomFeatures,
    gd_learning_rate,
    smoothness_constants,
    spectral_learning_rate,
)
from specdyn.simulate import _draw_program, single_device
from specdyn.sweep import sweep_plan

sweep_module = importlib.import_module("specdyn.sweep")  # sd.sweep, the function, shadows the module

SMALL = {"dim": 8, "feature_dim": 12, "samples": 30}


def test_validation():
    with pytest.raises(ValueError, match="activation"):
        RandomFeatures(activation="softplus")
    with pytest.raises(ValueError, match="samples"):
        RandomFeatures(samples=0)
    with pytest.raises(ValueError, match="dim"):
        RandomFeatures(dim=-1)
    with pytest.raises(ValueError, match="outputs"):
        RandomFeatures(outputs=0)
    with pytest.raises(ValueError, match="spike"):
        RandomFeatures(spike=-1.0)


def _numpy_features(d, p, n, activation, seed=0):
    """Features and targets built independently with numpy, as in the paper."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((d, n))
    v1, v2 = (rng.standard_normal((p, d)) / np.sqrt(d) for _ in range(2))
    z = v1 @ x
    a = {"relu": np.maximum(z, 0), "tanh": np.tanh(z),
         "swiglu": z / (1 + np.exp(-z)) * (v2 @ x)}[activation]
    return a, rng.standard_normal((p, p)) / np.sqrt(p) @ a


@pytest.mark.parametrize("activation", ["relu", "swiglu"])
def test_loss_gradient_and_rates_match_numpy(activation):
    with jax.enable_x64(True):
        a, y = _numpy_features(6, 10, 25, activation)
        prob = RandomFeatures(dim=6, feature_dim=10, samples=25, activation=activation)
        data = {"A": jnp.asarray(a), "Y": jnp.asarray(y)}
        w = np.random.default_rng(1).standard_normal((10, 10))
        params = {"W": jnp.asarray(w)}
        r = w @ a - y
        np.testing.assert_allclose(float(prob.loss(params, data)), 0.5 * np.sum(r**2) / 25, rtol=1e-13)
        g = r @ a.T / 25
        np.testing.assert_allclose(np.asarray(prob.gradient(params, data)), g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(jax.grad(prob.loss)(params, data)["W"]), g, rtol=1e-12,
                                   atol=1e-14)
        s = np.linalg.svd(a, compute_uv=False)
        np.testing.assert_allclose(float(gd_learning_rate(data)), 25 / s[0] ** 2, rtol=1e-12)
        np.testing.assert_allclose(float(spectral_learning_rate(data)), 25 / np.sum(s**2), rtol=1e-12)
        m = prob.metrics(params, data)
        sg = np.linalg.svd(g, compute_uv=False)
        np.testing.assert_allclose(float(m["nuclear_rank"]), sg.sum() ** 2 / np.sum(sg**2), rtol=1e-12)
        np.testing.assert_allclose(float(m["stable_rank_A"]), np.sum(s**2) / s[0] ** 2, rtol=1e-12)
        # realized decreases: direct differences of two numpy losses
        loss = lambda w_: 0.5 * np.sum((w_ @ a - y) ** 2) / 25
        u, _, vt = np.linalg.svd(g, full_matrices=False)
        w_gd = w - (25 / s[0] ** 2) * g
        w_sp = w - (25 / np.sum(s**2)) * sg.sum() * u @ vt
        np.testing.assert_allclose(float(m["gd_decrease"]), loss(w) - loss(w_gd), rtol=1e-9)
        np.testing.assert_allclose(float(m["spectral_decrease"]), loss(w) - loss(w_sp), rtol=1e-9)


def test_sampled_features_statistics():
    """ReLU features at Gaussian init: E[A²] = 1/2 and st(A) ≈ π (PAPERS.md §3), at p, n large."""
    with jax.enable_x64(True):
        prob = RandomFeatures(dim=200, feature_dim=400, samples=800)
        data = prob.sample(jax.random.PRNGKey(0))
        a = np.asarray(data["A"])
        assert a.shape == (400, 800) and data["Y"].shape == (400, 800)
        assert abs(np.mean(a**2) - 0.5) < 0.02
        st = float(sd.stable_rank(data["A"]))
        assert 2.8 < st < 3.6, st
        assert np.all(np.asarray(prob.init(None)["W"]) == 0)


def _random_cases(count, seed=0):
    """(problem, data, params) over activations, scales and random or GD-trajectory iterates."""
    rng = np.random.default_rng(seed)
    acts = ["relu", "relu2", "gelu", "tanh", "swiglu"]
    for i in range(count):
        prob = RandomFeatures(activation=acts[i % len(acts)], spike=float(rng.uniform(0, 3)),
                              target_scale=float(rng.uniform(0.1, 3)), **SMALL)
        data = prob.sample(jax.random.PRNGKey(i))
        w = rng.standard_normal((12, 12)) * rng.uniform(0, 2)
        yield prob, data, {"W": jnp.asarray(w)}


def test_realized_decrease_at_least_guaranteed():
    with jax.enable_x64(True):
        count = 0
        for prob, data, params in _random_cases(40):
            m, _ = _metrics_and_steps(prob, params, data)
            for rule in ("gd", "spectral"):
                got, bound = float(m[f"{rule}_decrease"]), float(m[f"{rule}_decrease_bound"])
                assert bound > 0 and got >= bound * (1 - 1e-10), (rule, got, bound)
                count += 1
            # the ratio of the guarantees is nr(G)/st(A)
            np.testing.assert_allclose(
                float(m["spectral_decrease_bound"] / m["gd_decrease_bound"]),
                float(m["nuclear_rank"] / m["stable_rank_A"]), rtol=1e-10)
        # along a GD trajectory (zero init, paper's rate): recorded at every step
        prob = RandomFeatures(**SMALL)
        data = wsh.instance(prob, 3)
        out = sd.simulate(prob, sd.gd(float(gd_learning_rate(data))), key=jax.random.PRNGKey(3),
                          steps=60, data=data)
        for rule in ("gd", "spectral"):
            got, bound = np.asarray(out[f"{rule}_decrease"]), np.asarray(out[f"{rule}_decrease_bound"])
            assert np.all(got >= bound * (1 - 1e-10) - 1e-300)
        # GD's realized decreases are the loss differences of the trajectory itself
        loss = np.asarray(out["loss"])
        np.testing.assert_allclose(np.asarray(out["gd_decrease"])[:-1], loss[:-1] - loss[1:],
                                   rtol=1e-8, atol=1e-14)
        assert count == 80


@jax.jit
def _metrics_and_steps(prob, params, data):
    """The problem's metrics, and the loss after one paper-rate step of each rule taken
    through the optimizers themselves (traced rates)."""
    g = jax.grad(prob.loss)(params, data)
    rules = {"gd": sd.gd(gd_learning_rate(data)),
             "specgd": sd.spectral_gd(spectral_learning_rate(data), nuclear_scaling=True, method="svd")}
    after = {}
    for name, opt in rules.items():
        upd, _ = opt.update(g, opt.init(params), params)
        after[name] = prob.loss(optax.apply_updates(params, upd), data)
    return prob.metrics(params, data), after


def _criterion_cases():
    """Iterates where nr(G) is large: along GD on ReLU features (zero init, paper's rate,
    every 4th of 24 steps, 2 seeds), and random W with targets off A's row space
    (Y = W♯A + E, explicit data), each at d = 25, p = m = 50, n = 200."""
    prob = RandomFeatures(dim=25, feature_dim=50, samples=200)
    for seed in range(2):
        data = wsh.instance(prob, seed)
        w, lr = prob.init(None), gd_learning_rate(data)
        for t in range(24):
            if t % 4 == 0:
                yield prob, data, w
            w = {"W": w["W"] - lr * prob.gradient(w, data)}
    rng = np.random.default_rng(0)
    for seed in range(8):
        data = wsh.instance(prob, 10 + seed)
        e = rng.standard_normal(data["Y"].shape) * rng.uniform(0.1, 2)
        yield prob, {"A": data["A"], "Y": data["Y"] + e}, {"W": jnp.asarray(rng.standard_normal((50, 50)))}


def test_spectral_step_wins_when_criterion_holds():
    """nr(G) ≥ 2 st(A) ⇒ the spectral step's loss ≤ GD's (guarantee vs GD's best possible)."""
    with jax.enable_x64(True):
        holds = 0
        cases = [*_random_cases(20, seed=1), *_criterion_cases()]
        for prob, data, params in cases:
            m, after = _metrics_and_steps(prob, params, data)
            after = {k: float(v) for k, v in after.items()}
            loss = float(m["loss"])
            # the optimizers' one step matches the metrics' exact decreases
            np.testing.assert_allclose(loss - after["gd"], float(m["gd_decrease"]), rtol=1e-8)
            np.testing.assert_allclose(loss - after["specgd"], float(m["spectral_decrease"]), rtol=1e-8)
            if float(m["nuclear_rank"]) >= 2 * float(m["stable_rank_A"]):
                holds += 1
                assert after["specgd"] <= after["gd"] * (1 + 1e-12)
        assert holds >= 15, holds  # the criterion is met on many of these instances


def test_gd_step_wins_when_criterion_fails():
    """A rank-one gradient (nr = 1) against isotropic features (st(A) ≫ 2): GD's step is better."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        p, n = 12, 60
        a = rng.standard_normal((p, n))
        w = rng.standard_normal((p, p))
        y = w @ a - np.outer(rng.standard_normal(p), rng.standard_normal(n))  # residual a bᵀ
        data = {"A": jnp.asarray(a), "Y": jnp.asarray(y)}
        prob = RandomFeatures(dim=4, feature_dim=p, samples=n)
        params = {"W": jnp.asarray(w)}
        m, after = _metrics_and_steps(prob, params, data)
        assert abs(float(m["nuclear_rank"]) - 1) < 1e-8 and float(m["stable_rank_A"]) > 4
        assert after["gd"] < after["specgd"]
        assert float(m["gd_decrease"]) > float(m["spectral_decrease"])


@pytest.fixture(scope="module")
def smoke():
    return wsh.main(full=False)


def test_relu_specgd_wins(smoke):
    ds = smoke["relu"]
    final = ds["loss"].isel(step=-1)
    assert float(final.sel(optimizer="specgd")) < 0.2 * float(final.sel(optimizer="gd"))
    st = ds["stable_rank_A"].isel(optimizer=0)
    assert bool((ds["nuclear_rank"].sel(optimizer="gd") >= st).all())
    assert np.all(np.asarray(ds["diverged_at"]) == -1)
    # restarting SpecGD from any GD iterate beats continuing GD over the same steps
    r = smoke["relu_restarts"]
    np.testing.assert_allclose(r["gd_loss"].values, ds["loss"].sel(optimizer="gd").values, rtol=1e-10)
    np.testing.assert_allclose(r["specgd_loss"].isel(restart=0).values,
                               ds["loss"].sel(optimizer="specgd").values[: r.sizes["offset"]],
                               rtol=1e-10)
    end, gd_end = r["specgd_loss"].isel(offset=-1), r["gd_loss_at"].isel(offset=-1)
    ok = np.isfinite(gd_end.values)
    assert np.all(end.values[ok] < gd_end.values[ok])


def test_swiglu_gd_wins(smoke):
    ds = smoke["swiglu"]
    final = ds["loss"].isel(step=-1)
    assert float(final.sel(optimizer="gd")) < 0.5 * float(final.sel(optimizer="specgd"))
    st = float(ds["stable_rank_A"].isel(optimizer=0, step=0))
    nr = ds["nuclear_rank"].sel(optimizer="gd").values
    assert nr[0] > st and nr[-1] < st  # nr starts above st(A) and falls below it


def test_nuclear_rank_grows_with_dimension(smoke):
    g = smoke["growth"]
    assert wsh.growth_slope(g) > 0.75  # Θ(k) after one step
    assert wsh.growth_slope(g, "nr_init") < 0.5  # O(1)-ish at init
    assert float(g["stable_rank_A"].max()) < 4  # ≈ π, bounded
    assert bool((g["nr_one_step"] > g["nr_init"]).all())


def test_smoothness_constants_bound_curvature():
    """L_F and L_op are the curvatures along the worst Frobenius / operator-norm directions."""
    with jax.enable_x64(True):
        prob = RandomFeatures(activation="gelu", **SMALL)
        data = prob.sample(jax.random.PRNGKey(5))
        l_f, l_op = (float(c) for c in smoothness_constants(data))
        a = np.asarray(data["A"])
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        delta = np.outer(np.ones(12) / np.sqrt(12), u[:, 0])  # ‖Δ‖_F = 1 along A's top direction
        np.testing.assert_allclose(np.sum((delta @ a) ** 2) / 30, l_f, rtol=1e-10)
        q = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))[0]  # ‖Q‖_op = 1
        np.testing.assert_allclose(np.sum((q @ a) ** 2) / 30, l_op, rtol=1e-10)


def test_figures(smoke):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for fig in (wsh.rules_figure(smoke["relu"]), wsh.restarts_figure(smoke["relu_restarts"]),
                wsh.growth_figure(smoke["growth"])):
        assert len(fig.axes) >= 1 and all(ax.lines for ax in fig.axes)
        plt.close(fig)


def test_spiked_inputs_covariance():
    """Inputs x = z + θ ξ u: the sample covariance's top eigenvalue ≈ 1 + θ², the rest ≈ 1."""
    with jax.enable_x64(True):
        prob = RandomFeatures(dim=5, feature_dim=4, samples=200_000, spike=2.0)
        x = np.asarray(prob.inputs(jax.random.PRNGKey(0)))
        eig = np.linalg.eigvalsh(x @ x.T / x.shape[1])
        assert abs(eig[-1] - 5.0) < 0.1 and np.all(np.abs(eig[:-1] - 1) < 0.03)


def test_compare_rules_is_the_paper_rates_on_the_instance():
    """compare_rules (one sweep with the two LearningRateRules) = sd.simulate at the rates
    n/‖A‖²_op and n/‖A‖²_F computed with numpy on the same instance."""
    with jax.enable_x64(True):
        prob = RandomFeatures(**SMALL)
        ds = wsh.compare_rules(prob, seed=4, steps=12, record_every=3)
        a = np.asarray(wsh.instance(prob, 4)["A"])
        s = np.linalg.svd(a, compute_uv=False)
        rates = {"gd": a.shape[1] / s[0] ** 2, "specgd": a.shape[1] / np.sum(s**2)}
        np.testing.assert_allclose(ds["learning_rate"].sel(optimizer=["gd", "specgd"]).values,
                                   [rates["gd"], rates["specgd"]], rtol=1e-12)
        opts = {"gd": sd.gd(rates["gd"]),
                "specgd": sd.spectral_gd(rates["specgd"], nuclear_scaling=True, method="svd")}
        for name, opt in opts.items():
            run = sd.simulate(prob, opt, key=jax.random.PRNGKey(4), steps=12, record_every=3)
            np.testing.assert_array_equal(ds["step"].values, np.asarray(run["step"]))
            np.testing.assert_allclose(ds["loss"].sel(optimizer=name).values, np.asarray(run["loss"]),
                                       rtol=1e-10)
        assert ds["loss"].dims == ("optimizer", "step") and ds.attrs["seed"] == 4


def test_restarts_compile_nothing_for_another_seed():
    """Restarts go through sd.simulate(params=...) and one vmapped, cached program: a second
    call (another seed, same sizes) compiles nothing; restart 0 is SpecGD from zero init."""
    from compile_log import count_compiles

    prob = RandomFeatures(**SMALL)
    kw = dict(steps=12, every=4, horizon=5)
    wsh.restarts(prob, seed=0, **kw)
    with count_compiles() as names:
        r = wsh.restarts(prob, seed=1, **kw)
    assert names == []
    spec = wsh.compare_rules(prob, seed=1, steps=5)
    np.testing.assert_allclose(r["specgd_loss"].isel(restart=0).values,
                               spec["loss"].sel(optimizer="specgd").values, rtol=1e-10)
    np.testing.assert_allclose(r["gd_loss"].values[:6], spec["loss"].sel(optimizer="gd").values, rtol=1e-10)


def test_nuclear_rank_growth_sweep_equals_the_old_program_per_size(smoke):
    # nuclear_rank_growth is one sd.sweep over k, its sizes padded to a shared bucket
    # ("auto": one step costs less than a compile). Reference: what its former per-size
    # code computed, in numpy (float64) on each size's draw: G0 at W0, one GD step at
    # n/|A|_op^2, nr(G0), nr(G1), st(A). The draws come from the sweep's draw program (one
    # per true size, cached: no compile here); they are sample_run of RandomFeatures(dim=k/2,
    # feature_dim=k, samples=2k), as before.
    ks, seeds = wsh.SMOKE["growth"]["ks"], wsh.SMOKE["growth"]["seeds"]
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(seeds))
    nr = lambda g: (lambda s: s.sum() ** 2 / (s**2).sum())(np.linalg.svd(g, compute_uv=False))
    ref = []
    with jax.enable_x64(True):
        plans = sweep_plan(wsh.GrowthFeatures(k=ks[0]), optimizers=["gd"], learning_rates=wsh.RULES["gd"],
                           seeds=seeds, grid={"k": list(ks)}, steps=1)
        for k in ks:
            problems = sweep_module._batched(wsh.GrowthFeatures(k=k), {}, seeds)
            params, data = _draw_program()(problems, keys, None, None, shard=single_device())
            rows = []
            for s in range(seeds):
                w0, a, y = (np.asarray(x[s]) for x in (params["W"], data["A"], data["Y"]))
                n = 2 * k
                assert a.shape == (k, n) and w0.shape == (k, k)
                g0 = (w0 @ a - y) @ a.T / n
                w1 = w0 - n / np.linalg.norm(a, 2) ** 2 * g0
                rows.append([nr(g0), nr((w1 @ a - y) @ a.T / n), (a**2).sum() / np.linalg.norm(a, 2) ** 2])
            ref.append(rows)
    assert [p.bucket for p in plans] == [{"k": max(ks)}] * len(ks)  # every size padded to the largest
    ref = np.asarray(ref)  # (k, seed, quantity)
    for i, name in enumerate(("nr_init", "nr_one_step", "stable_rank_A")):
        np.testing.assert_allclose(smoke["growth"][name].values, ref[..., i], rtol=1e-10, err_msg=name)
