"""Issue 13, command-line side: every path error is one line and exit 2 naming the path;
no silent surprises (abbreviated flags, [smoke] and [plot] checked before anything
runs, only plottable metrics offered, a labelled summary); messages in TOML terms."""

import errno
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from tiny_sweep import TINY

from specdyn import cli
from specdyn.cli import main
from specdyn.config import show_value
from specdyn.results import save

SWEEP_MODULE = importlib.import_module("specdyn.sweep")  # `specdyn.sweep` the attribute is the function



@pytest.fixture
def sweep_file(tmp_path):
    def write(text=TINY, name="s.toml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if the command starts a sweep."""

    def refuse(*args, **kwargs):
        raise AssertionError("the sweep ran; the error should have come before")

    monkeypatch.setattr(SWEEP_MODULE, "sweep", refuse)


def fake_results(path, *, diverged=False):
    """A small results file shaped like `specdyn sweep`'s (no engine run needed)."""
    loss = np.array([[[[1.0, 0.5, 0.2], [1.0, 0.4, 0.3]], [[1.0, 0.1, 0.05], [1.0, 0.2, 0.15]]]])  # (1, 2, 2, 3)
    div = np.full((1, 2, 2), -1)
    if diverged:
        div[0, 1, 0] = 2  # lr index 1, seed 0 diverged: that rate can never be best
        loss[0, 1, 0, 2] = np.nan
    ds = xr.Dataset(
        {"loss": (("optimizer", "lr", "seed", "step"), loss), "diverged_at": (("optimizer", "lr", "seed"), div)},
        coords={
            "optimizer": ["gd"],
            "lr": [0, 1],
            "seed": [0, 1],
            "step": [0, 5, 10],
            "learning_rate": (("optimizer", "lr"), np.array([[0.1, 0.3]])),
        },
    )
    save(ds, path)
    return ds


def fails(argv, capsys, *needles):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("specdyn: error: "), err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


# ---------------------------------------------------------------- path errors


def test_out_naming_an_existing_file(sweep_file, tmp_path, capsys, no_run):
    target = tmp_path / "taken"
    target.write_text("x")
    fails(["sweep", sweep_file(), "--smoke", "--out", str(target)], capsys, target, "is a file, not a folder")


def test_out_below_a_file_is_impossible(sweep_file, tmp_path, capsys, no_run):
    (tmp_path / "taken").write_text("x")
    target = tmp_path / "taken" / "sub"
    fails(["sweep", sweep_file(), "--out", str(target)], capsys, target, "cannot be made", "taken is a file")


def test_the_default_output_folder_is_checked_too(sweep_file, tmp_path, capsys, monkeypatch, no_run):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("x")  # the default is out/<folder>/<file name>
    fails(["sweep", sweep_file()], capsys, "the output folder out/", "out is a file")


def test_demo_out_is_checked_before_running(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    fails(["demo", "--out", str(tmp_path / "taken")], capsys, tmp_path / "taken", "is a file, not a folder")


def test_out_with_a_nul_byte_or_too_long_a_name(sweep_file, tmp_path, capsys, no_run):
    fails(["sweep", sweep_file(), "--out", str(tmp_path / "a\0b")], capsys, "NUL byte", "--out")
    long = tmp_path / ("x" * 300)
    fails(["sweep", sweep_file(), "--out", str(long)], capsys, long)


def test_out_in_an_unwritable_folder(sweep_file, tmp_path, capsys, monkeypatch, no_run):
    target = tmp_path / "out"

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", denied)
    fails(["sweep", sweep_file(), "--out", str(target)], capsys, target, "Permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_out_in_a_read_only_folder(sweep_file, tmp_path, capsys, no_run):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        fails(["sweep", sweep_file(), "--out", str(locked / "out")], capsys, locked)
    finally:
        locked.chmod(0o700)


def test_sweep_on_a_folder_lists_its_sweep_files(sweep_file, tmp_path, capsys):
    sweep_file(name="a.toml")
    fails(["sweep", str(tmp_path)], capsys, tmp_path, "is a folder", "a.toml")


def test_sweep_on_a_non_utf8_file(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "Fran\xe7ois"\n'.encode("latin-1"))
    fails(["sweep", str(path)], capsys, path, "not a UTF-8 text file", "0xe7")


def test_sweep_on_an_unreadable_file(sweep_file, capsys, monkeypatch):
    path = sweep_file()

    def denied(self):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(cli.Path, "read_bytes", denied)
    fails(["sweep", path], capsys, path, "cannot read the sweep file", "Permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_sweep_on_a_file_without_read_permission(sweep_file, capsys):
    path = sweep_file()
    os.chmod(path, 0)
    fails(["sweep", path], capsys, path, "cannot read the sweep file")


@pytest.mark.parametrize("content", [b"", b"hello, not netCDF", bytes(range(256))], ids=["empty", "text", "binary"])
def test_plot_on_a_file_that_is_not_results(tmp_path, capsys, content):
    path = tmp_path / "results.nc"
    path.write_bytes(content)
    fails(["plot", str(path), "--metric", "loss"], capsys, path, "not a results file")


def test_plot_on_a_netcdf_file_of_something_else(tmp_path, capsys):
    path = tmp_path / "other.nc"
    xr.Dataset({"a": ("x", np.arange(3))}).to_netcdf(path, engine="scipy")
    fails(["plot", str(path), "--metric", "a"], capsys, path, "not a results file", "'diverged_at'")


def test_plot_on_a_folder_and_a_missing_file(tmp_path, capsys):
    fake_results(tmp_path / "results.nc")
    fails(["plot", str(tmp_path), "--metric", "loss"], capsys, tmp_path, "is a folder", "results.nc?")
    fails(["plot", str(tmp_path / "nope.nc"), "--metric", "loss"], capsys, tmp_path / "nope.nc", "no results file")


def test_plot_out_errors(tmp_path, capsys):
    results = tmp_path / "results.nc"
    fake_results(results)
    fails(["plot", str(results), "--metric", "loss", "--out", str(tmp_path)], capsys, tmp_path, "is a folder")
    (tmp_path / "f").write_text("x")
    fails(
        ["plot", str(results), "--metric", "loss", "--out", str(tmp_path / "f" / "a.png")],
        capsys, "the folder of --out", tmp_path / "f" / "a.png", "is a file, not a folder",
    )


def test_plot_out_in_a_folder_that_takes_no_files_names_the_path_given(tmp_path, capsys, monkeypatch):
    # The folder is probed with a temporary file: the message names --out, never the probe.
    results = tmp_path / "results.nc"
    fake_results(results)
    probe = tmp_path / "tmpab12cd34"

    def refused(*args, dir=None, **kwargs):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(probe))

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", refused)
    err = fails(["plot", str(results), "--metric", "loss", "--out", str(tmp_path / "x.png")], capsys,
                f"the folder of --out {tmp_path / 'x.png'} cannot be written to", "No such file or directory")
    assert probe.name not in err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="a /proc file system (Linux)")
def test_plot_out_in_proc(tmp_path, capsys):
    results = tmp_path / "results.nc"
    fake_results(results)
    err = fails(["plot", str(results), "--metric", "loss", "--out", "/proc/x.png"], capsys, "--out /proc/x.png")
    assert "tmp" not in err


def test_absurd_steps_are_refused_by_check_naming_steps_and_record_every(sweep_file, tmp_path, capsys, no_run):
    # A billion records per run cannot be kept: refused before anything runs, in TOML terms.
    text = TINY.replace("steps = 6", "steps = 1000000000").split("[smoke]")[0]
    fails(["sweep", sweep_file(text), "--out", str(tmp_path / "o"), "--check"], capsys,
          "steps=1000000000 with record_every=1 makes 1000000001 records per run", "of host memory")
    assert main(["sweep", sweep_file(text.replace("steps = 1000000000", "steps = 1000000000\nrecord_every = "
                                                  "100000000")), "--out", str(tmp_path / "o"), "--check"]) == 0
    assert "records" in capsys.readouterr().out


def test_path_errors_through_the_real_command_have_no_traceback(tmp_path):
    (tmp_path / "taken").write_text("x")
    for argv in (["plot", str(tmp_path), "--metric", "loss"], ["sweep", str(tmp_path / "taken")]):
        proc = subprocess.run(
            [sys.executable, "-m", "specdyn.cli", *argv], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert str(tmp_path) in proc.stderr


# ---------------------------------------------------------------- no silent surprises


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["sweep", "F", "--smok"], "unrecognized arguments: --smok"),
        (["sweep", "F", "--chec"], "unrecognized arguments: --chec"),
        (["sweep", "F", "--fre"], "unrecognized arguments: --fre"),
        (["plot", "F", "--metr", "loss"], "required: --metric"),
    ],
)
def test_abbreviated_flags_are_errors(argv, needle, sweep_file, capsys, no_run):
    argv = [sweep_file() if a == "F" else a for a in argv]
    fails(argv, capsys, needle)


@pytest.mark.parametrize(
    "smoke_text,needle",
    [
        ("[smoke.fields]\nsamplez = 6", "unknown field 'samplez' in [smoke.fields]"),
        ("[smoke.fields]\nsamples = 0", "samples must be a positive integer"),
        ("[smoke]\nsteps = 0", "[smoke] key 'steps' must be >= 1"),
        ('[smoke.plot]\nmetrics = ["distanse"]', "[smoke.plot] metric 'distanse'"),
    ],
)
def test_smoke_table_is_checked_on_a_full_run(sweep_file, capsys, no_run, smoke_text, needle):
    text = TINY[: TINY.index("[smoke]")] + smoke_text + "\n"
    path = sweep_file(text)
    fails(["sweep", path, "--out", path + ".out"], capsys, path, needle)


def test_smoke_override_that_breaks_a_full_size_key_is_named(sweep_file, capsys, no_run):
    text = TINY.replace("[grid]\nnoise = [0.0, 0.1]", "").replace("samples = 6", "rows = 2")
    text = text.replace("cols = 3", "cols = 3\ncondition = 0.5")  # invalid at both sizes: the full one is named
    fails(["sweep", sweep_file(text), "--check"], capsys, "[fields]", "condition must be >= 1")


@pytest.mark.parametrize(
    "plot,needle",
    [
        ('metrics = ["loss", "distanse"]', "metric 'distanse' is not a metric of problem"),
        ('metrics = ["diverged_at"]', "metric 'diverged_at' is not a metric"),
        ('figures = ["imbalanced.no_such_figure"]', "has no function no_such_figure()"),
        ('figures = ["nowhere.figure"]', "no module specdyn.experiments.nowhere"),
        ('figures = ["justaname"]', "'module.function'"),
    ],
)
def test_plot_table_is_checked_before_running(sweep_file, capsys, no_run, plot, needle):
    text = TINY.replace('metrics = ["loss", "distance"]', plot)
    err = fails(["sweep", sweep_file(text), "--out", "unused"], capsys, needle)
    if "metric" in needle:
        assert "loss, distance, nuclear_rank, stable_rank_A" in err


def test_check_validates_and_runs_nothing(sweep_file, tmp_path, capsys, no_run):
    out = tmp_path / "new" / "out"
    assert main(["sweep", sweep_file(), "--smoke", "--check", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ok: ") and "16 runs of 4 steps in 2 compiled cells" in printed
    assert not out.exists() and not out.parent.exists()


def test_plot_offers_only_plottable_metrics(tmp_path, capsys):
    results = tmp_path / "results.nc"
    fake_results(results)
    err = fails(["plot", str(results), "--metric", "diverged_at"], capsys, "'diverged_at' is not a metric")
    assert err.rstrip().endswith("(plottable: loss)")
    fails(["plot", str(results), "--metric", "alignmnt"], capsys, "no metric 'alignmnt'", "plottable: loss")


def test_summary_names_its_rule_and_shows_seed_median_and_range(tmp_path):
    ds = fake_results(tmp_path / "r.nc", diverged=True)
    text = cli._summary(ds)
    from specdyn.results import BestRateRule

    assert BestRateRule.of_metric("loss").description in " ".join(text.split())  # the rule, stated
    assert "best lr = the lowest seed-mean loss at the last recorded step" in " ".join(text.split())
    assert "median and [min, max] over the 2 seeds" in text
    header, row = text.splitlines()[-2:]
    assert header.split() == ["optimizer", "best", "lr", "median", "loss", "[min,", "max]", "diverged"]
    # lr 0.3 has the lower losses, but seed 0 diverged there: 0.1 is the best rate
    assert row.split() == ["gd", "0.1", "0.25", "[0.2,", "0.3]", "1/4"]
    assert all(len(line) <= 100 for line in text.splitlines())


def test_a_resumed_run_says_how_many_cells_came_from_the_store(tmp_path):
    ds = fake_results(tmp_path / "r.nc")
    assert cli._store_line(ds, tmp_path) is None  # the engine does not say: print nothing
    ds.attrs.update(cells_from_store=2, cells=3)
    assert cli._store_line(ds, tmp_path).startswith("resumed: 2 of 3 cells came from the store")


# ---------------------------------------------------------------- wording


def test_a_toml_user_is_told_about_toml_keys(tmp_path, capsys):
    path = tmp_path / "spike.toml"
    path.write_text(
        'problem = "phase_retrieval"\nsteps = 5\nseeds = 1\noptimizers = ["gd"]\nlearning_rates = [0.1]\n'
        '[fields]\nspike = "ten"\n'
    )
    err = fails(["sweep", str(path), "--check"], capsys, path, "field spike in [fields] must be a number, got 'ten'")
    assert "static" not in err


@pytest.mark.parametrize(
    "old,new,needle",
    [
        ("learning_rates = [0.05, 0.1]", "learning_rates = [0.05, inf]", "finite number > 0, got inf"),
        ("learning_rates = [0.05, 0.1]", "learning_rates = {gd = [0.1], specgd = [0.1], adamw = [0.1]}",
         "key 'learning_rates' names 'adamw', not in 'optimizers' (gd, specgd)"),
        ("learning_rates = [0.05, 0.1]", "learning_rates = {gd = [0.1]}", "has no rates for 'specgd'"),
        ("learning_rates = [0.05, 0.1]", "learning_rates = {gd = [0.1], specgd = [0.1, 0.2]}", "gd: 1, specgd: 2"),
        ("seeds = 2", "seeds = [3, 3]", "key 'seeds' lists seed 3 twice"),
        ("seeds = 2", "seeds = -2", "key 'seeds' must be a count >= 1"),
        ("seeds = 2", "seeds = 2\nbatch_size = 0", "key 'batch_size' must be >= 1, got 0"),
        ("noise = [0.0, 0.1]", 'noise = [0.0, "fast"]', "each value of field noise in [grid] must be a number, got 'fast'"),
        ("noise = [0.0, 0.1]", "noise = [0.1, 0.1]", "field noise in [grid] lists 0.1 twice"),
        ("noise = [0.0, 0.1]", "noise = []", "field noise in [grid] is an empty array"),
        ("rows = 4", "rows = { a = 1 }", "field rows in [fields] must be a value or an array, not a table"),
        ("[plot]", '[options.specgd]\nmethod = 3\n[plot]', "option method in [options.specgd] must be a string, got 3"),
        ("[plot]", "[options.specgd]\nstepz = 3\n[plot]", "unknown option 'stepz' in [options.specgd]"),
        ("[plot]", '[options.specgd]\nmethod = "newton_schulz"\nsteps = "five"\n[plot]',
         "option steps in [options.specgd] must be an integer or \"none\", got 'five'"),
        ("rows = 4", "rows = 4.5", "field rows in [fields] must be an integer, got 4.5"),
        ("samples = 6", "samples = 0", "[smoke.fields]: samples must be a positive integer"),
        ("[plot]", "[options.gd]\nlearning_rate = 3\n[plot]", "learning rates go in key 'learning_rates'"),
    ],
)
def test_sweep_file_messages_name_the_file_and_the_key(sweep_file, capsys, old, new, needle):
    assert old in TINY
    path = sweep_file(TINY.replace(old, new, 1))
    err = fails(["sweep", path, "--check"], capsys, path, needle)
    for leak in ("np.", "missing []", "unknown []"):
        assert leak not in err


def test_show_value_writes_plain_values():
    assert show_value(np.float64(np.inf)) == "inf"
    assert show_value(np.str_("fast")) == "'fast'"
    assert show_value((1, np.int64(2), None, True)) == '[1, 2, "none", true]'


def test_list_is_readable_in_100_columns(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert not any(line.rstrip().endswith(("-", ", -")) for line in lines)
    assert "'bool'" not in out and "'float'" not in out  # types are not quoted strings
    for needle in (
        "phase_retrieval (PhaseRetrieval): ",  # a one-line description follows
        "covariance        str         \"spiked\"      static  one of spiked, power_law",
        "polar options (**polar_kwargs, passed to scale_by_polar):",
        'method = "svd" (one of svd, newton_schulz, polar_express)',
        "momentum = 0.95",
        "no options",
    ):
        assert needle in out, needle


def _three_optimizers(gd=True, grid=False):
    """Final losses with a shared per-seed effect, three optimizers, two rates (rate 0 best)."""
    rng = np.random.default_rng(3)
    names = ["gd", "specgd", "muon"] if gd else ["adam", "specgd", "muon"]
    points = 2 if grid else 1
    base = rng.normal(1.0, 0.2, (1, 1, 5, points, 1))
    loss = base + rng.normal(0.0, 0.05, (3, 2, 5, points, 2)) + np.array([0.0, 0.5])[None, :, None, None, None]
    loss[1] -= 0.1  # specgd lowest, then gd/adam, then muon
    loss[2] += 0.05
    ds = xr.Dataset(
        {"loss": (("optimizer", "lr", "seed", "width", "step"), loss),
         "diverged_at": (("optimizer", "lr", "seed", "width"), np.full((3, 2, 5, points), -1))},
        coords={"optimizer": names, "lr": [0, 1], "seed": np.arange(5), "step": [0, 10], "width": [4, 8][:points],
                "learning_rate": (("optimizer", "lr"), np.tile([0.1, 0.3], (3, 1)))},
    )
    return ds if grid else ds.isel(width=0, drop=True)


@pytest.mark.parametrize("gd", [True, False])
def test_summary_prints_the_paired_comparison_at_the_best_rates(gd):
    from scipy import stats

    ds = _three_optimizers(gd)
    text = cli._summary(ds)
    assert "two-sided paired t-test (scipy.stats.ttest_rel)" in text
    pairs = [("specgd", "gd"), ("muon", "gd")] if gd else [("specgd", "adam")]  # else: the best two
    assert ("each optimizer against gd" if gd else "the best two optimizers") in text
    for a, b in pairs:
        xa, xb = (ds["loss"].sel(optimizer=o).isel(lr=0, step=-1).values for o in (a, b))
        ref = stats.ttest_rel(xa, xb)
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{a} - {b}:"))
        assert f"mean difference {np.mean(xa - xb):.4g}" in line and f"p = {ref.pvalue:.3g}" in line, line
        assert "n = 5 seeds" in line
    assert len([line for line in text.splitlines() if " - " in line and "mean difference" in line]) == len(pairs)
    assert all(len(line) <= 100 for line in text.splitlines())
    # one seed, or one optimizer: no comparison
    assert "paired" not in cli._summary(ds.isel(seed=[0]))
    assert "paired" not in cli._summary(ds.isel(optimizer=[0]))


def test_summary_paired_comparison_per_grid_point():
    ds = _three_optimizers(grid=True)
    rows = [line for line in cli._summary(ds).splitlines() if "mean difference " in line]
    assert len(rows) == 4 and rows[0].split()[0] == "width=4" and rows[1].split()[0] == "width=8"
