"""Result helpers against closed forms and hand-made Datasets."""

import json

import jax
import numpy as np
import pytest
import xarray as xr

import specdyn as sd
from specdyn.results import (
    best_learning_rate,
    learning_rate_scores,
    log_log_slope,
    problem_of,
    select,
)


def _accuracy_dataset():
    # lr 0 peaks early then overfits; lr 1 ends highest of those that never diverge;
    # lr 2 ends highest, but only on seed 0 (seed 1 diverged: NaN records).
    acc = np.array([[0.2, 0.9, 0.5], [0.1, 0.4, 0.7], [0.5, 0.95, 0.99]])  # (lr, step)
    acc = np.stack([acc, acc])  # (seed, lr, step)
    acc[1, 2] = np.nan
    diverged = np.array([[-1, -1, -1], [-1, -1, 2]])  # (seed, lr)
    return xr.Dataset(
        {
            "balanced_accuracy": (("optimizer", "seed", "lr", "step"), acc[None]),
            "diverged_at": (("optimizer", "seed", "lr"), diverged[None]),
        },
        coords={"learning_rate": (("optimizer", "lr"), [[0.1, 0.3, 1.0]]), "lr": [0, 1, 2]},
    )


def test_best_learning_rate_rules_final_and_peak_never_pick_a_rate_that_diverged():
    ds = _accuracy_dataset()
    scores = learning_rate_scores(ds, "balanced_accuracy", mode="max", rule="final")
    np.testing.assert_allclose(scores.values[0, :2], [0.5, 0.7])
    assert np.isnan(scores.values[0, 2])  # one seed of lr 2 diverged: never picked
    assert int(best_learning_rate(ds, "balanced_accuracy", mode="max", rule="final")["lr"].item()) == 1
    assert int(best_learning_rate(ds, "balanced_accuracy", mode="max", rule="peak")["lr"].item()) == 0
    assert float(best_learning_rate(ds, "balanced_accuracy", mode="max", rule="peak")["learning_rate"].item()) == 0.1
    # as a loss (mode="min"), the lowest final value wins, and the lowest value at any step for "peak"
    assert int(best_learning_rate(ds, "balanced_accuracy", mode="min", rule="final")["lr"].item()) == 0
    assert int(best_learning_rate(ds, "balanced_accuracy", mode="min", rule="peak")["lr"].item()) == 1
    ds["balanced_accuracy"][0, 1, 2] = ds["balanced_accuracy"][0, 0, 2]
    ds["diverged_at"][:] = -1  # had seed 1 not diverged at lr 2, lr 2 would win
    assert int(best_learning_rate(ds, "balanced_accuracy", mode="max", rule="final")["lr"].item()) == 2
    with pytest.raises(ValueError, match="rule"):
        learning_rate_scores(ds, "balanced_accuracy", rule="best")
    with pytest.raises(ValueError, match="mode"):
        learning_rate_scores(ds, "balanced_accuracy", mode="largest")
    with pytest.raises(ValueError, match="no metric 'accuracy'"):
        learning_rate_scores(ds, "accuracy")


def test_problem_of_rebuilds_the_problem_of_a_grid_point():
    problem = sd.problems.PhaseRetrieval(dim=12, spike=3.0, samples=None)
    config = {"problem": "specdyn.problems.phase_retrieval:PhaseRetrieval",
              "fields": {f: getattr(problem, f) for f in ("dim", "width", "covariance", "spike", "exponent",
                                                           "signal_placement", "samples", "label_noise",
                                                           "init_scale", "init_type")}}
    ds = xr.Dataset(attrs={"config": json.dumps(config)})
    assert problem_of(ds) == problem
    assert problem_of(ds, spike=np.float64(30.0), samples="none") == sd.problems.PhaseRetrieval(dim=12, spike=30.0)
    with pytest.raises(ValueError, match="config"):
        problem_of(xr.Dataset())


def test_log_log_slope_recovers_a_power_law_and_skips_bad_points():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    y = 3.0 * x**1.7
    assert abs(log_log_slope(x, y) - 1.7) < 1e-12
    y_bad = np.concatenate([y, [np.nan, 0.0, -1.0]])
    x_bad = np.concatenate([x, [32.0, 64.0, 128.0]])
    assert abs(log_log_slope(x_bad, y_bad) - 1.7) < 1e-12  # NaN and non-positive points left out
    assert np.isnan(log_log_slope([1.0, 2.0], [1.0, np.nan]))  # fewer than two usable points


def test_select_picks_a_run_by_its_learning_rate_in_a_real_sweep(tmp_path):
    # Two optimizers with different rate grids: lr is an index, learning_rate(optimizer, lr)
    # the rates, so ds.sel(lr=0.03) fails and select(ds, "gd", 0.03) finds gd's lr index 1.
    problem = sd.problems.MatrixLeastSquares(rows=3, cols=3, samples=4)
    ds = sd.sweep(problem, optimizers=["gd", "specgd"], learning_rates={"gd": [0.01, 0.03], "specgd": [0.03, 0.1]},
                  seeds=1, steps=3, progress=False)
    with pytest.raises(KeyError):
        ds.sel(lr=0.03)
    got = select(ds, "gd", 0.03)
    assert "lr" not in got.dims and "optimizer" not in got.dims
    assert int(got["lr"]) == 1 and float(got["learning_rate"]) == 0.03
    xr.testing.assert_identical(got, ds.sel(optimizer="gd").isel(lr=1))
    # the run it names is the run at that rate: sd.simulate at 0.03 gives the same losses
    alone = sd.simulate(problem, sd.gd(0.03), key=jax.random.PRNGKey(0), steps=3)
    np.testing.assert_allclose(got["loss"].sel(seed=0).values, alone["loss"], rtol=1e-6)
    # a rate within rtol matches (float32 round-off, a reloaded file); the same value picks
    # each optimizer's own index; saved and loaded, the same
    assert int(select(ds, "gd", 0.03 * (1 + 1e-7))["lr"]) == 1
    assert int(select(ds, "specgd", 0.03)["lr"]) == 0
    loaded = sd.results.load(sd.results.save(ds, tmp_path / "r.nc"))
    xr.testing.assert_allclose(select(loaded, "specgd", 0.1), ds.sel(optimizer="specgd").isel(lr=1))
    assert select(ds, "specgd")["optimizer"] == "specgd"
    with pytest.raises(ValueError, match=r"no learning_rate=0\.3 for optimizer 'gd'.*\[0\.01, 0\.03\]"):
        select(ds, "gd", 0.3)
    with pytest.raises(ValueError, match=r"learning_rate=0\.03 for every optimizer.*pass optimizer="):
        select(ds, learning_rate=0.03)  # gd's index 1, specgd's index 0
    with pytest.raises(ValueError, match=r"no optimizer='adam'.*\['gd', 'specgd'\]"):
        select(ds, "adam", 0.03)
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        select(ds, "gd", "0.03")
    # one list of rates for all: the rate alone selects the lr index of every optimizer
    shared = ds.assign_coords(learning_rate=(("optimizer", "lr"), [[0.01, 0.03], [0.01, 0.03]]))
    np.testing.assert_array_equal(select(shared, learning_rate=0.03)["learning_rate"], [0.03, 0.03])
