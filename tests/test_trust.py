"""Results one can trust after an edit, a crash or a mistake: code fingerprints in the
store, provenance, the memory check before running, and SIGINT during a long cell."""

import datetime
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import specdyn as sd
from specdyn.provenance import code_fingerprint, problem_fingerprint, provenance
from specdyn.sweep import sweep, sweep_plan

ROOT = Path(__file__).resolve().parents[1]

MODULE = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp

    import specdyn as sd

    FACTOR = 1.0


    def penalty(params):
        return jnp.sum(params**2)


    @sd.problem
    class Tiny:
        dim: int = sd.static(3)
        scale: float = 1.0

        def init(self, key):
            return jax.random.normal(key, (self.dim, self.dim))

        def sample(self, key):
            return {}

        def loss(self, params, data):
            return self.scale * FACTOR * penalty(params)

        def metrics(self, params, data):
            return {}


    def fast(learning_rate):
        return sd.gd(learning_rate)
    """
)


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's problem and factory in a module file; ``edit(old, new)`` rewrites and re-imports it."""
    path = tmp_path / "tiny_user_module.py"
    path.write_text(MODULE)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, "tiny_user_module", raising=False)

    def edit(old, new):
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
        return _import(path, "tiny_user_module")

    return _import(path, "tiny_user_module"), edit


def _run(module, store, **kw):
    return sweep(
        module.Tiny(), optimizers={"fast": module.fast}, learning_rates=[0.1], seeds=2, steps=3,
        store=store, progress=False, **kw,
    )


def test_edited_loss_is_refused_naming_the_problem_and_fresh_starts_over(user_module, tmp_path):
    module, edit = user_module
    store = tmp_path / "store"
    first = _run(module, store)
    assert (first.attrs["cells"], first.attrs["cells_from_store"]) == (1, 0)
    again = _run(module, store)  # unchanged code resumes
    assert (again.attrs["cells"], again.attrs["cells_from_store"]) == (1, 1)
    np.testing.assert_array_equal(again["loss"].values, first["loss"].values)

    module = edit("return self.scale * FACTOR", "return 10 * self.scale * FACTOR")
    with pytest.raises(ValueError, match=r"the problem's code changed \(Tiny\.loss\).*fresh=True"):
        _run(module, store)
    fresh = _run(module, store, fresh=True)
    assert fresh.attrs["cells_from_store"] == 0
    # Same initial parameters, loss x 10 at step 0 (closed form: 10 ||W0||_F^2).
    np.testing.assert_allclose(fresh["loss"].isel(step=0).values, 10 * first["loss"].isel(step=0).values, rtol=1e-6)


def test_edited_factory_is_refused_naming_the_optimizer(user_module, tmp_path):
    module, edit = user_module
    store = tmp_path / "store"
    _run(module, store)
    module = edit("return sd.gd(learning_rate)", "return sd.gd(2 * learning_rate)")
    with pytest.raises(ValueError, match=r"the code of optimizer 'fast' changed \(tiny_user_module:fast\)"):
        _run(module, store)


@pytest.mark.parametrize("old,new", [("FACTOR = 1.0", "FACTOR = 10.0"),
                                     ("return jnp.sum(params**2)", "return 10 * jnp.sum(params**2)")])
def test_edited_module_constant_or_helper_the_loss_uses_is_refused_and_fresh_recomputes(user_module, tmp_path,
                                                                                         old, new):
    module, edit = user_module
    store = tmp_path / "store"
    first = _run(module, store)
    module = edit(old, new)  # the problem class itself is unchanged
    with pytest.raises(ValueError, match=r"\(the module 'tiny_user_module' defining the problem changed\); "
                                         r".*fresh=True") as err:
        _run(module, store)
    assert "problem's code" not in str(err.value) and "\n" not in str(err.value)
    fresh = _run(module, store, fresh=True)
    assert fresh.attrs["cells_from_store"] == 0
    # Same initial parameters, loss x 10 at step 0 (closed form: 10 ||W0||_F^2).
    np.testing.assert_allclose(fresh["loss"].isel(step=0).values, 10 * first["loss"].isel(step=0).values, rtol=1e-6)


def test_a_module_the_problem_imports_from_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    # loss calls a helper of another user module (``from tiny_helpers import penalty``).
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for name in ("tiny_helpers", "tiny_importer"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    helpers = tmp_path / "tiny_helpers.py"
    helpers.write_text("import jax.numpy as jnp\n\n\ndef penalty(params):\n    return jnp.sum(params**2)\n")
    importer = tmp_path / "tiny_importer.py"
    importer.write_text(MODULE.replace("\n\ndef penalty(params):\n    return jnp.sum(params**2)\n",
                                       "\nfrom tiny_helpers import penalty\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    _import(helpers, "tiny_helpers")
    module = _import(importer, "tiny_importer")
    store = tmp_path / "store"
    _run(module, store)
    helpers.write_text(helpers.read_text().replace("return jnp.sum", "return 2 * jnp.sum"))
    _import(helpers, "tiny_helpers")
    module = _import(importer, "tiny_importer")
    with pytest.raises(ValueError, match=r"the module 'tiny_helpers' changed"):
        _run(module, store)


def test_edited_specdyn_source_is_refused_naming_the_file(user_module, tmp_path, monkeypatch):
    # specdyn's own code, e.g. the SVD polar in polar.py, is part of the fingerprint whatever
    # its version says. The installed package is never edited: a copy of it stands in for it.
    import shutil

    from specdyn import provenance as prov

    copy = tmp_path / "specdyn_copy"
    shutil.copytree(Path(sd.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert prov.package_source(copy) == prov.specdyn_source()  # the digest is of the package's files
    monkeypatch.setattr(prov, "_PACKAGE_ROOT", copy)
    module, _ = user_module
    store = tmp_path / "store"
    _run(module, store)
    assert _run(module, store).attrs["cells_from_store"] == 1
    polar = copy / "polar.py"
    polar.write_text(polar.read_text() + "\n# an edit\n")
    assert _run(module, store).attrs["cells_from_store"] == 1  # computed once per process: what was imported
    prov._package_source_once.cache_clear()  # as a new process would see it
    try:
        with pytest.raises(ValueError, match=r"\(specdyn's source changed \(polar\.py\)\); .*fresh=True"):
            _run(module, store)
        assert _run(module, store, fresh=True).attrs["cells_from_store"] == 0
    finally:
        prov._package_source_once.cache_clear()


SPECDYN_RUN = textwrap.dedent(
    """
    import sys

    import specdyn as sd

    kw = dict(optimizers=["specgd"], learning_rates=[0.05], seeds=1, steps=3, store=sys.argv[1], progress=False)
    problem = sd.problems.MatrixLeastSquares(rows=4, cols=3, samples=8)
    if sys.argv[2] == "again":
        try:
            sd.sweep(problem, **kw)
        except ValueError as err:
            print("refused:", err)
        kw["fresh"] = True
    print("loss:", float(sd.sweep(problem, **kw)["loss"].isel(step=-1).item()))
    """
)


def test_edited_specdyn_polar_in_a_copy_of_the_package_is_refused_and_fresh_gives_new_numbers(tmp_path):
    # End to end, as a user who edits specdyn would: a copy of the package, run from its folder.
    import shutil

    copy = tmp_path / "site" / "specdyn"
    shutil.copytree(Path(sd.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "run.py").write_text(SPECDYN_RUN)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), PYTHONDONTWRITEBYTECODE="1")

    def run(mode):
        proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "store"), mode], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    before = float(run("first").split("loss:")[1])
    polar = copy / "polar.py"
    old = "    return jnp.matmul(u * keep[..., None, :].astype(u.dtype), vh)"  # the SVD polar factor U V^T
    assert polar.read_text().count(old) == 1
    polar.write_text(polar.read_text().replace(old, old.replace("return jnp", "return 0.5 * jnp")))
    out = run("again")
    assert "refused: store" in out and "(specdyn's source changed (polar.py)); " in out and "fresh=True" in out
    after = float(out.split("loss:")[1])
    # Spectral GD steps by -lr U V^T: half the polar factor is half the learning rate.
    problem = sd.problems.MatrixLeastSquares(rows=4, cols=3, samples=8)
    here = {lr: float(sweep(problem, optimizers=["specgd"], learning_rates=[lr], seeds=1, steps=3, progress=False)[
        "loss"].isel(step=-1).item()) for lr in (0.05, 0.025)}
    np.testing.assert_allclose([before, after], [here[0.05], here[0.025]], rtol=1e-5)
    assert abs(after - before) > 1e-2 * before


def test_specdyn_source_and_user_code_digests():
    from specdyn import provenance as prov

    source = prov.specdyn_source()
    polar = Path(sd.__file__).parent / "polar.py"
    assert source["polar.py"] == hashlib.sha256(polar.read_bytes()).hexdigest()[:16]
    assert "problems/least_squares.py" in source and all("__pycache__" not in k for k in source)
    # specdyn's own problems and factories, and installed libraries, add no module digests.
    assert prov.user_code([sd.problems.MatrixLeastSquares, sd.gd, jax.numpy.sum]) == {}
    # This test module is user code: its file is digested.
    here = sys.modules[__name__]
    assert prov.user_code([_run]) == {here.__name__: hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}


def test_code_without_a_source_file_is_digested_with_the_globals_it_uses():
    from specdyn.provenance import user_code

    def made(factor, helper_scale, unused):
        namespace = {"__name__": "made_in_a_cell"}
        exec(MODULE.replace("FACTOR = 1.0", f"FACTOR = {factor}\nUNUSED = {unused}").replace(
            "return jnp.sum(params**2)", f"return {helper_scale} * jnp.sum(params**2)"), namespace)
        return user_code([namespace["Tiny"]])

    base = made(1.0, 1, 0)
    assert list(base) == ["made_in_a_cell (no source file)"]
    assert made(1.0, 1, 0) == base
    assert made(1.0, 1, 5) == base  # a global the code does not use
    assert made(2.0, 1, 0) != base  # a module-level constant loss uses
    assert made(1.0, 3, 0) != base  # a module-level helper loss calls


def test_fingerprints_without_source_use_the_code_objects():
    namespace = {}
    exec(MODULE, namespace)  # no file: inspect.getsource fails
    other = {}
    exec(MODULE.replace("self.scale * FACTOR", "3.0 * self.scale * FACTOR"), other)
    same = {}
    exec(MODULE, same)
    a, b, c = (problem_fingerprint(ns["Tiny"]) for ns in (namespace, other, same))
    assert a == c
    assert {k for k in a if a[k] != b[k]} == {"Tiny", "Tiny.loss"}
    assert code_fingerprint(namespace["fast"]) == code_fingerprint(same["fast"])


def test_provenance_in_attrs_and_store_is_not_part_of_the_fingerprint(tmp_path):
    problem = sd.problems.MatrixLeastSquares(rows=3, cols=2, samples=4)
    kw = dict(optimizers=["gd"], learning_rates=[0.1], seeds=1, steps=2, store=tmp_path / "s", progress=False)
    ds = sweep(problem, **kw, provenance={"sweep_file_text": "steps = 2\n"})
    info = json.loads(ds.attrs["provenance"])
    assert info["jax_version"] == jax.__version__ and info["numpy_version"] == np.__version__
    assert info["x64"] is bool(jax.config.jax_enable_x64)
    assert info["device_count"] == jax.local_device_count() and info["device_kind"]
    assert info["sweep_file_text"] == "steps = 2\n"
    when = datetime.datetime.fromisoformat(info["date"])
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 600
    assert "date" not in json.dumps(json.loads((tmp_path / "s" / "config.json").read_text()))
    again = sweep(problem, **kw)  # another date and no file text: resumes
    assert again.attrs["cells_from_store"] == 1
    sessions = json.loads((tmp_path / "s" / "provenance.json").read_text())
    assert len(sessions) == 2 and sessions[0]["sweep_file_text"] == "steps = 2\n"


def test_provenance_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable
    info = provenance()
    assert "git_commit" not in info and info["specdyn_version"] == sd.__version__


def test_oversized_problem_is_refused_in_seconds_by_sweep_plan_and_simulate():
    big = sd.problems.PhaseRetrieval(dim=100000)
    start = time.perf_counter()
    message = r"dim=100000: one run of PhaseRetrieval needs [\d.]+ GB \(params [\d.]+ GB.*the device has"
    with pytest.raises(ValueError, match=message):
        sweep(big, optimizers=["gd"], learning_rates=[0.1], seeds=1, steps=3, progress=False)
    with pytest.raises(ValueError, match=message):
        sweep_plan(big, optimizers=["gd"], learning_rates=[0.1], seeds=1, steps=3)
    with pytest.raises(ValueError, match=message):
        sd.simulate(big, sd.gd(0.1), key=jax.random.PRNGKey(0), steps=3)
    assert time.perf_counter() - start < 60  # seconds on a loaded machine, not a hang


def test_group_bytes_counts_params_data_and_state():
    from specdyn.simulate import group_bytes, recipe_of

    problem = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12)
    recipe, _ = recipe_of(sd.get_optimizer("adam", 0.1))
    est = group_bytes(problem, recipe, 3)
    params, data = sd.simulate(problem, sd.gd(0.1), key=jax.random.PRNGKey(0), steps=1)["params"], None
    size = sum(np.asarray(x).nbytes for x in jax.tree.leaves(params))
    assert est["params"] == 4 * size  # three runs and the group's initial parameters
    assert est["optimizer state"] >= 3 * 2 * size  # adam: two moments per run
    assert est["total"] >= sum(v for k, v in est.items() if k != "total")
    del data


SLOW = textwrap.dedent(
    """
    description = "one quick cell, then a long one"
    problem = "matrix_least_squares"
    steps = 100000
    record_every = 25000
    seeds = 1
    optimizers = ["gd"]
    learning_rates = [0.01]
    [fields]
    rows = 8
    cols = 8
    [grid]
    samples = [2, 4000]
    """
)


def test_sigint_during_a_long_cell_exits_130_quickly_and_keeps_finished_cells(tmp_path):
    file = tmp_path / "slow.toml"
    file.write_text(SLOW)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "specdyn.cli", "sweep", str(file), "--out", str(out), "--no-progress"]
    # The command as users run it: XLA's default code generation (a CI pass may lower it for
    # compile speed, which makes each program call, the unit an interrupt waits for, slower).
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "backend_optimization_level" not in f)
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=flags)
    # SIGINT as a terminal delivers it: a test worker may run with SIGINT ignored, which a child
    # inherits (Python then installs no KeyboardInterrupt handler and the command runs to the end).
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        first = out / "cells" / "cell-0000.npz"
        deadline = time.monotonic() + 240
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.exists(), proc.communicate(timeout=30)
        time.sleep(1.0)  # inside the long cell
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:  # a failure here must not leave the command running into the next tests
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 5
    assert "interrupted" in err and "Traceback" not in err
    assert first.exists() and not (out / "cells" / "cell-0001.npz").exists()
    stored = first.stat().st_mtime_ns
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed: 1 of 2 cells came from the store" in again.stdout
    assert first.stat().st_mtime_ns == stored  # the finished cell was read, not recomputed


def test_host_device_warning_only_for_several_cpu_devices_on_jaxlib_0_10():
    from specdyn.sweep import host_device_warning

    assert "known to hang" in host_device_warning("cpu", 2, "0.10.2", None)
    assert host_device_warning("cpu", 2, "0.10.2", "0") is None
    assert host_device_warning("cpu", 1, "0.10.2", None) is None
    assert host_device_warning("cpu", 4, "0.12.0", None) is None
    assert host_device_warning("gpu", 2, "0.10.2", None) is None


BIG = textwrap.dedent(
    """
    description = "too big"
    problem = "phase_retrieval"
    steps = 3
    seeds = 1
    optimizers = ["gd"]
    learning_rates = [0.1]
    [fields]
    dim = 100000
    """
)


def test_cli_refuses_an_oversized_sweep_file_with_one_line_and_check_prints_the_plan(tmp_path, capsys):
    from specdyn.cli import main

    big = tmp_path / "big.toml"
    big.write_text(BIG)
    for extra in ([], ["--check"]):
        assert main(["sweep", str(big), "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "dim=100000: one run of PhaseRetrieval needs" in err and str(big) in err
    small = tmp_path / "small.toml"
    small.write_text(BIG.replace("dim = 100000", "dim = 8").replace("seeds = 1", "seeds = 3"))
    assert not (tmp_path / "o" / "cells").exists()  # refused before the store is opened
    assert main(["sweep", str(small), "--out", str(tmp_path / "checked"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "memory per group" in out and "groups per call" in out
    assert not (tmp_path / "checked").exists()


@pytest.mark.parametrize("steps,every", [(25, 10), (41, 3), (1000, 100), (7, 7), (300, 1)])
def test_replanning_with_a_new_budget_at_any_call_keeps_every_record_and_step(steps, every):
    # run_groups refits the steps per call to the measured speed, replanning from the step
    # reached: the records must still fall at 0, r, 2r, ... and steps, each exactly once.
    from specdyn.simulate import plan, record_steps

    rng = np.random.default_rng(steps)
    done, recorded = 0, []
    calls = plan(steps, every, budget=int(rng.integers(1, 20)))
    while calls:
        record, count = calls.pop(0)
        t = done
        for flag, n in zip(record, count, strict=True):
            if flag:
                recorded.append(t)
            t += int(n)
        done = t
        if calls and rng.random() < 0.5:
            calls = plan(steps, every, budget=int(rng.integers(1, 50)), start=done)
    assert done == steps
    np.testing.assert_array_equal(recorded, record_steps(steps, every))


def test_named_figures_resolve_above_plot_which_never_imports_experiments():
    from specdyn.config import resolve_figure

    assert callable(resolve_figure("imbalanced.depth_gap"))
    for name, why in [("nodot", "'module.function'"), ("nope.fig", "no module specdyn.experiments.nope"),
                      ("imbalanced.nope", "has no function nope()")]:
        with pytest.raises(ValueError, match=why):
            resolve_figure(name)
    code = "import sys, specdyn.plot; print(sorted(m for m in sys.modules if m.startswith('specdyn.experiments')))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_group_of_several_rates_is_named_as_such():
    big = sd.problems.PhaseRetrieval(dim=100000)
    with pytest.raises(ValueError, match=r"dim=100000: one group of 3 runs of PhaseRetrieval \(one seed\) needs"):
        sweep_plan(big, optimizers=["gd"], learning_rates=[0.1, 0.2, 0.3], seeds=2, steps=3)
