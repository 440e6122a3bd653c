"""Issue 26: a sweep's cells as tasks on a Dask cluster (a LocalCluster of 2 worker
processes started here, no cluster needed): the Dataset equals the in-process sweep's
bit for bit, each cell is written once into the shared store, a worker killed (SIGKILL)
mid-sweep loses nothing, and a sweep whose client process died resumes without
recomputing its finished cells."""

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from tiny_sweep import TINY

import specdyn as sd
from specdyn import executors
from specdyn.cli import main
from specdyn.sweep import sweep_plan

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = sd.problems.MatrixLeastSquares(rows=4, cols=3, samples=8)
# 2 optimizers x 2 row counts = 4 cells (buckets=None: one task per cell), 2 lr x 2 seeds x 2 noises each
KWARGS = dict(optimizers=["gd", "specgd"], learning_rates=[0.05, 0.1], seeds=2,
              grid={"rows": [4, 5], "noise": [0.0, 0.1]}, steps=6, buckets=None, progress=False)
CELLS = [f"cell-{i:04d}.npz" for i in range(4)]
LONGER = dict(KWARGS, steps=1500)  # the same programs (steps are data), cells long enough to die amid


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Two worker processes of one thread each, as the README's local example starts them."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as dask_client:
            yield dask_client


@pytest.fixture(scope="module")
def serial():
    return sd.sweep(PROBLEM, **KWARGS)


def assert_same(ds, reference):
    """Every variable and coordinate equal bit for bit (attrs differ: provenance, cells from the store)."""
    xr.testing.assert_identical(ds.drop_attrs(), reference.drop_attrs())
    for name in reference.data_vars:
        np.testing.assert_array_equal(ds[name].values, reference[name].values, strict=True)
    assert ds.attrs["config"] == reference.attrs["config"]


def cell_files(store: Path) -> list[str]:
    return sorted(f.name for f in store.glob("cell-*.npz"))


def test_a_worker_killed_mid_sweep_loses_nothing(client, serial, tmp_path):
    """SIGKILL the worker running a cell: Dask reruns that cell elsewhere, the sweep finishes
    and equals the in-process one, every cell is in the store once."""
    out = {}
    run = threading.Thread(target=lambda: out.update(ds=sd.sweep(PROBLEM, **KWARGS, store=tmp_path, client=client)),
                           daemon=True)
    run.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        busy = [worker for worker, keys in client.processing().items() if keys]
        if busy:
            killed = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(killed, signal.SIGKILL)
        else:
            time.sleep(0.01)
    run.join(timeout=240)
    assert killed is not None, "no cell was ever seen running"
    assert not run.is_alive() and "ds" in out, "the sweep did not finish after its worker was killed"
    assert killed not in client.run(os.getpid).values()  # that process is gone; the nanny started another
    assert_same(out["ds"], serial)
    assert cell_files(tmp_path) == CELLS


def test_dask_sweep_equals_serial_and_writes_each_cell_once(client, serial, tmp_path):
    ds = sd.sweep(PROBLEM, **KWARGS, store=tmp_path, client=client)
    assert_same(ds, serial)
    assert ds.attrs["cells"] == 4 and ds.attrs["cells_from_store"] == 0
    assert cell_files(tmp_path) == CELLS and not list(tmp_path.glob(".*.tmp"))
    stamps = {f: (tmp_path / f).stat().st_mtime_ns for f in CELLS}
    again = sd.sweep(PROBLEM, **KWARGS, store=tmp_path, executor=client.get_executor())
    assert again.attrs["cells_from_store"] == 4
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in CELLS} == stamps  # nothing recomputed
    assert_same(again, serial)
    with pytest.raises(ValueError, match="holds results of a different sweep.*steps"):
        sd.sweep(PROBLEM, **{**KWARGS, "steps": 7}, store=tmp_path, client=client)


def test_resume_after_the_client_process_died(client, serial, tmp_path):
    """The sweep's own process (the Dask client) is killed once a cell is stored; a new
    sweep on the store resumes: stored cells are not recomputed, the rest run, the
    Dataset equals the in-process one."""
    program = textwrap.dedent(
        f"""
        import sys
        import specdyn as sd
        sd.guard_cpu()
        kwargs = {LONGER!r}
        sd.sweep(sd.problems.MatrixLeastSquares(rows=4, cols=3, samples=8), **kwargs,
                 store=sys.argv[1], client=sys.argv[2])
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", program, str(tmp_path), client.scheduler.address], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not cell_files(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    stored = {f: (tmp_path / f).stat().st_mtime_ns for f in cell_files(tmp_path)}
    assert stored, "the client process wrote no cell before it was killed"
    ds = sd.sweep(PROBLEM, **LONGER, store=tmp_path, client=client)
    assert ds.attrs["cells_from_store"] >= len(stored)
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in stored} == stored  # finished cells kept as they were
    assert cell_files(tmp_path) == CELLS
    assert_same(ds, sd.sweep(PROBLEM, **LONGER))


def test_cli_sweep_on_a_scheduler(client, tmp_path, capsys):
    file = tmp_path / "tiny.toml"
    file.write_text(TINY)
    out = tmp_path / "out"
    assert main(["sweep", str(file), "--out", str(out), "--no-progress",
                 "--scheduler", client.scheduler.address]) == 0
    assert cell_files(out / "cells") == CELLS[:2]
    ds = sd.results.load(out / "results.nc")
    assert ds.sizes["noise"] == 2 and ds.sizes["optimizer"] == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "argument --workers: must be a whole number >= 1, got '0'"),
        (["--workers", "two"], "argument --workers: must be a whole number >= 1, got 'two'"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not allowed with argument"),
        (["--scheduler", "localhost"], "--scheduler localhost is not a Dask scheduler address"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler tcp://127.0.0.1:1: no Dask scheduler answers there"),
    ],
)
def test_cli_bad_scheduler_or_workers_is_one_line_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "_CONNECT_SECONDS", 1)
    file = tmp_path / "tiny.toml"
    file.write_text('problem = "matrix_least_squares"\nsteps = 2\nseeds = 1\noptimizers = ["gd"]\n'
                    'learning_rates = [0.1]\n')
    assert main(["sweep", str(file), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_executor_and_client_arguments_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="executor must be a concurrent.futures.Executor"):
        sd.sweep(PROBLEM, **KWARGS, store=tmp_path, executor="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="client must be a distributed.Client or a Dask scheduler address"):
        sd.sweep(PROBLEM, **KWARGS, store=tmp_path, client=3)
    assert not tmp_path.joinpath("config.json").exists()


class _InOrder(concurrent.futures.Executor):
    """Runs each task as it is submitted, in this process, and keeps the tasks in order."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(fn)
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_units_are_submitted_largest_first(serial):
    """The cells of the larger size go first (their planned bytes are larger), so a sweep's
    tail is a small cell; the order changes nothing in the results."""
    pool = _InOrder()
    ds = sd.sweep(PROBLEM, **KWARGS, executor=pool)
    assert_same(ds, serial)
    plans = sweep_plan(PROBLEM, **{k: v for k, v in KWARGS.items() if k != "progress"})
    sizes = [sum(plans[i].groups * plans[i].bytes_per_group["total"] for i in task.members)
             for task in pool.submitted]
    assert len(sizes) == 4 and sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert [plans[task.members[0]].static["rows"] for task in pool.submitted][:2] == [5, 5]
