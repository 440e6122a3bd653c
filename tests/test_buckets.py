"""Buckets: sizes of a padded field in one compiled program, equal to the unpadded runs.

Here the engine: plans, sweeps against sd.simulate at the true size, compile counts,
resume, divergence, the SVD tolerance, the cost model and bad input. Exactness of every
optimizer on the padded problems: test_buckets_exact.py.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from compile_log import count_compiles

import specdyn as sd
from specdyn import buckets as bucketing
from specdyn.optimizers import get_optimizer
from specdyn.simulate import group_bytes, recipe_of, sample_run
from specdyn.sweep import sweep_plan

opt = lambda name, **kw: functools.partial(get_optimizer, name, **kw)


def test_sweep_with_buckets_equals_simulate_at_each_true_size():
    # a learning-rate rule (taken on the true-size data); samples in a bucket of its own size
    problem = sd.problems.PhaseRetrieval(dim=6, width=4, samples=9, init_type="gaussian")
    rule = sd.LearningRateRule(lambda p, d: 0.1 / jnp.mean(d["y"] ** 2) ** 0.5, (0.5, 1.0))
    grid = {"dim": [6, 8], "samples": [9]}
    args = dict(optimizers=["gd"], learning_rates=rule, seeds=[4], grid=grid, steps=6, record_every=3)
    buckets = {"dim": [8], "samples": [9]}
    assert {p.bucket["dim"] for p in sweep_plan(problem, buckets=buckets, **args)} == {8}
    ds = sd.sweep(problem, buckets=buckets, progress=False, **args)
    for d, n in ((6, 9),):  # dim 6 padded to 8
        true = sd.problems.PhaseRetrieval(dim=d, width=4, samples=n, init_type="gaussian")
        params, data = sample_run(true, jax.random.PRNGKey(4))
        lr = float(rule.rule(true, data))
        run = ds.sel(dim=d, samples=n, seed=4).isel(optimizer=0, lr=1)
        np.testing.assert_allclose(run["effective_learning_rate"], lr, rtol=1e-6)
        out = sd.simulate(true, sd.gd(lr), key=jax.random.PRNGKey(4), steps=6, record_every=3)
        for name in ("loss", "a", "b", "c", "alignment"):
            np.testing.assert_allclose(run[name], out[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_five_sizes_in_one_bucket_compile_as_one_size_resume_and_diverge(tmp_path):
    problem = sd.problems.PhaseRetrieval(dim=8, init_type="gaussian")
    # two groups (seeds) of two rates per program call, whatever the cells
    args = dict(optimizers=["gd"], learning_rates=[0.05, 50.0], seeds=2, steps=6, record_every=3, progress=False,
                batch_size=4)
    sizes = {"dim": [4, 5, 6, 7, 9]}
    with count_compiles() as five:
        ds = sd.sweep(problem, grid=sizes, buckets={"dim": [9]}, store=tmp_path, **args)
    # one size compiles one start and one chunk program per optimizer (test_sweep); five sizes too
    assert sorted(n for n in five if n in ("_start_program", "_chunk_program")) == ["_chunk_program", "_start_program"]
    assert five.count("draw") == 5 + 1  # one per true shape, one (trivial) for the bucket
    # lr 50 diverges at every size, lr 0.05 at none
    assert np.all(ds["diverged_at"].isel(lr=1).values >= 0) and np.all(ds["diverged_at"].isel(lr=0).values == -1)
    assert np.all(np.isnan(ds["loss"].isel(lr=1, step=-1).values)) and np.all(np.isfinite(ds["loss"].isel(lr=0)))
    # resume: every cell from the store; lost cells run again in the bucket, same numbers
    assert sd.sweep(problem, grid=sizes, buckets={"dim": [9]}, store=tmp_path, **args).attrs["cells_from_store"] == 5
    (tmp_path / "cell-0001.npz").unlink()
    (tmp_path / "cell-0003.npz").unlink()
    with count_compiles() as again:
        resumed = sd.sweep(problem, grid=sizes, buckets={"dim": [9]}, store=tmp_path, **args)
    assert resumed.attrs["cells_from_store"] == 3 and not any(n in again for n in ("_start_program", "_chunk_program"))
    xr.testing.assert_allclose(resumed.drop_attrs(), ds.drop_attrs())


def test_static_option_axes_share_no_bucket_and_data_option_axes_run_alone():
    # cells of other static option values never share a padded program; an optimizer with
    # a data option axis runs one program per size: same numbers as without buckets
    problem = sd.problems.PhaseRetrieval(dim=5, init_type="gaussian")
    args = dict(optimizers=["specgd", "muon"], learning_rates=[0.05], seeds=1, steps=4, record_every=2,
                progress=False, grid={"dim": [4, 5], "specgd.method": ["newton_schulz", "polar_express"],
                                      "muon.momentum": [0.0, 0.9]})
    plans = sweep_plan(problem, buckets={"dim": [5]}, **{k: v for k, v in args.items() if k != "progress"})
    shared = {(p.optimizer, tuple(p.options.items())) for p in plans if p.bucket is not None}
    assert shared == {("specgd", (("specgd.method", "newton_schulz"),)), ("specgd", (("specgd.method", "polar_express"),))}
    with jax.enable_x64(True):  # float64: padded and alone equal to rounding (float32 rounding differs by program)
        padded = sd.sweep(problem, buckets={"dim": [5]}, **args)
        alone = sd.sweep(problem, buckets=None, **args)
    assert padded["loss"].dtype == np.float64
    xr.testing.assert_allclose(padded.drop_attrs(), alone.drop_attrs(), rtol=1e-10, atol=1e-13)
    assert not np.allclose(padded["loss"].sel(optimizer="specgd", **{"specgd.method": "newton_schulz"}),
                           padded["loss"].sel(optimizer="specgd", **{"specgd.method": "polar_express"}))


def test_svd_rank_tolerance_ignores_zero_padding():
    # s = (1, 4e-15, 0, 0) at 5x4: the default tolerance max(m', n')·eps (m', n' the rows and
    # columns not all zero) keeps 4e-15 (> 5·eps) in the 5x4 matrix and in its 40x30 padded
    # copy alike, where max(40, 30)·eps would drop it. Counted by ‖UVᵀ‖²_F = rank kept.
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        u, _ = np.linalg.qr(rng.normal(size=(5, 4)))
        v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
        g = u @ np.diag([1.0, 4e-15, 0.0, 0.0]) @ v.T
        big_g = np.pad(g, ((0, 35), (0, 26)))
        eps = np.finfo(np.float64).eps
        tx = sd.spectral_power(1.0, 0.0)
        specpow = jax.jit(lambda x: -tx.update({"w": x}, tx.init({"w": x}))[0]["w"])
        for method in (sd.polar, specpow):
            small, big = np.asarray(method(g)), np.asarray(method(big_g))
            assert np.sum(small**2) == pytest.approx(2.0) and np.sum(big**2) == pytest.approx(2.0)
            assert np.all(big[5:] == 0) and np.all(big[:, 4:] == 0)
        assert np.sum(np.asarray(sd.polar(big_g, rank_tol=40 * eps)) ** 2) == pytest.approx(1.0)


def _brute_force(flops, *, runs, steps, compile_seconds=1.0, rate=1e9):
    sizes = sorted(flops)
    best = None
    for mask in range(2 ** (len(sizes) - 1)):  # bucket ends: the last size always ends one
        ends = [s for i, s in enumerate(sizes[:-1]) if mask >> i & 1] + [sizes[-1]]
        cost = len(ends) * compile_seconds + sum(runs * steps * flops[next(e for e in ends if e >= s)] / rate
                                                  for s in sizes)
        if best is None or cost < best[0]:
            best = (cost, tuple(ends))
    return best[1]


def test_auto_buckets_cost_model():
    flops = {8: 1e4, 16: 4e4, 32: 1.6e5, 64: 6.4e5}
    # compiling dominates: one bucket; running dominates: one program per size
    assert bucketing.auto_buckets(flops, flops, runs=4, steps=100) == (64,)
    assert bucketing.auto_buckets(flops, flops, runs=4, steps=10**7) == (8, 16, 32, 64)
    # in between: the small sizes share, the large one alone
    # in between: the small sizes share a bucket, as a brute force over every split finds
    for steps, want in ((1000, (32, 64)), (3000, (16, 32, 64))):
        got = bucketing.auto_buckets(flops, flops, runs=4, steps=steps, compile_seconds=1.0, flops_per_second=1e9)
        assert got == want == _brute_force(flops, runs=4, steps=steps)


def test_who_pads_and_bad_buckets():
    problem = sd.problems.PhaseRetrieval(dim=6)
    args = dict(learning_rates=[0.1], seeds=1, steps=4, grid={"dim": [6, 8]})
    # a shape scaling needs the true shape: explicit, or the default of Muon's optax convention
    plans = sweep_plan(problem, optimizers={"keller": opt("muon", shape_scaling="keller"), "gd": opt("gd"),
                                           "mine": lambda lr: sd.gd(lr), "optax": opt("muon", convention="optax"),
                                           "optax_none": opt("muon", convention="optax", shape_scaling="none")},
                       buckets={"dim": [8]}, **args)
    assert {p.optimizer: p.bucket for p in plans} == {"keller": None, "gd": {"dim": 8}, "mine": None,
                                                     "optax": None, "optax_none": {"dim": 8}}
    assert all(p.bucket is None for p in sweep_plan(problem, optimizers=["gd"], buckets=None, **args))
    # a problem that does not opt in keeps one program per size, with no error
    plain = sd.problems.MatrixLeastSquares(rows=3, cols=3, samples=4)
    assert all(p.bucket is None for p in sweep_plan(plain, optimizers=["gd"], learning_rates=[0.1], seeds=1,
                                                    steps=2, grid={"samples": [4, 5]}))
    for bad, message in [({"covariance": [8]}, "'covariance' is not a padded size"),
                         ({"dim": [8, 6]}, r"buckets\['dim'\]=\[8, 6\]"), ({"dim": [0]}, "positive"),
                         ("some", "buckets='some'"), ({"dim": [7]}, "no bucket for dim=8")]:
        with pytest.raises(ValueError, match=message):
            sweep_plan(problem, optimizers=["gd"], buckets=bad, **args)


SWEEP_FILE = """
problem = "phase_retrieval"
steps = 4
seeds = 1
optimizers = ["gd"]
learning_rates = [0.1]
[grid]
dim = [6, 8]
"""


@pytest.mark.parametrize("table, message", [
    ('[buckets]\ndim = [6]', "key 'dim' in [buckets] = [6] holds no bucket for dim = 8"),
    ('[buckets]\nspike = [6]', "key 'spike' in [buckets]: buckets key 'spike' is not a padded size"),
    ('[buckets]\ndim = [8, 6]', "key 'dim' in [buckets]: buckets['dim'] must be ascending"),
    ('buckets = "some"', 'key \'buckets\' must be "auto", "none"'),
])
def test_sweep_file_buckets_table(tmp_path, capsys, table, message):
    from specdyn.cli import main
    from specdyn.config import load_sweep_file

    good = tmp_path / "good.toml"
    good.write_text(SWEEP_FILE + "[buckets]\ndim = [8]\n")
    assert load_sweep_file(good).sweep_kwargs()["buckets"] == {"dim": (8,)}
    bad = tmp_path / "bad.toml"
    bad.write_text(table + "\n" + SWEEP_FILE if table.startswith("buckets") else SWEEP_FILE + table + "\n")
    assert main(["sweep", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and message in err, err


def test_memory_is_planned_and_checked_at_the_bucket_size(monkeypatch):
    # dim 8 and 12 padded to 64: the plan's bytes are those of dim 64 (what the padded runs
    # allocate), and memory for dim 12 but not 64 refuses the bucket, naming size and bucket
    sweep_module = importlib.import_module("specdyn.sweep")  # sd.sweep, the function, shadows it

    problem = sd.problems.PhaseRetrieval(dim=8, samples=16)
    args = dict(optimizers=["gd"], learning_rates=[0.1, 0.2], seeds=1, steps=4, grid={"dim": [8, 12]})
    plans = sweep_plan(problem, buckets={"dim": [64]}, **args)
    recipe = recipe_of(sd.gd(0.1))[0]
    at = lambda dim: group_bytes(sd.problems.PhaseRetrieval(dim=dim, samples=16), recipe, 2)
    assert [p.bucket for p in plans] == [{"dim": 64}] * 2
    assert [p.bytes_per_group for p in plans] == [at(64)] * 2 and at(64)["total"] > 4 * at(12)["total"]
    unpadded = sweep_plan(problem, buckets=None, **args)
    assert [p.bytes_per_group for p in unpadded] == [at(8), at(12)]
    monkeypatch.setattr(sweep_module, "memory_available", lambda: float(at(12)["total"]))
    assert len(sweep_plan(problem, buckets=None, **args)) == 2  # the true sizes fit
    with pytest.raises(ValueError, match=r"dim=8, samples=16 padded to its bucket dim=64: one group of 2 runs .*smaller buckets"):
        sweep_plan(problem, buckets={"dim": [64]}, **args)
