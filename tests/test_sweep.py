"""Sweeps: equal to one-at-a-time runs, one compilation per cell, resumable, sharded."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from compile_log import count_compiles
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import specdyn as sd
from specdyn import results
from specdyn.simulate import sample_run
from specdyn.sweep import sweep, sweep_plan

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


def test_one_chunk_program_per_cell_across_batches_and_calls(reference, monkeypatch):
    # With memory for one group, the 4 groups (seed x noise; 2 learning rates each) of a
    # cell split into batches of one group, each run in several program calls: one program
    # per cell (optimizer x samples) serves them all, and a second such sweep compiles nothing.
    planned = {k: v for k, v in SWEEP.items() if k != "progress"}
    one_group = max(p.bytes_per_group["total"] for p in sweep_plan(PROBLEM, **planned))
    monkeypatch.setattr(sweep_module, "memory_available", lambda: float(one_group))
    assert {p.groups_per_call for p in sweep_plan(PROBLEM, **planned)} == {1}
    cells = 2 * 2  # optimizers x static samples values
    with count_compiles() as compiles:
        ds = sweep(PROBLEM, **SWEEP)
    assert compiles.count("_chunk_program") == cells
    xr.testing.assert_allclose(ds.drop_attrs(), reference.drop_attrs())
    with count_compiles() as compiles:
        sweep(PROBLEM, **SWEEP)
    assert compiles == []
    with count_compiles() as compiles:
        again = sweep(PROBLEM, **SWEEP, batch_size=6)  # 3 groups per batch: 2 batches, the second padded
    assert compiles.count("_chunk_program") == cells
    xr.testing.assert_allclose(again.drop_attrs(), reference.drop_attrs())


def test_other_rates_seeds_steps_intervals_and_fields_compile_nothing(reference):
    change = dict(
        learning_rates={"gd": [0.2, 0.3], "specgd": [0.02, 0.03]},
        seeds=[5, 7],
        grid={"samples": [12, 16], "noise": [0.05, 0.3]},
        steps=17,
        record_every=5,
    )
    with count_compiles() as compiles:
        ds = sweep(PROBLEM, **dict(SWEEP, **change))
    assert compiles == []
    np.testing.assert_array_equal(ds["step"], [0, 5, 10, 15, 17])


def test_plan_records_every_interval_and_the_last_step():
    from specdyn.simulate import plan, record_steps

    for steps, every, budget in [(25, 10, None), (41, 3, 5), (1000, 100, 100), (7, 7, None), (3000, 1, 300)]:
        calls = plan(steps, every, budget=budget)
        record = np.concatenate([r for r, _ in calls])
        count = np.concatenate([c for _, c in calls])
        assert count.sum() == steps
        at = np.cumsum(np.concatenate([[0], count]))[:-1][record]  # step at each recording segment
        np.testing.assert_array_equal(at, record_steps(steps, every))
        if budget:
            assert all(c.sum() <= budget for _, c in calls)
    np.testing.assert_array_equal(record_steps(25, 10), [0, 10, 20, 25])


def test_steps_not_a_multiple_of_record_every_equal_simulate():
    # 41 steps recorded every 3: records at 0, 3, ..., 39 and at the last step, 41.
    problem = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12, noise=0.1)
    ds = sweep(
        problem,
        optimizers=["gd"],
        learning_rates=[0.05, 0.2],
        seeds=[1, 2],
        steps=41,
        record_every=3,
        progress=False,
    )
    np.testing.assert_array_equal(ds["step"], [*range(0, 40, 3), 41])
    for lr_i, lr in enumerate([0.05, 0.2]):
        for seed in (1, 2):
            out = sd.simulate(problem, sd.gd(lr), key=jax.random.PRNGKey(seed), steps=41, record_every=3)
            got = ds.sel(optimizer="gd", seed=seed).isel(lr=lr_i)
            np.testing.assert_allclose(got["loss"].values, np.asarray(out["loss"]), rtol=1e-5, atol=1e-7)
            assert int(got["diverged_at"]) == int(out["diverged_at"])


def test_data_drawn_by_one_program_for_all_optimizers():
    problem = sd.problems.MatrixLeastSquares(rows=6, cols=5, samples=11)  # shapes no other test uses
    sweep(problem, optimizers=["gd"], learning_rates=[0.01], seeds=2, steps=2, progress=False)  # warm: draw, gd
    with count_compiles() as compiles:
        sweep(problem, optimizers=["gd", "specgd", "muon"], learning_rates=[0.01], seeds=2, steps=2, progress=False)
    assert sorted(compiles) == sorted(["_start_program", "_chunk_program"] * 2)  # specgd, muon; no new draw


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


def test_problem_of_a_grid_point(reference):
    assert results.problem_of(reference) == PROBLEM
    got = results.problem_of(reference, samples=int(reference.samples[1]), noise=float(reference.noise[1]))
    assert got == sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=16, noise=0.2)


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
    # float64 on both sides: the runs are the same to rounding whatever the CPU and code
    # generation (in float32, four devices' smaller batches round differently: up to 1e-6
    # relative on some CPUs); the child keeps this process's XLA flags
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=4"]))
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
    path = tmp_path / "four.nc"
    subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(path)], check=True, env=env, timeout=300)
    four = results.load(path)
    with jax.enable_x64(True):
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
    assert four.loss.dtype == one.loss.dtype == np.float64
    xr.testing.assert_allclose(four.drop_attrs(), one.drop_attrs(), rtol=1e-12)


@pytest.mark.parametrize("name", sd.problems.problem_names())
def test_draw_program_equals_the_default_compilation(name):
    # The draw program is compiled with less optimization (it runs once); its values must not change.
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("compares -O1 against XLA's default level, which XLA_FLAGS changes in this run")
    problem = sd.problems.get_problem(name)()
    problems = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (3, *jnp.shape(x))), problem)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(3))
    shard = NamedSharding(Mesh(np.asarray(jax.local_devices()[:1]), ("runs",)), PartitionSpec("runs"))
    got = importlib.import_module("specdyn.simulate")._draw_program()(problems, keys, None, None, shard=shard)
    want = jax.jit(jax.vmap(sample_run))(problems, keys)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ given data, rate rules


def test_given_data_shared_or_per_seed_equals_simulate_on_that_data():
    problem = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12, init_scale=1.0)
    per_seed = {s: problem.sample(jax.random.PRNGKey(100 + s)) for s in (0, 1)}
    kw = dict(optimizers=["gd"], learning_rates=[0.1, 0.3], seeds=[0, 1], steps=10, record_every=5, progress=False)
    shared = sweep(problem, data=per_seed[1], **kw)
    by_seed = sweep(problem, data=lambda seed: per_seed[seed], **kw)
    for seed in (0, 1):
        for i, lr in enumerate([0.1, 0.3]):
            key = jax.random.PRNGKey(seed)
            want = sd.simulate(problem, sd.gd(lr), key=key, steps=10, record_every=5, data=per_seed[1])
            np.testing.assert_allclose(shared["loss"].sel(seed=seed).isel(lr=i).squeeze(), want["loss"], rtol=1e-6)
            want = sd.simulate(problem, sd.gd(lr), key=key, steps=10, record_every=5, data=per_seed[seed])
            np.testing.assert_allclose(by_seed["loss"].sel(seed=seed).isel(lr=i).squeeze(), want["loss"], rtol=1e-6)
    assert json.loads(shared.attrs["config"])["data"] != json.loads(sweep(problem, data=per_seed[0], **kw).attrs["config"])["data"]
    other = {k: v + 1.0 for k, v in per_seed[0].items()}
    with count_compiles() as compiles:
        sweep(problem, data=other, **kw)
    assert compiles == []
    with pytest.raises(ValueError, match="data must be a dict"):
        sweep(problem, data=[1, 2], **kw)


def test_rate_rules_of_the_data_make_one_sweep_equal_to_runs_at_those_rates():
    # Paper 3: GD at n/||A||_op^2 and SpecGD (nuclear scaling) at n/||A||_F^2, x 0.5 and x 1.
    import functools

    from specdyn.problems.random_features import gd_learning_rate, spectral_learning_rate

    with jax.enable_x64(True):
        problem = sd.problems.RandomFeatures(dim=6, feature_dim=8, samples=20)
        specgd = functools.partial(sd.get_optimizer, "specgd", nuclear_scaling=True, method="svd")
        ds = sweep(
            problem,
            optimizers={"gd": None, "specgd": specgd},
            learning_rates={
                "gd": sd.LearningRateRule(lambda p, d: gd_learning_rate(d), (0.5, 1.0)),
                "specgd": sd.LearningRateRule(lambda p, d: spectral_learning_rate(d), (0.5, 1.0)),
            },
            seeds=[0, 1],
            steps=12,
            record_every=4,
            progress=False,
        )
        np.testing.assert_allclose(ds["learning_rate"].values, [[0.5, 1.0], [0.5, 1.0]])
        for seed in (0, 1):
            data = problem.sample(jax.random.split(jax.random.PRNGKey(seed))[1])
            base = {"gd": float(gd_learning_rate(data)), "specgd": float(spectral_learning_rate(data))}
            for name in ("gd", "specgd"):
                for i, mult in enumerate((0.5, 1.0)):
                    lr = mult * base[name]
                    got = ds.sel(optimizer=name, seed=seed).isel(lr=i)
                    np.testing.assert_allclose(float(got["effective_learning_rate"]), lr, rtol=1e-12)
                    opt = sd.get_optimizer(name, lr) if name == "gd" else specgd(lr)
                    want = sd.simulate(problem, opt, key=jax.random.PRNGKey(seed), steps=12, record_every=4)
                    np.testing.assert_allclose(got["loss"].values, np.asarray(want["loss"]), rtol=1e-6)
    with pytest.raises(ValueError, match="multipliers must be finite numbers > 0"):
        sd.LearningRateRule(lambda p, d: 1.0, (0.0,))
