"""Optimizer options as sweep axes (issue 15): grid keys "<optimizer>.<option>".

A data option (muon.momentum) is vmapped beside the learning rates and a static one
(muon.method) makes cells; either gives the same runs, to float64 rounding, as separate
sweeps with the option fixed; a data axis of 3 values compiles no more training programs
than one of 1 value; other optimizers are run once and broadcast along the axis; bad keys
and values are refused at construction (Python) or with exit 2 and one line (sweep
files); a store never serves a cell of another option value, and an interrupted sweep
with option axes resumes."""

import functools
import importlib
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from compile_log import count_compiles

import specdyn as sd
from specdyn import results
from specdyn.cli import main
from specdyn.config import load_sweep_file
from specdyn.sweep import sweep, sweep_plan

sweep_module = importlib.import_module("specdyn.sweep")  # sd.sweep, the function, shadows the module



@sd.problem
class Regression:
    """(1/2)·mean((WA − Y)²), Y = TA + noise: the cheapest problem to compile with a matrix
    leaf (no QR, no SVD in its metrics), so the test's compiled programs stay few and small."""

    rows: int = sd.static(4)
    cols: int = sd.static(3)
    noise: float = 0.0

    def init(self, key):
        return {"W": 0.1 * jax.random.normal(key, (self.rows, self.cols))}

    def sample(self, key):
        ka, kt, ke = jax.random.split(key, 3)
        a = jax.random.normal(ka, (self.cols, 8))
        t = jax.random.normal(kt, (self.rows, self.cols))
        return {"A": a, "Y": t @ a + self.noise * jax.random.normal(ke, (self.rows, 8)), "T": t}

    def loss(self, params, data):
        r = params["W"] @ data["A"] - data["Y"]
        return 0.5 * jnp.mean(r * r)

    def metrics(self, params, data):
        return {"loss": self.loss(params, data), "distance": jnp.linalg.norm(params["W"] - data["T"])}


PROBLEM = Regression()
MOMENTA = [0.5, 0.9, 0.95]
BASE = dict(learning_rates=[0.05, 0.2], seeds=[0, 1], steps=6, record_every=3, progress=False)
GRID = {"noise": [0.0, 0.1], "muon.method": ["svd", "newton_schulz"], "muon.momentum": MOMENTA}
TRAINING = ("_chunk_program", "_start_program")  # the programs compiled per (shapes, optimizer recipe)


def run(**kwargs):
    with jax.enable_x64(True):
        return sweep(PROBLEM, **{**BASE, **kwargs})


@pytest.fixture(scope="module")
def axes():
    """gd and muon; muon over method (static, 2 cells) x momentum (data, 3 values)."""
    with count_compiles() as compiles:
        ds = run(optimizers=["gd", "muon"], grid=GRID)
    return ds, compiles


def test_dataset_has_one_dim_per_axis_and_other_optimizers_broadcast(axes):
    ds, _ = axes
    assert ds["loss"].dims == ("optimizer", "lr", "seed", "noise", "muon.method", "muon.momentum", "step")
    assert list(ds["muon.method"].values) == ["svd", "newton_schulz"]
    np.testing.assert_array_equal(ds["muon.momentum"].values, MOMENTA)
    config = json.loads(ds.attrs["config"])
    assert config["option_axes"] == {"muon.method": "static", "muon.momentum": "data"}
    assert ds.attrs["cells"] == 3  # gd once; muon once per method
    gd = ds["loss"].sel(optimizer="gd")
    assert np.isfinite(gd).all()
    xr.testing.assert_equal(gd, gd.isel({"muon.method": 0, "muon.momentum": 0}).broadcast_like(gd))
    muon = ds["loss"].sel(optimizer="muon").isel(step=-1)
    assert float(abs(muon.isel({"muon.momentum": 0}) - muon.isel({"muon.momentum": 2})).max()) > 1e-3


def test_option_axes_equal_a_separate_sweep_with_fixed_options(axes):
    # the second value of each axis: a mix-up of the run order (learning rate x option point)
    # or of the cells would put another run there (the first value of every axis would not tell)
    ds, _ = axes
    method, momentum = "newton_schulz", 0.9
    fixed = functools.partial(sd.get_optimizer, "muon", method=method, momentum=momentum)
    alone = run(optimizers={"muon": fixed}, grid={"noise": GRID["noise"]})
    got = ds.sel({"optimizer": "muon", "muon.method": method, "muon.momentum": momentum})
    for metric in ("loss", "distance"):
        np.testing.assert_allclose(got[metric].values, alone[metric].sel(optimizer="muon").values, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(got["diverged_at"].values, alone["diverged_at"].sel(optimizer="muon").values)


def test_a_data_axis_of_three_values_compiles_no_more_than_one_value(axes):
    _, compiles = axes
    # one program per cell (gd, muon svd, muon newton_schulz): momentum's 3 values add none
    assert [compiles.count(name) for name in TRAINING] == [3, 3]
    with count_compiles() as one:
        run(optimizers=["muon"], grid={"noise": GRID["noise"], "muon.method": ["svd"], "muon.momentum": [0.9]})
    assert [one.count(name) for name in TRAINING] == [1, 1]  # one cell: the same count per cell


def test_analysis_functions_keep_the_option_dims(axes):
    ds, _ = axes
    assert (ds["diverged_at"] < 0).all()
    dims = ("optimizer", "noise", "muon.method", "muon.momentum")
    picked = ds["loss"].isel(step=-1).mean("seed").argmin("lr").transpose(*dims).values  # numpy's own pick
    expect = ds["learning_rate"].values[np.arange(2)[:, None, None, None], picked]
    best = results.best_learning_rate(ds, "loss")
    np.testing.assert_array_equal(best["learning_rate"].transpose(*dims).values, expect)
    paired = results.paired_comparison(ds, "loss", "muon", "gd")
    assert set(paired["p_value"].dims) == {"noise", "muon.method", "muon.momentum"}
    np.testing.assert_array_equal(paired["n"].values, 2)
    for name, index in (("learning_rate_a", 1), ("learning_rate_b", 0)):  # a = muon, b = gd: their best rates
        np.testing.assert_array_equal(paired[name].transpose(*dims[1:]).values, expect[index])
    stats = results.seed_statistics(ds, "loss")
    assert stats["mean"].dims == ("optimizer", "lr", "noise", "muon.method", "muon.momentum", "step")


def test_results_with_option_dims_round_trip_through_netcdf(axes, tmp_path):
    ds, _ = axes
    back = results.load(results.save(ds, tmp_path / "r.nc"))
    xr.testing.assert_allclose(back, ds)


def test_store_resumes_and_never_serves_another_option_value(tmp_path, monkeypatch, axes):
    store = tmp_path / "cells"
    real, calls = sweep_module._run_cell, []

    def flaky(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "_run_cell", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(optimizers=["gd", "muon"], grid=GRID, store=store)
    assert len(list(store.glob("cell-*.npz"))) == 2

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "_run_cell", counting)
    calls.clear()
    resumed = run(optimizers=["gd", "muon"], grid=GRID, store=store)
    assert len(calls) == 1 and resumed.attrs["cells_from_store"] == 2
    xr.testing.assert_equal(resumed.drop_attrs(), axes[0].drop_attrs())
    other = dict(GRID, **{"muon.momentum": [0.5, 0.9, 0.8]})
    with pytest.raises(ValueError, match=r"different sweep.*muon\.momentum"):
        run(optimizers=["gd", "muon"], grid=other, store=store)


@pytest.mark.parametrize(
    "optimizers, grid, match",
    [
        (["gd", "muon"], {"adam.b1": [0.9]}, r"grid key 'adam.b1' names optimizer 'adam', not one of .*\['gd', 'muon'\]"),
        (["muon"], {"muon.momentun": [0.9]}, r"grid key 'muon.momentun': optimizer 'muon' has no option 'momentun'"),
        (["muon"], {"muon.momentum": [0.9, 1.5]}, r"grid key 'muon.momentum' value 1.5: momentum must lie in \[0, 1\)"),
        (["muon"], {"muon.method": ["svd", "qr"]}, r"grid key 'muon.method' value 'qr': .*polar method"),
        (["muon"], {"muon.method": ["svd"], "muon.steps": [3]}, r"grid point muon.method = 'svd', muon.steps = 3"),
        (["muon"], {"muon.momentum": [0.9, 0.9]}, r"grid key 'muon.momentum' lists the value 0.9 twice"),
        (["muon"], {"muon.momentum": []}, r"grid key 'muon.momentum' has no values"),
        (["muon"], {"muon.learning_rate": [0.1]}, r"learning rates go in learning_rates"),
        (["muon"], {"muon.convention": ["optax", "torch"]}, r"grid key 'muon.convention' value 'torch'.*convention='torch'"),
        ({"muon": lambda lr: sd.muon(lr)}, {"muon.momentum": [0.9]}, r"'muon' is a custom factory"),
    ],
)
def test_bad_option_axes_are_refused_at_construction(optimizers, grid, match):
    with pytest.raises(ValueError, match=match):
        sweep_plan(PROBLEM, optimizers=optimizers, learning_rates=[0.1], seeds=1, grid=grid, steps=2)


TINY = textwrap.dedent(
    """
    problem = "matrix_least_squares"
    steps = 4
    seeds = 1
    optimizers = ["gd", "muon", "specpow"]
    learning_rates = [0.1]
    [fields]
    rows = 3
    cols = 2
    samples = 4
    [grid]
    noise = [0.0, 0.1]
    {lines}
    [smoke.grid]
    muon.momentum = [0.8]
    """
)


def test_sweep_file_option_axes_quoted_or_dotted(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(TINY.format(lines='"muon.method" = ["svd", "polar_express"]\nmuon.momentum = [0.9, 0.95]\n'
                                      'specpow.p = [0.0, 0.5, 1.0]'))
    spec = load_sweep_file(path)
    assert spec.grid == {"noise": [0.0, 0.1], "muon.method": ["svd", "polar_express"], "muon.momentum": [0.9, 0.95],
                         "specpow.p": [0.0, 0.5, 1.0]}
    assert (spec.cells, spec.runs) == (1 + 2 + 1, 2 + 2 * 2 * 2 + 2 * 3)  # p is data: one specpow cell
    assert load_sweep_file(path, smoke=True).grid["muon.momentum"] == [0.8]  # [smoke.grid] merges key by key
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--smoke", "--check", "--out", str(out)]) == 0


@pytest.mark.parametrize(
    "lines, message",
    [
        ('"adam.b1" = [0.9]', "unknown optimizer 'adam' in key 'adam.b1' in [grid]"),
        ("muon.momentun = [0.9]", "unknown option 'momentun' in key 'muon.momentun' in [grid]"),
        ('"muon.momentum" = ["high"]', "each value of option axis muon.momentum in [grid] must be a number"),
        ('"muon.momentum" = [1.5]', "grid key 'muon.momentum' value 1.5: momentum must lie in [0, 1)"),
        ('"muon.steps" = [0]', "grid key 'muon.steps' value 0"),
    ],
)
def test_bad_option_axes_in_a_sweep_file_exit_2_with_one_line(tmp_path, capsys, lines, message):
    path = tmp_path / "s.toml"
    path.write_text(TINY.format(lines=lines))
    assert main(["sweep", str(path), "--check", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err
