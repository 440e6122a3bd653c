"""Scale-out: one grid serial (one process, one core) against 2 Dask worker processes
(one core each), side by side in one run.

Grid: matrix least squares, ``cols`` features, 4 ``cols`` samples, rows in 8 sizes
× (GD, SpecGD with Newton–Schulz) = 16 cells, each 4 seeds × 4 learning rates ×
``steps`` steps, float32, ``buckets=None`` (one compiled program per cell, one task
per cell). Every process computes on one core: the serial one and each worker are
pinned to a core before JAX starts (XLA sizes its thread pool from the affinity, so
it gets one thread), and OpenBLAS runs one thread (``specdyn.guard_cpu``).

Timed, each from processes that have imported specdyn but compiled nothing:

  serial cold   sd.sweep in a fresh process (compile + compute); serial warm: again
                in that process (programs in memory: compute only);
  dask cold     sd.sweep(client=...) on a fresh LocalCluster of 2 workers (each
                compiles the programs of the cells it gets, and writes them to a
                persistent compile cache, ``JAX_COMPILATION_CACHE_DIR`` on a shared
                folder); dask warm: again, after each worker ran the whole grid
                in-process (untimed), so every program is in both workers' memory:
                compute, scheduling and transfers only;
  cache hit     a new cluster (new processes) on the same cache: programs loaded, not compiled.

Efficiency = serial time / (2 × parallel time); cold against cold, warm against warm,
cache hit against serial cold (a serial process could use the cache too: that row
shows what the cache saves a fresh worker, not scale-out). Every parallel result is checked equal to the serial
one, bit for bit. Run: ``python bench/scale_out.py [--steps N] [--cols P]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def grid(cols: int, steps: int) -> dict:
    return dict(
        optimizers=["gd", "specgd"],
        learning_rates={"gd": [0.05, 0.1, 0.2, 0.4], "specgd": [0.002, 0.005, 0.01, 0.02]},
        seeds=4,
        grid={"rows": [cols // 2 + k * cols // 4 for k in range(8)]},
        steps=steps,
        record_every=max(1, steps // 10),
        buckets=None,
        progress=False,
    )


def problem(cols: int):
    import specdyn as sd

    return sd.problems.MatrixLeastSquares(rows=cols, cols=cols, samples=4 * cols, noise=0.1)


def pin(core: int) -> None:
    """Pin every thread of this process to ``core`` (threads started later inherit it)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:
            pass


def start_worker(core: int) -> int:
    """In a worker: pin it to one core, then import specdyn and start JAX's CPU backend
    (one XLA thread) before any task, so timings hold no import."""
    pin(core)
    import specdyn

    specdyn.guard_cpu()
    import jax

    jax.devices()
    return os.getpid()


def serial_part(cols: int, steps: int, out: str) -> None:
    """The serial timings, in a fresh process pinned to one core."""
    pin(min(os.sched_getaffinity(0)))
    import specdyn as sd

    sd.guard_cpu()
    import jax

    jax.devices()
    p, kwargs = problem(cols), grid(cols, steps)
    start = time.perf_counter()
    ds = sd.sweep(p, **kwargs)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    sd.sweep(p, **kwargs)
    warm = time.perf_counter() - start
    sd.results.save(ds, out)
    print(json.dumps({"cold": cold, "warm": warm}))


def warm_up(cols: int, steps: int) -> None:
    """In a worker: the whole grid in-process, so that every cell's programs are in its memory."""
    import specdyn as sd

    sd.sweep(problem(cols), **grid(cols, steps))


def on_cluster(cols: int, steps: int, store: Path, env: dict, reference, *, warm: bool) -> list[float]:
    """Sweep times on a fresh LocalCluster of 2 workers (core 0 and core 1): cold, then
    (``warm``) again after each worker ran the whole grid in-process (every program in
    its memory, wherever Dask sends a cell). Each result is checked equal to ``reference``."""
    import numpy as np
    from distributed import Client, LocalCluster

    import specdyn as sd

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # worker processes inherit the environment at start
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                workers = sorted(client.scheduler_info()["workers"])
                for core, worker in enumerate(workers):
                    client.run(start_worker, core % len(os.sched_getaffinity(0)), workers=[worker])
                times = []
                for k in range(2 if warm else 1):
                    if k == 1:
                        client.run(warm_up, cols, steps)
                    start = time.perf_counter()
                    ds = sd.sweep(problem(cols), **grid(cols, steps), client=client, store=store / f"run{k}")
                    times.append(time.perf_counter() - start)
                    for name in reference.data_vars:
                        np.testing.assert_array_equal(ds[name].values, reference[name].values)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cols", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--serial-part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serial_part:
        serial_part(args.cols, args.steps, args.serial_part)
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc = subprocess.run([sys.executable, __file__, "--cols", str(args.cols), "--steps", str(args.steps),
                               "--serial-part", str(tmp / "serial.nc")], capture_output=True, text=True, check=True)
        serial = json.loads(proc.stdout.strip().splitlines()[-1])
        import jax

        import specdyn as sd

        sd.guard_cpu()
        reference = sd.results.load(tmp / "serial.nc")
        cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp / "jax-cache"),
                 "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                 "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        plain = on_cluster(args.cols, args.steps, tmp / "plain", cache, reference, warm=True)
        hit = on_cluster(args.cols, args.steps, tmp / "hit", cache, reference, warm=False)
        entries = len(list((tmp / "jax-cache").iterdir())) if (tmp / "jax-cache").exists() else 0

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    import distributed

    print(f"machine: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}, jax {jax.__version__}, "
          f"distributed {distributed.__version__}; load average at the end {os.getloadavg()[0]:.1f}")
    cols, steps = args.cols, args.steps
    print(f"grid: MatrixLeastSquares cols={cols}, samples={4 * cols}, rows {grid(cols, steps)['grid']['rows']} "
          f"x (gd, specgd) = 16 cells, 4 seeds x 4 rates x {steps} steps each; results equal to serial, bit for bit")
    print()
    print("| run | wall time (s) | efficiency = serial / (2 × this) |")
    print("|---|---:|---:|")
    rows = [
        ("serial cold (compile + compute), 1 process", serial["cold"], None),
        ("serial warm (compute only)", serial["warm"], None),
        ("2 Dask workers, cold (each compiles its cells' programs, fills the shared cache)", plain[0],
         serial["cold"]),
        ("2 Dask workers, warm (every program in both workers' memory)", plain[1], serial["warm"]),
        ("2 new Dask workers, programs from the shared compile cache", hit[0], serial["cold"]),
    ]
    for label, seconds, against in rows:
        eff = "" if against is None else f"{against / (2 * seconds):.2f}"
        print(f"| {label} | {seconds:.2f} | {eff} |")
    compile_serial = serial["cold"] - serial["warm"]
    print()
    print(f"cost split: serial compile {compile_serial:.2f} s (cold - warm), compute {serial['warm']:.2f} s; "
          f"on 2 workers compute + scheduling {plain[1]:.2f} s (ideal {serial['warm'] / 2:.2f} s: scheduling, "
          f"transfers and imbalance {plain[1] - serial['warm'] / 2:.2f} s), compile {plain[0] - plain[1]:.2f} s "
          f"of wall time (ideal {compile_serial / 2:.2f} s), loading from the cache instead "
          f"{hit[0] - plain[1]:.2f} s ({entries} cache entries)")


if __name__ == "__main__":
    main()
