"""The standard figures say what they show: every rate in the legend, no two curves alike,
a seed band that stays visible on a log axis, and the best rates of the printed summary."""

import itertools

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from specdyn.plot import curve_style, legend_outside, plot_metric, save_figure
from specdyn.results import BestRateRule


def runs(rng, *, rates=6, seeds=4, steps=5, spread=0.5):
    """Optimizers a, b over ``rates`` rates: a positive loss exp(normal), falling over steps,
    lowest at rate 2 for a and rate 3 for b; b's last rate diverged on every seed."""
    shape = (2, rates, seeds, steps)
    centre = np.zeros((2, rates))
    centre[0] = np.abs(np.arange(rates) - 2)
    centre[1] = np.abs(np.arange(rates) - 3)
    log_loss = centre[:, :, None, None] - np.arange(steps) + rng.normal(0.0, spread, shape)
    loss = np.exp(log_loss)
    diverged = -np.ones(shape[:3], int)
    diverged[1, -1, :] = 2
    loss[1, -1, :, 3:] = np.nan
    return xr.Dataset(
        {"loss": (("optimizer", "lr", "seed", "step"), loss),
         "diverged_at": (("optimizer", "lr", "seed"), diverged)},
        coords={"optimizer": ["a", "b"], "lr": np.arange(rates), "seed": np.arange(seeds),
                "step": np.arange(steps) * 10,
                "learning_rate": (("optimizer", "lr"), np.tile(np.geomspace(1e-3, 1.0, rates), (2, 1)))},
    )


def legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_every_rate_is_in_the_legend_and_no_two_curves_look_alike():
    ds = runs(np.random.default_rng(0))
    fig = plot_metric(ds, "loss")
    texts = legend_texts(fig)
    for opt in ("a", "b"):
        for lr in ds["learning_rate"].sel(optimizer=opt).values:
            assert sum(t.startswith(f"{opt} lr={lr:.3g}") for t in texts) == 1, (opt, lr, texts)
    assert any("b lr=1 (every seed diverged)" == t for t in texts)  # listed, though nothing is drawn
    lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_xdata().size]
    assert len(lines) == 2 * 6 - 1  # the fully diverged rate has no curve
    looks = [(tuple(np.round(line.get_color(), 6)), line.get_linestyle()) for line in lines]
    assert len(set(looks)) == len(looks)


def test_curve_styles_differ_for_ten_optimizers_of_eight_rates():
    colors = [curve_style(g, m, 8)["color"] for g in range(10) for m in range(8)]
    assert len({tuple(c) for c in np.round(colors, 6).tolist()}) == 80
    within = [(curve_style(0, m, 8)["ls"], curve_style(0, m, 8)["marker"]) for m in range(8)]
    assert len(set(within)) == 8  # also apart in grey
    with pytest.raises(ValueError, match="member"):
        curve_style(0, 3, 3)


def test_seed_band_on_a_log_axis_is_positive_and_is_the_interval_of_the_mean_log():
    ds = runs(np.random.default_rng(1), seeds=3, spread=1.5)  # wide spread: arithmetic intervals go <= 0
    from specdyn.results import seed_statistics

    arithmetic = seed_statistics(ds, "loss")
    assert float(arithmetic["low"].min()) < 0  # the case the old band lost
    fig = plot_metric(ds, "loss", logy=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert "mean of log(loss)" in fig._suptitle.get_text()
    bands = ax.collections
    assert len(bands) == 2 * 6 - 1
    pairs = [(o, lr) for o in range(2) for lr in range(6) if not (o == 1 and lr == 5)]
    t = stats.t.ppf(0.975, 2)
    for coll, (o, lr) in zip(bands, pairs, strict=True):
        y = coll.get_paths()[0].vertices[:, 1]
        assert np.all(y[np.isfinite(y)] > 0)
        logs = np.log(ds["loss"].values[o, lr])  # (seed, step); all seeds converged here
        half = t * logs.std(0, ddof=1) / np.sqrt(3)
        low, high = np.exp(logs.mean(0) - half), np.exp(logs.mean(0) + half)
        np.testing.assert_allclose([y.min(), y.max()], [low.min(), high.max()], rtol=1e-10)


def test_the_summary_and_the_figure_name_the_same_best_rates_by_the_same_rule():
    from specdyn.cli import _summary

    ds = runs(np.random.default_rng(2))
    rule = BestRateRule.of_metric("loss", mode="min", rule="final")
    # by hand: lowest seed-mean final loss among rates where no seed diverged
    final = ds["loss"].values[..., -1].mean(-1)
    final[1, -1] = np.inf
    expected = {opt: ds["learning_rate"].values[o, int(np.argmin(final[o]))] for o, opt in enumerate("ab")}
    assert expected == {"a": ds["learning_rate"].values[0, 2], "b": ds["learning_rate"].values[1, 3]}
    text = _summary(ds, rule=rule)
    assert rule.description in " ".join(text.split())
    assert all(len(line) <= 100 for line in text.splitlines())
    table = text.split("paired comparison")[0].splitlines()
    rows = {line.split()[0]: float(line.split()[1]) for line in table if line.split()[:1] in (["a"], ["b"])}
    fig = plot_metric(ds, "loss", rule=rule)
    title = fig.axes[0].get_title()
    for opt, lr in expected.items():
        assert rows[opt] == pytest.approx(lr, rel=1e-3)
        assert f"{opt} {lr:.3g}" in title
    assert rule.description in fig._suptitle.get_text().replace("\n", " ")
    thick = [line for line in fig.axes[0].get_lines() if line.get_linewidth() > 2]
    assert len(thick) == 2


def test_best_rate_rule_breaks_ties_by_its_second_score():
    ds = runs(np.random.default_rng(3), rates=4)
    score = xr.DataArray([[1.0, 0.5, 0.5, 2.0], [np.nan] * 4], dims=("optimizer", "lr"),
                         coords={"optimizer": ["a", "b"]})
    second = xr.DataArray([[0.0, 3.0, 1.0, 0.0], [5.0, 1.0, 0.0, 2.0]], dims=("optimizer", "lr"),
                          coords={"optimizer": ["a", "b"]})
    rule = BestRateRule("test rule", scores=lambda _: score, tiebreak=lambda _: second)
    np.testing.assert_array_equal(rule.best_index(ds).values, [2, 0])  # b: no rate qualifies -> index 0
    high = BestRateRule("test rule", scores=lambda _: -score, mode="max", tiebreak=lambda _: -second)
    np.testing.assert_array_equal(high.best_index(ds).values, [2, 0])
    with pytest.raises(ValueError, match="mode='median'"):
        BestRateRule("x", scores=lambda _: score, mode="median")


def test_legend_outside_leaves_the_axes_free_and_save_figure_keeps_it_and_a_footnote(tmp_path):
    from matplotlib.figure import Figure
    from PIL import Image

    def saved(name, *, legend, footnote):
        fig = Figure(figsize=(4, 3))
        ax = fig.subplots()
        for i, j in itertools.product(range(3), range(2)):
            ax.plot([0, 1], [i, j], label=f"curve {i}{j}")
        if footnote:
            fig.text(0.0, 0.0, "a footnote below the figure", va="top")
        if legend:
            box = legend_outside(ax)
            fig.canvas.draw()
            assert box.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the plotted area
        with Image.open(save_figure(fig, tmp_path / name, dpi=50)) as image:
            return image.size

    bare = saved("bare.png", legend=False, footnote=False)
    with_legend = saved("legend.png", legend=True, footnote=False)
    with_footnote = saved("footnote.png", legend=False, footnote=True)
    assert with_legend[0] > bare[0] + 50 * 0.5  # the legend's width (> half an inch) is kept
    assert with_footnote[1] > bare[1] + 5  # so is the footnote's line below the figure
    fig = Figure()
    with pytest.raises(ValueError, match="where='left'"):
        legend_outside(fig.subplots(), where="left")


def test_specdyn_plot_marks_the_best_rates_by_the_rule_of_the_sweeps_figures():
    import json

    from specdyn.cli import _results_rule
    from specdyn.experiments.phase_retrieval import ACCURACY_RULE

    ds = runs(np.random.default_rng(4))
    text = '[plot]\nfigures = ["imbalanced.depth_gap"]\n[smoke.plot]\nfigures = ["phase_retrieval.lr_regimes"]\n'
    ds.attrs["provenance"] = json.dumps({"sweep_file_text": text, "smoke": True})
    assert _results_rule(ds) is ACCURACY_RULE  # the smoke run's figure picks rates by it
    ds.attrs["provenance"] = json.dumps({"sweep_file_text": text, "smoke": False})
    default = _results_rule(ds)  # depth_gap picks no rate: the summary's default rule
    assert default.description == BestRateRule.of_metric("loss").description
    ds.attrs["provenance"] = "not json"
    assert _results_rule(ds).description == default.description
    assert _results_rule(ds.rename({"loss": "error"})) is None  # no figure rule and no loss


def test_paired_comparison_at_the_rates_a_figure_rule_picks():
    from specdyn.results import learning_rate_scores, paired_comparison

    ds = runs(np.random.default_rng(5))
    smallest = BestRateRule("the smallest rate", scores=lambda d: learning_rate_scores(d, "loss") * 0 + d["lr"])
    out = paired_comparison(ds, "loss", "a", "b", rate_rule=smallest)
    assert float(out["learning_rate_a"]) == float(out["learning_rate_b"]) == 1e-3  # not the loss rule's 2 and 3
    xa, xb = ds["loss"].values[0, 0, :, -1], ds["loss"].values[1, 0, :, -1]
    np.testing.assert_allclose(float(out["mean_difference"]), np.mean(xa - xb), rtol=1e-12)
    assert out.attrs["rate_rule"] == "the smallest rate"
    with pytest.raises(ValueError, match="rate_rule"):
        paired_comparison(ds, "loss", "a", "b", rate_rule="smallest")
