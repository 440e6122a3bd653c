"""The specdyn command: bad input exits 2 with a one-line message; a smoke sweep works."""

import subprocess
import sys
import textwrap

import pytest

from specdyn.cli import main
from specdyn.results import load

GOOD = textwrap.dedent(
    """
    description = "tiny"
    problem = "matrix_least_squares"
    steps = 6
    record_every = 3
    seeds = 2
    optimizers = ["gd", "specgd"]
    learning_rates = [0.05, 0.1]
    [fields]
    rows = 4
    cols = 3
    samples = 8
    [grid]
    noise = [0.0, 0.1]
    [options.specgd]
    method = "newton_schulz"
    [plot]
    metrics = ["loss", "distance"]
    [smoke]
    steps = 4
    [smoke.fields]
    samples = 6
    """
)


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD = [
    (None, "no sweep file"),
    ("bogus = 1\n" + GOOD, "unknown key 'bogus'"),
    (GOOD.replace("steps = 6", 'steps = "six"'), "key 'steps' must be an integer, got 'six'"),
    (GOOD.replace("steps = 6", "steps = 0"), "key 'steps' must be >= 1, got 0"),
    (GOOD.replace('"matrix_least_squares"', '"nope"'), "unknown problem 'nope'"),
    (GOOD.replace('["gd", "specgd"]', '["gd", "sgdx"]'), "unknown optimizer 'sgdx'"),
    (GOOD.replace("rows = 4", "rowz = 4"), "unknown field 'rowz'"),
    (GOOD.replace("noise = [0.0, 0.1]", "noise = [-1.0]"), "noise=-1.0"),
    (GOOD.replace('method = "newton_schulz"', 'method = "qr"'), "method='qr'"),
    (GOOD.replace("seeds = 2", "seeds = true"), "key 'seeds' must be"),
    ("steps = [", "not valid TOML"),
    (GOOD.replace('description = "tiny"\n', "").replace("seeds = 2\n", ""), "missing key 'seeds'"),
    (GOOD + "\n[smoke.extra]\nx = 1\n", "[smoke] unknown key 'extra'"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_sweep_file_exits_2_with_message(tmp_path, capsys, text, message):
    path = str(tmp_path / "missing.toml") if text is None else write(tmp_path, text)
    assert main(["sweep", path, "--smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("specdyn: error:")


def test_bad_input_through_the_real_command_has_no_traceback(tmp_path):
    path = write(tmp_path, GOOD.replace("steps = 6", "steps = -3"))
    proc = subprocess.run(
        [sys.executable, "-m", "specdyn.cli", "sweep", path], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "key 'steps' must be >= 1, got -3" in proc.stderr


def test_smoke_sweep_writes_results_and_figures(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert main(["sweep", path, "--smoke", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    ds = load(out / "results.nc")
    assert ds.sizes == {"optimizer": 2, "lr": 2, "seed": 2, "noise": 2, "step": 3}  # smoke: steps = 4: records 0, 3, 4
    assert int(ds["samples"]) == 6 if "samples" in ds.coords else True
    # the summary says what it prints: each optimizer's best rate by the stated rule, seed median and range
    from specdyn.results import BestRateRule, best_learning_rate

    assert BestRateRule.of_metric("loss").description in " ".join(printed.split())  # the rule, stated
    best = best_learning_rate(ds, "loss")
    rows = [line.split() for line in printed.splitlines() if line.split()[:2] in (["0", "gd"], ["0", "specgd"])]
    assert len(rows) == 2
    for row in rows:
        assert float(row[2]) == pytest.approx(float(best["learning_rate"].sel(optimizer=row[1], noise=0.0)), rel=1e-3)
    for name in ("loss.png", "distance.png"):
        assert (out / name).stat().st_size > 10_000
        assert name in printed
    # plot one metric; an unknown metric is a clean error
    assert main(["plot", str(out / "results.nc"), "--metric", "nuclear_rank", "--out", str(tmp_path / "nr.png")]) == 0
    assert (tmp_path / "nr.png").exists()
    assert main(["plot", str(out / "results.nc"), "--metric", "alignmnt"]) == 2
    assert "no metric 'alignmnt'" in capsys.readouterr().err


def test_list_shows_problems_and_optimizers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("matrix_least_squares", "condition", " data ", " static ", "muon", "momentum", "shampoo"):
        assert word in out
