"""GaussianMixture (PAPERS.md §2) against closed forms, Monte Carlo and fitted slopes."""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest

import specdyn as sd
from specdyn.problems.gaussian_mixture import GaussianMixture
from specdyn.reduced import imbalanced as red

P3 = (0.5, 0.3, 0.2)


def test_validation():
    with pytest.raises(ValueError, match="dim"):
        GaussianMixture(classes=4, dim=3)
    with pytest.raises(ValueError, match="samples"):
        GaussianMixture(loss_type="cross_entropy")
    with pytest.raises(ValueError, match="priors"):
        GaussianMixture(priors=(1.0, 2.0))


def test_population_loss_matches_monte_carlo():
    with jax.enable_x64(True):
        prob = GaussianMixture(classes=3, dim=5, priors=P3, depth=2, width=4, init_scale=0.3,
                               mean_norm=1.5, noise=0.7)
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        params = {"W1": jax.random.normal(keys[0], (4, 5)), "W2": jax.random.normal(keys[1], (3, 4))}
        exact = float(prob.loss(params, {}))
        rng = np.random.default_rng(0)
        n = 400_000
        y = rng.choice(3, size=n, p=np.array(P3))
        x = 0.7 * rng.standard_normal((n, 5)) + 1.5 * np.eye(5)[y]
        w = np.asarray(params["W2"] @ params["W1"])
        mc = 0.5 * np.mean(np.sum((x @ w.T - np.eye(3)[y]) ** 2, axis=1))
        assert abs(exact - mc) / mc < 0.01


@pytest.mark.parametrize("name", ["gd", "specgd"])
def test_alpha_closed_forms(name):
    with jax.enable_x64(True):
        lr, steps = 0.01, 120
        prob = GaussianMixture(classes=3, dim=3, priors=P3, mean_norm=1.0, noise=0.5)
        opt = sd.gd(lr) if name == "gd" else sd.spectral_gd(lr, method="svd")
        out = sd.simulate(prob, opt, key=jax.random.PRNGKey(0), steps=steps)
        t = np.asarray(out["step"], dtype=float)[:, None]
        f = red.gd_alpha if name == "gd" else red.specgd_alpha
        want = np.asarray(f(t, lr, jnp.asarray(P3), 1.0, 0.5))
        got = np.asarray(out["alpha"])
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-6)
        assert got.shape == (steps + 1, 3) and np.all(got[0] == 0)
        if name == "specgd":  # saturation reached and oscillating around α*
            star = np.asarray(red.components(jnp.asarray(P3), 1.0, 0.5)[2])
            assert np.all(np.abs(got[-1] - star) <= lr)


@pytest.mark.parametrize("depth", [1, 2])
def test_depth_saturation_slope(depth):
    """SpecGD saturation step T_c vs α*_c on log axes: slope 1/L."""
    with jax.enable_x64(True):
        lr, a0 = 1e-3, 1e-3
        prob = GaussianMixture(classes=8, dim=8, priors="power", imbalance=1.5, depth=depth,
                               init_scale=a0 if depth > 1 else 0.0, mean_norm=1.0, noise=0.3)
        out = sd.simulate(prob, sd.spectral_gd(lr, method="svd"), key=jax.random.PRNGKey(0), steps=1100)
        p = np.asarray(prob.class_priors())
        star = np.asarray(red.components(jnp.asarray(p), 1.0, 0.3)[2])
        alpha = np.asarray(out["alpha"])
        T = np.argmax(alpha >= star, axis=0)
        assert np.all(alpha[T, np.arange(8)] >= star) and np.all(T > 0)
        np.testing.assert_array_equal(T, np.asarray(red.depth_saturation_time(lr, depth, a0 if depth > 1 else 0.0, jnp.asarray(p), 1.0, 0.3)))
        slope = np.polyfit(np.log(star), np.log(T), 1)[0]
        assert abs(slope - 1.0 / depth) < 0.05


def test_cross_entropy_finite_sample_learns():
    prob = GaussianMixture(classes=4, dim=8, priors="power", imbalance=1.0, samples=400,
                           loss_type="cross_entropy", mean_norm=3.0, noise=1.0, test_per_class=100)
    out = sd.simulate(prob, sd.gd(0.5), key=jax.random.PRNGKey(1), steps=100, record_every=20)
    acc, bal, worst = (np.asarray(out[k])[-1] for k in ("accuracy", "balanced_accuracy", "worst_accuracy"))
    assert bal > 0.5  # chance is 0.25
    assert worst <= bal <= np.max(np.asarray(out["class_accuracy"])[-1])
    assert out["class_accuracy"].shape == (6, 4)


def test_digits_mlp_smoke():
    from specdyn.experiments.imbalanced import RULE, digits_experiment, long_tailed_digits

    data = long_tailed_digits(10.0, seed=0)
    counts = np.bincount(np.asarray(data["y"]), minlength=10)
    assert counts[0] == pytest.approx(10 * counts[9], rel=0.1)  # imbalance ratio n_max / n_min
    assert np.all(np.diff(counts) <= 0)
    assert np.bincount(np.asarray(long_tailed_digits(100.0)["y"]), minlength=10)[9] == 1
    test_counts = np.bincount(np.asarray(data["y_test"]), minlength=10)
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target, minlength=10)
    np.testing.assert_array_equal(test_counts, np.round(0.3 * per_class))  # stratified: 30% of each class
    other = long_tailed_digits(10.0, seed=1)
    assert all(other[k].shape == data[k].shape for k in data)  # same shapes for every seed: vmappable
    assert not np.array_equal(np.asarray(other["x"]), np.asarray(data["x"]))
    r = digits_experiment(seeds=[0, 1], optimizers=("muon",), steps=30,
                          learning_rates={"muon": [0.0003, 0.01, 10.0]})
    scores = r["muon"]["scores"]  # 3e-4 barely moves in 30 steps, 10 blows up: 0.01 is best
    assert RULE == {"metric": "balanced_loss", "mode": "min", "rule": "peak"}
    assert r["muon"]["learning_rate"] == min(scores, key=scores.get) == 0.01
    assert r["muon"]["interior"]
    bal, worst = r["muon"]["balanced_accuracy"][0], r["muon"]["worst_accuracy"][0]
    assert bal[-1] > 0.5 > bal[0] - 0.3  # well above chance (0.1) after 30 steps
    assert np.all(worst <= bal + 1e-6)


@pytest.fixture(scope="module")
def long_tail_small():
    """A small long-tailed mixture (k = 10, d = 60, p_c ∝ 1/c, n = 400, cross-entropy), four rates each."""
    prob = GaussianMixture(classes=10, dim=60, priors="power", imbalance=1.0, samples=400,
                           loss_type="cross_entropy", mean_norm=3.0, noise=1.0, test_per_class=40)
    return sd.sweep(prob, optimizers=["gd", "specgd"], seeds=2, steps=40, record_every=2, progress=False,
                    learning_rates={"gd": [0.01, 0.1, 1.0, 10.0], "specgd": [0.0003, 0.003, 0.03, 0.3]})


def test_specgd_balanced_accuracy_advantage_at_every_rate(long_tail_small):
    """Paper 2's claim as a claim across rates: the highest balanced test accuracy SpecGD
    reaches beats GD's at every rate of both grids (full size, d = 200, k = 20: 0.72 vs
    0.60, REPRODUCTION.md); here (0.83 vs at most 0.79) by at least 0.02 at smoke size."""
    from specdyn.results import learning_rate_scores

    peak = learning_rate_scores(long_tail_small, "balanced_accuracy", mode="max", rule="peak")
    assert float(peak.sel(optimizer="specgd").min()) > float(peak.sel(optimizer="gd").max()) + 0.02


def test_best_rate_table_and_figure(long_tail_small):
    from specdyn.experiments.imbalanced import RULE, best_lr_accuracy, best_rate_table, rule_text

    table = best_rate_table(long_tail_small)
    for name in ("gd", "specgd"):
        row = table[name]
        assert row["n_rates"] == 4 and row["lr"] == list(row["scores"])[row["index"]]
        assert row["interior"] == (0 < row["index"] < 3)
        assert row["score"] == min(row["scores"].values())
    fig = best_lr_accuracy(long_tail_small)
    assert rule_text(RULE) in fig._suptitle.get_text()
    plt.close(fig)


def test_depth_gap_keeps_methods_that_never_escape():
    """GD's minority class lags more with depth; SpecGD's ratio is (α*_min/α*_maj)^(1/L) < 1;
    a run too short for GD at L = 4 is kept, marked "not escaped"."""
    from specdyn.experiments.imbalanced import depth_gap, depth_gaps

    prob = GaussianMixture(classes=4, dim=4, priors="power", imbalance=1.5, mean_norm=1.0, noise=0.3,
                           init_scale=0.01)
    with jax.enable_x64(True):
        ds = sd.sweep(prob, optimizers=["gd", "specgd"], seeds=1, steps=300, record_every=1, progress=False,
                      learning_rates={"gd": [1.0], "specgd": [0.004]}, grid={"depth": [1, 2, 4]})
    gaps = depth_gaps(ds)
    assert np.all(gaps["gd"][0] > 1.5) and np.all(gaps["gd"][1] > gaps["gd"][0])
    assert np.all(np.isnan(gaps["gd"][2]))  # never leaves the saddle within 300 steps
    p = np.asarray(prob.class_priors())
    star = np.asarray(red.components(jnp.asarray(p), 1.0, 0.3)[2])
    for i, L in enumerate([1, 2, 4]):
        np.testing.assert_allclose(gaps["specgd"][i], (star[-1] / star[0]) ** (1 / L), rtol=0.1)
    fig = depth_gap(ds)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "not escaped within T=300" in texts and "gd, L=4: 1/1 rates" in texts
    assert {line.get_label() for line in fig.axes[0].get_lines()} >= {"gd", "specgd"}
    plt.close(fig)


def test_long_tailed_digits_bad_input_names_the_argument():
    from specdyn.problems.digits import long_tailed_digits

    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tailed_digits(0.5)
    with pytest.raises(ValueError, match="test_fraction"):
        long_tailed_digits(10.0, test_fraction=1.0)
