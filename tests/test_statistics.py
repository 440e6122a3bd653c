"""Seed statistics: confidence bands and paired comparisons against scipy and Monte Carlo."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from specdyn.results import paired_comparison, seed_statistics

MU, SIGMA = 1.0, 2.0


def normal_runs(rng, repeats, seeds, steps=1):
    """``repeats`` independent sweeps (a grid dim) of ``seeds`` N(MU, SIGMA²) runs."""
    x = rng.normal(MU, SIGMA, (repeats, seeds, steps))
    return xr.Dataset(
        {"loss": (("repeat", "seed", "step"), x), "diverged_at": (("repeat", "seed"), -np.ones((repeats, seeds), int))},
        coords={"step": np.arange(steps)},
    )


def coverage(st):
    return float(((st["low"] <= MU) & (st["high"] >= MU)).mean())


def test_t_band_covers_the_true_mean_at_the_stated_rate():
    # 2000 repeats of 8 seeds: binomial sd of the coverage is sqrt(.95 .05 / 2000) = 0.005; tolerance 3 sd
    st = seed_statistics(normal_runs(np.random.default_rng(0), 2000, 8), "loss", confidence=0.95)
    assert abs(coverage(st) - 0.95) < 0.015, coverage(st)
    assert st.attrs["method"] == "t" and "95%" in st.attrs["description"]
    np.testing.assert_array_equal(st["n"].values, 8)
    # 0.8 is honoured too
    st = seed_statistics(normal_runs(np.random.default_rng(1), 2000, 8), "loss", confidence=0.8)
    assert abs(coverage(st) - 0.8) < 0.027, coverage(st)  # 3 sd = 3 sqrt(.8 .2 / 2000)


def test_t_band_equals_scipy_interval():
    ds = normal_runs(np.random.default_rng(2), 5, 6, steps=3)
    st = seed_statistics(ds, "loss", confidence=0.9)
    x = ds["loss"].values  # (repeat, seed, step)
    low, high = stats.t.interval(0.9, 5, loc=x.mean(1), scale=stats.sem(x, axis=1))
    np.testing.assert_allclose(st["low"].values, low, rtol=1e-12)
    np.testing.assert_allclose(st["high"].values, high, rtol=1e-12)
    np.testing.assert_allclose(st["mean"].values, x.mean(1), rtol=1e-12)
    assert st["mean"].dims == ("repeat", "step")


def test_bootstrap_band_matches_scipy_and_its_known_coverage():
    ds = normal_runs(np.random.default_rng(3), 1000, 8)
    st = seed_statistics(ds, "loss", method="bootstrap", resamples=2000, seed=7)
    # one row by hand, same generator: the same call scipy makes
    ref = stats.bootstrap((ds["loss"].values[:, :, 0],), np.mean, axis=-1, vectorized=True, n_resamples=2000,
                          confidence_level=0.95, method="percentile", rng=np.random.default_rng(7))
    np.testing.assert_allclose(st["low"].values[:, 0], ref.confidence_interval.low, rtol=1e-12)
    np.testing.assert_allclose(st["high"].values[:, 0], ref.confidence_interval.high, rtol=1e-12)
    # The percentile bootstrap of a normal mean is close to mean ± z s_n/√n (s_n with ddof 0):
    # coverage P(|T_{n-1}| < z √((n-1)/n)) = 0.89 at n = 8, below the nominal 0.95.
    # Tolerance 0.03: 3 binomial sd at 1000 repeats (0.01) plus the approximation.
    n = 8
    expected = 2 * stats.t.cdf(stats.norm.ppf(0.975) * np.sqrt((n - 1) / n), n - 1) - 1
    assert abs(coverage(st) - expected) < 0.03, (coverage(st), expected)


def test_diverged_runs_are_left_out():
    rng = np.random.default_rng(4)
    ds = normal_runs(rng, 3, 6, steps=4)
    ds["diverged_at"][0, 2] = 1  # repeat 0, seed 2 diverged: its records are garbage
    ds["loss"][0, 2, 1:] = np.nan
    ds["loss"][0, 2, 0] = 1e6
    for method in ("t", "bootstrap"):
        st = seed_statistics(ds, "loss", method=method)
        kept = np.delete(ds["loss"].values[0], 2, axis=0)
        np.testing.assert_allclose(st["mean"].values[0], kept.mean(0), rtol=1e-12)
        np.testing.assert_array_equal(st["n"].values[0], 5)
        np.testing.assert_array_equal(st["n"].values[1:], 6)
        assert np.all(st["high"].values[0] < 1e3)
    # all but one run diverged: a mean, no interval
    ds["diverged_at"][1, 1:] = 2
    st = seed_statistics(ds, "loss")
    assert int(st["n"][1, 0]) == 1 and np.isnan(st["low"][1, 0]) and np.isfinite(st["mean"][1, 0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(confidence=1.0), "confidence=1.0"),
        (dict(confidence=0), "confidence=0"),
        (dict(method="bca"), "method='bca'"),
        (dict(resamples=10, method="bootstrap"), "resamples=10"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        seed_statistics(normal_runs(np.random.default_rng(0), 2, 3), "loss", **kwargs)
    with pytest.raises(ValueError, match="no metric 'acc'"):
        seed_statistics(normal_runs(np.random.default_rng(0), 2, 3), "acc")


# ------------------------------------------------------------ paired comparison


def two_optimizer_runs(rng, repeats, seeds, shift=0.0, lrs=1):
    """Optimizers "a" and "b" at ``lrs`` rates; b = a + shift + noise, paired by seed
    (a shared per-seed effect). Rate 0 is the best of both (the others add 1)."""
    base = rng.normal(0.0, 1.0, (repeats, 1, 1, seeds, 1))  # the seed's own effect, shared
    noise = rng.normal(0.0, 0.5, (repeats, 2, lrs, seeds, 2))
    x = base + noise + np.arange(lrs)[None, None, :, None, None]
    x[:, 1] += shift
    ds = xr.Dataset(
        {"loss": (("repeat", "optimizer", "lr", "seed", "step"), x),
         "diverged_at": (("repeat", "optimizer", "lr", "seed"), -np.ones((repeats, 2, lrs, seeds), int))},
        coords={"optimizer": ["a", "b"], "lr": np.arange(lrs), "step": [0, 1],
                "learning_rate": (("optimizer", "lr"), np.tile(np.geomspace(0.01, 1, lrs), (2, 1)))},
    )
    return ds


@pytest.mark.parametrize("test", ["t", "wilcoxon"])
def test_paired_p_value_and_interval_equal_scipy_at_the_best_rates(test):
    ds = two_optimizer_runs(np.random.default_rng(5), 4, 10, shift=0.4, lrs=3)
    out = paired_comparison(ds, "loss", "a", "b", test=test)
    # by hand: best rate is index 0 for both (the others are worse by 1); the final step
    xa = ds["loss"].values[:, 0, 0, :, -1]
    xb = ds["loss"].values[:, 1, 0, :, -1]
    ref = stats.ttest_rel(xa, xb, axis=-1) if test == "t" else stats.wilcoxon(xa, xb, axis=-1)
    np.testing.assert_allclose(out["p_value"].values, ref.pvalue, rtol=1e-10)
    d = xa - xb
    low, high = stats.t.interval(0.95, 9, loc=d.mean(-1), scale=stats.sem(d, axis=-1))
    np.testing.assert_allclose(out["mean_difference"].values, d.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(out["low"].values, low, rtol=1e-12)
    np.testing.assert_allclose(out["high"].values, high, rtol=1e-12)
    np.testing.assert_array_equal(out["n"].values, 10)
    np.testing.assert_allclose(out["learning_rate_a"].values, 0.01)
    assert out["mean_difference"].dims == ("repeat",) and out.attrs["test"] == test


@pytest.mark.parametrize("test,tolerance", [("t", 0.015), ("wilcoxon", 0.015)])
def test_false_positive_rate_under_the_null_is_alpha(test, tolerance):
    # 2000 repeats of 10 paired seeds with no difference: P(p < 0.05) = 0.05, binomial sd 0.005,
    # tolerance 3 sd. (Wilcoxon's exact null at n = 10 is discrete: its level is 0.049.)
    ds = two_optimizer_runs(np.random.default_rng(6), 2000, 10, shift=0.0)
    rate = float((paired_comparison(ds, "loss", "a", "b", test=test)["p_value"] < 0.05).mean())
    assert abs(rate - 0.05) < tolerance, rate
    # and a real difference of 0.4 (0.57 sd of the paired difference) is found most of the time
    ds = two_optimizer_runs(np.random.default_rng(7), 500, 10, shift=0.4)
    assert float((paired_comparison(ds, "loss", "a", "b", test=test)["p_value"] < 0.05).mean()) > 0.2


def test_paired_comparison_leaves_out_seeds_where_either_diverged():
    ds = two_optimizer_runs(np.random.default_rng(8), 2, 8, shift=0.3, lrs=2)
    ds["diverged_at"][0, 1, 1, 3] = 1  # b at its worse rate diverged on seed 3: rate 0 is still picked
    ds["loss"][0, 1, 1, 3, 1:] = np.nan
    out = paired_comparison(ds, "loss", "a", "b")
    np.testing.assert_array_equal(out["n"].values, [8, 8])
    ds["diverged_at"][0, 1, :, 5] = 1  # b diverged on seed 5 at every rate: 7 pairs left
    ds["loss"][0, 1, :, 5, 1:] = np.nan
    out = paired_comparison(ds, "loss", "a", "b")
    assert int(out["n"][0]) == 7
    xa = np.delete(ds["loss"].values[0, 0, 0, :, -1], 5)
    xb = np.delete(ds["loss"].values[0, 1, 0, :, -1], 5)
    np.testing.assert_allclose(float(out["p_value"][0]), stats.ttest_rel(xa, xb).pvalue, rtol=1e-10)


def test_paired_comparison_bad_arguments_are_named():
    ds = two_optimizer_runs(np.random.default_rng(9), 2, 4)
    with pytest.raises(ValueError, match="b='adam'"):
        paired_comparison(ds, "loss", "a", "adam")
    with pytest.raises(ValueError, match="test='anova'"):
        paired_comparison(ds, "loss", "a", "b", test="anova")
    with pytest.raises(ValueError, match="a=b='a'"):
        paired_comparison(ds, "loss", "a", "a")
    with pytest.raises(ValueError, match="rule"):
        paired_comparison(ds, "loss", "a", "b", rule="best")


def test_plot_metric_shades_the_stated_confidence_band():
    from specdyn.plot import plot_metric

    ds = two_optimizer_runs(np.random.default_rng(10), 1, 6, shift=0.5, lrs=2)
    ds["diverged_at"][0, 0, 1, 2] = 1  # one run of a at lr 1 diverged: its band uses 5 seeds
    ds["loss"][0, 0, 1, 2, 1:] = np.nan
    fig = plot_metric(ds, "loss", confidence=0.9)
    assert "90% t-interval" in fig._suptitle.get_text()
    band = seed_statistics(ds, "loss", confidence=0.9)
    ax = fig.axes[0]
    assert len(ax.collections) == 4  # one band per (optimizer, lr)
    for coll, (o, lr) in zip(ax.collections, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        y = coll.get_paths()[0].vertices[:, 1]
        low, high = band["low"].values[0, o, lr], band["high"].values[0, o, lr]
        np.testing.assert_allclose([y.min(), y.max()], [low.min(), high.max()], rtol=1e-12)
    assert any("(5 ok)" in t.get_text() for t in ax.get_legend().get_texts())


def test_paired_comparison_peak_rule_uses_the_step_where_the_seed_mean_is_best():
    ds = two_optimizer_runs(np.random.default_rng(11), 1, 6, shift=0.2)
    ds["loss"][0, 0, 0, :, 0] -= 5.0  # a is best at step 0 on average; b at step 1 (its only other step)
    ds["loss"][0, 1, 0, :, 1] -= 5.0
    out = paired_comparison(ds, "loss", "a", "b", rule="peak")
    xa, xb = ds["loss"].values[0, 0, 0, :, 0], ds["loss"].values[0, 1, 0, :, 1]
    np.testing.assert_allclose(float(out["mean_difference"][0]), (xa - xb).mean(), rtol=1e-12)
    np.testing.assert_allclose(float(out["p_value"][0]), stats.ttest_rel(xa, xb).pvalue, rtol=1e-10)
