"""Scale-out: one grid serial (one process, one core) against 2 Dask worker processes
(one core each), side by side in one run.

Grid: matrix least squares, ``cols`` features, 4 ``cols`` samples, rows in 8 sizes
× (GD, SpecGD with Newton–Schulz) = 16 cells, each 4 seeds × 4 learning rates ×
``steps`` steps, float32, ``buckets=None`` (one compiled program per cell, one task
per cell). Every process computes on one core: the serial one and each worker are
pinned to a core before JAX starts (XLA sizes its thread pool from the affinity, so
it gets one thread), and OpenBLAS runs one thread (``specdyn.guard_cpu``).

Timed, each from processes that have imported specdyn and started JAX but compiled nothing:

  serial cold   sd.sweep in a fresh process (compile + compute), right before each
                Dask cold run (two pairs; medians and per-pair ratios are printed);
  dask cold     sd.sweep(client=...) on a fresh LocalCluster of 2 workers: each
                compiles the programs of the cells it gets; the first cluster writes
                them to a persistent compile cache (``JAX_COMPILATION_CACHE_DIR`` on a
                shared folder), the second uses none;
  serial warm / dask warm
                after each worker ran the whole grid in-process (untimed; every program
                then in both workers' memory), alternately the grid in-process on worker
                0 alone (compute only) and the Dask sweep (compute, scheduling, transfers,
                assembly), ``--repeats`` times each, so that both see the same load;
  cache hit     a new cluster (new processes) on the same cache: programs loaded, not compiled.

Efficiency = serial time / (2 × parallel time); cold against cold, warm against warm,
cache hit against serial cold (a serial process could use the cache too: that row
shows what the cache saves a fresh worker, not scale-out). Every Dask result is
checked equal to the serial one, bit for bit. Run: ``python bench/scale_out.py [--steps N] [--cols P] [--repeats R]``.
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

import numpy as np


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


def serial_cold(cols: int, steps: int, out: str) -> None:
    """Serial cold, in a fresh process pinned to one core: print its seconds, save its Dataset."""
    pin(min(os.sched_getaffinity(0)))
    import specdyn as sd

    sd.guard_cpu()
    import jax

    jax.devices()
    start = time.perf_counter()
    ds = sd.sweep(problem(cols), **grid(cols, steps))
    print(json.dumps({"cold": time.perf_counter() - start}))
    sd.results.save(ds, out)


def timed_sweep(cols: int, steps: int) -> float:
    """In a worker: the whole grid in-process (the serial sweep, on the worker's one core)."""
    import specdyn as sd

    start = time.perf_counter()
    sd.sweep(problem(cols), **grid(cols, steps))
    return time.perf_counter() - start


def on_cluster(cols: int, steps: int, store: Path, env: dict, reference, *, repeats: int) -> dict:
    """Timings on a fresh LocalCluster of 2 workers (core 0 and core 1): ``cold``, the
    sweep with nothing compiled; then (``repeats`` > 0) each worker runs the whole grid
    in-process (every program in its memory, wherever Dask sends a cell) and, alternately,
    ``serial`` (the grid in-process on worker 0 alone) and ``warm`` (the Dask sweep), so
    that both see the same load. Each Dask result is checked equal to ``reference``."""
    from distributed import Client, LocalCluster

    import specdyn as sd

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # worker processes inherit the environment at start
    out = {"serial": [], "warm": []}
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                workers = sorted(client.scheduler_info()["workers"])
                for core, worker in enumerate(workers):
                    client.run(start_worker, core % len(os.sched_getaffinity(0)), workers=[worker])

                def dask_sweep(k):
                    start = time.perf_counter()
                    ds = sd.sweep(problem(cols), **grid(cols, steps), client=client, store=store / f"run{k}")
                    seconds = time.perf_counter() - start
                    for name in reference.data_vars:
                        np.testing.assert_array_equal(ds[name].values, reference[name].values)
                    return seconds

                out["cold"] = dask_sweep(0)
                if repeats:
                    client.run(timed_sweep, cols, steps)
                for k in range(repeats):
                    out["serial"].append(client.run(timed_sweep, cols, steps, workers=workers[:1])[workers[0]])
                    out["warm"].append(dask_sweep(k + 1))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cols", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2, help="alternate warm serial and Dask sweeps this often")
    parser.add_argument("--serial-cold", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serial_cold:
        serial_cold(args.cols, args.steps, args.serial_cold)
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores")

    def fresh_serial(out) -> float:
        proc = subprocess.run([sys.executable, __file__, "--cols", str(args.cols), "--steps", str(args.steps),
                               "--serial-cold", str(out)], capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])["cold"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        serial_cold_s = [fresh_serial(tmp / "serial.nc")]
        import jax

        import specdyn as sd

        sd.guard_cpu()
        reference = sd.results.load(tmp / "serial.nc")
        cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp / "jax-cache"),
                 "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                 "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        plain = on_cluster(args.cols, args.steps, tmp / "plain", cache, reference, repeats=args.repeats)
        serial_cold_s.append(fresh_serial(tmp / "serial2.nc"))
        no_cache = on_cluster(args.cols, args.steps, tmp / "no-cache", {}, reference, repeats=0)
        hit = on_cluster(args.cols, args.steps, tmp / "hit", cache, reference, repeats=0)
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
    s_cold = float(np.median(serial_cold_s))
    d_cold = [plain["cold"], no_cache["cold"]]
    s_warm, p_warm = float(np.median(plain["serial"])), float(np.median(plain["warm"]))
    print("| run | wall time (s) | efficiency = serial / (2 × this) |")
    print("|---|---:|---:|")
    rows = [
        (f"serial cold (compile + compute), a fresh process, right before each Dask cold run: "
         f"{' and '.join(f'{t:.1f}' for t in serial_cold_s)}", s_cold, None),
        (f"serial warm (compute only), in worker 0, {len(plain['serial'])} runs: "
         f"{', '.join(f'{t:.1f}' for t in plain['serial'])}", s_warm, None),
        (f"2 Dask workers, cold (each compiles its cells' programs; the first fills the shared cache): "
         f"{' and '.join(f'{t:.1f}' for t in d_cold)}, efficiency per pair "
         f"{' and '.join(f'{a / (2 * b):.2f}' for a, b in zip(serial_cold_s, d_cold))}", float(np.median(d_cold)),
         s_cold),
        (f"2 Dask workers, warm (every program in both workers' memory), alternating with serial warm: "
         f"{', '.join(f'{t:.1f}' for t in plain['warm'])}", p_warm, s_warm),
        ("2 new Dask workers, programs from the shared compile cache", hit["cold"], s_cold),
    ]
    for label, seconds, against in rows:
        eff = "" if against is None else f"{against / (2 * seconds):.2f}"
        print(f"| {label} | {seconds:.2f} | {eff} |")
    compile_serial = s_cold - s_warm
    print()
    print(f"cost split (medians): serial = compile {compile_serial:.1f} s + compute {s_warm:.1f} s; "
          f"2 workers warm {p_warm:.1f} s against an ideal {s_warm / 2:.1f} s (scheduling, transfers, "
          f"assembly and imbalance: {p_warm - s_warm / 2:.1f} s); 2 workers cold spend "
          f"{float(np.median(d_cold)) - p_warm:.1f} s of wall time compiling (ideal {compile_serial / 2:.1f} s), "
          f"new workers on the shared cache {hit['cold'] - p_warm:.1f} s loading ({entries} cache entries)")


if __name__ == "__main__":
    main()
