"""Sweeps: equal to one-at-a-time runs, one compilation per cell, resumable, sharded."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import xarray as xr

import specdyn as sd
from specdyn import results
from specdyn.sweep import TRACE_COUNTS, sweep

sweep_module = importlib.import_module("specdyn.sweep")  # sd.sweep, the function, shadows the module

PROBLEM = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12)
SWEEP = dict(
    optimizers=["gd", "specgd"],
    learning_rates={"gd": [0.1, 0.4], "specgd": [0.01, 0.05]},
    seeds=[0, 3],
    grid={"samples": [12, 16], "noise": [0.0, 0.2]},
    steps=12,
    record_every=4,
    progress=False,
)


@pytest.fixture(scope="module")
def reference():
    return sweep(PROBLEM, **SWEEP)


def test_dataset_layout(reference):
    ds = reference
    assert ds["loss"].dims == ("optimizer", "lr", "seed", "samples", "noise", "step")
    assert list(ds["optimizer"].values) == ["gd", "specgd"]
    np.testing.assert_array_equal(ds["step"], [0, 4, 8, 12])
    np.testing.assert_allclose(ds["learning_rate"].sel(optimizer="specgd"), [0.01, 0.05])
    assert ds["diverged_at"].dims == ("optimizer", "lr", "seed", "samples", "noise")
    config = json.loads(ds.attrs["config"])
    assert config["steps"] == 12 and config["seeds"] == [0, 3]


def test_sweep_equals_runs_simulated_one_at_a_time(reference):
    for opt, lr_i, seed, samples, noise in [("gd", 1, 3, 16, 0.2), ("specgd", 0, 0, 12, 0.0), ("specgd", 1, 3, 12, 0.2)]:
        lr = SWEEP["learning_rates"][opt][lr_i]
        problem = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=samples, noise=noise)
        out = sd.simulate(problem, sd.get_optimizer(opt, lr), key=jax.random.PRNGKey(seed), steps=12, record_every=4)
        got = reference.sel(optimizer=opt, seed=seed, samples=samples, noise=noise).isel(lr=lr_i)
        for metric in ("loss", "distance", "nuclear_rank"):
            np.testing.assert_allclose(got[metric].values, np.asarray(out[metric]), rtol=1e-5, atol=1e-7)


def test_one_compilation_per_cell_across_batches_and_chunks(reference, monkeypatch):
    # With almost no memory the 8 runs of a cell split into batches of 1, each run in chunks.
    monkeypatch.setattr(sweep_module, "_memory_per_device", lambda: 1.0)
    before = TRACE_COUNTS["advance"]
    ds = sweep(PROBLEM, **SWEEP)
    cells = 2 * 2  # optimizers x static samples values
    assert TRACE_COUNTS["advance"] - before == cells
    xr.testing.assert_allclose(ds.drop_attrs(), reference.drop_attrs())
    before = TRACE_COUNTS["advance"]
    again = sweep(PROBLEM, **SWEEP, batch_size=3)  # an explicit batch size: 3 batches, padded
    assert TRACE_COUNTS["advance"] - before == cells
    xr.testing.assert_allclose(again.drop_attrs(), reference.drop_attrs())


def test_exploding_learning_rate_marks_only_that_run():
    kw = dict(SWEEP, optimizers=["gd"], learning_rates=[0.1, 1e4], grid={})
    ds = sweep(PROBLEM, **kw)
    assert np.all(ds["diverged_at"].isel(lr=1).values > 0)
    assert np.all(ds["diverged_at"].isel(lr=0).values == -1)
    alone = sweep(PROBLEM, **dict(kw, learning_rates=[0.1]))
    np.testing.assert_array_equal(ds["loss"].isel(lr=0).values, alone["loss"].isel(lr=0).values)


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, monkeypatch, reference):
    store = tmp_path / "cells"
    real = sweep_module._run_cell
    calls = []

    def flaky(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "_run_cell", flaky)
    with pytest.raises(KeyboardInterrupt):
        sweep(PROBLEM, **SWEEP, store=store)
    assert len(list(store.glob("cell-*.npz"))) == 2  # finished cells were kept

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "_run_cell", counting)
    calls.clear()
    resumed = sweep(PROBLEM, **SWEEP, store=store)
    assert len(calls) == 2  # only the two unfinished cells ran
    xr.testing.assert_allclose(resumed.drop_attrs(), reference.drop_attrs())
    calls.clear()
    sweep(PROBLEM, **SWEEP, store=store)
    assert calls == []


def test_store_of_another_sweep_is_refused(tmp_path):
    store = tmp_path / "cells"
    small = dict(SWEEP, grid={}, steps=4)
    sweep(PROBLEM, **small, store=store)
    with pytest.raises(ValueError, match="different sweep.*steps: stored 4, now 8"):
        sweep(PROBLEM, **dict(small, steps=8), store=store)
    sweep(PROBLEM, **dict(small, steps=8), store=store, fresh=True)


def test_results_round_trip_through_netcdf(tmp_path, reference):
    path = results.save(reference, tmp_path / "r.nc")
    back = results.load(path)
    xr.testing.assert_allclose(back, reference)
    assert back.attrs["config"] == reference.attrs["config"]


def test_best_learning_rate_picks_lowest_final_loss(reference):
    best = results.best_learning_rate(reference, "loss", mode="min")
    final = reference["loss"].isel(step=-1).mean("seed")
    expected = final.argmin("lr")
    np.testing.assert_array_equal(best["lr"].values, expected.values)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(optimizers=["sgdx"]), "unknown optimizer name='sgdx'"),
        (dict(learning_rates={"gd": [0.1]}), "missing"),
        (dict(learning_rates=[-1.0]), "-1.0"),
        (dict(seeds=0), "seeds=0"),
        (dict(grid={"width": [1]}), "'width' is not a field"),
        (dict(grid={"noise": [-1.0]}), "noise=-1.0"),
        (dict(steps=0), "steps=0"),
    ],
)
def test_bad_sweep_arguments(change, match):
    with pytest.raises(ValueError, match=match):
        sweep(PROBLEM, **dict(SWEEP, **change))


FOUR_DEVICES = textwrap.dedent(
    """
    import sys
    import jax
    import specdyn as sd
    from specdyn import results
    from specdyn.sweep import sweep
    assert jax.local_device_count() == 4, jax.local_devices()
    problem = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12)
    ds = sweep(problem, optimizers=["gd", "specgd"], learning_rates=[0.05, 0.2], seeds=3,
               grid={"noise": [0.0, 0.2]}, steps=10, record_every=5, progress=False)
    results.save(ds, sys.argv[1])
    """
)


def test_four_devices_give_the_same_dataset(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    path = tmp_path / "four.nc"
    subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(path)], check=True, env=env, timeout=300)
    four = results.load(path)
    one = sweep(
        PROBLEM,
        optimizers=["gd", "specgd"],
        learning_rates=[0.05, 0.2],
        seeds=3,
        grid={"noise": [0.0, 0.2]},
        steps=10,
        record_every=5,
        progress=False,
    )
    assert four.attrs["devices"].startswith("4 x")
    xr.testing.assert_allclose(four.drop_attrs(), one.drop_attrs(), rtol=1e-6)
